//! `op-dbus-install wizard [--from STATE] [--output FILE]`: the interactive
//! editor that writes a valid state.json (logic in `crate::wizard`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::wizard::{self, Outcome};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Start from this state: every question defaults to its value, and
    /// everything the wizard does not ask about is kept as it is.
    #[arg(long, value_name = "STATE")]
    pub from: Option<PathBuf>,
    /// Where to write the state (atomically, mode 0600).
    #[arg(long, value_name = "FILE", default_value = "state.json")]
    pub output: PathBuf,
    /// sysfs root to read disks and NICs from (tests).
    #[arg(long, value_name = "DIR", default_value = "/sys", hide = true)]
    pub sys: PathBuf,
    /// /dev root to read by-id links from (tests).
    #[arg(long, value_name = "DIR", default_value = "/dev", hide = true)]
    pub dev: PathBuf,
    /// tz database to check timezones against.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/usr/share/zoneinfo",
        hide = true
    )]
    pub zoneinfo: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (opts_sys, opts_dev) = (args.sys.clone(), args.dev.clone());
    let opts = wizard::Options {
        from: args.from,
        output: args.output,
        sys: args.sys,
        dev: args.dev,
        zoneinfo: args.zoneinfo,
    };
    match wizard::run(&opts)? {
        Outcome::Written { .. } => Ok(ExitCode::SUCCESS),
        Outcome::Install { path, key, disk } => {
            let disk_arg = format!("{key}={}", disk.display());
            let argv = [
                "op-dbus-install".to_string(),
                "install".to_string(),
                path.display().to_string(),
                "--disk".to_string(),
                disk_arg.clone(),
                "--yes".to_string(),
                "--sys".to_string(),
                opts_sys.display().to_string(),
                "--dev".to_string(),
                opts_dev.display().to_string(),
            ];
            let cli = super::Cli::try_parse_from(&argv).map_err(|e| {
                anyhow::anyhow!(
                    "starting the install: {e}; run: op-dbus-install install {} --disk {disk_arg}",
                    path.display()
                )
            })?;
            super::run(cli)
        }
    }
}
