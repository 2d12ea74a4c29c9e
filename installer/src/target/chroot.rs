//! Running a tool inside the target: bind-mounts /dev, /proc, /sys (and
//! /run) into it for the duration and unmounts them in reverse order, on
//! success and on every error path.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use opdbus_common::Task;

/// Bind mounts that make a chroot usable; released on drop.
#[derive(Debug)]
pub struct Chroot {
    root: PathBuf,
    mounted: Vec<PathBuf>,
}

impl Chroot {
    pub fn enter(root: &Path) -> Result<Self> {
        let mut c = Chroot {
            root: root.to_path_buf(),
            mounted: Vec::new(),
        };
        for dir in ["dev", "proc", "sys", "run"] {
            let target = root.join(dir);
            std::fs::create_dir_all(&target)
                .with_context(|| format!("creating {}", target.display()))?;
            let src = Path::new("/").join(dir);
            mount(
                Some(&src),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting {} on {}", src.display(), target.display()))?;
            // Recursive binds must not propagate unmounts back to the host.
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("making {} a slave mount", target.display()))?;
            c.mounted.push(target);
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
            if let Err(e) = umount2(&dir, MntFlags::MNT_DETACH) {
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
