//! The `op-dbus-agent` command line (contract in `../shared/CLI.md`). Each
//! subcommand has its own module with `Args` and `run`; `main` dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod apply;
pub mod audit;
pub mod confirm;
pub mod container;
pub mod diff;
pub mod discover;
pub mod query;
pub mod rollback;
pub mod run;
pub mod status;
pub mod validate;

#[derive(Debug, Parser)]
#[command(
    name = "op-dbus-agent",
    version,
    about = "Keeps this host equal to state.json over D-Bus, netlink and OVSDB"
)]
pub struct Cli {
    /// Log at debug level (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand understands.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Where the agent keeps its audit database, markers, status and checkpoints.
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/op-dbus",
        env = "OPDBUS_STATE_DIR"
    )]
    pub state_dir: PathBuf,
    /// OVSDB server socket, as unix:PATH.
    #[arg(long, global = true, default_value = "unix:/run/openvswitch/db.sock")]
    pub ovsdb: String,
    /// The op-dbus layout root (templates under its `@templates`).
    #[arg(long, global = true, default_value = crate::lxc::DEFAULT_LAYOUT)]
    pub layout: PathBuf,
    /// LXC's container directory.
    #[arg(long, global = true, default_value = crate::lxc::DEFAULT_LXC_PATH)]
    pub lxc_path: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check state files (same as the installer's validate).
    Validate(validate::Args),
    /// Current state of what the plugins manage, as JSON.
    Query(query::Args),
    /// The actions an apply would take.
    Diff(diff::Args),
    /// A state.json describing the running host (diff of it here is empty).
    Discover(discover::Args),
    /// Apply, verify, and record to the audit chain.
    Apply(apply::Args),
    /// Keep a change applied with --confirm-timeout.
    Confirm(confirm::Args),
    /// Re-apply the desired state an earlier block recorded, as a new transaction.
    Rollback(rollback::Args),
    /// First reconcile once per installation, then stay resident.
    Run(run::Args),
    /// Exit 0 done, 1 failed, 2 still running.
    Status(status::Args),
    /// The hash-chained audit log.
    Audit(audit::Args),
    /// LXC containers as btrfs snapshots of a template.
    Container(container::Args),
    /// Container templates (btrfs subvolumes under the layout's @templates).
    Template(container::TemplateArgs),
}

/// Runs the parsed command; the returned code is the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Validate(a) => validate::run(&g, a),
        Command::Query(a) => query::run(&g, a),
        Command::Diff(a) => diff::run(&g, a),
        Command::Discover(a) => discover::run(&g, a),
        Command::Apply(a) => apply::run(&g, a),
        Command::Confirm(a) => confirm::run(&g, a),
        Command::Rollback(a) => rollback::run(&g, a),
        Command::Run(a) => run::run(&g, a),
        Command::Status(a) => status::run(&g, a),
        Command::Audit(a) => audit::run(&g, a),
        Command::Container(a) => container::run(&g, a),
        Command::Template(a) => container::run_template(&g, a),
    }
}
