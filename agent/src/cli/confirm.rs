//! `op-dbus-agent confirm`: keeps a change applied with `--confirm-timeout`.

use std::process::ExitCode;

use super::Global;
use crate::engine::confirm;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `{"confirmed": "..."}` on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    match confirm::confirm(&global.state_dir)? {
        Some(what) if args.json => {
            println!("{}", serde_json::json!({ "confirmed": what.trim() }));
            Ok(ExitCode::SUCCESS)
        }
        Some(what) => {
            println!("confirmed: {}", what.trim());
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "op-dbus-agent: no change is waiting for confirmation in {}",
                global.state_dir.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}
