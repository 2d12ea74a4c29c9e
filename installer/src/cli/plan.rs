//! `op-dbus-install plan STATE [--disk NAME=TARGET]… [--json]`: the resolved
//! install plan. Pure: reads the state and the targets' sizes, writes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::disk::layout::UuidSource;
use crate::plan::{install_plan, parse_disk_arg, resolve_targets, InstallPlan};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state file.
    pub state: PathBuf,
    /// Map a device key of the state to a block device or image file.
    #[arg(long = "disk", value_name = "NAME=TARGET", value_parser = parse_disk_arg)]
    pub disks: Vec<(String, PathBuf)>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Derive UUIDs from this seed instead of at random (reproducible plans).
    #[arg(long, hide = true)]
    pub uuid_seed: Option<u64>,
    #[arg(long, hide = true, default_value = "/sys")]
    pub sys: PathBuf,
    #[arg(long, hide = true, default_value = "/dev")]
    pub dev: PathBuf,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = opdbus_state::load(&args.state)?;
    for w in &loaded.warnings {
        eprintln!("{}", w.render(&loaded.file));
    }
    let targets = resolve_targets(&loaded.state, &args.disks, &args.sys, &args.dev)?;
    let uuids = args
        .uuid_seed
        .map_or(UuidSource::Random, UuidSource::Seeded);
    let plan = install_plan(&loaded.state, targets, uuids)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render(&plan));
    }
    Ok(ExitCode::SUCCESS)
}

/// The plan for people: devices, partitions with byte ranges, filesystems,
/// subvolumes, mounts in order, fstab.
pub fn render(plan: &InstallPlan) -> String {
    let mut s = format!(
        "Install {} {} as {:?} firmware, host {}\n",
        plan.distribution, plan.suite, plan.firmware, plan.hostname
    );
    for dev in &plan.disk.devices {
        let target = plan
            .targets
            .get(&dev.key)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        s.push_str(&format!(
            "\n{} -> {} ({:?}, {} bytes)\n",
            dev.key, target, dev.table, dev.size
        ));
        for p in &dev.partitions {
            s.push_str(&format!(
                "  {:<3} {:>14} .. {:<14} {:>8} MiB  {:<9} {}\n",
                p.number,
                p.start,
                p.end(),
                p.size / (1 << 20),
                format!("{:?}", p.role).to_lowercase(),
                p.filesystem
                    .as_ref()
                    .map(|f| format!("{} uuid={}", f.kind.as_str(), f.uuid))
                    .unwrap_or_default()
            ));
            if let Some(fs) = &p.filesystem {
                for sv in &fs.subvolumes {
                    let mut props = Vec::new();
                    if let Some(c) = &sv.compression {
                        props.push(format!("compression={c}"));
                    }
                    if sv.nodatacow {
                        props.push("nodatacow".into());
                    }
                    s.push_str(&format!(
                        "        subvolume {} {}\n",
                        sv.name,
                        props.join(" ")
                    ));
                }
            }
        }
    }
    s.push_str("\nmounts (in order):\n");
    for m in &plan.disk.mounts {
        s.push_str(&format!(
            "  {:<24} {}\n",
            m.path.display(),
            m.option_string()
        ));
    }
    s.push_str("\nfstab:\n");
    s.push_str(&plan.fstab);
    s
}
