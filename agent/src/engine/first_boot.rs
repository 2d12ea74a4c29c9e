//! The first-boot marker `<state-dir>/first-boot.done`: holds the machine id
//! it was written under, so a re-installation (new /etc/machine-id) runs the
//! first reconcile again while a reboot does not.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

pub const MARKER_FILE: &str = "first-boot.done";

pub struct FirstBoot {
    marker: PathBuf,
    machine_id: String,
}

impl FirstBoot {
    /// Reads `<root>/etc/machine-id` (empty when absent).
    pub fn new(state_dir: &Path, root: &Path) -> Self {
        let machine_id = std::fs::read_to_string(root.join("etc/machine-id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Self {
            marker: state_dir.join(MARKER_FILE),
            machine_id,
        }
    }

    pub fn marker_path(&self) -> &Path {
        &self.marker
    }

    /// True when the marker exists and was written under this machine id.
    pub fn is_done(&self) -> bool {
        std::fs::read_to_string(&self.marker)
            .map(|s| s.trim() == self.machine_id)
            .unwrap_or(false)
    }

    pub fn mark_done(&self) -> anyhow::Result<()> {
        let dir = self.marker.parent().unwrap_or(Path::new("."));
        super::state_dir::write(
            dir,
            MARKER_FILE,
            format!("{}\n", self.machine_id).as_bytes(),
        )
        .with_context(|| format!("writing the first-boot marker {}", self.marker.display()))
    }
}
