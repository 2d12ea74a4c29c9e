//! Pure layout: turns a [`LayoutSpec`] (sizes such as `512M` or `remaining`,
//! optional starts, roles, filesystems, subvolumes, mounts) plus the real
//! disk sizes into a [`DiskPlan`] with 1 MiB aligned byte ranges, type GUIDs
//! and chosen UUIDs. All offset arithmetic is checked; errors name the
//! partition by its JSON pointer in the state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::plan::{
    DevicePlan, DiskPlan, FilesystemPlan, FsKind, MountPlan, PartRole, PartitionPlan,
    SubvolumePlan, TableKind, MIB,
};

/// Bytes GPT needs at the end of the disk: backup entries (32 sectors) and
/// the backup header (1 sector).
pub const GPT_BACKUP_BYTES: u64 = 33 * 512;

/// Firmware the installed system must boot on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Uefi,
    Bios,
    Both,
}

/// How filesystem and partition UUIDs are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UuidSource {
    /// Random v4 UUIDs (the default).
    #[default]
    Random,
    /// Deterministic v4-shaped UUIDs derived from this seed (tests, re-runs).
    Seeded(u64),
}

/// A partition size as the state writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeSpec {
    Bytes(u64),
    /// All space left; only allowed on the last partition.
    Remaining,
}

impl SizeSpec {
    /// Parses `512M`, `2G`, `1T`, `100K`, `4096`, `2GiB` or `remaining`.
    pub fn parse(text: &str) -> Result<Self, LayoutError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("remaining") {
            return Ok(SizeSpec::Remaining);
        }
        let bad = || LayoutError::BadSize(text.to_string());
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            _ => return Err(bad()),
        };
        let bytes = n.checked_mul(mult).ok_or_else(bad)?;
        if bytes == 0 {
            return Err(bad());
        }
        Ok(SizeSpec::Bytes(bytes))
    }
}

/// Input of the layout: what the state asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutSpec {
    pub firmware: Firmware,
    #[serde(default)]
    pub uuids: UuidSource,
    pub devices: Vec<DeviceSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Device key (`/dev/sda`).
    pub key: String,
    pub table: TableKind,
    /// Partitions in on-disk order.
    pub partitions: Vec<PartitionSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    /// Partition number; defaults to the position (1-based).
    pub number: Option<u32>,
    /// First byte (a multiple of 1 MiB, at or after the previous partition's
    /// end); by default right after the previous partition (1 MiB for the
    /// first).
    #[serde(default)]
    pub start: Option<u64>,
    pub size: SizeSpec,
    pub role: PartRole,
    /// GPT partition name; defaults to the role.
    pub label: Option<String>,
    pub filesystem: Option<FsSpec>,
    /// A further member of the multi-device btrfs whose first member is
    /// this partition key (it carries the [`FsSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<String>,
}

/// A btrfs over several partitions: the same in the request as in the
/// plan.
pub use super::plan::RaidPlan as RaidSpec;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSpec {
    pub kind: FsKind,
    pub label: Option<String>,
    /// Where the filesystem itself (its top level, or its default subvolume
    /// for btrfs when `subvol` is set) is mounted.
    pub mount: Option<PathBuf>,
    /// Subvolume for `mount` (btrfs).
    pub subvol: Option<String>,
    /// Options of `mount` (e.g. `compress=zstd:3`, `noatime`).
    #[serde(default)]
    pub mount_options: Vec<String>,
    #[serde(default)]
    pub subvolumes: Vec<SubvolSpec>,
    /// Several partitions, mirrored (btrfs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raid: Option<RaidSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubvolSpec {
    pub name: String,
    pub mount: Option<PathBuf>,
    pub compression: Option<String>,
    #[serde(default)]
    pub nodatacow: bool,
    #[serde(default)]
    pub mount_options: Vec<String>,
}

