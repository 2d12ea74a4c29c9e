//! From a validated state to the install plan: the disk layout request the
//! disk engine lays out (sizes, roles, filesystems, subvolumes, mounts) and
//! the devices each state key maps to today. Pure apart from reading sizes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use opdbus_state::model::{Bootstrap, FsType, PartitionTable, PartitionType, Size, State, Storage};
use serde::Serialize;

use crate::disk::layout::{
    partition_path, partition_pointer, DeviceSpec, Firmware, FsSpec, LayoutSpec, PartitionSpec,
    RaidSpec, SizeSpec, SubvolSpec, UuidSource,
};
use crate::disk::plan::{DiskPlan, FsKind, PartRole, TableKind};
use crate::disk::TargetMap;
use crate::inventory;

/// Everything an install will do, before it does anything.
#[derive(Debug, Clone, Serialize)]
pub struct InstallPlan {
    pub hostname: String,
    pub distribution: String,
    pub suite: String,
    pub firmware: Firmware,
    /// State device key → the block device or image file it maps to.
    pub targets: TargetMap,
    pub disk: DiskPlan,
    pub fstab: String,
}

/// Parses `NAME=TARGET` (`/dev/sda=disk.img`).
pub fn parse_disk_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), PathBuf::from(v))),
        _ => Err(format!(
            "expected NAME=TARGET (a device key of the state and a block device or image file), got {s:?}"
        )),
    }
}

/// The storage section, or an error saying an install needs one.
pub fn storage(state: &State) -> Result<&Storage> {
    state
        .plugins
        .storage
        .as_ref()
        .filter(|s| !s.devices.is_empty())
        .context("the state has no plugins.storage.devices: an install needs at least one disk to partition")
}

fn firmware(b: Option<&Bootstrap>) -> Firmware {
    use opdbus_state::model::Firmware as F;
    match b.map(|b| b.firmware).unwrap_or_default() {
        F::Uefi => Firmware::Uefi,
        F::Bios => Firmware::Bios,
        F::Both => Firmware::Both,
    }
}

fn fs_kind(t: FsType) -> FsKind {
    match t {
        FsType::Vfat => FsKind::Vfat,
        FsType::Btrfs => FsKind::Btrfs,
        FsType::Ext4 => FsKind::Ext4,
        FsType::Swap => FsKind::Swap,
    }
}

fn options(o: Option<&String>) -> Vec<String> {
    o.map(|s| {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    })
    .unwrap_or_default()
}

