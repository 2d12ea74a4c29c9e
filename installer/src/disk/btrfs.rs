//! btrfs subvolumes on a mounted top level (subvolid=5): inspects which of the
//! plan's subvolumes exist, creates missing ones with `libbtrfsutil`, sets
//! their compression property and +C (nodatacow), and the default subvolume.

use std::path::{Path, PathBuf};

use opdbus_common::{Task, TaskError};

use super::plan::SubvolumePlan;

#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    #[error("creating subvolume '{name}' at {path}")]
    Create {
        name: String,
        path: PathBuf,
        #[source]
        source: libbtrfsutil::Error,
    },
    #[error("setting a property of subvolume '{name}'")]
    Property {
        name: String,
        #[source]
        source: TaskError,
    },
    #[error("making subvolume '{name}' the default")]
    SetDefault {
        name: String,
        #[source]
        source: TaskError,
    },
}

/// What is at a subvolume's path on the top level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubvolState {
    Present,
    Missing,
    /// Something that is not a subvolume is in the way.
    NotASubvolume,
}

/// Path of subvolume `name` under the mounted top level.
pub fn subvol_path(top: &Path, name: &str) -> PathBuf {
    top.join(name.trim_matches('/'))
}

/// Whether the subvolume exists on the filesystem mounted (top level) at `top`.
pub fn subvolume_state(top: &Path, name: &str) -> SubvolState {
    let p = subvol_path(top, name);
    if std::fs::symlink_metadata(&p).is_err() {
        return SubvolState::Missing;
    }
    match libbtrfsutil::is_subvolume(&p) {
        Ok(true) => SubvolState::Present,
        _ => SubvolState::NotASubvolume,
    }
}

/// Creates the subvolume (its parent must exist), then, while it is still
/// empty, sets +C for nodatacow and the `compression` property.
pub fn create_subvolume(top: &Path, sv: &SubvolumePlan) -> Result<(), BtrfsError> {
    let p = subvol_path(top, &sv.name);
    libbtrfsutil::create_subvolume(&p).map_err(|source| BtrfsError::Create {
        name: sv.name.clone(),
        path: p.clone(),
        source,
    })?;
    let prop = |source| BtrfsError::Property {
        name: sv.name.clone(),
        source,
    };
    if sv.nodatacow {
        Task::new("chattr").arg("+C").arg(&p).run().map_err(prop)?;
    }
    if let Some(c) = &sv.compression {
        Task::new("btrfs")
            .args(["property", "set"])
            .arg(&p)
            .args(["compression", c])
            .run()
            .map_err(prop)?;
    }
    Ok(())
}

/// Makes `name` the default subvolume (what mounts without `subvol=` see).
pub fn set_default(top: &Path, name: &str) -> Result<(), BtrfsError> {
    Task::new("btrfs")
        .args(["subvolume", "set-default"])
        .arg(subvol_path(top, name))
        .run()
        .map_err(|source| BtrfsError::SetDefault {
            name: name.into(),
            source,
        })
}

/// The id of the default subvolume of the filesystem mounted at `top`.
pub fn default_subvolume_id(top: &Path) -> Result<u64, TaskError> {
    let out = Task::new("btrfs")
        .args(["subvolume", "get-default"])
        .arg(top)
        .read()?;
    // "ID 256 gen 9 top level 5 path @"
    Ok(out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5))
}

/// The id of the subvolume at `name` under `top`.
pub fn subvolume_id(top: &Path, name: &str) -> Option<u64> {
    libbtrfsutil::subvolume_id(subvol_path(top, name)).ok()
}
