//! Mount guards: each mount made by the installer is a [`MountGuard`]; a
//! [`MountStack`] unmounts in reverse order on `close()` or, best effort, on
//! drop, so every error path leaves the host clean.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting {source_dev} on {target} ({fstype}, {options})")]
    Mount {
        source_dev: PathBuf,
        target: PathBuf,
        fstype: String,
        options: String,
        #[source]
        source: nix::Error,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("creating mount point {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Generic (VFS) mount options are flags to mount(2), not filesystem data:
/// btrfs rejects `noatime` in its data string with EINVAL.
fn vfs_flag(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "ro" => MsFlags::MS_RDONLY,
        "noatime" => MsFlags::MS_NOATIME,
        "nodiratime" => MsFlags::MS_NODIRATIME,
        "relatime" => MsFlags::MS_RELATIME,
        "strictatime" => MsFlags::MS_STRICTATIME,
        "nosuid" => MsFlags::MS_NOSUID,
        "nodev" => MsFlags::MS_NODEV,
        "noexec" => MsFlags::MS_NOEXEC,
        "sync" => MsFlags::MS_SYNCHRONOUS,
        "dirsync" => MsFlags::MS_DIRSYNC,
        "lazytime" => MsFlags::MS_LAZYTIME,
        _ => return None,
    })
}

/// One mount; unmounted when closed or dropped.
#[derive(Debug)]
pub struct MountGuard {
    target: Option<PathBuf>,
}

impl MountGuard {
    /// Mounts `dev` on `target` (created if missing).
    pub fn mount(
        dev: &Path,
        target: &Path,
        fstype: &str,
        options: &str,
    ) -> Result<Self, MountError> {
        std::fs::create_dir_all(target).map_err(|source| MountError::Mkdir {
            path: target.to_path_buf(),
            source,
        })?;
        let mut flags = MsFlags::empty();
        let rest: Vec<&str> = options
            .split(',')
            .filter(|o| match vfs_flag(o) {
                Some(f) => {
                    flags |= f;
                    false
                }
                None => !matches!(
                    *o,
                    "" | "rw" | "defaults" | "auto" | "nofail" | "x-systemd.automount"
                ),
            })
            .collect();
        let data = rest.join(",");
        let data = (!data.is_empty()).then_some(data.as_str());
        nix::mount::mount(Some(dev), target, Some(fstype), flags, data).map_err(|source| {
            MountError::Mount {
                source_dev: dev.to_path_buf(),
                target: target.to_path_buf(),
                fstype: fstype.into(),
                options: options.into(),
                source,
            }
        })?;
        tracing::debug!(dev = %dev.display(), target = %target.display(), "mounted");
        Ok(MountGuard {
            target: Some(target.to_path_buf()),
        })
    }

    pub fn target(&self) -> &Path {
        self.target.as_deref().unwrap_or(Path::new(""))
    }

    fn release(&mut self) -> Result<(), MountError> {
        if let Some(t) = self.target.take() {
            if let Err(source) = unmount_when_idle(&t) {
                // Put it back so drop can still try a lazy unmount.
                self.target = Some(t.clone());
                return Err(MountError::Unmount { target: t, source });
            }
        }
        Ok(())
    }

    /// Unmounts, reporting failure.
    pub fn close(mut self) -> Result<(), MountError> {
        self.release()
    }
}

/// Unmounts `t`, waiting up to about 2 s while it is busy: a probe
/// (blkid, udev) or a child process forked by another thread while a
/// descriptor into the mount was open (libbtrfsutil opens without
/// `O_CLOEXEC`) holds it for a moment. Busy after that is an error.
fn unmount_when_idle(t: &Path) -> nix::Result<()> {
    let mut delay = std::time::Duration::from_millis(10);
    let mut waited = std::time::Duration::ZERO;
    loop {
        match nix::mount::umount2(t, MntFlags::empty()) {
            Err(nix::errno::Errno::EBUSY) if waited < std::time::Duration::from_secs(2) => {
                std::thread::sleep(delay);
                waited += delay;
                delay = (delay * 2).min(std::time::Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(error = %e, "unmounting; detaching lazily");
            if let Some(t) = self.target.take() {
                let _ = nix::mount::umount2(&t, MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Mounts in the order made; released in reverse.
#[derive(Debug, Default)]
pub struct MountStack {
    guards: Vec<MountGuard>,
}

impl MountStack {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, g: MountGuard) {
        self.guards.push(g);
    }

    pub fn targets(&self) -> Vec<PathBuf> {
        self.guards
            .iter()
            .map(|g| g.target().to_path_buf())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Unmounts everything, innermost first; the first failure is returned
    /// after trying all.
    pub fn close(mut self) -> Result<(), MountError> {
        let mut first = None;
        while let Some(g) = self.guards.pop() {
            if let Err(e) = g.close() {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for MountStack {
    fn drop(&mut self) {
        while let Some(g) = self.guards.pop() {
            drop(g);
        }
    }
}
