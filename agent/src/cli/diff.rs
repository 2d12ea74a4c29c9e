//! `op-dbus-agent diff STATE [--json]`: the actions an apply would take.

use std::path::PathBuf;
use std::process::ExitCode;

use super::query::{runtime, TargetArgs};
use super::Global;
use crate::engine::{ApplyOptions, DesiredState, Engine};

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
    let diffs = runtime()?.block_on(Engine::standard().diff(&ctx, &state))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diffs)?);
        return Ok(ExitCode::SUCCESS);
    }
    let total: usize = diffs.iter().map(|d| d.actions.len()).sum();
    for d in &diffs {
        for a in &d.actions {
            println!("{:<9} {}", d.plugin, a);
        }
    }
    println!("{total} action(s)");
    Ok(ExitCode::SUCCESS)
}
