//! `op-dbus-agent diff STATE [--json]`: the actions an apply would take, and
//! the parts of the state this version would not apply ("not applied").

use std::path::PathBuf;
use std::process::ExitCode;

use super::query::{runtime, TargetArgs};
use super::Global;
use crate::engine::{ApplyOptions, DesiredState};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desired state.
    pub state: PathBuf,
    /// The actions as JSON (per plugin).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let state = DesiredState::load(&args.state)?;
    let ctx = args.target.context(global, ApplyOptions::default());
    let engine = crate::plugins::standard();
    let diffs = runtime()?.block_on(engine.diff(&ctx, &state))?;
    let mut not_applied = engine.not_applied(&state.state);
    for d in &diffs {
        not_applied.extend(d.not_applied.iter().cloned());
    }
    if args.json {
        let out = serde_json::json!({ "plugins": diffs, "not_applied": not_applied });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let total: usize = diffs.iter().map(|d| d.actions.len()).sum();
    for d in &diffs {
        for a in &d.actions {
            println!("{:<9} {}", d.plugin, a);
        }
    }
    let lines: Vec<String> = not_applied.iter().map(ToString::to_string).collect();
    super::apply::print_not_applied(&lines);
    println!("{total} action(s), {} part(s) not applied", lines.len());
    Ok(ExitCode::SUCCESS)
}
