//! Building a payload on a build host: mmdebstrap (or debootstrap + tar when
//! mmdebstrap is missing) writes a `tar.zst`, then `FILE.sha256` is written
//! and both are renamed into place. A cache directory keyed by the spec lets
//! repeated builds reuse a verified earlier result.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use opdbus_common::{Task, TaskError};
use sha2::{Digest, Sha256};

use super::mirror::{host_mirror, Mirror, MirrorError};
use super::spec::PayloadSpec;
use super::{parse_sha256sum, sha256sum_line, sidecar_path};

/// The tool that bootstraps the root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildTool {
    /// Writes the tarball itself, as root or in a user namespace.
    Mmdebstrap,
    /// Needs root; the tree is packed with GNU tar afterwards.
    Debootstrap,
}

impl BuildTool {
    /// mmdebstrap when installed, else debootstrap, else `None`.
    pub fn detect() -> Option<Self> {
        if in_path("mmdebstrap") {
            Some(BuildTool::Mmdebstrap)
        } else if in_path("debootstrap") {
            Some(BuildTool::Debootstrap)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            BuildTool::Mmdebstrap => "mmdebstrap",
            BuildTool::Debootstrap => "debootstrap",
        }
    }
}

fn in_path(program: &str) -> bool {
    let dirs = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&dirs).any(|d| d.join(program).is_file())
}

/// A payload on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadInfo {
    pub path: PathBuf,
    /// Hex sha256 of the file, also written to `PATH.sha256`.
    pub sha256: String,
    pub size: u64,
    /// The spec's cache key (see [`PayloadSpec::cache_key`]).
    pub cache_key: String,
    /// True when the payload was copied from the cache instead of built.
    pub from_cache: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("finding the Debian mirror to build the payload from")]
    Mirror(#[from] MirrorError),
    #[error("neither mmdebstrap nor debootstrap is installed: run `apt-get install mmdebstrap`")]
    NoTool,
    #[error("architecture {arch:?} is not supported: payloads are built for amd64")]
    Arch { arch: String },
    #[error("bootstrapping Debian {suite} with {tool}")]
    Bootstrap {
        tool: &'static str,
        suite: String,
        #[source]
        source: TaskError,
    },
    #[error("packing the bootstrapped tree {} with tar", dir.display())]
    Pack {
        dir: PathBuf,
        #[source]
        source: TaskError,
    },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_path_buf();
    move |source| BuildError::Io { what, path, source }
}

/// The mirror a spec builds from: its explicit one, else the Debian main
/// archive of the apt sources under `host_root` (`/` on the build host).
pub fn resolve_mirror(spec: &PayloadSpec, host_root: &Path) -> Result<Mirror, MirrorError> {
    match &spec.mirror {
        Some(uri) => Ok(Mirror::explicit(uri)),
        None => host_mirror(host_root),
    }
}

/// Builds the payload for `spec` into `output` (a `.tar.zst`) and writes
/// `output.sha256`, using the first available [`BuildTool`]. With `cache`,
/// a verified `cache/<key>.tar.zst` is reused and a fresh build is stored there.
pub fn build_payload(
    spec: &PayloadSpec,
    output: &Path,
    cache: Option<&Path>,
) -> Result<PayloadInfo, BuildError> {
    let tool = BuildTool::detect().ok_or(BuildError::NoTool)?;
    build_payload_with(spec, output, cache, tool)
}