/// The layout request for the disk engine (no sizes yet: those come from
/// the targets).
pub fn layout_spec(state: &State, uuids: UuidSource) -> Result<LayoutSpec> {
    let storage = storage(state)?;
    // Partition key of a raid member -> the first member (the entry's key).
    let member_of: BTreeMap<&str, &str> = storage
        .filesystems
        .iter()
        .filter(|(_, f)| f.raid.is_some())
        .flat_map(|(key, f)| {
            f.devices
                .iter()
                .filter(move |m| *m != key)
                .map(move |m| (m.as_str(), key.as_str()))
        })
        .collect();
    let mut devices = Vec::new();
    for (key, dev) in &storage.devices {
        let mut partitions = Vec::new();
        for (i, p) in dev.partitions.iter().enumerate() {
            let number = p.number.unwrap_or(i as u32 + 1);
            let part = partition_path(key, number);
            let declared = storage.filesystems.get(&part);
            let member = member_of.get(part.as_str()).map(|k| k.to_string());
            let kind = p
                .filesystem
                .or(declared.map(|f| f.kind))
                .or(match p.kind {
                    PartitionType::Efi => Some(FsType::Vfat),
                    PartitionType::Swap => Some(FsType::Swap),
                    _ => None,
                })
                .map(fs_kind)
                // A further member carries no filesystem of its own: the
                // first member's mkfs spans it.
                .filter(|_| member.is_none());
            let subvolumes: Vec<SubvolSpec> = storage
                .btrfs_subvolumes
                .get(&part)
                .map(|svs| {
                    svs.iter()
                        .map(|sv| SubvolSpec {
                            name: sv.name.clone(),
                            mount: sv.mount.as_ref().map(PathBuf::from),
                            compression: sv.compression.clone(),
                            nodatacow: sv.nodatacow,
                            mount_options: Vec::new(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let filesystem = kind.map(|kind| {
                let mut fs = FsSpec {
                    kind,
                    label: declared.and_then(|f| f.label.clone()),
                    mount: p.mount.as_ref().map(PathBuf::from),
                    subvol: None,
                    mount_options: options(p.options.as_ref()),
                    subvolumes,
                    raid: declared.and_then(|f| {
                        Some(RaidSpec {
                            profile: f.raid?,
                            devices: f.devices.clone(),
                        })
                    }),
                };
                // A partition mount that a subvolume also claims is that
                // subvolume's mount (the roadmap writes both).
                if let Some(m) = &fs.mount {
                    if fs.subvolumes.iter().any(|s| s.mount.as_ref() == Some(m)) {
                        fs.mount = None;
                    }
                }
                fs
            });
            let start = match p.start {
                None => None,
                Some(Size::Bytes(b)) => Some(b),
                Some(Size::Remaining) => bail!(
                    "{}/start: a partition cannot start at \"remaining\"; give a byte offset such as \"1M\", or leave start out",
                    partition_pointer(key, i)
                ),
            };
            partitions.push(PartitionSpec {
                number: p.number,
                start,
                size: match p.size {
                    Size::Bytes(b) => SizeSpec::Bytes(b),
                    Size::Remaining => SizeSpec::Remaining,
                },
                role: match p.kind {
                    PartitionType::Efi => PartRole::Efi,
                    PartitionType::Linux => PartRole::Linux,
                    PartitionType::Swap => PartRole::Swap,
                    PartitionType::BiosBoot => PartRole::BiosBoot,
                },
                label: p.label.clone(),
                filesystem,
                member_of: member,
            });
        }
        devices.push(DeviceSpec {
            key: key.clone(),
            table: match dev.partition_table {
                PartitionTable::Gpt => TableKind::Gpt,
                PartitionTable::Msdos => TableKind::Msdos,
            },
            partitions,
        });
    }
    apply_mounts_section(storage, &mut devices)?;
    mirror_esps(&mut devices);
    Ok(LayoutSpec {
        firmware: firmware(state.bootstrap.as_ref()),
        uuids,
        devices,
    })
}

/// With an ESP on more than one disk (a mirrored install), the ones the
/// state gives no mount point are mounted at `/boot/efi2`, `/boot/efi3`…
/// (the kernel hooks write every mounted one alike), and every ESP mounts
/// with `nofail`: the host must boot with any one disk pulled. No short
/// `x-systemd.device-timeout`: a `nofail` mount does not hold up the boot
/// anyway, and under a slow start (udev running 30 s in, measured under
/// TCG) a 10 s timeout gave up on the ESP that was there.
fn mirror_esps(devices: &mut [DeviceSpec]) {
    let is_esp = |p: &PartitionSpec| {
        p.role == PartRole::Efi
            && p.filesystem
                .as_ref()
                .is_some_and(|f| f.kind == FsKind::Vfat)
    };
    let count = devices
        .iter()
        .flat_map(|d| &d.partitions)
        .filter(|p| is_esp(p))
        .count();
    if count < 2 {
        return;
    }
    let mut taken: Vec<PathBuf> = devices
        .iter()
        .flat_map(|d| &d.partitions)
        .filter_map(|p| p.filesystem.as_ref()?.mount.clone())
        .collect();
    for p in devices.iter_mut().flat_map(|d| d.partitions.iter_mut()) {
        if !is_esp(p) {
            continue;
        }
        let Some(fs) = p.filesystem.as_mut() else {
            continue;
        };
        if fs.mount.is_none() {
            let free = std::iter::once("/boot/efi".to_string())
                .chain((2..).map(|n| format!("/boot/efi{n}")))
                .map(PathBuf::from)
                .find(|m| !taken.contains(m))
                .unwrap_or_default();
            taken.push(free.clone());
            fs.mount = Some(free);
        }
        if fs.mount_options.is_empty() {
            fs.mount_options.push("umask=0077".into());
        }
        if !fs.mount_options.iter().any(|x| x == "nofail") {
            fs.mount_options.push("nofail".into());
        }
    }
}

/// `plugins.storage.mounts` entries attach to the partition (or subvolume)
/// they name.
fn apply_mounts_section(storage: &Storage, devices: &mut [DeviceSpec]) -> Result<()> {
    for (point, m) in &storage.mounts {
        let fs = devices
            .iter_mut()
            .flat_map(|d| {
                let key = d.key.clone();
                d.partitions.iter_mut().enumerate().map(move |(i, p)| {
                    let n = p.number.unwrap_or(i as u32 + 1);
                    (partition_path(&key, n), p)
                })
            })
            .find(|(path, _)| *path == m.device)
            .and_then(|(_, p)| p.filesystem.as_mut());
        let Some(fs) = fs else {
            bail!(
                "plugins.storage.mounts[{point:?}] names {} which has no filesystem in the layout",
                m.device
            );
        };
        let opts = options(m.options.as_ref());
        match &m.subvol {
            Some(sv) => {
                if let Some(s) = fs.subvolumes.iter_mut().find(|s| s.name == *sv) {
                    s.mount = Some(PathBuf::from(point));
                    s.mount_options = opts;
                } else {
                    fs.subvolumes.push(SubvolSpec {
                        name: sv.clone(),
                        mount: Some(PathBuf::from(point)),
                        compression: None,
                        nodatacow: false,
                        mount_options: opts,
                    });
                }
                if fs.mount.as_deref() == Some(Path::new(point)) {
                    fs.mount = None;
                }
            }
            None => {
                fs.mount = Some(PathBuf::from(point));
                fs.mount_options = opts;
            }
        }
    }
    Ok(())
}

/// Maps every device key to a target: `--disk` pairs first, else the key's
/// selector (or the key itself as a path) against the machine's disks.
pub fn resolve_targets(
    state: &State,
    disk_args: &[(String, PathBuf)],
    sys: &Path,
    dev: &Path,
) -> Result<TargetMap> {
    let storage = storage(state)?;
    let mut given: BTreeMap<&str, &PathBuf> = BTreeMap::new();
    for (k, v) in disk_args {
        if let Some(first) = given.insert(k.as_str(), v) {
            bail!(
                "--disk {k}= is given twice ({} and {}); map each device key once",
                first.display(),
                v.display()
            );
        }
    }
    for k in given.keys() {
        if !storage.devices.contains_key(*k) {
            let known: Vec<&str> = storage.devices.keys().map(String::as_str).collect();
            bail!(
                "--disk {k}=…: the state has no device {k}; its devices are {}",
                known.join(", ")
            );
        }
    }
    let mut out = TargetMap::new();
    let mut inventory_cache = None;
    for (key, device) in &storage.devices {
        if let Some(t) = given.get(key.as_str()) {
            out.insert(key.clone(), (*t).clone());
            continue;
        }
        let selector =
            device
                .selector
                .clone()
                .unwrap_or_else(|| opdbus_state::model::DiskSelector {
                    path: Some(key.clone()),
                    ..Default::default()
                });
        let disks = inventory_cache.get_or_insert_with(|| inventory::disks(sys, dev));
        let found = inventory::select(key, &selector, disks)?;
        out.insert(key.clone(), found.path.clone());
    }
    refuse_shared_targets(&out)?;
    Ok(out)
}

/// Two device keys on one disk would write both layouts over each other:
/// compare resolved paths, device numbers and inodes (a loop device and its
/// image are one disk too).
fn refuse_shared_targets(targets: &TargetMap) -> Result<()> {
    use crate::disk::blockdev::target_identities;
    let ids: Vec<(&String, &PathBuf, Vec<_>)> = targets
        .iter()
        .map(|(k, t)| (k, t, target_identities(t)))
        .collect();
    for (i, (k1, t1, id1)) in ids.iter().enumerate() {
        for (k2, t2, id2) in &ids[i + 1..] {
            if id1.iter().any(|a| id2.contains(a)) {
                bail!(
                    "devices {k1} and {k2} both map to one disk ({} and {}); give each device key its own disk or image",
                    t1.display(),
                    t2.display()
                );
            }
        }
    }
    Ok(())
}

/// Size in bytes of a block device or image file.
pub fn target_size(path: &Path) -> Result<u64> {
    use std::io::Seek;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    f.seek(std::io::SeekFrom::End(0))
        .with_context(|| format!("reading the size of {}", path.display()))
}

/// The whole install plan for `state` onto `targets`.
pub fn install_plan(state: &State, targets: TargetMap, uuids: UuidSource) -> Result<InstallPlan> {
    let spec = layout_spec(state, uuids)?;
    let mut sizes = BTreeMap::new();
    for (k, t) in &targets {
        sizes.insert(k.clone(), target_size(t)?);
    }
    let disk = crate::disk::plan_layout(&spec, &sizes)?;
    let fstab = crate::disk::fstab(&disk);
    let b = state.bootstrap.as_ref();
    Ok(InstallPlan {
        hostname: b
            .map(|b| b.hostname.clone())
            .unwrap_or_else(|| "debian".into()),
        distribution: match b.map(|b| b.distribution).unwrap_or_default() {
            opdbus_state::model::Distribution::Debian => "debian".into(),
            opdbus_state::model::Distribution::Proxmox => "proxmox".into(),
        },
        suite: b
            .map(|b| b.suite.clone())
            .unwrap_or_else(|| "bookworm".into()),
        firmware: spec.firmware,
        targets,
        disk,
        fstab,
    })
}
