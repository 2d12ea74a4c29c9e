//! The `op-dbus-install` command line (see `../shared/CLI.md` for the
//! contract). Each subcommand lives in its own module with an `Args` struct
//! and a `run` function; `main` only parses and dispatches.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use opdbus_common::logging::Chain;

pub mod auto;
pub mod boot_sync;
pub mod disk;
pub mod install;
pub mod payload;
pub mod plan;
pub mod schema;
pub mod validate;
pub mod wizard;

#[derive(Debug, Parser)]
#[command(
    name = "op-dbus-install",
    version,
    about = "Installs Debian or Proxmox VE from one declarative state.json"
)]
pub struct Cli {
    /// Log at debug level (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check state files; errors as FILE:LINE:COL: /json/pointer: message.
    Validate(validate::Args),
    /// Print the JSON Schema of state.json.
    Schema(schema::Args),
    /// Print the resolved install plan; pure, writes nothing.
    Plan(plan::Args),
    /// Run only the disk phase: partitions, ESP, btrfs, subvolumes, mounts.
    Disk(disk::Args),
    /// Build the offline base-system payload (tar.zst and .sha256).
    Payload(payload::Args),
    /// The whole install.
    Install(install::Args),
    /// Interactive editor that writes a valid state.json.
    Wizard(wizard::Args),
    /// Live-ISO entry: read opdbus.* from the kernel command line and install unattended.
    Auto(auto::Args),
    /// On an installed system: boot entries for every kernel in /boot (run
    /// by the kernel package hooks).
    BootSync(boot_sync::Args),
}

/// Runs the parsed command; the returned code is the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Schema(a) => schema::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Disk(a) => interruptible(|| disk::run(a)),
        Command::Payload(a) => payload::run(a),
        Command::Install(a) => interruptible(|| install::run(a)),
        Command::Wizard(a) => wizard::run(a),
        Command::Auto(a) => interruptible(|| auto::run(a)),
        Command::BootSync(a) => boot_sync::run(a),
    }
}

/// Runs a command that writes disks with SIGINT/SIGTERM handled: the run
/// stops at its next safe point, releases mounts and loop devices, wipes a
/// partition table it wrote, and exits 130 (SIGINT) or 143 (SIGTERM).
fn interruptible(run: impl FnOnce() -> anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    crate::interrupt::install().context("handling SIGINT and SIGTERM")?;
    let result = run();
    match (result, crate::interrupt::interrupted()) {
        (Err(e), Some(i)) => {
            // The chain ends in the signal when a safe point stopped the run;
            // otherwise (a stopped command failed) say why it failed.
            if e.root_cause()
                .downcast_ref::<crate::interrupt::Interrupted>()
                .is_some()
            {
                eprintln!("op-dbus-install: {}", Chain(e.as_ref()));
            } else {
                eprintln!("op-dbus-install: {i}: {}", Chain(e.as_ref()));
            }
            Ok(ExitCode::from(i.exit_code()))
        }
        (result, _) => result,
    }
}
