//! The installed system seen through its root directory: every file the
//! installer writes into the target goes through [`Root`], so tests use a
//! temporary directory and nothing here depends on the live system's paths.

mod chroot;
mod config;

pub use chroot::Chroot;
pub use config::*;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The root directory of the system being installed.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Maps an absolute path of the installed system (`/etc/hostname`) to the
    /// live system's path of that file.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.dir.join(abs.trim_start_matches('/'))
    }

    /// Writes a file atomically (temp file + rename) with the given mode,
    /// creating parent directories.
    pub fn write(&self, abs: &str, data: impl AsRef<[u8]>, mode: u32) -> Result<()> {
        let path = self.path(abs);
        let parent = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.opdbus-tmp",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(data.as_ref())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        // The umask may have narrowed the mode given to open().
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode of {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming into {}", path.display()))?;
        Ok(())
    }

    pub fn read_to_string(&self, abs: &str) -> Result<String> {
        let path = self.path(abs);
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    pub fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    /// Replaces whatever is at `abs` with a symlink to `target`.
    pub fn symlink(&self, target: &str, abs: &str) -> Result<()> {
        let path = self.path(abs);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        match fs::symlink_metadata(&path) {
            Ok(_) => {
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
        }
        std::os::unix::fs::symlink(target, &path)
            .with_context(|| format!("linking {} -> {target}", path.display()))
    }
}
