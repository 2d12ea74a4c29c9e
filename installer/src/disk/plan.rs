//! The resolved disk plan: plain, serializable data that says exactly what the
//! executor writes (byte ranges, type GUIDs, filesystem UUIDs, subvolumes,
//! mounts in order). Built by [`super::layout::plan_layout`]; needs no root.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One MiB: the alignment of every partition boundary.
pub const MIB: u64 = 1024 * 1024;

/// Everything the disk phase does, for every device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPlan {
    pub devices: Vec<DevicePlan>,
    /// Mounts of the installed system, parents first (the order to mount in).
    pub mounts: Vec<MountPlan>,
}

/// Partition table kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Msdos,
}

/// What a partition is for; decides the GPT type GUID / MBR type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartRole {
    Efi,
    Linux,
    Swap,
    BiosBoot,
}

impl PartRole {
    /// The GPT partition type GUID of this role.
    pub fn gpt_type(self) -> Uuid {
        let text = match self {
            PartRole::Efi => "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            PartRole::Linux => "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            PartRole::Swap => "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
            PartRole::BiosBoot => "21686148-6449-6E6F-744E-656564454649",
        };
        Uuid::parse_str(text).expect("constant GUID is well-formed")
    }

    /// The MBR type byte, or `None` for roles that have no MBR form.
    pub fn mbr_type(self) -> Option<u8> {
        match self {
            PartRole::Efi => Some(0xEF),
            PartRole::Linux => Some(0x83),
            PartRole::Swap => Some(0x82),
            PartRole::BiosBoot => None,
        }
    }
}

/// One whole disk and its partition table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePlan {
    /// The device key of the state (`/dev/sda`); the target map resolves it.
    pub key: String,
    pub table: TableKind,
    /// GPT disk GUID (GPT only).
    pub disk_guid: Option<Uuid>,
    /// MBR disk signature (msdos only).
    pub disk_signature: Option<u32>,
    /// Size of the disk the plan was laid out for, in bytes.
    pub size: u64,
    /// Partitions in on-disk order (by start offset).
    pub partitions: Vec<PartitionPlan>,
}

/// One partition: where it lies and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPlan {
    /// Partition number (1-based), as the kernel names it.
    pub number: u32,
    /// The state's name for it (`/dev/sda2`, `/dev/nvme0n1p2`).
    pub key: String,
    /// First byte (1 MiB aligned).
    pub start: u64,
    /// Length in bytes (a multiple of 1 MiB).
    pub size: u64,
    pub role: PartRole,
    /// GPT type GUID (also filled for msdos, for display).
    pub type_guid: Uuid,
    /// MBR type byte (msdos only).
    pub mbr_type: Option<u8>,
    /// GPT unique partition GUID (GPT only).
    pub part_guid: Option<Uuid>,
    /// GPT partition name.
    pub label: String,
    pub filesystem: Option<FilesystemPlan>,
    /// A further member of the multi-device btrfs made on this partition
    /// (the key of its first member, which carries the filesystem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<String>,
}

impl PartitionPlan {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

/// Filesystem kinds the engine makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Vfat,
    Btrfs,
    Ext4,
    Swap,
}

impl FsKind {
    /// The name `mount`, fstab and blkid use.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Vfat => "vfat",
            FsKind::Btrfs => "btrfs",
            FsKind::Ext4 => "ext4",
            FsKind::Swap => "swap",
        }
    }
}

/// A filesystem to make on a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemPlan {
    pub kind: FsKind,
    /// The UUID as `blkid` prints it: `xxxxxxxx-…` (lowercase) for btrfs, ext4
    /// and swap, `XXXX-XXXX` (the volume serial) for vfat.
    pub uuid: String,
    pub label: Option<String>,
    /// btrfs only: subvolumes, parents before children.
    pub subvolumes: Vec<SubvolumePlan>,
    /// btrfs only: the subvolume made the default (the one mounted at `/`).
    pub default_subvolume: Option<String>,
    /// btrfs over several partitions (this one first), data and metadata
    /// in one mirrored profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidPlan>,
}

/// The profile and members of a multi-device btrfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidPlan {
    /// For data and metadata (`mkfs.btrfs -d -m`); the state's own type.
    pub profile: opdbus_state::model::BtrfsRaid,
    /// Partition keys of every member, the filesystem's own first.
    pub devices: Vec<String>,
}

/// A btrfs subvolume and its properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubvolumePlan {
    /// Path below the top level (`@`, `@var/lib`).
    pub name: String,
    /// The `btrfs.compression` property (`zstd`, `lzo`, `zlib`).
    pub compression: Option<String>,
    /// No copy-on-write (+C), set while the subvolume is still empty.
    pub nodatacow: bool,
}

/// One mount of the installed system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPlan {
    /// Absolute path in the installed system (`/`, `/home`, `/boot/efi`).
    pub path: PathBuf,
    /// Partition key of the filesystem (`/dev/sda2`).
    pub partition: String,
    pub fstype: FsKind,
    /// The filesystem's UUID (fstab names it by UUID).
    pub uuid: String,
    /// btrfs subvolume to mount (`subvol=` option).
    pub subvol: Option<String>,
    /// Mount options besides `subvol=` (`compress=` only on a filesystem's
    /// first mount).
    pub options: Vec<String>,
}

impl MountPlan {
    /// The full option string for `mount` and fstab.
    pub fn option_string(&self) -> String {
        let mut opts: Vec<String> = Vec::new();
        if let Some(sv) = &self.subvol {
            opts.push(format!("subvol={sv}"));
        }
        opts.extend(self.options.iter().cloned());
        if opts.is_empty() {
            "defaults".into()
        } else {
            opts.join(",")
        }
    }
}

impl DiskPlan {
    /// The partition with this key, with its device.
    pub fn partition(&self, key: &str) -> Option<(&DevicePlan, &PartitionPlan)> {
        self.devices
            .iter()
            .find_map(|d| d.partitions.iter().find(|p| p.key == key).map(|p| (d, p)))
    }

    /// The ESP (first partition with role `efi` and a vfat filesystem).
    pub fn esp(&self) -> Option<(&DevicePlan, &PartitionPlan)> {
        self.esps().into_iter().next()
    }

    /// Every ESP, in device order: a mirrored install has one on each disk,
    /// all written alike.
    pub fn esps(&self) -> Vec<(&DevicePlan, &PartitionPlan)> {
        self.devices
            .iter()
            .flat_map(|d| {
                d.partitions
                    .iter()
                    .filter(|p| {
                        p.role == PartRole::Efi
                            && p.filesystem.as_ref().map(|f| f.kind) == Some(FsKind::Vfat)
                    })
                    .map(move |p| (d, p))
            })
            .collect()
    }

    /// The multi-device btrfs filesystems, as (first member, its plan).
    pub fn raids(&self) -> Vec<(&PartitionPlan, &RaidPlan)> {
        self.devices
            .iter()
            .flat_map(|d| &d.partitions)
            .filter_map(|p| Some((p, p.filesystem.as_ref()?.raid.as_ref()?)))
            .collect()
    }
}
