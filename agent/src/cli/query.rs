//! `op-dbus-agent query [--plugin P]`: the current state of what the state
//! file names, per plugin, as JSON. Also holds the flags and helpers the
//! engine commands share (`--root`, `--bus`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::Global;
use crate::engine::{ApplyOptions, Context, DesiredState};

/// Default state file of an installed host.
pub const DEFAULT_STATE: &str = "/etc/op-dbus/state.json";

/// Where the engine acts: root directory and D-Bus bus.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Root of the managed system (files such as /etc/passwd are read below it).
    #[arg(long, default_value = "/", env = "OPDBUS_ROOT")]
    pub root: PathBuf,
    /// D-Bus address to use instead of the system bus (tests: a private bus).
    #[arg(long, env = "OPDBUS_BUS_ADDRESS")]
    pub bus: Option<String>,
}

impl TargetArgs {
    pub fn context(&self, global: &Global, options: ApplyOptions) -> Context {
        let mut ctx = Context::new(&global.state_dir)
            .with_root(&self.root)
            .with_bus_address(self.bus.clone())
            .with_options(options);
        ctx.ovsdb = global.ovsdb.clone();
        ctx.lxc = crate::lxc::Paths::new(&global.layout, &global.lxc_path);
        ctx
    }
}

/// A tokio runtime for one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// State file naming what to query.
    #[arg(long, default_value = DEFAULT_STATE)]
    pub state: PathBuf,
    /// Only this plugin.
    #[arg(long)]
    pub plugin: Option<String>,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let state = DesiredState::load(&args.state)?;
    let ctx = args.target.context(global, ApplyOptions::default());
    let engine = crate::plugins::standard();
    let current = runtime()?.block_on(engine.query(&ctx, &state, args.plugin.as_deref()))?;
    println!("{}", serde_json::to_string_pretty(&current)?);
    Ok(ExitCode::SUCCESS)
}