/// [`build_payload`] with an explicit tool.
pub fn build_payload_with(
    spec: &PayloadSpec,
    output: &Path,
    cache: Option<&Path>,
    tool: BuildTool,
) -> Result<PayloadInfo, BuildError> {
    if spec.arch != "amd64" {
        return Err(BuildError::Arch {
            arch: spec.arch.clone(),
        });
    }
    let mirror = resolve_mirror(spec, Path::new("/"))?;
    let key = spec.cache_key(&mirror);
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&out_dir).map_err(io_err("creating the output directory", &out_dir))?;

    if let Some(cache) = cache {
        let cached = cache.join(format!("{key}.tar.zst"));
        if let Some(sha256) = verified_sha256(&cached) {
            tracing::info!(cache = %cached.display(), "reusing cached payload");
            let size = install_copy(&cached, output, &sha256)?;
            return Ok(PayloadInfo {
                path: output.to_path_buf(),
                sha256,
                size,
                cache_key: key,
                from_cache: true,
            });
        }
    }

    tracing::info!(
        suite = %spec.suite, mirror = %mirror.uri, tool = tool.name(),
        packages = spec.packages.len(), "building payload"
    );
    let tmp = tempfile::Builder::new()
        .prefix(".payload-")
        .suffix(".tmp.tar.zst")
        .tempfile_in(&out_dir)
        .map_err(io_err("creating a temporary file in", &out_dir))?
        .into_temp_path();
    match tool {
        BuildTool::Mmdebstrap => run_mmdebstrap(spec, &mirror, &tmp)?,
        BuildTool::Debootstrap => run_debootstrap(spec, &mirror, &tmp, &out_dir)?,
    }
    let (sha256, size) = hash_file(&tmp)?;
    make_readable(&tmp)?;
    tmp.persist(output)
        .map_err(|e| io_err("moving the built payload to", output)(e.error))?;
    write_sidecar(output, &sha256)?;

    if let Some(cache) = cache {
        let cached = cache.join(format!("{key}.tar.zst"));
        let stored = fs::create_dir_all(cache)
            .map_err(io_err("creating the cache directory", cache))
            .and_then(|()| install_copy(output, &cached, &sha256));
        if let Err(e) = stored {
            tracing::warn!("not caching the payload: {e}");
        }
    }
    Ok(PayloadInfo {
        path: output.to_path_buf(),
        sha256,
        size,
        cache_key: key,
        from_cache: false,
    })
}

/// The options shared by both tools: the mirror line with its keyring.
fn mirror_line(spec: &PayloadSpec, mirror: &Mirror) -> String {
    match &mirror.signed_by {
        Some(key) => format!("deb [signed-by={key}] {} {} main", mirror.uri, spec.suite),
        None => mirror.uri.clone(),
    }
}

fn run_mmdebstrap(spec: &PayloadSpec, mirror: &Mirror, out: &Path) -> Result<(), BuildError> {
    let root = nix::unistd::geteuid().is_root();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Task::new("mmdebstrap")
        .args([
            "--variant=minbase",
            if root { "--mode=root" } else { "--mode=auto" },
            "--components=main",
        ])
        .arg(format!("--architectures={}", spec.arch))
        .arg(format!("--include={}", spec.packages.join(",")))
        // Documentation is not needed on a server and is a fifth of the size.
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/info/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        ])
        .arg(&spec.suite)
        .arg(out)
        .arg(mirror_line(spec, mirror))
        // mmdebstrap pipes the tarball through `zstd`, which reads these.
        .env("ZSTD_CLEVEL", "6")
        .env("ZSTD_NBTHREADS", threads.to_string())
        .run_inherit()
        .map_err(|source| BuildError::Bootstrap {
            tool: "mmdebstrap",
            suite: spec.suite.clone(),
            source,
        })
}

fn run_debootstrap(
    spec: &PayloadSpec,
    mirror: &Mirror,
    out: &Path,
    work: &Path,
) -> Result<(), BuildError> {
    let tree = tempfile::Builder::new()
        .prefix(".payload-tree-")
        .tempdir_in(work)
        .map_err(io_err("creating a temporary directory in", work))?;
    let mut task = Task::new("debootstrap")
        .args(["--variant=minbase", "--components=main"])
        .arg(format!("--arch={}", spec.arch))
        .arg(format!("--include={}", spec.packages.join(",")));
    if let Some(key) = &mirror.signed_by {
        task = task.arg(format!("--keyring={key}"));
    }
    task.arg(&spec.suite)
        .arg(tree.path())
        .arg(&mirror.uri)
        .run_inherit()
        .map_err(|source| BuildError::Bootstrap {
            tool: "debootstrap",
            suite: spec.suite.clone(),
            source,
        })?;
    Task::new("tar")
        .args([
            "--create",
            "--format=pax",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--one-file-system",
            "--sort=name",
            "--use-compress-program=zstd -6 -T0",
        ])
        .arg("--file")
        .arg(out)
        .arg("-C")
        .arg(tree.path())
        .arg(".")
        .run()
        .map_err(|source| BuildError::Pack {
            dir: tree.path().to_path_buf(),
            source,
        })
}