/// Why a layout cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("invalid size '{0}': use a number with K, M, G or T (e.g. 512M, 2G) or 'remaining'")]
    BadSize(String),
    #[error("{device}: partition {number} has size 'remaining' but is not the last partition; move it to the end")]
    RemainingNotLast { device: String, number: u32 },
    #[error("{device}: the layout needs {needed} bytes but the disk has {available}; use a bigger disk or smaller partitions")]
    TooSmall {
        device: String,
        needed: u64,
        available: u64,
    },
    #[error(
        "{device}: no size known for this device; map it to a target with --disk {device}=TARGET"
    )]
    UnknownSize { device: String },
    #[error("{device}: an msdos table holds at most 4 primary partitions; use gpt")]
    TooManyMbrPartitions { device: String },
    #[error("{device}: partition role {role:?} has no msdos form; use gpt")]
    RoleNeedsGpt { device: String, role: PartRole },
    #[error("{device}: partition numbers must run 1, 2, 3… without gaps; {number} is missing")]
    NumberGap { device: String, number: u32 },
    #[error("{device}: partition number {number} is used twice")]
    DuplicateNumber { device: String, number: u32 },
    #[error("{device}: msdos tables cannot address disks over 2 TiB; use gpt")]
    MbrTooLarge { device: String },
    #[error("{key}: raid member {member} is no partition of the layout; declare its disk and partition, or remove it from devices")]
    RaidMemberMissing { key: String, member: String },
    #[error("{key}: only btrfs spans several partitions here")]
    RaidOnNonBtrfs { key: String },
    #[error("mount point {0} is used twice")]
    DuplicateMount(PathBuf),
    #[error("mount point '{0}' must be an absolute path")]
    RelativeMount(PathBuf),
    #[error("subvolume '{name}': only btrfs filesystems have subvolumes")]
    SubvolumeOnNonBtrfs { name: String },
    #[error("subvolume '{name}' is listed before its parent '{parent}'; list parents first")]
    SubvolumeParentMissing { name: String, parent: String },
    #[error(
        "{pointer}: {size} bytes is larger than any disk; give a size such as \"512M\" or \"20G\""
    )]
    SizeTooLarge { pointer: String, size: u64 },
    #[error("{pointer}: this partition would end past the largest byte offset there is (2^64); shrink it or the partitions before it")]
    EndOverflows { pointer: String },
    #[error("{pointer}: start {start} is not a multiple of 1 MiB (1048576); partitions start on 1 MiB boundaries, e.g. {suggest}")]
    StartMisaligned {
        pointer: String,
        start: u64,
        suggest: u64,
    },
    #[error("{pointer}: start {start} lies inside {before}, which ends at {end}; start at {end} or later, or leave start out")]
    StartOverlaps {
        pointer: String,
        start: u64,
        before: String,
        end: u64,
    },
}

/// The JSON pointer of a partition in the state:
/// `/plugins/storage/devices/~1dev~1sda/partitions/0`.
pub fn partition_pointer(device: &str, index: usize) -> String {
    let key = device.replace('~', "~0").replace('/', "~1");
    format!("/plugins/storage/devices/{key}/partitions/{index}")
}

