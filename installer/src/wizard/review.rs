//! The final review: the disk plan exactly as the disk engine lays it out for
//! the chosen disk's size (partitions with offsets, filesystems, subvolumes,
//! mounts), or a summary from the state when the plan cannot be computed.

use std::collections::BTreeMap;
use std::fmt::Write;

use opdbus_state::model::{PartitionType, State};

use super::machine::human;
use crate::disk::layout::UuidSource;
use crate::disk::plan::DiskPlan;

/// The disk plan for `state` with the given disk sizes (device key → bytes).
pub fn disk_plan(state: &State, sizes: &BTreeMap<String, u64>) -> anyhow::Result<DiskPlan> {
    let spec = crate::plan::layout_spec(state, UuidSource::Seeded(0))?;
    Ok(crate::disk::plan_layout(&spec, sizes)?)
}

/// Lines (at most 78 columns each) describing the disk plan.
pub fn render_plan(plan: &DiskPlan) -> String {
    let mut out = String::new();
    for d in &plan.devices {
        let _ = writeln!(out, "{} ({:?}, {}):", d.key, d.table, human(d.size));
        for p in &d.partitions {
            let fs = p
                .filesystem
                .as_ref()
                .map(|f| f.kind.as_str())
                .unwrap_or("-");
            let _ = writeln!(
                out,
                "  {:<14} {:>8} at {:>8}  {:<9} {}",
                p.key,
                human(p.size),
                human(p.start),
                format!("{:?}", p.role).to_lowercase(),
                fs
            );
            if let Some(f) = &p.filesystem {
                for sv in &f.subvolumes {
                    let c = sv
                        .compression
                        .as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default();
                    let _ = writeln!(out, "      subvolume {}{c}", sv.name);
                }
            }
        }
    }
    let _ = writeln!(out, "Mounts:");
    for m in &plan.mounts {
        let _ = writeln!(
            out,
            "  {:<18} {} {}",
            m.path.display(),
            m.partition,
            m.option_string()
        );
    }
    out
}

/// A summary from the state alone (sizes as written, no offsets).
pub fn render_state_summary(state: &State) -> String {
    let mut out = String::new();
    let Some(s) = &state.plugins.storage else {
        return "(no storage section)\n".into();
    };
    for (key, d) in &s.devices {
        let _ = writeln!(out, "{key} ({:?}):", d.partition_table);
        for (i, p) in d.partitions.iter().enumerate() {
            let n = p.number.unwrap_or(i as u32 + 1);
            let kind = match p.kind {
                PartitionType::Efi => "efi",
                PartitionType::Linux => "linux",
                PartitionType::Swap => "swap",
                PartitionType::BiosBoot => "bios_boot",
            };
            let fs = p
                .filesystem
                .map(|f| format!("{f:?}").to_lowercase())
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<14} {:>9}  {kind:<9} {fs} {}",
                opdbus_state::model::partition_path(key, n),
                p.size.to_string(),
                p.mount.as_deref().unwrap_or("")
            );
        }
    }
    for (part, svs) in &s.btrfs_subvolumes {
        for sv in svs {
            let _ = writeln!(
                out,
                "  {part} subvolume {} {}",
                sv.name,
                sv.mount.as_deref().unwrap_or("")
            );
        }
    }
    out
}
