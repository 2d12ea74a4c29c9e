//! Getting the state's bytes from where `opdbus.state=` points: a file, a
//! file on a labelled filesystem (mounted read-only for the read), or an
//! http(s) URL retried with backoff while the network comes up. Every source
//! is read with a size cap; plain http and redirects to another origin need
//! the `opdbus.state_sha256` pin, and a pin is always checked here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opdbus_common::{Task, TaskError};
use opdbus_state::MAX_STATE_BYTES;
use reqwest::Url;
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
    #[error(
        "{url} is plain http and opdbus.state_sha256 is not set, so anyone on the network \
         could choose what this install writes: add opdbus.state_sha256=SHA256 (the first \
         field of `sha256sum state.json`) to the kernel command line, or serve the state over \
         https"
    )]
    UnpinnedHttp { url: String },
    #[error(
        "{url} redirects to {location}, another origin (scheme, host or port), and \
         opdbus.state_sha256 is not set: add opdbus.state_sha256=SHA256 (the first field of \
         `sha256sum state.json`) to the kernel command line, or point opdbus.state at the final URL"
    )]
    CrossOriginRedirect { url: String, location: String },
    #[error("{url} answered {status} without a usable Location header: check the server")]
    BadRedirect { url: String, status: u16 },
    #[error(
        "{url} redirects more than {MAX_REDIRECTS} times: point opdbus.state at the final URL"
    )]
    TooManyRedirects { url: String },
    #[error(
        "the state from {source_name} is larger than {} MiB, the limit for a state file: \
         check that opdbus.state points at a state.json",
        MAX_STATE_BYTES >> 20
    )]
    TooLarge { source_name: String },
    #[error(
        "the state file {} is not a regular file (a directory, device or FIFO): \
         point opdbus.state at a state.json",
        path.display()
    )]
    NotRegular { path: PathBuf },
    #[error(
        "opdbus.state_cert_sha256 pins an https certificate, but {url} is not https: \
         use the https:// URL, or drop opdbus.state_cert_sha256 and set opdbus.state_sha256"
    )]
    CertPinNeedsHttps { url: String },
    #[error(
        "the server of {url} presented a certificate with sha256 {actual}, but \
         opdbus.state_cert_sha256 is {expected}: the certificate changed or someone is in \
         between; check with `openssl s_client -connect HOST:PORT | openssl x509 -noout \
         -fingerprint -sha256`"
    )]
    CertMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{url} is not a valid URL: check opdbus.state on the kernel command line")]
    BadUrl { url: String },
    #[error("setting up TLS for opdbus.state_cert_sha256")]
    Tls(#[source] rustls::Error),
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

/// What the kernel command line pins (lower-case hex SHA-256 each).
#[derive(Debug, Clone, Copy, Default)]
pub struct Pins<'a> {
    /// `opdbus.state_sha256`: the state's bytes, whatever the source.
    pub sha256: Option<&'a str>,
    /// `opdbus.state_cert_sha256`: the https server's certificate (DER);
    /// it replaces the CA check for that URL.
    pub cert_sha256: Option<&'a str>,
}