/// Partition device name for a disk key: `/dev/sda` + 2 = `/dev/sda2`,
/// `/dev/nvme0n1` + 2 = `/dev/nvme0n1p2` (a `p` after a trailing digit).
pub fn partition_path(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// `v` rounded up to a MiB boundary; `None` when that does not fit in u64.
fn align_up(v: u64) -> Option<u64> {
    v.checked_next_multiple_of(MIB)
}

fn align_down(v: u64) -> u64 {
    v / MIB * MIB
}

/// Makes UUIDs: random, or derived from a seed and a counter.
struct UuidMaker {
    source: UuidSource,
    counter: u64,
}

impl UuidMaker {
    fn next(&mut self) -> Uuid {
        match self.source {
            UuidSource::Random => Uuid::new_v4(),
            UuidSource::Seeded(seed) => {
                self.counter += 1;
                let mut h = Sha256::new();
                h.update(seed.to_le_bytes());
                h.update(self.counter.to_le_bytes());
                let d = h.finalize();
                let mut b = [0u8; 16];
                b.copy_from_slice(&d[..16]);
                uuid::Builder::from_random_bytes(b).into_uuid()
            }
        }
    }

    fn fs_uuid(&mut self, kind: FsKind) -> String {
        let u = self.next();
        match kind {
            FsKind::Vfat => {
                let b = u.as_bytes();
                let id = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                opdbus_common::fat::uuid_string(id)
            }
            _ => u.hyphenated().to_string(),
        }
    }
}

/// Lays out every device. `sizes` maps each device key to its size in bytes
/// (of the real target).
pub fn plan_layout(
    spec: &LayoutSpec,
    sizes: &BTreeMap<String, u64>,
) -> Result<DiskPlan, LayoutError> {
    let mut uuids = UuidMaker {
        source: spec.uuids,
        counter: 0,
    };
    let mut devices = Vec::new();
    for dev in &spec.devices {
        devices.push(plan_device(dev, spec.firmware, sizes, &mut uuids)?);
    }
    check_raids(&devices)?;
    let mounts = plan_mounts(spec, &devices)?;
    Ok(DiskPlan { devices, mounts })
}

fn plan_device(
    dev: &DeviceSpec,
    firmware: Firmware,
    sizes: &BTreeMap<String, u64>,
    uuids: &mut UuidMaker,
) -> Result<DevicePlan, LayoutError> {
    let device = dev.key.clone();
    let disk_size = *sizes
        .get(&dev.key)
        .ok_or_else(|| LayoutError::UnknownSize {
            device: device.clone(),
        })?;

    // Numbers: explicit or positional; BIOS boot gets the next free number so
    // the state's names (`/dev/sda2`) keep pointing at the same partitions.
    // (number, index in the spec, spec); the BIOS boot partition added for
    // BIOS firmware has no index.
    let mut numbered: Vec<(u32, Option<usize>, &PartitionSpec)> = Vec::new();
    let mut used = BTreeSet::new();
    for (i, p) in dev.partitions.iter().enumerate() {
        let n = p.number.unwrap_or(i as u32 + 1);
        if !used.insert(n) {
            return Err(LayoutError::DuplicateNumber { device, number: n });
        }
        numbered.push((n, Some(i), p));
    }
    for (i, (n, _, p)) in numbered.iter().enumerate() {
        if p.size == SizeSpec::Remaining && i + 1 != numbered.len() {
            return Err(LayoutError::RemainingNotLast { device, number: *n });
        }
    }
    let needs_bios_boot = dev.table == TableKind::Gpt
        && matches!(firmware, Firmware::Bios | Firmware::Both)
        && !dev.partitions.iter().any(|p| p.role == PartRole::BiosBoot);
    let bios_spec = PartitionSpec {
        number: None,
        start: None,
        size: SizeSpec::Bytes(MIB),
        role: PartRole::BiosBoot,
        label: Some("bios_boot".into()),
        filesystem: None,
        member_of: None,
    };
    if needs_bios_boot {
        let n = used.iter().next_back().copied().unwrap_or(0) + 1;
        numbered.insert(0, (n, None, &bios_spec));
    }

    if let Some(gap) =
        (1..=numbered.len() as u32).find(|n| !numbered.iter().any(|(m, _, _)| m == n))
    {
        return Err(LayoutError::NumberGap {
            device,
            number: gap,
        });
    }
    if dev.table == TableKind::Msdos {
        if numbered.len() > 4 {
            return Err(LayoutError::TooManyMbrPartitions { device });
        }
        if let Some((_, _, p)) = numbered
            .iter()
            .find(|(_, _, p)| p.role.mbr_type().is_none())
        {
            return Err(LayoutError::RoleNeedsGpt {
                device,
                role: p.role,
            });
        }
        if disk_size > (u64::from(u32::MAX) + 1) * 512 {
            return Err(LayoutError::MbrTooLarge { device });
        }
    }

    let usable_end = match dev.table {
        TableKind::Gpt => align_down(disk_size.saturating_sub(GPT_BACKUP_BYTES)),
        TableKind::Msdos => align_down(disk_size),
    };
    // Place every partition (a `remaining` one at its minimum, 1 MiB) with
    // checked arithmetic, then compare the end with the disk.
    let mut placed: Vec<(u64, Option<u64>)> = Vec::new();
    let mut cursor = MIB;
    let mut before = "the partition table (the first MiB)".to_string();
    for (n, index, p) in &numbered {
        let pointer = |field: &str| match index {
            Some(i) => format!("{}/{field}", partition_pointer(&dev.key, *i)),
            None => format!("{}: the BIOS boot partition", dev.key),
        };
        let start = match p.start {
            None => cursor,
            Some(s) if s % MIB != 0 => {
                return Err(LayoutError::StartMisaligned {
                    pointer: pointer("start"),
                    start: s,
                    suggest: align_up(s).unwrap_or(align_down(s)),
                })
            }
            Some(s) if s < cursor => {
                return Err(LayoutError::StartOverlaps {
                    pointer: pointer("start"),
                    start: s,
                    before,
                    end: cursor,
                })
            }
            Some(s) => s,
        };
        let size = match p.size {
            SizeSpec::Bytes(b) => Some(align_up(b).ok_or_else(|| LayoutError::SizeTooLarge {
                pointer: pointer("size"),
                size: b,
            })?),
            SizeSpec::Remaining => None,
        };
        cursor =
            start
                .checked_add(size.unwrap_or(MIB))
                .ok_or_else(|| LayoutError::EndOverflows {
                    pointer: pointer("size"),
                })?;
        before = if index.is_some() {
            format!("partition {n}")
        } else {
            format!("partition {n} (the 1 MiB BIOS boot partition added for BIOS firmware)")
        };
        placed.push((start, size));
    }
    if cursor > usable_end {
        let tail = if dev.table == TableKind::Gpt {
            GPT_BACKUP_BYTES
        } else {
            0
        };
        return Err(LayoutError::TooSmall {
            device,
            needed: cursor.saturating_add(tail),
            available: disk_size,
        });
    }

    let mut partitions = Vec::new();
    for ((n, _, p), (start, size)) in numbered.into_iter().zip(placed) {
        // `remaining` takes the rest; the check above keeps start < usable_end.
        let size = size.unwrap_or(usable_end - start);
        let filesystem = match &p.filesystem {
            None => None,
            Some(fs) => Some(plan_fs(fs, uuids)?),
        };
        let label = p.label.clone().unwrap_or_else(|| {
            match p.role {
                PartRole::Efi => "esp",
                PartRole::Linux => "linux",
                PartRole::Swap => "swap",
                PartRole::BiosBoot => "bios_boot",
            }
            .into()
        });
        partitions.push(PartitionPlan {
            number: n,
            key: partition_path(&dev.key, n),
            start,
            size,
            role: p.role,
            type_guid: p.role.gpt_type(),
            mbr_type: match dev.table {
                TableKind::Msdos => p.role.mbr_type(),
                TableKind::Gpt => None,
            },
            part_guid: match dev.table {
                TableKind::Gpt => Some(uuids.next()),
                TableKind::Msdos => None,
            },
            label,
            filesystem,
            member_of: p.member_of.clone(),
        });
    }
    let (disk_guid, disk_signature) = match dev.table {
        TableKind::Gpt => (Some(uuids.next()), None),
        TableKind::Msdos => {
            let b = *uuids.next().as_bytes();
            (None, Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        }
    };
    Ok(DevicePlan {
        key: dev.key.clone(),
        table: dev.table,
        disk_guid,
        disk_signature,
        size: disk_size,
        partitions,
    })
}

fn plan_fs(fs: &FsSpec, uuids: &mut UuidMaker) -> Result<FilesystemPlan, LayoutError> {
    if fs.kind != FsKind::Btrfs {
        if let Some(sv) = fs.subvolumes.first() {
            return Err(LayoutError::SubvolumeOnNonBtrfs {
                name: sv.name.clone(),
            });
        }
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut subvolumes = Vec::new();
    for sv in &fs.subvolumes {
        let name = sv.name.trim_matches('/');
        if let Some((parent, _)) = name.rsplit_once('/') {
            if !seen.contains(parent) {
                return Err(LayoutError::SubvolumeParentMissing {
                    name: name.into(),
                    parent: parent.into(),
                });
            }
        }
        seen.insert(name);
        subvolumes.push(SubvolumePlan {
            name: name.into(),
            compression: sv.compression.clone(),
            nodatacow: sv.nodatacow,
        });
    }
    let default_subvolume = if fs.kind == FsKind::Btrfs {
        fs.subvolumes
            .iter()
            .find(|s| s.mount.as_deref() == Some(Path::new("/")))
            .map(|s| s.name.trim_matches('/').to_string())
            .or_else(|| {
                (fs.mount.as_deref() == Some(Path::new("/")))
                    .then(|| fs.subvol.clone())
                    .flatten()
            })
    } else {
        None
    };
    Ok(FilesystemPlan {
        kind: fs.kind,
        uuid: uuids.fs_uuid(fs.kind),
        label: fs.label.clone(),
        subvolumes,
        default_subvolume,
        raid: fs.raid.clone(),
    })
}

/// Every raid member is a partition of the layout, and only btrfs is
/// mirrored.
fn check_raids(devices: &[DevicePlan]) -> Result<(), LayoutError> {
    let keys: BTreeSet<&str> = devices
        .iter()
        .flat_map(|d| &d.partitions)
        .map(|p| p.key.as_str())
        .collect();
    for p in devices.iter().flat_map(|d| &d.partitions) {
        let Some(fs) = &p.filesystem else { continue };
        let Some(raid) = &fs.raid else { continue };
        if fs.kind != FsKind::Btrfs {
            return Err(LayoutError::RaidOnNonBtrfs { key: p.key.clone() });
        }
        if let Some(m) = raid.devices.iter().find(|m| !keys.contains(m.as_str())) {
            return Err(LayoutError::RaidMemberMissing {
                key: p.key.clone(),
                member: m.clone(),
            });
        }
    }
    Ok(())
}

/// Mounts sorted parents first; `compress=` kept only on the first mount of
/// each filesystem (it is a filesystem-wide option).
fn plan_mounts(spec: &LayoutSpec, devices: &[DevicePlan]) -> Result<Vec<MountPlan>, LayoutError> {
    let mut mounts = Vec::new();
    for (dspec, dplan) in spec.devices.iter().zip(devices) {
        // Pair each spec partition with its plan by number (an inserted BIOS
        // boot partition has a number of its own and no spec).
        let specs = dspec
            .partitions
            .iter()
            .enumerate()
            .filter_map(|(i, pspec)| {
                let n = pspec.number.unwrap_or(i as u32 + 1);
                dplan
                    .partitions
                    .iter()
                    .find(|p| p.number == n)
                    .map(|pplan| (pplan, pspec))
            });
        for (pplan, pspec) in specs {
            let (Some(fs), Some(fplan)) = (&pspec.filesystem, &pplan.filesystem) else {
                continue;
            };
            // A mirror mounts with a member missing: a server whose disk
            // died keeps booting (the agent reports the degraded array).
            let degraded = fplan.raid.is_some();
            let mut push = |path: &Path, subvol: Option<String>, options: &[String]| {
                let mut options = options.to_vec();
                if degraded && !options.iter().any(|o| o == "degraded") {
                    options.push("degraded".into());
                }
                mounts.push(MountPlan {
                    path: path.to_path_buf(),
                    partition: pplan.key.clone(),
                    fstype: fs.kind,
                    uuid: fplan.uuid.clone(),
                    subvol,
                    options,
                });
            };
            if let Some(m) = &fs.mount {
                if fs.kind != FsKind::Swap {
                    push(m, fs.subvol.clone(), &fs.mount_options);
                }
            }
            for sv in &fs.subvolumes {
                if let Some(m) = &sv.mount {
                    let mut opts = sv.mount_options.clone();
                    for o in &fs.mount_options {
                        if !opts.contains(o) {
                            opts.push(o.clone());
                        }
                    }
                    push(m, Some(sv.name.trim_matches('/').to_string()), &opts);
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    for m in &mounts {
        if !m.path.is_absolute() {
            return Err(LayoutError::RelativeMount(m.path.clone()));
        }
        if !seen.insert(m.path.clone()) {
            return Err(LayoutError::DuplicateMount(m.path.clone()));
        }
    }
    mounts.sort_by(|a, b| {
        (a.path.components().count(), &a.path).cmp(&(b.path.components().count(), &b.path))
    });
    // compress= belongs to the filesystem: first mount only.
    let mut compress: BTreeMap<String, Option<String>> = BTreeMap::new();
    for m in &mounts {
        if let Some(c) = m.options.iter().find(|o| o.starts_with("compress")) {
            compress.entry(m.uuid.clone()).or_insert(Some(c.clone()));
        }
    }
    let mut first_done = BTreeSet::new();
    for m in &mut mounts {
        m.options.retain(|o| !o.starts_with("compress"));
        if first_done.insert(m.uuid.clone()) {
            if let Some(Some(c)) = compress.get(&m.uuid) {
                m.options.push(c.clone());
            }
        }
    }
    Ok(mounts)
}
