//! `op-dbus-install disk STATE --disk NAME=TARGET… [--yes] [--dry-run]
//! [--mount-at DIR]`: only the disk phase. Without `--mount-at` everything is
//! unmounted and detached before exiting.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::disk::{execute, ExecOptions};
use crate::plan::install_plan;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state file.
    pub state: PathBuf,
    /// Allow wiping what is on the targets.
    #[arg(long)]
    pub yes: bool,
    /// Replace filesystems of the planned type too (needs --yes); by default
    /// they are kept and their UUIDs used.
    #[arg(long)]
    pub reformat: bool,
    /// Print the plan and what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave the installed system's tree mounted here.
    #[arg(long)]
    pub mount_at: Option<PathBuf>,
    /// Print the report (and with --dry-run the plan) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub map: super::plan::DiskMap,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = opdbus_state::load(&args.state)?;
    for w in &loaded.warnings {
        eprintln!("{}", w.render(&loaded.file));
    }
    let targets = args.map.targets(&loaded.state)?;
    let mut plan = install_plan(&loaded.state, targets, args.map.uuids())?;
    // Without --mount-at the tree is still mounted (to create subvolumes and
    // check them) in a private temporary folder, then released.
    let tmp = tempfile::tempdir()?;
    let mount_at = args
        .mount_at
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let exec = execute(
        &plan.disk,
        &plan.targets,
        &ExecOptions {
            consent: args.yes,
            reformat: args.reformat,
            dry_run: args.dry_run,
            mount_at: Some(mount_at),
            ..Default::default()
        },
    )?;
    if args.dry_run {
        // The plan as it would run: kept filesystems with their UUIDs.
        plan.disk = exec.plan.clone();
        plan.fstab = crate::disk::fstab(&plan.disk);
        if !args.json {
            print!("{}", super::plan::render(&plan));
        }
    }
    let mounted_at = exec.mounted.as_ref().and(args.mount_at.as_ref());
    if args.json {
        let out = serde_json::json!({
            "plan": args.dry_run.then_some(&plan),
            "report": &exec.report,
            "mounted_at": mounted_at,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", exec.report);
    }
    if let Some(m) = exec.mounted {
        if let Some(dir) = &args.mount_at {
            if !args.json {
                println!("mounted at {}", dir.display());
            }
            // Leave it mounted: forget the guards on purpose.
            std::mem::forget(m);
        } else {
            m.close()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
