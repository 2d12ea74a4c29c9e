//! What the wizard offers from this machine: whole disks with the reason a
//! disk may not be chosen (running system, live medium, mounted, read-only),
//! and network interfaces. `sys`/`dev` are injectable so tests fake a machine.

use std::collections::BTreeSet;
use std::path::Path;

use crate::disk::blockdev;
use crate::inventory::{self, DiskInfo};

/// One disk as the target-disk question lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub disk: DiskInfo,
    /// Why it cannot be chosen; `None` when it can.
    pub blocked: Option<String>,
}

impl Candidate {
    pub fn selectable(&self) -> bool {
        self.blocked.is_none()
    }

    /// One line of at most 78 columns: name, size, model, serial, by-id.
    pub fn line(&self) -> String {
        let d = &self.disk;
        let mut s = format!("{:<8} {:>9}", d.name, human(d.size));
        if let Some(m) = &d.model {
            s.push_str(&format!("  {m}"));
        }
        if let Some(sn) = &d.serial {
            s.push_str(&format!("  s/n {sn}"));
        }
        if let Some(id) = d.by_id.first().and_then(|p| p.file_name()) {
            s.push_str(&format!("  {}", id.to_string_lossy()));
        }
        if let Some(why) = &self.blocked {
            s = format!(
                "{}  [{why}]",
                clip(&s, 78usize.saturating_sub(why.len() + 4))
            );
        }
        clip(&s, 78)
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('~');
        t
    }
}

/// Bytes in binary units with one decimal (`931.5G`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{v:.0}{}", UNITS[i])
    } else {
        format!("{v:.1}{}", UNITS[i])
    }
}

/// Disk names (kernel names) in use by the running system: `/`, the live
/// medium, and anything mounted. Best effort: unreadable sources are skipped.
fn busy_disks() -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let root = blockdev::running_system_disks().unwrap_or_default();
    let entries = blockdev::mounts().unwrap_or_default();
    let mut live = BTreeSet::new();
    for mp in ["/run/live/medium", "/lib/live/mount/medium"] {
        live.extend(blockdev::disks_at_mountpoint(&entries, mp));
    }
    let mounted = entries
        .iter()
        .filter_map(blockdev::mount_device)
        .flat_map(|n| blockdev::disks_of(&n))
        .collect();
    (root, live, mounted)
}

/// The machine's whole disks, each marked with why it may not be chosen.
pub fn candidates(sys: &Path, dev: &Path) -> Vec<Candidate> {
    let (root, live, mounted) = busy_disks();
    inventory::disks(sys, dev)
        .into_iter()
        .map(|disk| {
            let blocked = if root.contains(&disk.name) {
                Some("running system".to_string())
            } else if live.contains(&disk.name) {
                Some("live medium".to_string())
            } else if mounted.contains(&disk.name) {
                Some("mounted".to_string())
            } else if disk.read_only {
                Some("read-only".to_string())
            } else {
                None
            };
            Candidate { disk, blocked }
        })
        .collect()
}

/// Network interfaces under `sys/class/net`, without `lo` and virtual
/// devices the kernel lists under `devices/virtual` when that is visible.
pub fn nics(sys: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(sys.join("class/net")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo" && !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(512 << 20), "512M");
        assert_eq!(human(1 << 30), "1G");
        assert_eq!(human(1_000_204_886_016), "931.5G");
        assert_eq!(human(100), "100B");
    }

    #[test]
    fn lines_fit_80_columns() {
        let c = Candidate {
            disk: DiskInfo {
                name: "nvme0n1".into(),
                path: "/dev/nvme0n1".into(),
                size: 2 << 40,
                model: Some("A very long model name that goes on and on and on".into()),
                serial: Some("SERIAL-1234567890".into()),
                by_id: vec!["/dev/disk/by-id/nvme-A_very_long_model_SERIAL".into()],
                removable: false,
                read_only: false,
            },
            blocked: Some("running system".into()),
        };
        let l = c.line();
        assert!(l.chars().count() <= 78, "{l}");
        assert!(l.ends_with("[running system]"), "{l}");
    }
}
