//! `plugins.storage`: disks, partitions, filesystems, btrfs subvolumes and
//! mounts, in the roadmap's shape.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Size;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// Disks keyed by the name the rest of the state uses (`/dev/sda`).
    #[serde(default)]
    pub devices: BTreeMap<String, Device>,
    /// Filesystems keyed by partition (`/dev/sda2`), for partitions that do
    /// not say their filesystem inline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub filesystems: BTreeMap<String, Filesystem>,
    /// Subvolumes keyed by the btrfs partition that holds them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub btrfs_subvolumes: BTreeMap<String, Vec<Subvolume>>,
    /// Mounts keyed by mount point.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mounts: BTreeMap<String, Mount>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Device {
    #[serde(default)]
    pub partition_table: PartitionTable,
    /// How to find the disk on the machine when its key is not a stable path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<DiskSelector>,
    #[serde(default)]
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    #[default]
    Gpt,
    Msdos,
}

/// Matches exactly one disk of the machine; every given criterion must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskSelector {
    /// A device path, including `/dev/disk/by-id/...` and `/dev/disk/by-path/...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Size>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Partition number; defaults to the position in the list (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// Byte offset of the partition's start; by default it follows the
    /// previous partition (the first starts at 1M).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<Size>,
    pub size: Size,
    #[serde(rename = "type")]
    pub kind: PartitionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FsType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PartitionType {
    Efi,
    Linux,
    Swap,
    BiosBoot,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Vfat,
    Btrfs,
    Ext4,
    Swap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    #[serde(rename = "type")]
    pub kind: FsType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Fixed filesystem UUID; chosen by the installer when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// A btrfs over several partitions with data and metadata both in this
    /// profile: `raid1` (two or more members, any one may fail) or `raid10`
    /// (four or more). Needs `devices`; the entry is keyed by its first member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<BtrfsRaid>,
    /// The member partitions of a multi-device btrfs (`/dev/sda2`,
    /// `/dev/sdb2`), the entry's key first; each on its own disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// The btrfs profile of a mirrored filesystem (data and metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BtrfsRaid {
    Raid1,
    Raid10,
}

impl BtrfsRaid {
    /// The profile name `mkfs.btrfs -d/-m` and `btrfs filesystem df` use.
    pub fn name(self) -> &'static str {
        match self {
            BtrfsRaid::Raid1 => "raid1",
            BtrfsRaid::Raid10 => "raid10",
        }
    }

    /// The fewest members the profile takes.
    pub fn min_devices(self) -> usize {
        match self {
            BtrfsRaid::Raid1 => 2,
            BtrfsRaid::Raid10 => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subvolume {
    /// Subvolume path below the top level, such as `@` or `@home`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// `btrfs.compression` property: zstd, zstd:N, lzo, zlib or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Disable copy-on-write (the +C attribute) for VM images and databases.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nodatacow: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// The partition (`/dev/sda2`) mounted here.
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subvol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fstype: Option<FsType>,
    /// Mount options, comma separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
}

/// The device path of partition `number` of disk `device`: `/dev/sda` + 2 is
/// `/dev/sda2`; a disk name ending in a digit takes a `p` (`/dev/nvme0n1p2`).
pub fn partition_path(device: &str, number: u32) -> String {
    if device.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{device}p{number}")
    } else {
        format!("{device}{number}")
    }
}
