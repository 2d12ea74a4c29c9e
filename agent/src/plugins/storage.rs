//! storage plugin: the op-dbus host layout's subvolumes (`@cache`, `@timing`,
//! ...) under its root. Missing ones are created as btrfs subvolumes when the
//! root is on btrfs, else as plain directories; existing ones are never touched.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::engine::{ActionResult, Context, Plugin, PluginAction};
use opdbus_common::Task;
use opdbus_state::State;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Layout root on the managed system (`/var/lib/op-dbus`).
    pub root: String,
    pub subvolumes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Missing,
    Directory,
    Subvolume,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// Whether the filesystem holding the root (or its nearest existing parent) is btrfs.
    pub btrfs: bool,
    pub subvolumes: BTreeMap<String, Kind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    CreateSubvolume { path: String },
    CreateDirectory { path: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateSubvolume { path } => write!(f, "create btrfs subvolume {path}"),
            Action::CreateDirectory { path } => write!(f, "create directory {path} (not on btrfs)"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::CreateSubvolume { .. } => "create-subvolume",
            Action::CreateDirectory { .. } => "create-directory",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::CreateSubvolume { path } | Action::CreateDirectory { path } => {
                format!("path:{path}")
            }
        }
    }
}

/// The pure diff: create what is missing; a plain directory where a subvolume
/// is wanted is left alone (converting would move data).
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    desired
        .subvolumes
        .iter()
        .filter(|s| current.subvolumes.get(*s).copied().unwrap_or(Kind::Missing) == Kind::Missing)
        .map(|s| {
            let path = format!("{}/{s}", desired.root.trim_end_matches('/'));
            if current.btrfs {
                Action::CreateSubvolume { path }
            } else {
                Action::CreateDirectory { path }
            }
        })
        .collect()
}

fn is_btrfs(path: &Path) -> bool {
    let mut p = Some(path);
    while let Some(dir) = p {
        if let Ok(st) = nix::sys::statfs::statfs(dir) {
            return st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC;
        }
        p = dir.parent();
    }
    false
}

fn kind(path: &Path) -> Kind {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        // A btrfs subvolume's root directory has inode number 256.
        Ok(m) if m.is_dir() && m.ino() == 256 && is_btrfs(path) => Kind::Subvolume,
        Ok(_) => Kind::Directory,
        Err(_) => Kind::Missing,
    }
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
        Ok(state.plugins.opdbus.as_ref().map(|l| Desired {
            root: l.root.clone(),
            subvolumes: l.subvolumes.keys().cloned().collect(),
        }))
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let root = ctx.host_path(&desired.root);
        Ok(Current {
            btrfs: is_btrfs(&root),
            subvolumes: desired
                .subvolumes
                .iter()
                .map(|s| (s.clone(), kind(&root.join(s))))
                .collect(),
        })
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        super::each(actions, |a| async move {
            match a {
                Action::CreateSubvolume { path } => {
                    let target = ctx.host_path(path);
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)
                            .with_context(|| format!("creating {}", parent.display()))?;
                    }
                    Task::new("btrfs")
                        .args(["subvolume", "create"])
                        .arg(&target)
                        .run()
                        .with_context(|| format!("creating subvolume {}", target.display()))?;
                }
                Action::CreateDirectory { path } => {
                    let target = ctx.host_path(path);
                    std::fs::create_dir_all(&target)
                        .with_context(|| format!("creating {}", target.display()))?;
                }
            }
            Ok(None)
        })
        .await
    }
}
