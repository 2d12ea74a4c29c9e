//! `op-dbus-agent confirm`: keeps the transaction an `apply --confirm-timeout`
//! waits on. A new process decides by one rename (see `engine::confirm`), so
//! it never reports "confirmed" for a change that is then rolled back.

use std::process::ExitCode;

use super::Global;
use crate::engine::confirm::{self, Confirmation};
use crate::engine::transaction::format_time;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `{"confirmed": "..."}` on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    match confirm::confirm(&global.state_dir, None)? {
        Confirmation::Confirmed(t) if args.json => {
            println!(
                "{}",
                serde_json::json!({ "confirmed": t.description.trim(), "transaction": t.id })
            );
            Ok(ExitCode::SUCCESS)
        }
        Confirmation::Confirmed(t) => {
            println!("confirmed: transaction {} ({})", t.id, t.description);
            Ok(ExitCode::SUCCESS)
        }
        Confirmation::TooLate(t) => {
            eprintln!(
                "op-dbus-agent: too late: transaction {} ({}) had to be confirmed by {}; \
                 it is rolled back",
                t.id,
                t.description,
                format_time(t.deadline)
            );
            Ok(ExitCode::from(1))
        }
        Confirmation::Nothing => {
            eprintln!(
                "op-dbus-agent: no change is waiting for confirmation in {}",
                global.state_dir.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}
