//! Streaming extraction of a payload into the target root: one pass from the
//! compressed file through sha256, zstd and tar, with no temporary copy.
//! Three threads form a pipeline: read + hash, decompress, unpack.
//!
//! The checksum is only known at the end of the stream, after files were
//! written: on [`ExtractError::Corrupt`] (and any error for which
//! [`ExtractError::target_written`] is true) the caller must treat the target
//! as garbage and wipe it.

use std::fs::{self, File};
use std::io::{self, BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::time::TimeVal;
use sha2::{Digest, Sha256};

use super::{parse_sha256sum, sidecar_path};

/// Decompressed bytes are handed over in chunks of this size ...
const CHUNK: usize = 128 << 10;
/// ... with at most this many in flight (bounds memory to a few MiB).
const DEPTH: usize = 8;

/// Where the expected checksum comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedSha256 {
    /// `PAYLOAD.sha256` next to the payload (`sha256sum` format).
    Sidecar,
    /// A digest the caller already has; `origin` names where it came from for
    /// the error message (e.g. "state.json").
    Value { sha256: String, origin: String },
}

/// What an extraction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractReport {
    /// Compressed bytes read (the payload's size).
    pub bytes: u64,
    /// Bytes of tar stream after decompression.
    pub unpacked_bytes: u64,
    /// Archive entries written (files, directories, links, nodes).
    pub entries: u64,
    /// Hex sha256 of the payload file, verified against the expected one.
    pub sha256: String,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(
        "reading checksum file {}: `op-dbus-install payload` writes it next to the payload; copy it along",
        path.display()
    )]
    ChecksumFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{origin} does not hold a sha256 digest (64 hex digits, `sha256sum` format)")]
    ChecksumFormat { origin: String },
    #[error("opening payload {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("creating the target root {}", path.display())]
    Target {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading payload {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The payload's bytes are not the ones that were built. Files were
    /// already written: the target must be wiped.
    #[error(
        "payload {} is corrupt: sha256 is {actual}, expected {expected} (from {origin}); rebuild it or copy it again",
        payload.display()
    )]
    Corrupt {
        payload: PathBuf,
        actual: String,
        expected: String,
        origin: String,
    },
    #[error(
        "payload {} is not a valid zstd stream although its sha256 matches: it was built broken; rebuild it",
        payload.display()
    )]
    Decompress {
        payload: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unpacking payload {} into {}", payload.display(), target.display())]
    Unpack {
        payload: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ExtractError {
    /// True when files may already be in the target: the caller must wipe it
    /// (for an install: the whole disk) before trying again.
    pub fn target_written(&self) -> bool {
        matches!(
            self,
            ExtractError::Read { .. }
                | ExtractError::Corrupt { .. }
                | ExtractError::Decompress { .. }
                | ExtractError::Unpack { .. }
        )
    }
}

/// Reads the expected digest from `PAYLOAD.sha256`.
pub fn read_sidecar(payload: &Path) -> Result<String, ExtractError> {
    let path = sidecar_path(payload);
    let text = fs::read_to_string(&path).map_err(|source| ExtractError::ChecksumFile {
        path: path.clone(),
        source,
    })?;
    parse_sha256sum(&text).ok_or_else(|| ExtractError::ChecksumFormat {
        origin: path.display().to_string(),
    })
}

/// Extracts `payload` (tar.zst) into `target_root` in one streaming pass and
/// verifies its sha256 at the end of the stream. Permissions, ownership,
/// xattrs, mtimes, hard links, symlinks, device nodes and fifos are kept;
/// existing files are replaced. With `progress`, an indicatif bar shows bytes
/// and rate on stderr.
pub fn extract_payload(
    payload: &Path,
    expected: &ExpectedSha256,
    target_root: &Path,
    progress: bool,
) -> Result<ExtractReport, ExtractError> {
    let start = Instant::now();
    let (expected, origin) = match expected {
        ExpectedSha256::Sidecar => (
            read_sidecar(payload)?,
            sidecar_path(payload).display().to_string(),
        ),
        ExpectedSha256::Value { sha256, origin } => (
            parse_sha256sum(sha256).ok_or_else(|| ExtractError::ChecksumFormat {
                origin: origin.clone(),
            })?,
            origin.clone(),
        ),
    };
    let file = File::open(payload).map_err(|source| ExtractError::Open {
        path: payload.to_path_buf(),
        source,
    })?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    fs::create_dir_all(target_root).map_err(|source| ExtractError::Target {
        path: target_root.to_path_buf(),
        source,
    })?;
    let target = target_root
        .canonicalize()
        .map_err(|source| ExtractError::Target {
            path: target_root.to_path_buf(),
            source,
        })?;

    let bar = progress_bar(progress, size);
    let spawn_err = |source| ExtractError::Unpack {
        payload: payload.to_path_buf(),
        target: target.clone(),
        source,
    };
    let (raw_tx, raw_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH);
    let (raw_free_tx, raw_free_rx) = mpsc::channel::<Vec<u8>>();
    let (tar_tx, tar_rx) = mpsc::sync_channel::<Vec<u8>>(DEPTH);
    let (tar_free_tx, tar_free_rx) = mpsc::channel::<Vec<u8>>();
    let reader_bar = bar.clone();
    let reader = thread::Builder::new()
        .name("payload-read".into())
        .spawn(move || read_and_hash(file, &reader_bar, &raw_tx, &raw_free_rx))
        .map_err(spawn_err)?;
    let decoder = thread::Builder::new()
        .name("payload-decode".into())
        .spawn(move || {
            decode(
                ChannelReader::new(raw_rx, raw_free_tx),
                &tar_tx,
                &tar_free_rx,
            )
        })
        .map_err(spawn_err)?;

    let mut stream = ChannelReader::new(tar_rx, tar_free_tx);
    let unpacked = unpack(&mut stream, &target).and_then(|entries| {
        // Decode to the end so the whole file is checked, not only the tar part.
        io::copy(&mut stream, &mut io::sink())?;
        Ok(entries)
    });
    // Dropping a receiver stops the thread feeding it; the reader still
    // hashes the rest of the file on its own.
    drop(stream);
    let decoded = decoder.join().unwrap_or_else(|_| Decoded {
        unpacked_bytes: 0,
        result: Err(io::Error::other("the payload decoder thread panicked")),
    });
    let read = reader.join().unwrap_or_else(|_| ReadOutcome {
        sha256: String::new(),
        bytes: 0,
        result: Err(io::Error::other("the payload reader thread panicked")),
    });
    bar.finish_and_clear();

    if let Err(source) = read.result {
        return Err(ExtractError::Read {
            path: payload.to_path_buf(),
            source,
        });
    }
    if read.sha256 != expected {
        return Err(ExtractError::Corrupt {
            payload: payload.to_path_buf(),
            actual: read.sha256,
            expected,
            origin,
        });
    }
    if let Err(source) = decoded.result {
        return Err(ExtractError::Decompress {
            payload: payload.to_path_buf(),
            source,
        });
    }
    let entries = unpacked.map_err(|source| ExtractError::Unpack {
        payload: payload.to_path_buf(),
        target: target.clone(),
        source,
    })?;
    let report = ExtractReport {
        bytes: read.bytes,
        unpacked_bytes: decoded.unpacked_bytes,
        entries,
        sha256: read.sha256,
        elapsed: start.elapsed(),
    };
    tracing::debug!(?report, payload = %payload.display(), "payload extracted");
    Ok(report)
}

fn progress_bar(enabled: bool, size: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    let style = ProgressStyle::with_template(
        "extracting payload [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

/// What the reader thread saw: digest and size of the whole file.
struct ReadOutcome {
    sha256: String,
    bytes: u64,
    result: io::Result<()>,
}

/// Reader thread: reads the compressed file to its end, hashing and counting
/// every byte, and hands the chunks to the decoder while it takes them.
fn read_and_hash(
    mut file: File,
    bar: &ProgressBar,
    tx: &SyncSender<Vec<u8>>,
    free: &Receiver<Vec<u8>>,
) -> ReadOutcome {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut decoder_alive = true;
    let mut spare = Vec::new();
    let result = loop {
        let mut buf = free
            .try_recv()
            .unwrap_or_else(|_| std::mem::take(&mut spare));
        buf.resize(CHUNK, 0);
        let n = match file.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        };
        hasher.update(&buf[..n]);
        bytes += n as u64;
        bar.inc(n as u64);
        buf.truncate(n);
        if decoder_alive {
            if let Err(mpsc::SendError(back)) = tx.send(buf) {
                decoder_alive = false;
                spare = back;
            }
        } else {
            spare = buf;
        }
    };
    ReadOutcome {
        sha256: hex::encode(hasher.finalize()),
        bytes,
        result,
    }
}

/// What the decoder thread saw.
struct Decoded {
    unpacked_bytes: u64,
    /// Decompression failure (bad zstd data, or input cut short).
    result: io::Result<()>,
}

/// Decoder thread: decompresses the reader's chunks into chunks for the
/// unpacker, until the end of input or until the unpacker stops.
fn decode(input: ChannelReader, tx: &SyncSender<Vec<u8>>, free: &Receiver<Vec<u8>>) -> Decoded {
    let mut unpacked_bytes = 0u64;
    let result = (|| -> io::Result<()> {
        let mut decoder = zstd::Decoder::with_buffer(input)?;
        loop {
            let mut buf = free.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            while filled < CHUNK {
                match decoder.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            buf.truncate(filled);
            unpacked_bytes += filled as u64;
            if tx.send(buf).is_err() {
                return Ok(()); // the unpacker stopped; it reports why
            }
        }
    })();
    Decoded {
        unpacked_bytes,
        result,
    }
}

/// The receiving side of a chunk channel as a `BufRead`; drained buffers go
/// back to the sender for reuse.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    free: Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>, free: Sender<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            free,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.cur.len() {
            if let Ok(next) = self.rx.recv() {
                let done = std::mem::replace(&mut self.cur, next);
                let _ = self.free.send(done);
                self.pos = 0;
            }
        }
        Ok(&self.cur[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.cur.len());
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = buf.len().min(avail.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Unpacks the tar stream into `target` (canonical). Directories are applied
/// last, deepest first, so restrictive modes do not block their children;
/// device nodes and fifos, which the tar crate would write as plain files,
/// are made with mknod. Returns the number of entries.
fn unpack(stream: &mut ChannelReader, target: &Path) -> io::Result<u64> {
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut entries = 0u64;
    let mut directories = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        entries += 1;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => directories.push(entry),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                make_node(&entry, target)?;
            }
            _ => {
                if kind == tar::EntryType::Link {
                    // hard_link(2) does not replace an existing file.
                    if let Some(dst) = entry_destination(&entry.path()?, target) {
                        remove_non_dir(&dst)?;
                    }
                }
                entry.unpack_in(target).map_err(|e| with_path(e, &entry))?;
            }
        }
    }
    directories.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut dir in directories {
        dir.unpack_in(target).map_err(|e| with_path(e, &dir))?;
    }
    Ok(entries)
}

fn with_path<R: Read>(err: io::Error, entry: &tar::Entry<'_, R>) -> io::Error {
    io::Error::new(
        err.kind(),
        format!(
            "{} (entry {})",
            err,
            String::from_utf8_lossy(&entry.path_bytes())
        ),
    )
}

/// `target/path` with `/`, `.` dropped; `None` for paths with `..` or empty.
fn entry_destination(path: &Path, target: &Path) -> Option<PathBuf> {
    let mut dst = target.to_path_buf();
    for part in path.components() {
        match part {
            Component::Normal(p) => dst.push(p),
            Component::ParentDir => return None,
            _ => {}
        }
    }
    (dst != target).then_some(dst)
}

fn remove_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs::remove_file(path),
        _ => Ok(()),
    }
}

