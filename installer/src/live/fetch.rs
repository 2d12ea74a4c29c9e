//! Getting the state's bytes from where `opdbus.state=` points: a file, a
//! file on a labelled filesystem (mounted read-only for the read), or an
//! http(s) URL retried with backoff while the network comes up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opdbus_common::{Task, TaskError};
use sha2::{Digest, Sha256};

use super::cmdline::StateSource;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading the state file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no filesystem labelled {label:?} was found (is the USB stick or disk attached? `blkid` lists labels)")]
    NoLabel { label: String },
    #[error("mounting {} (label {label:?}) read-only", device.display())]
    Mount {
        device: PathBuf,
        label: String,
        #[source]
        source: TaskError,
    },
    #[error("creating a temporary mount point")]
    TempDir(#[source] std::io::Error),
    #[error("the server answered {status} for {url}: check the URL")]
    Status { url: String, status: u16 },
    #[error(
        "{url} could not be fetched within {} s ({attempts} attempts, last error: {last}); \
         the network never came up or the server is unreachable: check the cable and DHCP, \
         or boot with opdbus.state=label:NAME:/PATH",
        waited.as_secs()
    )]
    GaveUp {
        url: String,
        attempts: u32,
        waited: Duration,
        last: String,
    },
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error(
        "the state from {source_name} has sha256 {actual}, but opdbus.state_sha256 is {expected}: \
         the file changed or the checksum is wrong; fix one of them"
    )]
    Sha256Mismatch {
        source_name: String,
        expected: String,
        actual: String,
    },
}