/// Hex sha256 and size of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), BuildError> {
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// The sha256 of `payload` when it and its sidecar exist and agree.
fn verified_sha256(payload: &Path) -> Option<String> {
    let expected = parse_sha256sum(&fs::read_to_string(sidecar_path(payload)).ok()?)?;
    let (actual, _) = hash_file(payload).ok()?;
    if actual == expected {
        Some(actual)
    } else {
        tracing::warn!(cache = %payload.display(), "cached payload does not match its sha256; rebuilding");
        None
    }
}

/// Temporary files are created 0600; payloads are public data (0644).
fn make_readable(path: &Path) -> Result<(), BuildError> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(io_err("setting the mode of", path))
}

/// Writes `payload.sha256` atomically.
fn write_sidecar(payload: &Path, sha256: &str) -> Result<(), BuildError> {
    let path = sidecar_path(payload);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?;
    tmp.write_all(sha256sum_line(sha256, payload).as_bytes())
        .map_err(io_err("writing", tmp.path()))?;
    make_readable(tmp.path())?;
    tmp.persist(&path)
        .map_err(|e| io_err("writing checksum file", &path)(e.error))?;
    Ok(())
}

/// Copies `src` to `dst` through a temporary file and rename, then writes
/// `dst.sha256`. Returns the size.
fn install_copy(src: &Path, dst: &Path, sha256: &str) -> Result<u64, BuildError> {
    let dir = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".payload-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io_err("creating a temporary file in", dir))?
        .into_temp_path();
    let size = fs::copy(src, &tmp).map_err(io_err("copying payload to", dst))?;
    make_readable(&tmp)?;
    tmp.persist(dst)
        .map_err(|e| io_err("moving payload to", dst)(e.error))?;
    write_sidecar(dst, sha256)?;
    Ok(size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::payload::spec::Distribution;

    #[test]
    fn explicit_mirror_wins_over_host_sources() {
        let empty = tempfile::tempdir().unwrap();
        let mut spec = PayloadSpec::new(Distribution::Debian, "bookworm", None, &[]);
        assert!(resolve_mirror(&spec, empty.path()).is_err());
        spec.mirror = Some("http://m.example/debian/".into());
        assert_eq!(
            resolve_mirror(&spec, empty.path()).unwrap().uri,
            "http://m.example/debian"
        );
    }

    #[test]
    fn mirror_line_carries_the_keyring() {
        let spec = PayloadSpec::new(Distribution::Debian, "trixie", None, &[]);
        let m = Mirror {
            uri: "http://m.example/debian".into(),
            signed_by: Some("/k.gpg".into()),
        };
        assert_eq!(
            mirror_line(&spec, &m),
            "deb [signed-by=/k.gpg] http://m.example/debian trixie main"
        );
        assert_eq!(
            mirror_line(&spec, &Mirror::explicit("http://m.example/debian")),
            "http://m.example/debian"
        );
    }

    #[test]
    fn cache_hit_is_verified_and_copied_with_its_sidecar() {
        let dir = tempfile::tempdir().unwrap();
        let cached = dir.path().join("k.tar.zst");
        fs::write(&cached, b"payload bytes").unwrap();
        assert_eq!(verified_sha256(&cached), None, "no sidecar, no reuse");
        let (sha, size) = hash_file(&cached).unwrap();
        write_sidecar(&cached, &sha).unwrap();
        assert_eq!(verified_sha256(&cached), Some(sha.clone()));

        let out = dir.path().join("out/base.tar.zst");
        fs::create_dir_all(out.parent().unwrap()).unwrap();
        assert_eq!(install_copy(&cached, &out, &sha).unwrap(), size);
        assert_eq!(fs::read(&out).unwrap(), b"payload bytes");
        assert_eq!(
            fs::read_to_string(sidecar_path(&out)).unwrap(),
            format!("{sha}  base.tar.zst\n")
        );

        fs::write(&cached, b"payload bytez").unwrap();
        assert_eq!(
            verified_sha256(&cached),
            None,
            "tampered cache is not reused"
        );
    }
}
