//! Running a tool inside the target: bind-mounts /dev, /proc, /sys (and
//! /run) into it for the duration and unmounts them in reverse order, on
//! success and on every error path. The mount points are real directories
//! of the target, opened beneath its root: a payload's `dev -> /somewhere`
//! cannot move a bind mount onto the host.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use opdbus_common::Task;

use super::Root;

/// Bind mounts that make a chroot usable; released on drop.
#[derive(Debug)]
pub struct Chroot {
    root: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Chroot {
    pub fn enter(root: &Root) -> Result<Self> {
        let mut c = Chroot {
            root: root.dir().to_path_buf(),
            mounted: Vec::new(),
        };
        for dir in ["dev", "proc", "sys", "run"] {
            let abs = format!("/{dir}");
            root.create_dir_all(&abs, 0o755)?;
            let point = root.open_dir(&abs)?;
            let target = point.shown().to_path_buf();
            let src = Path::new("/").join(dir);
            // Mounted on the directory held open, not on a path looked up again.
            mount(
                Some(&src),
                &point.path(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting {} on {}", src.display(), target.display()))?;
            c.mounted.push(target.clone());
            // Recursive binds must not propagate unmounts back to the host.
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("making {} a slave mount", target.display()))?;
        }
        Ok(c)
    }

    /// A command that runs inside the target.
    pub fn task(&self, program: &str) -> Task {
        Task::new("chroot").arg(&self.root).arg(program)
    }

    /// Unmounts everything; reports the first failure.
    pub fn close(mut self) -> Result<()> {
        self.release()
    }

    fn release(&mut self) -> Result<()> {
        let mut first = Ok(());
        while let Some(dir) = self.mounted.pop() {
            if let Err(e) = umount2(&dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                if first.is_ok() {
                    first = Err(e).with_context(|| format!("unmounting {}", dir.display()));
                }
            }
        }
        first
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("{e:#}");
        }
    }
}
