//! `/etc/fstab` of the installed system, generated from the plan: every
//! filesystem named by UUID, btrfs mounts with `subvol=`, swap lines last.

use super::plan::{DiskPlan, FsKind};

/// The fstab text for the plan's mounts and swap partitions.
pub fn fstab(plan: &DiskPlan) -> String {
    let mut out = String::from("# /etc/fstab: written by op-dbus-install\n");
    out.push_str("# <file system> <mount point> <type> <options> <dump> <pass>\n");
    for m in &plan.mounts {
        let mut options = m.option_string();
        let pass = match m.fstype {
            FsKind::Btrfs => 0,
            FsKind::Ext4 if m.path.as_os_str() == "/" => 1,
            _ => 2,
        };
        if m.fstype == FsKind::Vfat && m.options.is_empty() {
            options = "umask=0077".into();
        }
        out.push_str(&format!(
            "UUID={} {} {} {} 0 {}\n",
            m.uuid,
            m.path.display(),
            m.fstype.as_str(),
            options,
            pass
        ));
    }
    for d in &plan.devices {
        for p in &d.partitions {
            if let Some(fs) = &p.filesystem {
                if fs.kind == FsKind::Swap {
                    out.push_str(&format!("UUID={} none swap sw 0 0\n", fs.uuid));
                }
            }
        }
    }
    out
}
