//! `op-dbus-agent run [--state FILE]`: the first reconcile once per
//! installation (first-boot marker tied to /etc/machine-id), the status file,
//! then resident: `org.opdbus` on the system bus, the state file watched
//! (each new valid version applied), and drift repair (every plugin checked
//! every `--drift-interval` seconds, systemd units at once). Exit 1 when a
//! plugin failed, 3 when parts of the state are not applied by this version
//! (0 with `--allow-unapplied`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use opdbus_common::logging::Chain;

use super::query::{runtime, TargetArgs, DEFAULT_STATE};
use super::Global;
use crate::engine::{ApplyOptions, DesiredState, FirstBoot, Status};
use crate::service::Agent;

/// Seconds `run` waits for an apply holding the state directory.
const RESIDENT_LOCK_WAIT: u64 = 3600;
/// Minimum time between two repairs of the same systemd unit (a unit that
/// keeps failing is not restarted in a tight loop).
const UNIT_REPAIR_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// How soon the drift check first runs when the start-up apply failed.
const STARTUP_RETRY: Duration = Duration::from_secs(30);

/// Runs `task` until it fails; its error is logged (naming `what`) and the
/// agent's other duties go on.
async fn keep_going(what: &str, task: impl std::future::Future<Output = anyhow::Result<()>>) {
    if let Err(e) = task.await {
        tracing::error!("{what} stopped: {e:#}");
    }
    std::future::pending::<()>().await
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state to keep the host at.
    #[arg(long, default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// Exit after the first reconcile instead of staying resident.
    #[arg(long)]
    pub once: bool,
    /// Reconcile even when the first-boot marker says it already ran.
    #[arg(long)]
    pub force: bool,
    /// Seconds between two drift checks of every plugin (resident mode).
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub drift_interval: u64,
    /// Exit 0 even when the state sets parts this version does not apply.
    #[arg(long)]
    pub allow_unapplied: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let state = match DesiredState::load(&args.state) {
        Ok(s) => s,
        Err(e) => {
            Status::fatal(Chain(e.as_ref()).to_string()).write(&global.state_dir)?;
            return Err(e);
        }
    };
    crate::engine::state_dir::secure_existing(&global.state_dir)?;
    let options = ApplyOptions {
        allow_unapplied: args.allow_unapplied,
        resident: true,
        ..ApplyOptions::default()
    };
    // An operator's `apply --confirm-timeout` may hold the state directory
    // for its whole window.
    let ctx = Arc::new(
        args.target
            .context(global, options)
            .with_lock_wait(Duration::from_secs(RESIDENT_LOCK_WAIT)),
    );
    let engine = Arc::new(crate::plugins::standard());
    let first_boot = FirstBoot::new(&global.state_dir, &args.target.root);
    let rt = runtime()?;
    // A transaction an agent left behind (it died applying, or the machine
    // went down while a change waited for `confirm`) is finished before
    // anything else: restored, or kept if it was confirmed; one still in its
    // confirm window is waited for.
    for msg in rt.block_on(engine.recover_pending(&ctx))? {
        tracing::warn!("{msg}");
    }
    let (code, startup_failed) = if args.force || !first_boot.is_done() {
        tracing::info!(state = %args.state.display(), "first reconcile");
        Status::running(Some(state.hash.clone())).write(&global.state_dir)?;
        let report = rt.block_on(engine.apply(&ctx, &state));
        let exit = report.exit_code();
        super::apply::print_report(&report);
        // Parts this version does not apply do not make the reconcile run
        // again at the next boot: it would not apply them either.
        let failed = report.any_failed();
        Status::finished(report).write(&global.state_dir)?;
        if !failed {
            first_boot.mark_done()?;
        }
        (ExitCode::from(exit), failed)
    } else {
        tracing::info!(marker = %first_boot.marker_path().display(), "first reconcile already ran for this installation");
        // What the kernel forgets at a reboot (links, addresses, routes,
        // OVS ports, WireGuard tunnels, nftables rules, OpenFlow flows) is
        // applied again at every boot: every ephemeral plugin.
        let mut boot = crate::plugins::standard();
        let ephemeral = boot.ephemeral_plugins();
        boot.retain(&ephemeral)?;
        let report = rt.block_on(boot.apply(&ctx, &state));
        super::apply::print_report(&report);
        (ExitCode::from(report.exit_code()), report.any_failed())
    };
    // At every boot: a disk missing since the last one is in the journal too
    // (`status` reads it again whenever it is asked).
    match crate::health::degraded() {
        Ok(arrays) => arrays.iter().for_each(|d| tracing::warn!("degraded: {d}")),
        Err(e) => tracing::warn!("checking for degraded arrays: {}", Chain(&e)),
    }
    if args.once {
        return Ok(code);
    }
    rt.block_on(async move {
        let agent = Agent::new(engine, ctx.clone(), state);
        let conn = ctx.bus().await?;
        agent.serve(&conn).await?;
        let interval = Duration::from_secs(args.drift_interval);
        let first_check = if startup_failed {
            tracing::warn!(
                "the start-up apply failed: the drift check runs in {} s, then every {} s",
                STARTUP_RETRY.as_secs(),
                interval.as_secs()
            );
            STARTUP_RETRY
        } else {
            interval
        };
        tracing::info!(
            state = %args.state.display(),
            "resident: serving org.opdbus, watching the state file, checking drift every {} s",
            interval.as_secs()
        );
        let units = keep_going(
            "watching systemd units for drift",
            agent.watch_drift(UNIT_REPAIR_MIN_INTERVAL),
        );
        let file = keep_going(
            "watching the state file",
            agent.watch_state(args.state.clone()),
        );
        let periodic = keep_going(
            "the periodic drift check",
            agent.check_drift_every(interval, first_check),
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = units => {}
            _ = file => {}
            _ = periodic => {}
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        }
        anyhow::Ok(())
    })?;
    Ok(code)
}