/// How long and how often a URL is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Give up when this much time has passed since the first attempt.
    pub total: Duration,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Timeout of a single request.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            total: Duration::from_secs(120),
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// Reads the state bytes from `source`; `notify` receives one line per
/// retry (the caller prints it on the console).
pub fn fetch_state(
    source: &StateSource,
    policy: &RetryPolicy,
    notify: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, FetchError> {
    match source {
        StateSource::Path(path) => read_file(path),
        StateSource::Label { label, path } => {
            let device = find_label(label)?;
            read_from_device(&device, label, path)
        }
        StateSource::Url(url) => fetch_url(url, policy, notify),
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `bytes` against `expected` (hex, any case).
pub fn check_sha256(bytes: &[u8], expected: &str, source_name: &str) -> Result<(), FetchError> {
    let actual = sha256_hex(bytes);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(FetchError::Sha256Mismatch {
            source_name: source_name.into(),
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, FetchError> {
    std::fs::read(path).map_err(|source| FetchError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The block device carrying filesystem label `label`: the udev link when
/// udev runs, else `blkid -L` (which probes devices itself).
pub fn find_label(label: &str) -> Result<PathBuf, FetchError> {
    let link = Path::new("/dev/disk/by-label").join(label);
    if link.exists() {
        return Ok(link);
    }
    match Task::new("blkid").args(["-L", label]).read() {
        Ok(out) if !out.trim().is_empty() => Ok(PathBuf::from(out.trim())),
        _ => Err(FetchError::NoLabel {
            label: label.into(),
        }),
    }
}

/// A read-only mount that is undone on drop.
struct MountGuard {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = Task::new("umount").arg(self.dir.path()).run() {
                tracing::warn!("unmounting {}: {e}", self.dir.path().display());
            }
        }
    }
}

/// Mounts `device` read-only in a temp dir, reads `path` inside it, unmounts.
pub fn read_from_device(device: &Path, label: &str, path: &Path) -> Result<Vec<u8>, FetchError> {
    let dir = tempfile::Builder::new()
        .prefix("opdbus-state-")
        .tempdir()
        .map_err(FetchError::TempDir)?;
    let mut guard = MountGuard {
        dir,
        mounted: false,
    };
    Task::new("mount")
        .args(["-o", "ro"])
        .arg(device)
        .arg(guard.dir.path())
        .run()
        .map_err(|source| FetchError::Mount {
            device: device.to_path_buf(),
            label: label.into(),
            source,
        })?;
    guard.mounted = true;
    let inside = guard
        .dir
        .path()
        .join(path.strip_prefix("/").unwrap_or(path));
    let bytes = read_file(&inside).map_err(|e| match e {
        FetchError::Read { source, .. } => FetchError::Read {
            path: PathBuf::from(format!("label:{label}:{}", path.display())),
            source,
        },
        other => other,
    })?;
    drop(guard);
    Ok(bytes)
}

/// GETs `url`, retrying connection errors and 5xx answers with exponential
/// backoff until `policy.total` has passed. A 4xx answer fails at once.
pub fn fetch_url(
    url: &str,
    policy: &RetryPolicy,
    notify: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, FetchError> {
    let client = reqwest::blocking::Client::builder()
        .timeout(policy.request_timeout)
        .connect_timeout(policy.request_timeout.min(Duration::from_secs(5)))
        .build()
        .map_err(FetchError::Client)?;
    let start = Instant::now();
    let mut delay = policy.first_delay;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match client.get(url).send() {
            Ok(resp) if resp.status().is_success() => match resp.bytes() {
                Ok(b) => return Ok(b.to_vec()),
                Err(e) => format!("reading the body: {e}"),
            },
            Ok(resp) if resp.status().is_client_error() => {
                return Err(FetchError::Status {
                    url: url.into(),
                    status: resp.status().as_u16(),
                })
            }
            Ok(resp) => format!("server answered {}", resp.status()),
            Err(e) => error_chain(&e),
        };
        let elapsed = start.elapsed();
        if elapsed + delay > policy.total {
            return Err(FetchError::GaveUp {
                url: url.into(),
                attempts,
                waited: elapsed,
                last,
            });
        }
        notify(&format!(
            "OPDBUS-LIVE: state not fetched yet from {url} (attempt {attempts}: {last}); \
             retrying in {} s, giving up after {} s",
            delay.as_secs_f32(),
            policy.total.as_secs()
        ));
        std::thread::sleep(delay);
        delay = (delay * 2).min(policy.max_delay);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Serves `responses` in order (the last one repeats) on 127.0.0.1;
    /// returns the base URL and the request counter.
    fn serve(responses: Vec<(u16, &'static str)>) -> (String, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let n = c.fetch_add(1, Ordering::SeqCst) as usize;
                let (status, body) = responses[n.min(responses.len() - 1)];
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (format!("http://{addr}"), count)
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            total: Duration::from_secs(5),
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
            request_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn url_is_fetched_after_server_errors() {
        let (base, count) = serve(vec![(503, "busy"), (502, "bad"), (200, "{\"version\":1}")]);
        let mut lines = Vec::new();
        let body = fetch_url(&format!("{base}/s.json"), &fast(), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
        assert_eq!(body, b"{\"version\":1}");
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with("OPDBUS-LIVE: state not fetched yet from http://"));
        assert!(
            lines[0].contains("attempt 1: server answered 503"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn not_found_fails_without_retrying() {
        let (base, count) = serve(vec![(404, "no")]);
        let err = fetch_url(&format!("{base}/missing.json"), &fast(), &mut |_| {}).unwrap_err();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(
            err.to_string(),
            format!("the server answered 404 for {base}/missing.json: check the URL")
        );
    }

    #[test]
    fn unreachable_server_gives_up_with_a_clear_message() {
        // A port that was free a moment ago: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let policy = RetryPolicy {
            total: Duration::from_millis(700),
            ..fast()
        };
        let mut retries = 0;
        let url = format!("http://127.0.0.1:{port}/s.json");
        let err = fetch_url(&url, &policy, &mut |_| retries += 1).unwrap_err();
        let msg = err.to_string();
        assert!(retries >= 2, "{retries}");
        assert!(
            msg.starts_with(&format!("{url} could not be fetched within 0 s (")),
            "{msg}"
        );
        assert!(
            msg.contains("the network never came up or the server is unreachable"),
            "{msg}"
        );
    }

    #[test]
    fn sha_mismatch_names_both_sums() {
        let err = check_sha256(
            b"hello",
            &"AB".repeat(32),
            "/run/live/medium/opdbus/state.json",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the state from /run/live/medium/opdbus/state.json has sha256 \
                 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824, but \
                 opdbus.state_sha256 is {}: the file changed or the checksum is wrong; fix one of them",
                "ab".repeat(32)
            )
        );
        check_sha256(
            b"hello",
            "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824",
            "x",
        )
        .unwrap();
    }

    #[test]
    fn path_source_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        std::fs::write(&p, "{}").unwrap();
        let got = fetch_state(&StateSource::Path(p), &fast(), &mut |_| {}).unwrap();
        assert_eq!(got, b"{}");
        let err = fetch_state(
            &StateSource::Path(dir.path().join("nope.json")),
            &fast(),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("reading the state file "),
            "{err}"
        );
    }

    #[test]
    fn missing_label_is_reported() {
        let err = find_label("OPDBUS-NO-SUCH-LABEL-7f3a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no filesystem labelled \"OPDBUS-NO-SUCH-LABEL-7f3a\" was found (is the USB stick or disk attached? `blkid` lists labels)"
        );
    }

    /// Detaches a loop device on drop.
    struct Loop(String);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Task::new("losetup").args(["-d", &self.0]).run();
        }
    }

    #[test]
    #[ignore = "privileged: loop device, mkfs.ext4, mount"]
    fn label_source_mounts_reads_and_unmounts() {
        let dir = tempfile::tempdir().unwrap();
        let content = dir.path().join("content/site");
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(content.join("state.json"), "{\"version\":1}").unwrap();
        let img = dir.path().join("cfg.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let label = format!("OPDT{}", std::process::id() % 100000);
        Task::new("mkfs.ext4")
            .args(["-q", "-L", &label, "-d"])
            .arg(dir.path().join("content"))
            .arg(&img)
            .run()
            .unwrap();
        let dev = Task::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)
            .read()
            .unwrap();
        let _lo = Loop(dev.trim().to_string());
        let source = StateSource::Label {
            label: label.clone(),
            path: "/site/state.json".into(),
        };
        let got = fetch_state(&source, &fast(), &mut |_| {}).unwrap();
        assert_eq!(got, b"{\"version\":1}");
        // Nothing stays mounted from the device.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dev.trim()), "{} still mounted", dev.trim());
        let missing = StateSource::Label {
            label,
            path: "/site/other.json".into(),
        };
        let err = fetch_state(&missing, &fast(), &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().starts_with("reading the state file label:"),
            "{err}"
        );
    }
}