/// Reads the state bytes from `source` and checks them against
/// `pins.sha256` when given; `notify` receives one line per retry (the
/// caller prints it on the console).
pub fn fetch_state(
    source: &StateSource,
    pins: Pins<'_>,
    policy: &RetryPolicy,
    notify: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, FetchError> {
    let sha256 = pins.sha256;
    let bytes = match source {
        StateSource::Path(path) => read_file(path)?,
        StateSource::Label { label, path } => {
            let device = find_label(label)?;
            read_from_device(&device, label, path)?
        }
        StateSource::Url(url) => fetch_url(url, pins, policy, notify)?,
    };
    if let Some(expected) = sha256 {
        check_sha256(&bytes, expected, &source.to_string())?;
    }
    Ok(bytes)
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

/// Reads a state file through the state crate's reader: a regular file of
/// at most `MAX_STATE_BYTES`, opened non-blocking so a FIFO is refused
/// instead of waited on.
fn read_file(path: &Path) -> Result<Vec<u8>, FetchError> {
    use opdbus_state::ReadError;
    let read = |source| FetchError::Read {
        path: path.to_path_buf(),
        source,
    };
    match opdbus_state::read_state_text(path) {
        Ok(text) => Ok(text.into_bytes()),
        Err(ReadError::NotRegular(_)) => Err(FetchError::NotRegular {
            path: path.to_path_buf(),
        }),
        Err(ReadError::TooLarge { .. }) => Err(FetchError::TooLarge {
            source_name: path.display().to_string(),
        }),
        Err(ReadError::Open(e) | ReadError::Io(e)) => Err(read(e)),
        Err(e @ ReadError::NotUtf8(_)) => Err(read(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.to_string(),
        ))),
    }
}

enum Capped {
    TooLarge,
    Io(std::io::Error),
}

/// Reads `r` to its end, refusing more than `MAX_STATE_BYTES`.
fn read_capped(r: impl std::io::Read) -> Result<Vec<u8>, Capped> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(Capped::Io)?;
    if out.len() as u64 > MAX_STATE_BYTES {
        return Err(Capped::TooLarge);
    }
    Ok(out)
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

/// How many redirects one attempt follows.
pub const MAX_REDIRECTS: u32 = 5;

/// How one attempt ended when it did not return the body.
enum Attempt {
    /// Worth retrying (network, 5xx, timeout); the text says why.
    Retry(String),
    /// Retrying cannot help.
    Fatal(FetchError),
}

/// GETs `url`, retrying connection errors, timeouts and 5xx answers with
/// exponential backoff until `policy.total` has passed. A 4xx answer, an
/// oversized body, a refused redirect or a certificate that is not the
/// pinned one fails at once. Without `pins.sha256`, plain http is refused
/// and redirects stay on the URL's origin; with it, the caller checks the
/// body against it. With `pins.cert_sha256`, the server must present that
/// certificate (instead of one signed by a known CA).
pub fn fetch_url(
    url: &str,
    pins: Pins<'_>,
    policy: &RetryPolicy,
    notify: &mut dyn FnMut(&str),
) -> Result<Vec<u8>, FetchError> {
    let pinned = pins.sha256.is_some();
    let start_url = Url::parse(url).map_err(|_| FetchError::BadUrl { url: url.into() })?;
    let https = start_url.scheme() == "https";
    if pins.cert_sha256.is_some() && !https {
        return Err(FetchError::CertPinNeedsHttps { url: url.into() });
    }
    if !pinned && !https {
        return Err(FetchError::UnpinnedHttp { url: url.into() });
    }
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(policy.request_timeout)
        .connect_timeout(policy.request_timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none());
    let cert_pin = pins.cert_sha256.map(|p| Arc::new(CertPin::new(p)));
    if let Some(pin) = &cert_pin {
        builder = builder.use_preconfigured_tls(pin.client_config().map_err(FetchError::Tls)?);
    }
    let client = builder.build().map_err(FetchError::Client)?;
    let start = Instant::now();
    let mut delay = policy.first_delay;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match attempt(&client, &start_url, pinned, policy.request_timeout) {
            Ok(body) => return Ok(body),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(why)) => {
                if let Some(actual) = cert_pin.as_ref().and_then(|p| p.mismatch()) {
                    return Err(FetchError::CertMismatch {
                        url: url.into(),
                        expected: pins.cert_sha256.unwrap_or_default().into(),
                        actual,
                    });
                }
                why
            }
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

/// Accepts exactly one server certificate, by the SHA-256 of its DER;
/// handshake signatures are still verified. Remembers a mismatch so the
/// caller can report it instead of retrying.
#[derive(Debug)]
struct CertPin {
    expected: String,
    seen: Mutex<Option<String>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl CertPin {
    fn new(expected: &str) -> Self {
        CertPin {
            expected: expected.to_ascii_lowercase(),
            seen: Mutex::new(None),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    fn client_config(self: &Arc<Self>) -> Result<rustls::ClientConfig, rustls::Error> {
        Ok(
            rustls::ClientConfig::builder_with_provider(self.provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(self.clone())
                .with_no_client_auth(),
        )
    }

    /// The fingerprint of a certificate that did not match, if one came.
    fn mismatch(&self) -> Option<String> {
        self.seen.lock().ok().and_then(|s| s.clone())
    }
}

impl rustls::client::danger::ServerCertVerifier for CertPin {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let actual = sha256_hex(end_entity.as_ref());
        if actual == self.expected {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(actual);
        }
        Err(rustls::Error::General(
            "the certificate is not the one opdbus.state_cert_sha256 pins".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// (scheme, host, port): what a redirect must keep without a pin.
fn origin(u: &Url) -> (&str, Option<&str>, Option<u16>) {
    (u.scheme(), u.host_str(), u.port_or_known_default())
}

/// One GET of `url`, following at most `MAX_REDIRECTS` redirects, reading
/// at most `MAX_STATE_BYTES` and giving up once `timeout` has passed (checked
/// before each request and each read; each of those has `timeout` itself).
fn attempt(
    client: &reqwest::blocking::Client,
    url: &Url,
    pinned: bool,
    timeout: Duration,
) -> Result<Vec<u8>, Attempt> {
    let deadline = Instant::now() + timeout;
    let mut current = url.clone();
    let mut redirects = 0;
    let resp = loop {
        if Instant::now() > deadline {
            return Err(Attempt::Retry(format!(
                "the redirects took longer than {} s",
                timeout.as_secs_f32()
            )));
        }
        let resp = client
            .get(current.clone())
            .send()
            .map_err(|e| Attempt::Retry(error_chain(&e)))?;
        let status = resp.status();
        if !status.is_redirection() {
            break resp;
        }
        let next = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| current.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Attempt::Fatal(FetchError::BadRedirect {
                    url: current.to_string(),
                    status: status.as_u16(),
                })
            })?;
        if !pinned && origin(&next) != origin(url) {
            return Err(Attempt::Fatal(FetchError::CrossOriginRedirect {
                url: url.to_string(),
                location: next.to_string(),
            }));
        }
        redirects += 1;
        if redirects > MAX_REDIRECTS {
            return Err(Attempt::Fatal(FetchError::TooManyRedirects {
                url: url.to_string(),
            }));
        }
        current = next;
    };
    let status = resp.status();
    if status.is_client_error() || (!status.is_success() && !status.is_server_error()) {
        return Err(Attempt::Fatal(FetchError::Status {
            url: current.to_string(),
            status: status.as_u16(),
        }));
    }
    if !status.is_success() {
        return Err(Attempt::Retry(format!("server answered {status}")));
    }
    let too_large = || {
        Attempt::Fatal(FetchError::TooLarge {
            source_name: current.to_string(),
        })
    };
    if resp.content_length().is_some_and(|n| n > MAX_STATE_BYTES) {
        return Err(too_large());
    }
    let body = Deadline {
        inner: resp,
        deadline,
        timeout,
    };
    read_capped(body).map_err(|e| match e {
        Capped::TooLarge => too_large(),
        Capped::Io(e) => Attempt::Retry(format!("reading the body: {}", error_chain(&e))),
    })
}

/// A reader that fails once `deadline` has passed: each read of a reqwest
/// body has its own timeout, so a server trickling bytes would never end.
struct Deadline<R> {
    inner: R,
    deadline: Instant,
    timeout: Duration,
}

impl<R: std::io::Read> std::io::Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the whole answer took longer than {} s",
                    self.timeout.as_secs_f32()
                ),
            ));
        }
        self.inner.read(buf)
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

    /// Runs `handler` on each connection to a fresh 127.0.0.1 listener (at
    /// most `max` connections, and none after 30 s: the server stops itself);
    /// returns the base URL. The handler gets the connection number and the
    /// request head.
    fn serve_with(
        max: u32,
        handler: impl Fn(u32, &str, &mut std::net::TcpStream) + Send + 'static,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut n = 0;
            while n < max && Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(k) => head.extend_from_slice(&buf[..k]),
                            }
                        }
                        handler(n, &String::from_utf8_lossy(&head), &mut stream);
                        n += 1;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        format!("http://{addr}")
    }

    fn answer(stream: &mut std::net::TcpStream, status: &str, headers: &str, body: &[u8]) {
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
    }

    const STATE: &[u8] = b"{\"version\":1}";

    fn body_pin(sha256: &str) -> Pins<'_> {
        Pins {
            sha256: Some(sha256),
            cert_sha256: None,
        }
    }

    fn failed(r: Result<Vec<u8>, FetchError>) -> FetchError {
        r.map_or_else(
            |e| e,
            |b| panic!("expected a failure, fetched {} bytes", b.len()),
        )
    }

    #[test]
    fn plain_http_without_a_pin_is_refused_before_connecting() {
        let count = Arc::new(AtomicU32::new(0));
        let c = count.clone();
        let base = serve_with(1, move |_, _, s| {
            c.fetch_add(1, Ordering::SeqCst);
            answer(s, "200 OK", "", STATE)
        });
        let url = format!("{base}/s.json");
        let source = StateSource::Url(url.clone());
        let err = failed(fetch_state(&source, Pins::default(), &fast(), &mut |_| {}));
        assert_eq!(
            err.to_string(),
            format!(
                "{url} is plain http and opdbus.state_sha256 is not set, so anyone on the network \
                 could choose what this install writes: add opdbus.state_sha256=SHA256 (the first \
                 field of `sha256sum state.json`) to the kernel command line, or serve the state \
                 over https"
            )
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(count.load(Ordering::SeqCst), 0, "the server was asked");
    }

    #[test]
    fn pinned_http_checks_the_body() {
        let base = serve_with(2, |_, _, s| answer(s, "200 OK", "", STATE));
        let source = StateSource::Url(format!("{base}/s.json"));
        let good = sha256_hex(STATE);
        let got = fetch_state(&source, body_pin(&good), &fast(), &mut |_| {}).unwrap();
        assert_eq!(got, STATE);
        let bad = "0".repeat(64);
        let err = failed(fetch_state(&source, body_pin(&bad), &fast(), &mut |_| {}));
        assert!(matches!(err, FetchError::Sha256Mismatch { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!(
                "has sha256 {good}, but opdbus.state_sha256 is {bad}"
            )),
            "{err}"
        );
    }

    /// A server that redirects every request to `to`.
    fn redirector(to: String) -> String {
        serve_with(4, move |_, _, s| {
            answer(s, "302 Found", &format!("Location: {to}\r\n"), b"")
        })
    }

    fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    #[test]
    fn redirect_to_another_origin_needs_a_pin() {
        let evil = serve_with(2, |_, _, s| {
            answer(s, "200 OK", "", b"{\"version\":1,\"x\":1}")
        });
        let evil_url = format!("{evil}/s.json");
        let base = redirector(evil_url.clone());
        let start = Url::parse(&format!("{base}/s.json")).unwrap();
        // Unpinned (as an https URL would be): refused, whatever the target says.
        let err = match attempt(&client(), &start, false, Duration::from_secs(2)) {
            Err(Attempt::Fatal(e)) => e,
            Err(Attempt::Retry(why)) => panic!("retry: {why}"),
            Ok(b) => panic!("followed the redirect, got {} bytes", b.len()),
        };
        assert_eq!(
            err.to_string(),
            format!(
                "{start} redirects to {evil_url}, another origin (scheme, host or port), and \
                 opdbus.state_sha256 is not set: add opdbus.state_sha256=SHA256 (the first field \
                 of `sha256sum state.json`) to the kernel command line, or point opdbus.state at \
                 the final URL"
            )
        );
        // Pinned: followed, and the body must have the pinned sum.
        let sum = sha256_hex(b"{\"version\":1,\"x\":1}");
        let got = fetch_url(start.as_str(), body_pin(&sum), &fast(), &mut |_| {}).unwrap();
        assert_eq!(got, b"{\"version\":1,\"x\":1}");
    }

    #[test]
    fn redirect_on_the_same_origin_is_followed_and_bounded() {
        let base = serve_with(3, |n, head, s| {
            if n == 0 {
                assert!(head.starts_with("GET /old.json "), "{head}");
                answer(s, "301 Moved", "Location: /new.json\r\n", b"")
            } else {
                assert!(head.starts_with("GET /new.json "), "{head}");
                answer(s, "200 OK", "", STATE)
            }
        });
        let start = Url::parse(&format!("{base}/old.json")).unwrap();
        match attempt(&client(), &start, false, Duration::from_secs(2)) {
            Ok(b) => assert_eq!(b, STATE),
            Err(_) => panic!("same-origin redirect not followed"),
        }
        // A loop on one origin ends after MAX_REDIRECTS.
        let looping = serve_with(MAX_REDIRECTS + 1, |_, _, s| {
            answer(s, "302 Found", "Location: /again\r\n", b"")
        });
        let err = failed(fetch_url(
            &format!("{looping}/again"),
            body_pin(&sha256_hex(STATE)),
            &fast(),
            &mut |_| {},
        ));
        assert!(matches!(err, FetchError::TooManyRedirects { .. }), "{err}");
    }

    #[test]
    fn origin_includes_scheme_and_port() {
        let o = |s: &str| {
            let u = Url::parse(s).unwrap();
            let (a, b, c) = origin(&u);
            (a.to_string(), b.map(str::to_string), c)
        };
        assert_eq!(o("https://cfg.example/a"), o("https://cfg.example:443/b?x"));
        assert_ne!(o("https://cfg.example/a"), o("http://cfg.example/a"));
        assert_ne!(o("https://cfg.example/a"), o("https://cfg.example:8443/a"));
        assert_ne!(o("https://cfg.example/a"), o("https://evil.example/a"));
    }

    #[test]
    fn endless_body_stops_at_the_cap() {
        let written = Arc::new(AtomicU32::new(0));
        let w = written.clone();
        let base = serve_with(1, move |_, _, s| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![b' '; 1 << 20];
            // At most 64 MiB, so a client without a cap ends too.
            for _ in 0..64 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
                w.fetch_add(1, Ordering::SeqCst);
            }
        });
        let url = format!("{base}/s.json");
        let err = failed(fetch_url(
            &url,
            body_pin(&sha256_hex(STATE)),
            &fast(),
            &mut |_| {},
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "the state from {url} is larger than 4 MiB, the limit for a state file: check \
                 that opdbus.state points at a state.json"
            )
        );
        std::thread::sleep(Duration::from_millis(200));
        let mib = written.load(Ordering::SeqCst);
        // The cap plus what the socket buffers hold, not the 64 MiB offered.
        assert!(mib < 16, "the server wrote {mib} MiB");
        // A Content-Length beyond the cap is refused before the body is read.
        let big = serve_with(1, |_, _, s| {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n");
            let _ = s.write_all(&[b' '; 4096]);
        });
        let err = failed(fetch_url(
            &format!("{big}/s.json"),
            body_pin(&sha256_hex(STATE)),
            &fast(),
            &mut |_| {},
        ));
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn slow_body_times_out() {
        let base = serve_with(10, |_, _, s| {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"
            );
            // One byte every 100 ms: each read is quick, the whole body takes 10 s.
            for _ in 0..100 {
                if s.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let policy = RetryPolicy {
            total: Duration::from_secs(2),
            request_timeout: Duration::from_millis(800),
            ..fast()
        };
        let start = Instant::now();
        let err = failed(fetch_url(
            &format!("{base}/s.json"),
            body_pin(&sha256_hex(STATE)),
            &policy,
            &mut |_| {},
        ));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(err, FetchError::GaveUp { .. }), "{err}");
        assert!(err.to_string().contains("took longer than 0.8 s"), "{err}");
    }

    /// A self-signed certificate for 127.0.0.1 made by `openssl`; returns
    /// the https base URL of a server (at most `max` connections, 30 s)
    /// answering STATE, and the certificate's SHA-256.
    fn serve_tls(dir: &Path, max: u32) -> (String, String) {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        Task::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
            .args([
                "-subj",
                "/CN=opdbus-test",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .run()
            .unwrap();
        let cert = CertificateDer::from_pem_file(&cert).unwrap();
        let fingerprint = sha256_hex(cert.as_ref());
        let key = PrivateKeyDer::from_pem_file(&key).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap(),
        );
        // Not serve_with: that reads the request head in clear.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut n = 0;
            while n < max && Instant::now() < deadline {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                n += 1;
                tcp.set_nonblocking(false).unwrap();
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 4096];
                if tls.read(&mut buf).is_err() {
                    continue; // the client refused the certificate
                }
                answer_tls(&mut tls);
            }
        });
        (format!("https://{addr}"), fingerprint)
    }

    fn answer_tls(s: &mut impl Write) {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            STATE.len()
        );
        let _ = s.write_all(STATE);
        let _ = s.flush();
    }

    #[test]
    fn pinned_certificate_replaces_the_ca_check() {
        let dir = tempfile::tempdir().unwrap();
        let (base, fingerprint) = serve_tls(dir.path(), 20);
        let url = format!("{base}/s.json");
        let pins = Pins {
            sha256: None,
            cert_sha256: Some(&fingerprint),
        };
        let got = fetch_url(&url, pins, &fast(), &mut |_| {}).unwrap();
        assert_eq!(got, STATE);
        // Another certificate: refused at once, naming both fingerprints.
        let wrong = "ab".repeat(32);
        let mut retries = 0;
        let err = failed(fetch_url(
            &url,
            Pins {
                sha256: None,
                cert_sha256: Some(&wrong),
            },
            &fast(),
            &mut |_| retries += 1,
        ));
        assert_eq!(retries, 0);
        assert!(matches!(err, FetchError::CertMismatch { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "the server of {url} presented a certificate with sha256 {fingerprint}, but \
                 opdbus.state_cert_sha256 is {wrong}: "
            )),
            "{err}"
        );
        // Without the pin, the CA check stands: a self-signed server is not trusted.
        let policy = RetryPolicy {
            total: Duration::from_millis(300),
            ..fast()
        };
        let err = failed(fetch_url(&url, Pins::default(), &policy, &mut |_| {}));
        assert!(matches!(err, FetchError::GaveUp { .. }), "{err}");
        assert!(err.to_string().contains("certificate"), "{err}");
        // A certificate pin is for https only.
        let err = failed(fetch_url(
            &url.replacen("https", "http", 1),
            pins,
            &fast(),
            &mut |_| {},
        ));
        assert!(matches!(err, FetchError::CertPinNeedsHttps { .. }), "{err}");
    }

    #[test]
    fn path_source_reads_only_bounded_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        for p in [&fifo, &zero] {
            let err = failed(fetch_state(
                &StateSource::Path(p.clone()),
                Pins::default(),
                &fast(),
                &mut |_| {},
            ));
            assert!(
                matches!(err, FetchError::NotRegular { .. }),
                "{}: {err}",
                p.display()
            );
        }
        let big = dir.path().join("big.json");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_STATE_BYTES + 1)
            .unwrap();
        let err = failed(fetch_state(
            &StateSource::Path(big),
            Pins::default(),
            &fast(),
            &mut |_| {},
        ));
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn url_is_fetched_after_server_errors() {
        let (base, count) = serve(vec![(503, "busy"), (502, "bad"), (200, "{\"version\":1}")]);
        let mut lines = Vec::new();
        let sum = sha256_hex(b"{\"version\":1}");
        let body = fetch_url(
            &format!("{base}/s.json"),
            body_pin(&sum),
            &fast(),
            &mut |l| lines.push(l.to_string()),
        )
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
        let err = fetch_url(
            &format!("{base}/missing.json"),
            body_pin(&"0".repeat(64)),
            &fast(),
            &mut |_| {},
        )
        .unwrap_err();
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
        let err = fetch_url(&url, body_pin(&"0".repeat(64)), &policy, &mut |_| {
            retries += 1
        })
        .unwrap_err();
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
        let got =
            fetch_state(&StateSource::Path(p), Pins::default(), &fast(), &mut |_| {}).unwrap();
        assert_eq!(got, b"{}");
        let err = fetch_state(
            &StateSource::Path(dir.path().join("nope.json")),
            Pins::default(),
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
        let got = fetch_state(&source, Pins::default(), &fast(), &mut |_| {}).unwrap();
        assert_eq!(got, b"{\"version\":1}");
        // Nothing stays mounted from the device.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dev.trim()), "{} still mounted", dev.trim());
        let missing = StateSource::Label {
            label,
            path: "/site/other.json".into(),
        };
        let err = fetch_state(&missing, Pins::default(), &fast(), &mut |_| {}).unwrap_err();
        assert!(
            err.to_string().starts_with("reading the state file label:"),
            "{err}"
        );
    }
}
