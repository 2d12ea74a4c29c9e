//! `op-dbus-install validate FILE... [--strict]`: prints one line per
//! diagnostic (`FILE:LINE:COL: /json/pointer: message`) and a summary per
//! file on stdout; exit 1 on any error (or warning with --strict).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// State files to check.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Treat warnings (malformed SSH keys, a root nobody can log in as) as errors.
    #[arg(long)]
    pub strict: bool,
    /// Print `{"ok": bool, "lines": [...]}` on stdout instead of the lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = opdbus_state::check_files(&args.files, args.strict);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        for line in &report.lines {
            println!("{line}");
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