/// Creates a character/block device or fifo entry with its mode, owner and mtime.
fn make_node<R: Read>(entry: &tar::Entry<'_, R>, target: &Path) -> io::Result<()> {
    let path = entry.path()?;
    let Some(dst) = entry_destination(&path, target) else {
        return Ok(());
    };
    let (Some(parent), Some(name)) = (dst.parent(), dst.file_name()) else {
        return Ok(());
    };
    fs::create_dir_all(parent)?;
    let parent = parent.canonicalize()?;
    if !parent.starts_with(target) {
        return Err(io::Error::other(format!(
            "entry {} would be created outside the target through a symlink",
            path.display()
        )));
    }
    let dst = parent.join(name);
    let header = entry.header();
    let mode = header.mode()? & 0o7777;
    let (kind, dev) = match header.entry_type() {
        tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
        other => (
            if other == tar::EntryType::Char {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            },
            makedev(
                u64::from(header.device_major()?.unwrap_or(0)),
                u64::from(header.device_minor()?.unwrap_or(0)),
            ),
        ),
    };
    remove_non_dir(&dst)?;
    let ctx = |e: io::Error, what: &str| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", dst.display()))
    };
    mknod(&dst, kind, Mode::from_bits_truncate(mode), dev)
        .map_err(|e| ctx(e.into(), "creating node"))?;
    let uid = u32::try_from(header.uid()?).map_err(io::Error::other)?;
    let gid = u32::try_from(header.gid()?).map_err(io::Error::other)?;
    std::os::unix::fs::lchown(&dst, Some(uid), Some(gid)).map_err(|e| ctx(e, "chown"))?;
    fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).map_err(|e| ctx(e, "chmod"))?;
    let mtime = TimeVal::new(i64::try_from(header.mtime()?).unwrap_or(0), 0);
    nix::sys::stat::lutimes(&dst, &mtime, &mtime).map_err(|e| ctx(e.into(), "setting mtime of"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn destinations_stay_inside_the_target() {
        let t = Path::new("/t");
        assert_eq!(
            entry_destination(Path::new("./usr/bin/x"), t),
            Some(PathBuf::from("/t/usr/bin/x"))
        );
        assert_eq!(
            entry_destination(Path::new("/etc/x"), t),
            Some(PathBuf::from("/t/etc/x"))
        );
        assert_eq!(entry_destination(Path::new("a/../../x"), t), None);
        assert_eq!(entry_destination(Path::new("./"), t), None);
    }

    #[test]
    fn only_errors_after_writing_ask_for_a_wipe() {
        let corrupt = ExtractError::Corrupt {
            payload: "p".into(),
            actual: "a".into(),
            expected: "b".into(),
            origin: "p.sha256".into(),
        };
        assert!(corrupt.target_written());
        let missing = ExtractError::ChecksumFormat { origin: "x".into() };
        assert!(!missing.target_written());
    }
}
