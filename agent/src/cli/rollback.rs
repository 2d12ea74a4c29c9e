//! `op-dbus-agent rollback --to-block N [--dry-run] [--secrets-from FILE]...`:
//! re-applies the desired state block N recorded, as a new transaction
//! (see [`crate::rollback`]); `--dry-run` prints the actions and changes nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use super::query::{runtime, TargetArgs};
use super::Global;
use crate::engine::ApplyOptions;
use crate::rollback::{plan, Secrets};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The block whose desired state to apply again (see `audit list`).
    #[arg(long, value_name = "N")]
    pub to_block: i64,
    /// Print the actions the rollback would take; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// A JSON file (e.g. the state file of then) holding secrets the block
    /// recorded only as fingerprints; repeatable. The host's /etc/shadow
    /// and /etc/wireguard/*.conf below --root are always searched.
    #[arg(long, value_name = "FILE")]
    pub secrets_from: Vec<PathBuf>,
    /// Print the run report (or, with --dry-run, the actions) as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::gather(&args.target.root, &args.secrets_from)?;
    let plan = plan(&global.state_dir, args.to_block, &secrets)?;
    for r in &plan.restored {
        eprintln!(
            "op-dbus-agent: restored {} ({}) from {}",
            r.pointer,
            r.fingerprint,
            r.source.display()
        );
    }
    let engine = crate::plugins::standard();
    if args.dry_run {
        let ctx = args.target.context(global, ApplyOptions::default());
        let diffs = runtime()?.block_on(engine.diff(&ctx, &plan.state))?;
        if args.json {
            let out = serde_json::json!({
                "block": plan.block,
                "state_hash": plan.state.hash,
                "plugins": diffs,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(ExitCode::SUCCESS);
        }
        let total: usize = diffs.iter().map(|d| d.actions.len()).sum();
        for d in &diffs {
            for a in &d.actions {
                println!("{:<9} {}", d.plugin, a);
            }
        }
        println!(
            "{total} action(s) to roll back to block {} (state {}); nothing was changed",
            plan.block, plan.state.hash
        );
        return Ok(ExitCode::SUCCESS);
    }
    crate::engine::state_dir::secure_existing(&global.state_dir)?;
    let mut ctx = args.target.context(global, ApplyOptions::default());
    ctx.audit_note = Some(format!(
        "rollback to block {} (state {})",
        plan.block, plan.state.hash
    ));
    let report = runtime()?.block_on(engine.apply(&ctx, &plan.state));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        super::apply::print_report(&report);
        println!(
            "rolled back to the state of block {} ({})",
            plan.block, plan.state.hash
        );
    }
    Ok(ExitCode::from(report.exit_code()))
}
