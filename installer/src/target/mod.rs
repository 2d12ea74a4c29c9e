//! The installed system seen through its root directory: every file the
//! installer writes into or reads from the target goes through [`Root`],
//! which resolves paths beneath one directory fd ([`RootDir`],
//! `RESOLVE_IN_ROOT`): a symlink in the payload (`etc -> /`) resolves inside
//! the target as after a chroot, never onto the host. Tests use a temporary
//! directory; nothing here depends on the live system's paths.

mod chroot;
mod config;

pub use chroot::Chroot;
pub use config::*;

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use opdbus_common::rootfs::RootDir;

/// The root directory of the system being installed.
#[derive(Debug, Clone)]
pub struct Root {
    dir: Arc<RootDir>,
}

impl Root {
    /// Opens the target root (a directory; not followed if it is a symlink).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let rd = RootDir::open(dir)
            .with_context(|| format!("opening the target root {}", dir.display()))?;
        Ok(Root { dir: Arc::new(rd) })
    }

    /// The target root's path on the live system (for `chroot` and messages).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The handle every path is resolved beneath.
    pub fn rootdir(&self) -> &RootDir {
        &self.dir
    }

    /// Where `abs` of the installed system is on the live system, for
    /// messages and external tools only: never open it by this path.
    pub fn display_path(&self, abs: &str) -> PathBuf {
        self.dir.display_path(abs)
    }

    /// Writes a file atomically (random temp name, exact mode, rename),
    /// creating parent directories (0755).
    pub fn write(&self, abs: &str, data: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        self.dir
            .write_atomic(abs, data.as_ref(), mode, None)
            .with_context(|| format!("writing {}", self.display_path(abs).display()))
    }

    /// [`Root::write`] with an owner set through the new file's fd.
    pub fn write_owned(
        &self,
        abs: &str,
        data: impl AsRef<[u8]>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        self.dir
            .write_atomic(abs, data.as_ref(), mode, Some((uid, gid)))
            .with_context(|| format!("writing {}", self.display_path(abs).display()))
    }

    /// Reads a regular file (a final symlink is refused).
    pub fn read(&self, abs: &str) -> Result<Vec<u8>> {
        self.dir
            .read(abs)
            .with_context(|| format!("reading {}", self.display_path(abs).display()))
    }

    pub fn read_to_string(&self, abs: &str) -> Result<String> {
        self.dir
            .read_to_string(abs)
            .with_context(|| format!("reading {}", self.display_path(abs).display()))
    }

    /// Whether something (a symlink included) is at `abs`.
    pub fn exists(&self, abs: &str) -> bool {
        self.dir.exists(abs)
    }

    /// Whether `abs` is a directory (symlinks on the way resolve inside).
    pub fn is_dir(&self, abs: &str) -> bool {
        self.dir.open_dir(abs).is_ok()
    }

    /// Replaces whatever file or symlink is at `abs` with a symlink to `target`.
    pub fn symlink(&self, target: &str, abs: &str) -> Result<()> {
        self.dir
            .symlink(target, abs)
            .with_context(|| format!("linking {} -> {target}", self.display_path(abs).display()))
    }

    /// Removes a file or symlink; a missing one is fine.
    pub fn remove_file(&self, abs: &str) -> Result<()> {
        self.dir
            .remove_file(abs)
            .with_context(|| format!("removing {}", self.display_path(abs).display()))
    }

    /// Creates `abs` and missing parents (new ones get `mode`).
    pub fn create_dir_all(&self, abs: &str, mode: u32) -> Result<()> {
        self.dir
            .create_dir_all(abs, mode)
            .with_context(|| format!("creating {}", self.display_path(abs).display()))
    }

    /// Sets the mode of the directory `abs` (itself, not a symlink) exactly.
    pub fn set_dir_mode(&self, abs: &str, mode: u32) -> Result<()> {
        self.dir
            .set_dir_mode(abs, mode)
            .with_context(|| format!("setting the mode of {}", self.display_path(abs).display()))
    }

    /// Names in the directory `abs`.
    pub fn read_dir(&self, abs: &str) -> Result<Vec<OsString>> {
        self.dir
            .read_dir(abs)
            .with_context(|| format!("reading {}", self.display_path(abs).display()))
    }

    /// Opens `abs`, which must be a real directory of the target (its last
    /// component not a symlink), for tools that need a path: see
    /// [`TargetDir::path`].
    pub fn open_dir(&self, abs: &str) -> Result<TargetDir> {
        let fd = self.dir.open_dir_nofollow(abs).with_context(|| {
            format!(
                "opening {} (it must be a directory of the target, not a symlink)",
                self.display_path(abs).display()
            )
        })?;
        Ok(TargetDir {
            fd,
            shown: self.display_path(abs),
        })
    }
}

/// A directory of the target held open, for path-based tools and APIs
/// (btrfs subvolumes, mount): [`TargetDir::path`] names this very directory
/// through `/proc/<pid>/fd/N`, so no symlink swapped in later redirects it.
#[derive(Debug)]
pub struct TargetDir {
    fd: OwnedFd,
    shown: PathBuf,
}

impl TargetDir {
    /// `/proc/<this process>/fd/N`: valid for this process and its children
    /// while `self` lives.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    /// The directory's path on the live system, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}
