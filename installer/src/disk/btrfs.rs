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

/// Registers the members of a multi-device btrfs with the kernel (what a
/// mount of any one of them needs).
pub fn scan(devs: &[PathBuf]) -> Result<(), TaskError> {
    Task::new("btrfs").args(["device", "scan"]).args(devs).run()
}

/// The block group kinds and their profiles of the filesystem mounted at
/// `top`, from `btrfs filesystem df`: `("Data", "RAID1")`,
/// `("Metadata", "RAID1")`, `("System", "RAID1")`.
pub fn profiles(top: &Path) -> Result<Vec<(String, String)>, TaskError> {
    let out = Task::new("btrfs")
        .args(["filesystem", "df"])
        .arg(top)
        .read()?;
    Ok(parse_df(&out))
}

/// Parses `btrfs filesystem df` ("Data, RAID1: total=1.00GiB, used=…").
pub fn parse_df(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(':')?;
            let (kind, profile) = head.split_once(',')?;
            Some((kind.trim().to_string(), profile.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profiles_of_btrfs_filesystem_df_are_read() {
        let out = "Data, RAID1: total=102.38MiB, used=0.00B\nSystem, RAID1: total=8.00MiB, used=16.00KiB\nMetadata, RAID1: total=102.38MiB, used=128.00KiB\nGlobalReserve, single: total=5.50MiB, used=0.00B\n";
        assert_eq!(
            parse_df(out),
            [
                ("Data".to_string(), "RAID1".to_string()),
                ("System".into(), "RAID1".into()),
                ("Metadata".into(), "RAID1".into()),
                ("GlobalReserve".into(), "single".into()),
            ]
        );
    }
}
