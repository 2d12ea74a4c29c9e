//! `op-dbus-agent run` (not implemented yet).

use std::process::ExitCode;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_global: &Global, _args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`op-dbus-agent run` is not implemented yet")
}
