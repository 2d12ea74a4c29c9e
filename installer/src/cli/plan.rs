//! `op-dbus-install plan STATE [--disk NAME=TARGET]… [--json]`: the resolved
//! install plan. Pure: reads the state and the targets' sizes, writes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::disk::layout::UuidSource;
use crate::disk::TargetMap;
use crate::plan::{install_plan, parse_disk_arg, resolve_targets, InstallPlan};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state file.
    pub state: PathBuf,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub map: DiskMap,
}

/// How the state's device keys map to this machine's disks; shared by
/// `plan`, `disk` and `install`.
#[derive(Debug, Clone, clap::Args)]
pub struct DiskMap {
    /// Map a device key of the state to a block device or image file.
    #[arg(long = "disk", value_name = "NAME=TARGET", value_parser = parse_disk_arg)]
    pub disks: Vec<(String, PathBuf)>,
    /// Derive UUIDs from this seed instead of at random (reproducible plans).
    #[arg(long, hide = true)]
    pub uuid_seed: Option<u64>,
    #[arg(long, hide = true, default_value = "/sys")]
    pub sys: PathBuf,
    #[arg(long, hide = true, default_value = "/dev")]
    pub dev: PathBuf,
}

impl DiskMap {
    /// Every device key of `state` resolved to a target.
    pub fn targets(&self, state: &opdbus_state::State) -> Result<TargetMap> {
        resolve_targets(state, &self.disks, &self.sys, &self.dev)
    }

    pub fn uuids(&self) -> UuidSource {
        self.uuid_seed
            .map_or(UuidSource::Random, UuidSource::Seeded)
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = opdbus_state::load(&args.state)?;
    for w in &loaded.warnings {
        eprintln!("{}", w.render(&loaded.file));
    }
    let targets = args.map.targets(&loaded.state)?;
    let plan = install_plan(&loaded.state, targets, args.map.uuids())?;
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
                match (&p.filesystem, &p.member_of) {
                    (Some(f), _) => match &f.raid {
                        Some(r) => format!(
                            "{} uuid={} {} over {}",
                            f.kind.as_str(),
                            f.uuid,
                            r.profile.name(),
                            r.devices.join(", ")
                        ),
                        None => format!("{} uuid={}", f.kind.as_str(), f.uuid),
                    },
                    (None, Some(of)) => format!("btrfs member of {of}"),
                    (None, None) => String::new(),
                }
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
