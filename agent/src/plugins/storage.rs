//! storage plugin: the op-dbus host layout (`plugins.opdbus`: subvolumes
//! `@cache`, `@timing`, ... with their compression, `sockets/`, plugin
//! skeletons, template placeholders) under its root, through the one
//! implementation the installer uses too ([`opdbus_common::layout`]).
//! Missing parts are created (btrfs subvolumes when the root is on btrfs,
//! else plain directories); what exists is never changed, except the mode
//! of `sockets/`. Every path stays beneath the context's root.

use anyhow::Context as _;

use crate::engine::{ActionResult, Context, Plugin, PluginAction};
use opdbus_common::layout::{self, Facts, Layout, Step};
use opdbus_common::rootfs::RootDir;
use opdbus_state::State;

pub type Desired = Layout;
pub type Current = Facts;
pub type Action = Step;

impl PluginAction for Step {
    fn kind(&self) -> &'static str {
        match self {
            Step::CreateSubvolume { .. } => "create-subvolume",
            Step::CreateDirectory { .. } => "create-directory",
            Step::WritePluginToml { .. } => "write-plugin-toml",
            Step::SetMode { .. } => "set-mode",
        }
    }

    fn resource(&self) -> String {
        format!("path:{}", self.path())
    }
}

/// The pure diff (see [`layout::steps`]).
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    layout::steps(current, desired)
}

fn root_of(ctx: &Context) -> anyhow::Result<RootDir> {
    RootDir::open(&ctx.root).with_context(|| format!("opening the root {}", ctx.root.display()))
}

pub struct StoragePlugin;

impl Plugin for StoragePlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = ();

    fn name(&self) -> &'static str {
        "storage"
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        state
            .plugins
            .opdbus
            .as_ref()
            .map(|l| {
                let l = Layout::from(l);
                layout::check(&l).context("plugins.opdbus")?;
                Ok(l)
            })
            .transpose()
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        layout::query(&root_of(ctx)?, desired)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        let root = root_of(ctx);
        super::each(actions, |a| {
            let root = root.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"));
            async move {
                layout::apply(root?, a)?;
                Ok(None)
            }
        })
        .await
    }
}
