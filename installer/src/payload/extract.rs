//! Extraction of a payload into the target root: one streaming pass from the
//! compressed file through zstd and tar, with no temporary copy. Three
//! threads form a pipeline: read (+ hash for streams), decompress, unpack.
//!
//! A local payload file is hashed before anything is written; only a stream
//! (a pipe) is checked at its end. Every entry is written beneath one
//! directory fd of the target ([`RootDir`], `RESOLVE_IN_ROOT`): symlinks in
//! the payload or already in the target resolve inside it as after a chroot,
//! final components are never followed, and owner, mode, mtime and xattrs are
//! set through fds or `*at` calls that do not follow symlinks. Extraction
//! stops when the payload outgrows the target ([`ExtractLimits`]).
//!
//! On an error for which [`ExtractError::target_written`] is true the caller
//! must treat the target as garbage and wipe it.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, FchmodatFlags, Mode,
    SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use opdbus_common::rootfs::RootDir;
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

/// How far a payload may expand. The defaults fit any base system; a
/// payload beyond them is refused with what it wanted and the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Bytes of file content in all; `None`: the free space of the target's
    /// filesystem when extraction starts (statvfs).
    pub max_bytes: Option<u64>,
    /// Archive entries in all (each is an inode in the target).
    pub max_entries: u64,
    /// Bytes of an entry's path or link target.
    pub max_path: usize,
    /// Decompressed bytes per compressed byte of a payload file, above
    /// [`RATIO_FLOOR`] (a zstd bomb expands thousands of times).
    pub max_ratio: u64,
}

