//! The btrfs calls templates and containers need, through `libbtrfsutil`:
//! create, snapshot, read-only flag, delete, and a subvolume's UUIDs.

use std::path::{Path, PathBuf};

/// A failed btrfs operation on a path.
#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    #[error("{path} is not on btrfs: templates and containers are btrfs subvolumes; put {what} on the btrfs filesystem that holds the layout")]
    NotBtrfs { path: PathBuf, what: &'static str },
    #[error("snapshotting {source_path} to {target}: they are on different btrfs filesystems; put --lxc-path on the filesystem that holds the layout's @templates")]
    CrossDevice {
        source_path: PathBuf,
        target: PathBuf,
    },
    #[error("{what} {path}")]
    Call {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn call(what: &'static str, path: &Path) -> impl FnOnce(libbtrfsutil::Error) -> BtrfsError {
    let path = path.to_path_buf();
    move |e| BtrfsError::Call {
        what,
        path,
        source: e.os_error(),
    }
}

/// What a subvolume is: its UUID, the UUID it was snapshotted from, and
/// whether it is read-only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Subvolume {
    pub uuid: String,
    pub parent_uuid: Option<String>,
    pub read_only: bool,
}

/// Whether `path` (or its nearest existing parent) is on btrfs.
pub fn is_btrfs(path: &Path) -> bool {
    let mut p = Some(path);
    while let Some(dir) = p {
        if let Ok(st) = nix::sys::statfs::statfs(dir) {
            return st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC;
        }
        p = dir.parent();
    }
    false
}

/// Refuses clearly when `path` is not on btrfs.
pub fn require_btrfs(path: &Path, what: &'static str) -> Result<(), BtrfsError> {
    if is_btrfs(path) {
        Ok(())
    } else {
        Err(BtrfsError::NotBtrfs {
            path: path.to_path_buf(),
            what,
        })
    }
}

/// The subvolume at `path`, or `None` when `path` is missing or not a
/// subvolume's root.
pub fn subvolume(path: &Path) -> Option<Subvolume> {
    if !path.is_dir() || !matches!(libbtrfsutil::is_subvolume(path), Ok(true)) {
        return None;
    }
    let info = libbtrfsutil::subvolume_info(path).ok()?;
    Some(Subvolume {
        uuid: info.uuid().hyphenated().to_string(),
        parent_uuid: info.parent_uuid().map(|u| u.hyphenated().to_string()),
        read_only: libbtrfsutil::subvolume_read_only(path).unwrap_or(false),
    })
}

pub fn create(path: &Path) -> Result<(), BtrfsError> {
    libbtrfsutil::create_subvolume(path).map_err(call("creating subvolume", path))
}

/// A writable snapshot of `source` at `target` (whose parent must exist).
pub fn snapshot(source: &Path, target: &Path) -> Result<(), BtrfsError> {
    libbtrfsutil::CreateSnapshotOptions::new()
        .create(source, target)
        .map_err(|e| {
            if e.errno() == libc::EXDEV {
                BtrfsError::CrossDevice {
                    source_path: source.to_path_buf(),
                    target: target.to_path_buf(),
                }
            } else {
                call("snapshotting into", target)(e)
            }
        })
}

pub fn set_read_only(path: &Path, read_only: bool) -> Result<(), BtrfsError> {
    libbtrfsutil::set_subvolume_read_only(path, read_only)
        .map_err(call("setting the read-only flag of subvolume", path))
}

/// Deletes the subvolume at `path` (not recursively: a subvolume nested in
/// it makes this fail rather than vanish).
pub fn delete(path: &Path) -> Result<(), BtrfsError> {
    libbtrfsutil::delete_subvolume(path).map_err(call("deleting subvolume", path))
}
