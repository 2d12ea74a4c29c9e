//! Loop devices for image files: attached (with partition scanning) only when
//! a filesystem must be made or mounted; the guard removes the partition
//! nodes it made and detaches on `close()` or, best effort, on drop.

use std::path::{Path, PathBuf};

use opdbus_common::{Task, TaskError};

/// An attached loop device; detached when closed or dropped.
#[derive(Debug)]
pub struct LoopGuard {
    device: Option<PathBuf>,
    /// Device nodes we created with mknod for its partitions.
    nodes: Vec<PathBuf>,
}

impl LoopGuard {
    /// Attaches `image` to a free loop device (`losetup --find --show
    /// --partscan`).
    pub fn attach(image: &Path) -> Result<Self, TaskError> {
        let out = Task::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(image)
            .read()?;
        let device = PathBuf::from(out.trim());
        tracing::debug!(device = %device.display(), image = %image.display(), "attached loop device");
        Ok(LoopGuard {
            device: Some(device),
            nodes: Vec::new(),
        })
    }

    /// The loop device path (`/dev/loop3`).
    pub fn path(&self) -> &Path {
        self.device.as_deref().unwrap_or(Path::new(""))
    }

    /// The kernel name (`loop3`).
    pub fn name(&self) -> String {
        self.path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Remembers a node to remove before detaching.
    pub fn own_node(&mut self, node: PathBuf) {
        self.nodes.push(node);
    }

    fn release(&mut self) -> Result<(), TaskError> {
        for n in self.nodes.drain(..) {
            let _ = std::fs::remove_file(n);
        }
        if let Some(dev) = self.device.take() {
            Task::new("losetup").arg("--detach").arg(&dev).run()?;
            // While another process still has it open, the kernel only marks
            // it for autoclear: wait until it is really gone.
            let name = dev
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let backing = Path::new("/sys/block").join(name).join("loop/backing_file");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while backing.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if backing.exists() {
                tracing::warn!(device = %dev.display(), "loop device still busy; it detaches when released");
            }
            tracing::debug!(device = %dev.display(), "detached loop device");
        }
        Ok(())
    }

    /// Detaches, reporting failure.
    pub fn close(mut self) -> Result<(), TaskError> {
        self.release()
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!(error = %e, "detaching loop device");
        }
    }
}