/// Small payloads may always expand to this many bytes.
pub const RATIO_FLOOR: u64 = 256 << 20;

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_bytes: None,
            max_entries: 2_000_000,
            max_path: 4096,
            max_ratio: 64,
        }
    }
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
    /// The payload's bytes are not the ones that were built. For a payload
    /// file this is found before anything is written (`written` is false);
    /// for a stream only at its end.
    #[error(
        "payload {} is corrupt: sha256 is {actual}, expected {expected} (from {origin}); rebuild it or copy it again",
        payload.display()
    )]
    Corrupt {
        payload: PathBuf,
        actual: String,
        expected: String,
        origin: String,
        written: bool,
    },
    #[error(
        "payload {} changed while it was being extracted (its size or times differ from when it was verified); \
         make sure nothing writes to it and run again",
        payload.display()
    )]
    Changed { payload: PathBuf },
    #[error(
        "payload {} is not a valid zstd stream although its sha256 matches: it was built broken; rebuild it",
        payload.display()
    )]
    Decompress {
        payload: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The payload would outgrow the target (a bomb, or a target too small).
    #[error(
        "payload {} outgrows the target {}: {what}; give the target more space or rebuild the payload",
        payload.display(), target.display()
    )]
    TooBig {
        payload: PathBuf,
        target: PathBuf,
        what: String,
    },
    /// An entry no payload built by `op-dbus-install payload` has.
    #[error(
        "payload {} has an entry '{entry}' that {reason}; refusing it (it was not built by `op-dbus-install payload`)",
        payload.display()
    )]
    Refused {
        payload: PathBuf,
        entry: String,
        reason: String,
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
        match self {
            ExtractError::Corrupt { written, .. } => *written,
            ExtractError::Read { .. }
            | ExtractError::Changed { .. }
            | ExtractError::Decompress { .. }
            | ExtractError::TooBig { .. }
            | ExtractError::Refused { .. }
            | ExtractError::Unpack { .. } => true,
            ExtractError::ChecksumFile { .. }
            | ExtractError::ChecksumFormat { .. }
            | ExtractError::Open { .. }
            | ExtractError::Target { .. } => false,
        }
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

/// [`extract_payload_with`] and the default [`ExtractLimits`].
pub fn extract_payload(
    payload: &Path,
    expected: &ExpectedSha256,
    target_root: &Path,
    progress: bool,
) -> Result<ExtractReport, ExtractError> {
    extract_payload_with(
        payload,
        expected,
        target_root,
        progress,
        &ExtractLimits::default(),
    )
}

/// The identity and times of the payload file, compared after extraction.
fn file_stamp(m: &fs::Metadata) -> (u64, u64, u64, i64, i64, i64, i64) {
    (
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// Extracts `payload` (tar.zst) into `target_root` in one streaming pass.
/// A payload file is verified against its sha256 first; a stream at its
/// end. Permissions, ownership, xattrs, mtimes, hard links, symlinks,
/// device nodes and fifos are kept; existing files are replaced. With
/// `progress`, an indicatif bar shows bytes and rate on stderr.
pub fn extract_payload_with(
    payload: &Path,
    expected: &ExpectedSha256,
    target_root: &Path,
    progress: bool,
    limits: &ExtractLimits,
) -> Result<ExtractReport, ExtractError> {
    let start = Instant::now();
    let (expected, origin) = resolve_expected(payload, expected)?;
    let read_err = |source| ExtractError::Read {
        path: payload.to_path_buf(),
        source,
    };
    let mut file = File::open(payload).map_err(|source| ExtractError::Open {
        path: payload.to_path_buf(),
        source,
    })?;
    let meta = file.metadata().map_err(read_err)?;
    // A regular file is hashed before anything is written; the same open
    // file is then extracted, and its stamp checked again at the end.
    let verified = if meta.is_file() {
        let actual = hash_to_end(&mut file).map_err(read_err)?;
        if actual != expected {
            return Err(ExtractError::Corrupt {
                payload: payload.to_path_buf(),
                actual,
                expected,
                origin,
                written: false,
            });
        }
        file.rewind().map_err(read_err)?;
        Some((actual, file_stamp(&meta)))
    } else {
        None
    };
    let size = if meta.is_file() { meta.len() } else { 0 };

    fs::create_dir_all(target_root).map_err(|source| ExtractError::Target {
        path: target_root.to_path_buf(),
        source,
    })?;
    let target_err = |source| ExtractError::Target {
        path: target_root.to_path_buf(),
        source,
    };
    let target = target_root.canonicalize().map_err(target_err)?;
    let root = RootDir::open(&target).map_err(target_err)?;
    let budget = Budget::new(&root, size, limits).map_err(target_err)?;

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
    let hash_stream = verified.is_none();
    let reader = thread::Builder::new()
        .name("payload-read".into())
        .spawn(move || read_and_hash(file, hash_stream, &reader_bar, &raw_tx, &raw_free_rx))
        .map_err(spawn_err)?;
    let max_stream = budget.max_stream;
    let decoder = thread::Builder::new()
        .name("payload-decode".into())
        .spawn(move || {
            decode(
                ChannelReader::new(raw_rx, raw_free_tx),
                max_stream,
                &tar_tx,
                &tar_free_rx,
            )
        })
        .map_err(spawn_err)?;

    let mut stream = ChannelReader::new(tar_rx, tar_free_tx);
    let mut unpacker = Unpacker::new(&root, budget);
    let unpacked = unpacker.unpack(&mut stream).and_then(|entries| {
        // Decode to the end so the whole file is checked, not only the tar
        // part (the decoder stops at the stream cap).
        io::copy(&mut stream, &mut io::sink()).map_err(Failure::Io)?;
        Ok(entries)
    });
    // Dropping a receiver stops the thread feeding it; the reader still
    // reads (and for a stream hashes) the rest on its own.
    drop(stream);
    let decoded = decoder.join().unwrap_or_else(|_| Decoded {
        unpacked_bytes: 0,
        capped: false,
        result: Err(io::Error::other("the payload decoder thread panicked")),
    });
    let read = reader.join().unwrap_or_else(|_| ReadOutcome {
        sha256: None,
        bytes: 0,
        end: None,
        result: Err(io::Error::other("the payload reader thread panicked")),
    });
    bar.finish_and_clear();

    read.result.map_err(read_err)?;
    let sha256 = match (verified, read.sha256) {
        (Some((sha, stamp)), _) => {
            if read.end.as_ref().map(file_stamp) != Some(stamp) {
                return Err(ExtractError::Changed {
                    payload: payload.to_path_buf(),
                });
            }
            sha
        }
        (None, Some(actual)) if actual == expected => actual,
        (None, actual) => {
            return Err(ExtractError::Corrupt {
                payload: payload.to_path_buf(),
                actual: actual.unwrap_or_default(),
                expected,
                origin,
                written: true,
            })
        }
    };
    let too_big = |what: String| ExtractError::TooBig {
        payload: payload.to_path_buf(),
        target: target.clone(),
        what,
    };
    if decoded.capped {
        return Err(too_big(format!(
            "it decompresses to more than {max_stream} bytes ({})",
            unpacker.budget.stream_limit_reason()
        )));
    }
    if let Err(source) = decoded.result {
        return Err(ExtractError::Decompress {
            payload: payload.to_path_buf(),
            source,
        });
    }
    let entries = unpacked.map_err(|f| match f {
        Failure::TooBig(what) => too_big(what),
        Failure::Refused { entry, reason } => ExtractError::Refused {
            payload: payload.to_path_buf(),
            entry,
            reason,
        },
        Failure::Io(source) => ExtractError::Unpack {
            payload: payload.to_path_buf(),
            target: target.clone(),
            source,
        },
    })?;
    let report = ExtractReport {
        bytes: read.bytes,
        unpacked_bytes: decoded.unpacked_bytes,
        entries,
        sha256,
        elapsed: start.elapsed(),
    };
    tracing::debug!(?report, payload = %payload.display(), "payload extracted");
    Ok(report)
}

/// The digest a payload must have, and where it was read from.
fn resolve_expected(
    payload: &Path,
    expected: &ExpectedSha256,
) -> Result<(String, String), ExtractError> {
    Ok(match expected {
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
    })
}

/// Checks a payload file against its digest without writing anything: the
/// install's pre-flight, so a corrupt payload is refused before the disk is
/// partitioned. A payload that is not a regular file (a pipe) can only be
/// checked while it is extracted, at its end.
pub fn verify_file(payload: &Path, expected: &ExpectedSha256) -> Result<(), ExtractError> {
    let (expected, origin) = resolve_expected(payload, expected)?;
    let mut file = File::open(payload).map_err(|source| ExtractError::Open {
        path: payload.to_path_buf(),
        source,
    })?;
    let read_err = |source| ExtractError::Read {
        path: payload.to_path_buf(),
        source,
    };
    if !file.metadata().map_err(read_err)?.is_file() {
        return Ok(());
    }
    let actual = hash_to_end(&mut file).map_err(read_err)?;
    if actual != expected {
        return Err(ExtractError::Corrupt {
            payload: payload.to_path_buf(),
            actual,
            expected,
            origin,
            written: false,
        });
    }
    Ok(())
}

fn hash_to_end(file: &mut File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hex::encode(hasher.finalize()))
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

/// What the reader thread saw: digest (of a stream) and size of the input.
struct ReadOutcome {
    sha256: Option<String>,
    bytes: u64,
    /// The file's metadata after its last byte was read.
    end: Option<fs::Metadata>,
    result: io::Result<()>,
}

/// Reader thread: reads the compressed input to its end, counting (and with
/// `hash`, hashing) every byte, and hands the chunks to the decoder while it
/// takes them.
fn read_and_hash(
    mut file: File,
    hash: bool,
    bar: &ProgressBar,
    tx: &SyncSender<Vec<u8>>,
    free: &Receiver<Vec<u8>>,
) -> ReadOutcome {
    let mut hasher = hash.then(Sha256::new);
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
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
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
        sha256: hasher.map(|h| hex::encode(h.finalize())),
        bytes,
        end: file.metadata().ok(),
        result,
    }
}

/// What the decoder thread saw.
struct Decoded {
    unpacked_bytes: u64,
    /// It stopped at the stream cap.
    capped: bool,
    /// Decompression failure (bad zstd data, or input cut short).
    result: io::Result<()>,
}

/// Decoder thread: decompresses the reader's chunks into chunks for the
/// unpacker, until the end of input, the stream cap, or the unpacker stops.
fn decode(
    input: ChannelReader,
    max_stream: u64,
    tx: &SyncSender<Vec<u8>>,
    free: &Receiver<Vec<u8>>,
) -> Decoded {
    let mut unpacked_bytes = 0u64;
    let mut capped = false;
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
            if unpacked_bytes > max_stream {
                capped = true;
                return Ok(());
            }
            if tx.send(buf).is_err() {
                return Ok(()); // the unpacker stopped; it reports why
            }
        }
    })();
    Decoded {
        unpacked_bytes,
        capped,
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

/// The limits of one extraction, resolved against the target and payload.
#[derive(Debug)]
struct Budget {
    /// Bytes of file content; why that much (for the message).
    max_bytes: u64,
    bytes_reason: String,
    /// Bytes of decompressed tar stream; the payload's size it derives from.
    max_stream: u64,
    compressed: u64,
    max_ratio: u64,
    max_entries: u64,
    max_path: usize,
}

impl Budget {
    fn new(root: &RootDir, compressed: u64, limits: &ExtractLimits) -> io::Result<Self> {
        let (max_bytes, bytes_reason) = match limits.max_bytes {
            Some(b) => (b, "the limit given".to_string()),
            None => {
                let st = nix::sys::statvfs::fstatvfs(root.as_fd()).map_err(io::Error::from)?;
                let free = st.blocks_available().saturating_mul(st.fragment_size());
                (
                    free,
                    "the free space of the target's filesystem".to_string(),
                )
            }
        };
        // Only a payload file has a known size to measure the ratio against.
        let max_stream = if compressed > 0 {
            compressed.saturating_mul(limits.max_ratio).max(RATIO_FLOOR)
        } else {
            u64::MAX
        };
        Ok(Budget {
            max_bytes,
            bytes_reason,
            max_stream,
            compressed,
            max_ratio: limits.max_ratio,
            max_entries: limits.max_entries,
            max_path: limits.max_path,
        })
    }

    fn stream_limit_reason(&self) -> String {
        format!(
            "{} times the payload's {} bytes, at least {RATIO_FLOOR}",
            self.max_ratio, self.compressed
        )
    }
}

/// Why unpacking stopped.
enum Failure {
    TooBig(String),
    Refused { entry: String, reason: String },
    Io(io::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Metadata of a directory entry, applied when everything else is written.
struct DirMeta {
    path: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// Writes entries beneath the target's directory fd.
struct Unpacker<'a> {
    root: &'a RootDir,
    budget: Budget,
    /// The last parent directory opened, reused while entries stay in it.
    parent: Option<(PathBuf, OwnedFd)>,
    dirs: Vec<DirMeta>,
    content: u64,
    buf: Vec<u8>,
}

fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn shown(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.chars().count() > 120 {
        let head: String = s.chars().take(120).collect();
        format!("{head}…")
    } else {
        s.into_owned()
    }
}

/// An interrupt request (SIGINT/SIGTERM), checked before every entry.
fn interrupted() -> Option<crate::interrupt::Interrupted> {
    crate::interrupt::interrupted()
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a RootDir, budget: Budget) -> Self {
        Unpacker {
            root,
            budget,
            parent: None,
            dirs: Vec::new(),
            content: 0,
            buf: vec![0u8; CHUNK],
        }
    }

    /// Unpacks the tar stream. Directories get their metadata last, deepest
    /// first, so restrictive modes do not block their children and their
    /// mtimes stay. Returns the number of entries.
    fn unpack(&mut self, stream: &mut ChannelReader) -> Result<u64, Failure> {
        let mut archive = tar::Archive::new(stream);
        let mut entries = 0u64;
        for entry in archive.entries()? {
            if let Some(i) = interrupted() {
                return Err(Failure::Io(io::Error::other(i)));
            }
            let mut entry = entry?;
            entries += 1;
            if entries > self.budget.max_entries {
                return Err(Failure::TooBig(format!(
                    "it has more than {} entries (the limit)",
                    self.budget.max_entries
                )));
            }
            let name = entry.path_bytes().into_owned();
            self.entry(&mut entry, &name).map_err(|f| match f {
                Failure::Io(e) => Failure::Io(io::Error::new(
                    e.kind(),
                    format!("entry {}: {e}", shown(&name)),
                )),
                Failure::Refused { reason, .. } => Failure::Refused {
                    entry: shown(&name),
                    reason,
                },
                other => other,
            })?;
        }
        self.parent = None;
        self.dirs
            .sort_by(|a, b| b.path.as_os_str().cmp(a.path.as_os_str()));
        for d in std::mem::take(&mut self.dirs) {
            self.apply_dir(&d).map_err(|e| {
                io::Error::new(e.kind(), format!("directory {}: {e}", d.path.display()))
            })?;
        }
        Ok(entries)
    }

    /// The entry's path relative to the target: `/`, `.` and empty
    /// components dropped, `..` refused.
    fn clean(&self, bytes: &[u8], what: &str) -> Result<PathBuf, Failure> {
        if bytes.len() > self.budget.max_path {
            return Err(Failure::Refused {
                entry: String::new(),
                reason: format!(
                    "has a {what} longer than {} bytes ({} bytes)",
                    self.budget.max_path,
                    bytes.len()
                ),
            });
        }
        let mut out = PathBuf::new();
        for part in bytes.split(|&b| b == b'/') {
            match part {
                b"" | b"." => {}
                b".." => {
                    return Err(Failure::Refused {
                        entry: String::new(),
                        reason: format!("has '..' in its {what}, which would leave the target"),
                    })
                }
                p => out.push(OsStr::from_bytes(p)),
            }
        }
        Ok(out)
    }

    /// The parent directory of `path` (opened, created when missing) and
    /// the final name.
    fn parent_of<'p>(&mut self, path: &'p Path) -> io::Result<(&OwnedFd, &'p OsStr)> {
        let name = path.file_name().unwrap_or_default();
        let parent = path.parent().unwrap_or(Path::new(""));
        let cached = match self.parent.take() {
            Some((p, fd)) if p == parent => (p, fd),
            _ => {
                let fd = match self.root.open_dir(parent) {
                    Ok(fd) => fd,
                    Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => {
                        self.root.create_dir_all(parent, 0o755)?;
                        self.root.open_dir(parent)?
                    }
                    Err(e) => return Err(e),
                };
                (parent.to_path_buf(), fd)
            }
        };
        let (_, fd) = self.parent.insert(cached);
        Ok((fd, name))
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &[u8],
    ) -> Result<(), Failure> {
        let path = self.clean(name, "path")?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode()? & 0o7777;
        let uid = u32::try_from(header.uid()?).map_err(io::Error::other)?;
        let gid = u32::try_from(header.gid()?).map_err(io::Error::other)?;
        let mtime = i64::try_from(header.mtime()?).unwrap_or(0);
        let xattrs = xattrs(entry)?;
        if path.as_os_str().is_empty() {
            // `./`: the target root itself.
            if kind == tar::EntryType::Directory {
                self.dirs.push(DirMeta {
                    path: PathBuf::from("."),
                    mode,
                    uid,
                    gid,
                    mtime,
                    xattrs,
                });
            }
            return Ok(());
        }
        // Whatever replaces `path` invalidates a cached parent beneath it.
        if matches!(&self.parent, Some((p, _)) if p.starts_with(&path)) {
            self.parent = None;
        }
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let ts = TimeSpec::new(mtime, 0);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                let total = self.content.saturating_add(size);
                if total > self.budget.max_bytes || size > self.budget.max_stream {
                    let (limit, why) = if total > self.budget.max_bytes {
                        (self.budget.max_bytes, self.budget.bytes_reason.clone())
                    } else {
                        (self.budget.max_stream, self.budget.stream_limit_reason())
                    };
                    return Err(Failure::TooBig(format!(
                        "entry '{}' has {size} bytes, which with the {} bytes before it exceeds \
                         {limit} bytes ({why})",
                        shown(name),
                        self.content
                    )));
                }
                self.content = total;
                let mut buf = std::mem::take(&mut self.buf);
                let written = self.write_file(entry, &path, &mut buf, owner, mode, &ts, &xattrs);
                self.buf = buf;
                written?;
            }
            tar::EntryType::Directory => {
                let (pfd, fname) = self.parent_of(&path)?;
                match mkdirat(pfd.as_fd(), fname, Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        let st = fstatat(pfd.as_fd(), fname, AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(errno)?;
                        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                            unlinkat(pfd.as_fd(), fname, UnlinkatFlags::NoRemoveDir)
                                .map_err(errno)?;
                            mkdirat(pfd.as_fd(), fname, Mode::from_bits_truncate(0o700))
                                .map_err(errno)?;
                        }
                    }
                    Err(e) => return Err(errno(e).into()),
                }
                self.dirs.push(DirMeta {
                    path,
                    mode,
                    uid,
                    gid,
                    mtime,
                    xattrs,
                });
            }
            tar::EntryType::Symlink => {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                if link.len() > self.budget.max_path {
                    return Err(Failure::Refused {
                        entry: String::new(),
                        reason: format!(
                            "has a link target longer than {} bytes ({} bytes)",
                            self.budget.max_path,
                            link.len()
                        ),
                    });
                }
                let (pfd, fname) = self.parent_of(&path)?;
                replace(pfd, fname, |fd, n| {
                    symlinkat(OsStr::from_bytes(&link), fd, n)
                })?;
                fchownat(
                    pfd.as_fd(),
                    fname,
                    owner.0,
                    owner.1,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(errno)?;
                set_xattrs_at(pfd, fname, &xattrs)?;
                utimensat(
                    pfd.as_fd(),
                    fname,
                    &ts,
                    &ts,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(errno)?;
            }
            tar::EntryType::Link => {
                let link = entry.link_name_bytes().unwrap_or_default().into_owned();
                let src = self.clean(&link, "link target")?;
                let (src_parent, src_name) = match (src.parent(), src.file_name()) {
                    (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
                    _ => {
                        return Err(Failure::Refused {
                            entry: String::new(),
                            reason: "is a hard link to the target root".into(),
                        })
                    }
                };
                // Beneath the target like every other path; not created.
                let sfd = self.root.open_dir(&src_parent)?;
                let (pfd, fname) = self.parent_of(&path)?;
                replace(pfd, fname, |fd, n| {
                    linkat(sfd.as_fd(), src_name.as_os_str(), fd, n, AtFlags::empty())
                })?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    k => (
                        if k == tar::EntryType::Char {
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
                let (pfd, fname) = self.parent_of(&path)?;
                replace(pfd, fname, |fd, n| {
                    mknodat(fd, n, sflag, Mode::from_bits_truncate(mode), dev)
                })?;
                fchownat(
                    pfd.as_fd(),
                    fname,
                    owner.0,
                    owner.1,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(errno)?;
                fchmodat(
                    pfd.as_fd(),
                    fname,
                    Mode::from_bits_truncate(mode),
                    FchmodatFlags::NoFollowSymlink,
                )
                .map_err(errno)?;
                set_xattrs_at(pfd, fname, &xattrs)?;
                utimensat(
                    pfd.as_fd(),
                    fname,
                    &ts,
                    &ts,
                    UtimensatFlags::NoFollowSymlink,
                )
                .map_err(errno)?;
            }
            tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(Failure::Refused {
                    entry: String::new(),
                    reason: format!(
                        "has tar entry type {:?}, which a base system does not use",
                        other
                    ),
                })
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        buf: &mut [u8],
        owner: (Option<Uid>, Option<Gid>),
        mode: u32,
        ts: &TimeSpec,
        xattrs: &[(OsString, Vec<u8>)],
    ) -> Result<(), Failure> {
        let (pfd, fname) = self.parent_of(path)?;
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut fd = None;
        replace(pfd, fname, |dir, n| {
            fd = Some(openat(dir, n, flags, Mode::from_bits_truncate(0o600))?);
            Ok(())
        })?;
        let mut file = File::from(fd.ok_or_else(|| io::Error::other("no file descriptor"))?);
        loop {
            let n = match entry.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            file.write_all(&buf[..n])?;
        }
        fchown(file.as_fd(), owner.0, owner.1).map_err(errno)?;
        // After chown, which clears set-id bits.
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(errno)?;
        for (k, v) in xattrs {
            fset_xattr(&file, k, v)?;
        }
        futimens(file.as_fd(), ts, ts).map_err(errno)?;
        Ok(())
    }

    /// Owner, mode, xattrs and mtime of a directory, through its fd. A
    /// directory a later entry replaced (by a symlink, a file) is skipped.
    fn apply_dir(&self, d: &DirMeta) -> io::Result<()> {
        let fd = match self.root.open_dir_nofollow(&d.path) {
            Ok(fd) => fd,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(x) if x == Errno::ENOTDIR as i32 || x == Errno::ELOOP as i32 || x == Errno::ENOENT as i32
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        fchown(
            fd.as_fd(),
            Some(Uid::from_raw(d.uid)),
            Some(Gid::from_raw(d.gid)),
        )
        .map_err(errno)?;
        fchmod(fd.as_fd(), Mode::from_bits_truncate(d.mode)).map_err(errno)?;
        let file = File::from(fd);
        for (k, v) in &d.xattrs {
            fset_xattr(&file, k, v)?;
        }
        let ts = TimeSpec::new(d.mtime, 0);
        futimens(file.as_fd(), &ts, &ts).map_err(errno)
    }
}

/// Creates `name` in `dir` with `make`; when something is already there
/// (not a non-empty directory) it is removed first, as tar replaces files.
fn replace(
    dir: &OwnedFd,
    name: &OsStr,
    mut make: impl FnMut(std::os::fd::BorrowedFd<'_>, &OsStr) -> nix::Result<()>,
) -> io::Result<()> {
    match make(dir.as_fd(), name) {
        Err(Errno::EEXIST) => {}
        other => return other.map_err(errno),
    }
    match unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => {}
        Err(Errno::EISDIR) => {
            unlinkat(dir.as_fd(), name, UnlinkatFlags::RemoveDir).map_err(errno)?
        }
        Err(e) => return Err(errno(e)),
    }
    make(dir.as_fd(), name).map_err(errno)
}

/// `SCHILY.xattr.*` pax records of an entry.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let Some(exts) = entry.pax_extensions()? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for ext in exts {
        let ext = ext?;
        if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
            out.push((
                OsStr::from_bytes(key).to_os_string(),
                ext.value_bytes().to_vec(),
            ));
        }
    }
    Ok(out)
}

fn fset_xattr(file: &File, key: &OsStr, value: &[u8]) -> io::Result<()> {
    use xattr::FileExt;
    file.set_xattr(key, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting xattr {}: {e}", key.to_string_lossy()),
        )
    })
}

/// Xattrs of a symlink or node, which cannot be opened for writing: by the
/// parent's fd path (`/proc/self/fd/N/name`, final component not followed).
fn set_xattrs_at(dir: &OwnedFd, name: &OsStr, xattrs: &[(OsString, Vec<u8>)]) -> io::Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let path = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    for (k, v) in xattrs {
        xattr::set(&path, k, v).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("setting xattr {}: {e}", k.to_string_lossy()),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_after_writing_ask_for_a_wipe() {
        let corrupt = |written| ExtractError::Corrupt {
            payload: "p".into(),
            actual: "a".into(),
            expected: "b".into(),
            origin: "p.sha256".into(),
            written,
        };
        assert!(corrupt(true).target_written());
        assert!(!corrupt(false).target_written());
        let missing = ExtractError::ChecksumFormat { origin: "x".into() };
        assert!(!missing.target_written());
    }
}
