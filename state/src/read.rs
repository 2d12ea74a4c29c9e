//! Reading a state file safely: only regular files (a symlink to one is
//! fine), opened with `O_NONBLOCK` so a FIFO cannot hang the caller, and at
//! most [`MAX_STATE_BYTES`] so `/dev/zero` cannot exhaust memory.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The largest state file accepted (4 MiB; real states are a few KiB).
pub const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open the file")]
    Open(#[source] std::io::Error),
    #[error("not a regular file but a {0}; give the path of a state.json file")]
    NotRegular(&'static str),
    #[error(
        "larger than the limit of {limit} bytes (4 MiB); a state.json is a few KiB, check the path"
    )]
    TooLarge { limit: u64 },
    #[error("cannot read the file")]
    Io(#[source] std::io::Error),
    #[error("not UTF-8 text (byte offset {0}); save the state as UTF-8")]
    NotUtf8(usize),
}

fn kind_name(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Reads the state file at `path` (see the module docs for the limits).
pub fn read_state_text(path: &Path) -> Result<String, ReadError> {
    read_limited(path, MAX_STATE_BYTES)
}

/// Reads a regular file of at most `limit` bytes as UTF-8.
pub fn read_limited(path: &Path, limit: u64) -> Result<String, ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // A FIFO opens at once instead of waiting for a writer; the type check
        // below refuses it before any read.
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(ReadError::Open)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_name(meta.file_type())));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after fstat: read at most one byte past the limit.
    (&file as &File)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { limit });
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
}
