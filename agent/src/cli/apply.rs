//! `op-dbus-agent apply STATE [--dry-run] [--no-rollback] [--confirm-timeout N]
//! [--allow-unapplied] [--skip-ssh-confirm]`: applies, verifies and records
//! to the audit chain; exit 1 when a plugin failed, 3 when parts of the
//! state are not applied by this version (0 with `--allow-unapplied`). Run
//! over SSH, a firewall change that may cut the session off implies
//! `--confirm-timeout 120` (see `plugins::firewall::lockout`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::query::{runtime, TargetArgs};
use super::Global;
use crate::engine::{ApplyOptions, DesiredState, PluginOutcome, RunReport};
use crate::plugins::firewall::{lockout, FirewallPlugin};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The desired state.
    pub state: PathBuf,
    /// Plan only: print the actions, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Take no checkpoints: a failed apply is not rolled back (debugging).
    #[arg(long)]
    pub no_rollback: bool,
    /// Keep the whole change only if `op-dbus-agent confirm` runs within N
    /// seconds; otherwise (or on SIGHUP, SIGTERM, SIGINT) every plugin is restored.
    /// Implied as 120 when run over SSH and the firewall change turns the
    /// input policy to drop or stops accepting sshd's port.
    #[arg(long, value_name = "N")]
    pub confirm_timeout: Option<u64>,
    /// Over SSH, apply a firewall change that may lock you out without
    /// waiting for `op-dbus-agent confirm` (no implied --confirm-timeout).
    #[arg(long)]
    pub skip_ssh_confirm: bool,
    /// Print the run report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when the state sets parts this version does not apply
    /// (they are still listed under "not applied").
    #[arg(long)]
    pub allow_unapplied: bool,
    /// Apply only these plugins (repeatable), e.g. `--plugin users --root /mnt`
    /// as the installer does before first boot.
    #[arg(long = "plugin", value_name = "P")]
    pub plugins: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let state = DesiredState::load(&args.state)?;
    let rt = runtime()?;
    let mut confirm_timeout = args.confirm_timeout;
    let guarded = confirm_timeout.is_none()
        && !args.dry_run
        && !args.no_rollback
        && !args.skip_ssh_confirm
        && (args.plugins.is_empty() || args.plugins.iter().any(|p| p == "firewall"));
    if guarded {
        if let Some(session) = lockout::detect_here() {
            let risks = rt.block_on(lockout::check(
                &FirewallPlugin::default().nft,
                &state.state,
                &session,
            ));
            if !risks.is_empty() {
                confirm_timeout = Some(lockout::IMPLIED_CONFIRM_SECS);
                eprintln!("{}", implied_confirm_message(&session, &risks));
            }
        }
    }
    let options = ApplyOptions {
        dry_run: args.dry_run,
        no_rollback: args.no_rollback,
        confirm_timeout: confirm_timeout.map(Duration::from_secs),
        allow_unapplied: args.allow_unapplied,
        resident: false,
    };
    if !args.dry_run {
        crate::engine::state_dir::secure_existing(&global.state_dir)?;
    }
    let ctx = args.target.context(global, options);
    let mut engine = crate::plugins::standard();
    if !args.plugins.is_empty() {
        engine.retain(&args.plugins)?;
    }
    let report = rt.block_on(engine.apply(&ctx, &state));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// What the operator reads when the lock-out guard implies a confirmation.
pub fn implied_confirm_message(session: &lockout::SshSession, risks: &[String]) -> String {
    format!(
        "op-dbus-agent: this apply runs over SSH ({}) and its firewall change may lock you out: {}. \
         It is kept only if `op-dbus-agent confirm` runs within {} s: run it from a NEW SSH login, \
         which proves you can still get in; otherwise, or when this session hangs up, every plugin \
         is restored. --confirm-timeout N sets the time; --skip-ssh-confirm applies without waiting.",
        session.evidence,
        risks.join("; "),
        lockout::IMPLIED_CONFIRM_SECS
    )
}

/// Human summary: one line per action, one per plugin, failures last.
pub fn print_report(report: &RunReport) {
    for p in &report.plugins {
        for a in &p.actions {
            let detail = a
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            println!("{:<9} {:<7} {}{detail}", p.plugin, a.result, a.description);
        }
        if p.outcome != PluginOutcome::Skipped {
            println!("{:<9} {:?} in {} ms", p.plugin, p.outcome, p.duration_ms);
        }
        if let Some(r) = &p.rollback {
            println!("{:<9} {r}", p.plugin);
        }
    }
    for r in &report.recovered {
        eprintln!("op-dbus-agent: {r}");
    }
    print_not_applied(&report.not_applied_lines());
    let failures = report.failures();
    for f in &failures {
        eprintln!("op-dbus-agent: {f}");
    }
    if let Some(summary) = report.rollback_summary().filter(|s| !failures.contains(s)) {
        eprintln!("op-dbus-agent: {summary}");
    }
    if let Some(t) = report.transaction.as_ref().filter(|t| t.confirmed) {
        println!("transaction {} confirmed", t.id);
    }
    if !report.any_failed() && !report.ok {
        eprintln!(
            "op-dbus-agent: {} part(s) of the state not applied by this version (exit {}); \
             remove them from the state, or pass --allow-unapplied to accept them",
            report.not_applied.len(),
            crate::engine::EXIT_NOT_APPLIED
        );
    }
}

/// The "not applied:" block of `diff` and `apply`, one pointer a line.
pub fn print_not_applied(lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    println!("not applied:");
    for l in lines {
        println!("  {l}");
    }
}
