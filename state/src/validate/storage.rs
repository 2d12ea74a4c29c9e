//! `plugins.storage` and its link to `bootstrap`: partition layout (numbers,
//! overlaps, sizes, msdos limits, ESP), subvolumes, and the mount table
//! (unknown sources, duplicate mount points, per-filesystem compress=).

use std::collections::{BTreeMap, HashMap};

use super::Cx;
use crate::diag::{child, pointer};
use crate::model::{
    partition_path, BtrfsRaid, FsType, PartitionTable, PartitionType, Size, State, Storage,
};

const MIB: u64 = 1 << 20;
/// The smallest ESP that holds two Debian kernels with their initramfs, the
/// running one and its successor, while an update writes the new one. Measured
/// (bookworm amd64): vmlinuz 8.2 MB (6.12 backports: 12.0 MB) and a
/// MODULES=most initramfs of 35.8 MB, so about 46 MiB a pair and 92 MiB for
/// two; with systemd-boot twice (the loader and EFI/BOOT), the FAT tables and
/// room for an initramfs that grows with firmware, 128 MiB is the floor.
const MIN_ESP: u64 = 128 * MIB;
/// Members differing by more than this factor draw a warning.
const SIZE_SPREAD: f64 = 1.25;
const MSDOS_LIMIT: u64 = 2 << 40;

/// What a partition path resolves to.
struct PartInfo {
    fs: Option<FsType>,
    ptr: String,
    /// The disk it is on.
    disk: String,
    /// Its size when the state fixes it.
    size: Option<u64>,
}

/// One mount of the table, from whichever place declared it.
struct MountDecl {
    point: String,
    part: String,
    subvol: Option<String>,
    options: Option<String>,
    /// Pointer of the mount point value (or the options, for compress checks).
    ptr: String,
    options_ptr: String,
}

pub(super) fn check(cx: &mut Cx, state: &State) {
    let storage = state.plugins.storage.as_ref();
    check_bootstrap_device(cx, state);
    let Some(storage) = storage else { return };

    let mut parts: BTreeMap<String, PartInfo> = BTreeMap::new();
    for (dev, device) in &storage.devices {
        let dptr = pointer(&["plugins", "storage", "devices", dev]);
        layout(cx, &dptr, device);
        for (i, p) in device.partitions.iter().enumerate() {
            let number = p.number.unwrap_or(i as u32 + 1);
            let pptr = child(&child(&dptr, "partitions"), i);
            let path = partition_path(dev, number);
            let fs = p
                .filesystem
                .or_else(|| storage.filesystems.get(&path).map(|f| f.kind));
            if p.kind == PartitionType::Efi && fs.is_some_and(|f| f != FsType::Vfat) {
                let fptr = if p.filesystem.is_some() {
                    child(&pptr, "filesystem")
                } else {
                    pointer(&["plugins", "storage", "filesystems", &path, "type"])
                };
                cx.error(
                    fptr,
                    format!("EFI system partition {path} must be vfat"),
                    "UEFI firmware reads only FAT; set \"filesystem\": \"vfat\"",
                );
            }
            if p.kind == PartitionType::Efi {
                if let Size::Bytes(b) = p.size {
                    if b < MIN_ESP {
                        cx.error(
                            child(&pptr, "size"),
                            format!(
                                "EFI system partition {path} is {}, too small for two kernels (at least {})",
                                human(b),
                                human(MIN_ESP)
                            ),
                            "a Debian kernel and its initramfs take about 46M, and every installed kernel is copied to the ESP; give it \"512M\"",
                        );
                    }
                }
            }
            let size = match p.size {
                Size::Bytes(b) => Some(b),
                Size::Remaining => None,
            };
            parts.insert(
                path,
                PartInfo {
                    fs,
                    ptr: pptr,
                    disk: dev.clone(),
                    size,
                },
            );
        }
    }

    for path in storage.filesystems.keys() {
        if !parts.contains_key(path) {
            cx.error(
                pointer(&["plugins", "storage", "filesystems", path]),
                format!("filesystem entry {path} names no partition"),
                "use a partition path derived from plugins.storage.devices, such as /dev/sda2",
            );
        }
    }

    check_raid(cx, storage, &parts);

    let mut mounts: Vec<MountDecl> = Vec::new();
    // Partition-level mounts.
    for (dev, device) in &storage.devices {
        for (i, p) in device.partitions.iter().enumerate() {
            if let Some(m) = &p.mount {
                let number = p.number.unwrap_or(i as u32 + 1);
                let pptr = pointer(&[
                    "plugins",
                    "storage",
                    "devices",
                    dev,
                    "partitions",
                    &i.to_string(),
                ]);
                mounts.push(MountDecl {
                    point: m.clone(),
                    part: partition_path(dev, number),
                    subvol: None,
                    options: p.options.clone(),
                    ptr: child(&pptr, "mount"),
                    options_ptr: child(&pptr, "options"),
                });
            }
        }
    }

    // Subvolumes.
    for (path, subvols) in &storage.btrfs_subvolumes {
        let sptr = pointer(&["plugins", "storage", "btrfs_subvolumes", path]);
        match parts.get(path) {
            None => cx.error(
                sptr.clone(),
                format!("btrfs_subvolumes key {path} names no partition"),
                "use a partition path derived from plugins.storage.devices, such as /dev/sda2",
            ),
            Some(info) if info.fs != Some(FsType::Btrfs) => {
                let what = info.fs.map_or("no filesystem".to_string(), |f| {
                    format!("filesystem {}", fs_name(f))
                });
                cx.error(
                    sptr.clone(),
                    format!("subvolumes on {path}, which has {what}"),
                    format!(
                        "subvolumes need btrfs: set \"filesystem\": \"btrfs\" at {}",
                        info.ptr
                    ),
                );
            }
            Some(_) => {}
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, sv) in subvols.iter().enumerate() {
            let svptr = child(&sptr, i);
            if let Some(first) = seen.insert(sv.name.as_str(), i) {
                cx.error(
                    child(&svptr, "name"),
                    format!("duplicate subvolume name {:?} on {path}", sv.name),
                    format!(
                        "it is already declared at {}; give each subvolume its own name",
                        child(&sptr, first)
                    ),
                );
            }
            if let Some(c) = &sv.compression {
                check_compression(cx, child(&svptr, "compression"), c);
            }
            if let Some(m) = &sv.mount {
                mounts.push(MountDecl {
                    point: m.clone(),
                    part: path.clone(),
                    subvol: Some(sv.name.clone()),
                    options: None,
                    ptr: child(&svptr, "mount"),
                    options_ptr: child(&svptr, "mount"),
                });
            }
        }
    }

    // The `mounts` table.
    for (point, m) in &storage.mounts {
        let mptr = pointer(&["plugins", "storage", "mounts", point]);
        if !parts.contains_key(&m.device) {
            cx.error(
                child(&mptr, "device"),
                format!("mount {point} names no partition: {}", m.device),
                "use a partition path derived from plugins.storage.devices, such as /dev/sda2",
            );
            continue;
        }
        if let Some(sv) = &m.subvol {
            let known = storage
                .btrfs_subvolumes
                .get(&m.device)
                .is_some_and(|l| l.iter().any(|s| &s.name == sv));
            if !known {
                cx.error(
                    child(&mptr, "subvol"),
                    format!(
                        "mount {point} names no subvolume: {sv} is not declared on {}",
                        m.device
                    ),
                    format!(
                        "add {{\"name\": \"{sv}\"}} to plugins.storage.btrfs_subvolumes[\"{}\"]",
                        m.device
                    ),
                );
                continue;
            }
        }
        mounts.push(MountDecl {
            point: point.clone(),
            part: m.device.clone(),
            subvol: m.subvol.clone(),
            options: m.options.clone(),
            ptr: mptr.clone(),
            options_ptr: child(&mptr, "options"),
        });
    }

    check_mount_table(cx, &mounts);
}

/// Multi-device btrfs entries: profile, members (partitions of declared
/// disks, one per disk, the key first, no other filesystem) and sizes.
fn check_raid(cx: &mut Cx, storage: &Storage, parts: &BTreeMap<String, PartInfo>) {
    // member -> the entry that claims it.
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, fs) in &storage.filesystems {
        let fptr = pointer(&["plugins", "storage", "filesystems", key]);
        let Some(raid) = fs.raid else {
            if !fs.devices.is_empty() {
                cx.error(
                    child(&fptr, "devices"),
                    format!("filesystem {key} lists devices but no raid profile"),
                    "set \"raid\": \"raid1\" (data and metadata mirrored), or remove devices for a one-partition filesystem",
                );
            }
            continue;
        };
        if fs.kind != FsType::Btrfs {
            cx.error(
                child(&fptr, "raid"),
                format!(
                    "raid {} on filesystem {key} of type {}",
                    raid.name(),
                    fs_name(fs.kind)
                ),
                "mirroring is a btrfs profile here: set \"type\": \"btrfs\", or remove raid",
            );
            continue;
        }
        let n = fs.devices.len();
        if n < raid.min_devices() {
            cx.error(
                if n == 0 {
                    fptr.clone()
                } else {
                    child(&fptr, "devices")
                },
                format!(
                    "{} on {key} with {n} device{}, but {} needs at least {}",
                    raid.name(),
                    if n == 1 { "" } else { "s" },
                    raid.name(),
                    raid.min_devices()
                ),
                match raid {
                    BtrfsRaid::Raid1 => "list a partition of a second disk in devices, such as [\"/dev/sda2\", \"/dev/sdb2\"], or remove raid for one disk",
                    BtrfsRaid::Raid10 => "list four partitions, each on its own disk, or use \"raid1\" with two or three",
                },
            );
        }
        if let Some(first) = fs.devices.first() {
            if first != key {
                let hint = if fs.devices.contains(key) {
                    format!("move {key} to the front of devices")
                } else {
                    format!("key the entry by {first} or put {key} first in devices")
                };
                cx.error(
                    child(&child(&fptr, "devices"), 0),
                    format!(
                        "filesystem {key} is keyed by a partition that is not its first member {first}"
                    ),
                    format!("the entry is keyed by its first member, which mounts and subvolumes name; {hint}"),
                );
            }
        }
        let mut disks: BTreeMap<&str, usize> = BTreeMap::new();
        let mut sizes: Vec<(&str, Option<u64>)> = Vec::new();
        for (i, m) in fs.devices.iter().enumerate() {
            let mptr = child(&child(&fptr, "devices"), i);
            if let Some(other) = claimed.insert(m, key) {
                let msg = if other == key {
                    format!("{m} is listed twice in devices of {key}")
                } else {
                    format!("{m} is a member of {other} and of {key}")
                };
                cx.error(
                    mptr,
                    msg,
                    "a partition belongs to one filesystem once; list each member once",
                );
                continue;
            }
            let Some(info) = parts.get(m.as_str()) else {
                cx.error(
                    mptr,
                    format!("raid member {m} of {key} is no partition of a declared disk"),
                    "declare the disk in plugins.storage.devices and use its partition path, such as /dev/sdb2",
                );
                continue;
            };
            if let Some(first) = disks.insert(&info.disk, i) {
                cx.error(
                    mptr.clone(),
                    format!(
                        "raid members {} and {m} of {key} are on the same disk {}",
                        fs.devices[first], info.disk
                    ),
                    "a mirror on one disk dies with it: put each member on its own disk",
                );
            }
            if info.fs.is_some_and(|f| f != FsType::Btrfs) {
                cx.error(
                    mptr.clone(),
                    format!(
                        "raid member {m} of {key} has filesystem {}",
                        info.fs.map_or("none", fs_name)
                    ),
                    format!(
                        "members carry the btrfs of {key}: set \"filesystem\": \"btrfs\" at {} or leave it out",
                        info.ptr
                    ),
                );
            }
            if m != key && storage.filesystems.contains_key(m) {
                cx.error(
                    mptr,
                    format!("raid member {m} of {key} has its own filesystem entry"),
                    format!("remove plugins.storage.filesystems[\"{m}\"]; the members share the entry {key}"),
                );
            }
            sizes.push((m, info.size));
        }
        check_member_sizes(cx, &fptr, key, raid, storage, parts, &sizes);
    }
    // A member other than the key must not be used as a filesystem of its own.
    for (i, m) in &claimed {
        if i == m {
            continue;
        }
        if storage.btrfs_subvolumes.contains_key(*i) {
            cx.error(
                pointer(&["plugins", "storage", "btrfs_subvolumes", i]),
                format!("subvolumes keyed by {i}, a member of {m}"),
                format!("key them by {m}, the filesystem's first member"),
            );
        }
    }
}

/// Warns when the members' sizes, as far as the state fixes them (partition
/// sizes, else the disks' selector.max_size), differ by more than
/// `SIZE_SPREAD` and the larger members' surplus cannot be mirrored.
fn check_member_sizes(
    cx: &mut Cx,
    fptr: &str,
    key: &str,
    raid: BtrfsRaid,
    storage: &Storage,
    parts: &BTreeMap<String, PartInfo>,
    sizes: &[(&str, Option<u64>)],
) {
    if sizes.len() < 2 {
        return;
    }
    let known: Option<Vec<u64>> = if sizes.iter().all(|(_, s)| s.is_some()) {
        Some(sizes.iter().filter_map(|(_, s)| *s).collect())
    } else {
        sizes
            .iter()
            .map(|(m, _)| {
                let disk = &parts.get(*m)?.disk;
                match storage.devices.get(disk)?.selector.as_ref()?.max_size {
                    Some(Size::Bytes(b)) => Some(b),
                    _ => None,
                }
            })
            .collect()
    };
    let Some(known) = known else { return };
    let (Some(&min), Some(&max)) = (known.iter().min(), known.iter().max()) else {
        return;
    };
    if (max as f64) <= (min as f64) * SIZE_SPREAD {
        return;
    }
    let total: u64 = known.iter().sum();
    let usable = match raid {
        // Every block on two members: the largest can pair only with the rest.
        BtrfsRaid::Raid1 => (total / 2).min(total - max),
        // Stripes over all members at the smallest member's size (roughly).
        BtrfsRaid::Raid10 => min * known.len() as u64 / 2,
    };
    let unused = total.saturating_sub(usable * 2);
    if unused == 0 {
        // raid1 over 1T+1T+2T mirrors every byte.
        return;
    }
    cx.warn(
        child(fptr, "devices"),
        format!(
            "members of {} on {key} differ in size ({} to {}): about {} cannot be mirrored and stays unused",
            raid.name(),
            human(min),
            human(max),
            human(unused)
        ),
        "use disks (or partitions) of about the same size",
    );
}

fn fs_name(f: FsType) -> &'static str {
    match f {
        FsType::Vfat => "vfat",
        FsType::Btrfs => "btrfs",
        FsType::Ext4 => "ext4",
        FsType::Swap => "swap",
    }
}

/// Numbers, order of `remaining`, overlaps, disk size and msdos limits.
fn layout(cx: &mut Cx, dptr: &str, device: &crate::model::Device) {
    let parts = &device.partitions;
    let msdos = device.partition_table == PartitionTable::Msdos;
    let max = device.selector.as_ref().and_then(|s| match s.max_size {
        Some(Size::Bytes(b)) => Some(b),
        _ => None,
    });
    let min = device.selector.as_ref().and_then(|s| match s.min_size {
        Some(Size::Bytes(b)) => Some(b),
        _ => None,
    });
    let mut numbers: HashMap<u32, usize> = HashMap::new();
    // (number, start, end) of laid-out partitions with a known end.
    let mut placed: Vec<(u32, u64, u64)> = Vec::new();
    let mut cursor = Some(MIB);
    if msdos && parts.len() > 4 {
        cx.error(
            child(&child(dptr, "partitions"), 4),
            format!(
                "{} partitions on an msdos table, which holds at most 4 primary partitions",
                parts.len()
            ),
            "use \"partition_table\": \"gpt\" or merge partitions",
        );
    }
    for (i, p) in parts.iter().enumerate() {
        let pptr = child(&child(dptr, "partitions"), i);
        let number = p.number.unwrap_or(i as u32 + 1);
        if number == 0 || (msdos && number > 4 && p.number.is_some()) {
            cx.error(
                child(&pptr, "number"),
                format!("invalid partition number {number}"),
                if msdos {
                    "msdos primary partitions are numbered 1 to 4"
                } else {
                    "partition numbers start at 1"
                },
            );
        }
        if let Some(first) = numbers.insert(number, i) {
            cx.error(
                if p.number.is_some() {
                    child(&pptr, "number")
                } else {
                    pptr.clone()
                },
                format!("duplicate partition number {number}"),
                format!(
                    "partition {} already has it; give each partition its own number",
                    child(&child(dptr, "partitions"), first)
                ),
            );
        }
        if p.size == Size::Remaining && i + 1 != parts.len() {
            cx.error(
                child(&pptr, "size"),
                "\"remaining\" is not the last partition",
                "only the last partition can take the rest of the disk; give this one a fixed size such as \"20G\"",
            );
        }
        let start = match p.start {
            Some(Size::Bytes(b)) => Some(b),
            Some(Size::Remaining) => {
                cx.error(
                    child(&pptr, "start"),
                    "a partition cannot start at \"remaining\"",
                    "give a byte offset such as \"1M\", or leave start out",
                );
                None
            }
            None => cursor,
        };
        let Some(start) = start else {
            cursor = None;
            continue;
        };
        let end = match p.size {
            Size::Bytes(b) => start.checked_add(b),
            Size::Remaining => None,
        };
        if p.start.is_some() {
            for &(other, os, oe) in &placed {
                if start < oe && end.is_none_or(|e| e > os) {
                    cx.error(
                        child(&pptr, "start"),
                        format!(
                            "partition {number} ({}..{}) overlaps partition {other} ({}..{})",
                            human(start),
                            end.map_or("end of disk".into(), human),
                            human(os),
                            human(oe)
                        ),
                        "move its start past the end of the other partition or shrink the other one",
                    );
                    break;
                }
            }
        }
        match end {
            Some(end) => {
                if let Some(max) = max {
                    if end > max {
                        cx.error(
                            child(&pptr, "size"),
                            format!(
                                "partition {number} ends at {}, beyond the disk's max_size {}",
                                human(end),
                                human(max)
                            ),
                            "shrink the partition or raise selector.max_size",
                        );
                    }
                }
                if msdos && end > MSDOS_LIMIT {
                    cx.error(
                        child(&pptr, "size"),
                        format!(
                            "partition {number} ends at {}, beyond 2T, the limit of an msdos table",
                            human(end)
                        ),
                        "use \"partition_table\": \"gpt\"",
                    );
                }
                placed.push((number, start, end));
                cursor = Some(end);
            }
            None => {
                if let Some(max) = max {
                    if start >= max {
                        cx.error(
                            child(&pptr, "size"),
                            format!("partition {number} (\"remaining\") starts at {}, at or beyond the disk's max_size {}", human(start), human(max)),
                            "shrink the partitions before it or raise selector.max_size",
                        );
                    }
                }
                if msdos && min.is_some_and(|m| m > MSDOS_LIMIT) {
                    cx.error(
                        child(&pptr, "size"),
                        format!("partition {number} (\"remaining\") ends beyond 2T (min_size {}), the limit of an msdos table", human(min.unwrap_or(0))),
                        "use \"partition_table\": \"gpt\"",
                    );
                }
                cursor = None;
            }
        }
    }
}

/// `512M`, `120.5G`: exact when the unit divides the size, else one decimal.
fn human(b: u64) -> String {
    const UNITS: [(u64, char); 4] = [
        (1 << 40, 'T'),
        (1 << 30, 'G'),
        (1 << 20, 'M'),
        (1 << 10, 'K'),
    ];
    for (u, c) in UNITS {
        if b >= u {
            return if b & (u - 1) == 0 {
                format!("{}{c}", b / u)
            } else {
                format!("{:.1}{c}", b as f64 / u as f64)
            };
        }
    }
    b.to_string()
}

fn firmware_name(f: crate::model::Firmware) -> &'static str {
    match f {
        crate::model::Firmware::Uefi => "uefi",
        crate::model::Firmware::Bios => "bios",
        crate::model::Firmware::Both => "both",
    }
}

/// The bootstrap device must be a storage device; a UEFI install onto a gpt
/// disk needs an ESP.
fn check_bootstrap_device(cx: &mut Cx, state: &State) {
    let Some(b) = &state.bootstrap else { return };
    let devices = state.plugins.storage.as_ref().map(|s| &s.devices);
    let target = match &b.device {
        Some(d) => {
            if !devices.is_some_and(|m| m.contains_key(d)) {
                let names: Vec<&str> = devices
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                cx.error(
                    "/bootstrap/device",
                    format!("bootstrap.device {d} names no device"),
                    if names.is_empty() {
                        "declare the disk in plugins.storage.devices".to_string()
                    } else {
                        format!(
                            "use a name from plugins.storage.devices: {}",
                            names.join(", ")
                        )
                    },
                );
                return;
            }
            d.clone()
        }
        None => match devices {
            Some(m) if m.len() == 1 => m.keys().next().cloned().unwrap_or_default(),
            Some(m) if m.len() > 1 => {
                cx.error(
                    "/bootstrap",
                    format!(
                        "bootstrap.device is missing and plugins.storage has {} devices",
                        m.len()
                    ),
                    "set bootstrap.device to the disk the system boots from",
                );
                return;
            }
            _ => return,
        },
    };
    // A mirrored filesystem on the boot disk boots from every disk it spans:
    // each needs its own ESP (and BIOS boot partition).
    let mut disks = vec![target.clone()];
    if let (Some(storage), Some(devs)) = (state.plugins.storage.as_ref(), devices) {
        for fs in storage.filesystems.values().filter(|f| f.raid.is_some()) {
            let on: Vec<&String> = fs
                .devices
                .iter()
                .filter_map(|m| {
                    devs.iter().find_map(|(d, dev)| {
                        dev.partitions
                            .iter()
                            .enumerate()
                            .any(|(i, p)| partition_path(d, p.number.unwrap_or(i as u32 + 1)) == *m)
                            .then_some(d)
                    })
                })
                .collect();
            if on.contains(&&target) {
                for d in on {
                    if !disks.contains(d) {
                        disks.push(d.clone());
                    }
                }
            }
        }
    }
    for target in disks {
        check_boot_partitions(cx, b.firmware, devices, &target);
    }
}

/// A UEFI boot from a gpt disk needs an ESP on it, a BIOS boot a BIOS boot
/// partition.
fn check_boot_partitions(
    cx: &mut Cx,
    firmware: crate::model::Firmware,
    devices: Option<&BTreeMap<String, crate::model::Device>>,
    target: &str,
) {
    let Some(device) = devices.and_then(|m| m.get(target)) else {
        return;
    };
    if firmware.uefi()
        && device.partition_table == PartitionTable::Gpt
        && !device
            .partitions
            .iter()
            .any(|p| p.kind == PartitionType::Efi)
    {
        cx.error(
            pointer(&["plugins", "storage", "devices", target, "partitions"]),
            format!("no EFI system partition on {target}, but the firmware is {}", firmware_name(firmware)),
            "add {\"size\": \"512M\", \"type\": \"efi\", \"filesystem\": \"vfat\", \"mount\": \"/boot/efi\"}, or set bootstrap.firmware to \"bios\"",
        );
    }
    if firmware.bios()
        && device.partition_table == PartitionTable::Gpt
        && !device
            .partitions
            .iter()
            .any(|p| p.kind == PartitionType::BiosBoot)
    {
        cx.error(
            pointer(&["plugins", "storage", "devices", target, "partitions"]),
            format!("no BIOS boot partition on gpt disk {target}, but the firmware is {}", firmware_name(firmware)),
            "GRUB needs one on gpt for BIOS booting: add {\"size\": \"1M\", \"type\": \"bios_boot\"}, or set bootstrap.firmware to \"uefi\"",
        );
    }
}

/// Valid values of the `btrfs.compression` property.
pub(super) fn check_compression(cx: &mut Cx, ptr: String, value: &str) {
    if !valid_compression(value) {
        cx.error(
            ptr,
            format!("invalid btrfs compression {value:?}"),
            "use zstd, zstd:1 to zstd:15, lzo, zlib, zlib:1 to zlib:9, or none",
        );
    }
}

fn valid_compression(v: &str) -> bool {
    let level = |l: &str, max: u32| l.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
    match v.split_once(':') {
        None => matches!(v, "zstd" | "lzo" | "zlib" | "none"),
        Some(("zstd", l)) => level(l, 15),
        Some(("zlib", l)) => level(l, 9),
        _ => false,
    }
}

/// The `compress=`/`compress-force=` value of a mount option string.
fn compress_option(options: &str) -> Option<&str> {
    options
        .split(',')
        .map(str::trim)
        .rfind(|o| o.starts_with("compress=") || o.starts_with("compress-force="))
}

fn check_mount_table(cx: &mut Cx, mounts: &[MountDecl]) {
    // point -> (first declaration, first one naming a subvolume). Repeats of
    // one mount are one mount: the same partition, and the same subvolume or
    // none (a partition's `mount` with subvolumes means its root subvolume).
    let mut by_point: HashMap<&str, (&MountDecl, Option<&MountDecl>)> = HashMap::new();
    for m in mounts {
        if !m.point.starts_with('/') {
            cx.error(
                m.ptr.clone(),
                format!("mount point {:?} is not an absolute path", m.point),
                "write it like /var/lib/data",
            );
            continue;
        }
        let Some((first, with_subvol)) = by_point.get_mut(m.point.as_str()) else {
            by_point.insert(&m.point, (m, m.subvol.as_ref().map(|_| m)));
            continue;
        };
        let other = if first.part != m.part {
            *first
        } else {
            match (*with_subvol, &m.subvol) {
                (Some(sv), Some(name)) if sv.subvol.as_ref() != Some(name) => sv,
                (None, Some(_)) => {
                    *with_subvol = Some(m);
                    continue;
                }
                _ => continue,
            }
        };
        if m.point == "/" {
            cx.error(
                m.ptr.clone(),
                format!(
                    "two roots: / is mounted from {} and from {}",
                    source(other),
                    source(m)
                ),
                format!(
                    "keep one root filesystem; the other is declared at {}",
                    other.ptr
                ),
            );
        } else {
            cx.error(
                m.ptr.clone(),
                format!(
                    "mount point {} is used twice: by {} and by {}",
                    m.point,
                    source(other),
                    source(m)
                ),
                format!(
                    "give each filesystem its own mount point; the other is declared at {}",
                    other.ptr
                ),
            );
        }
    }
    // compress= per filesystem.
    let mut compress: HashMap<&str, (&str, &MountDecl)> = HashMap::new();
    for m in mounts {
        let Some(value) = m.options.as_deref().and_then(compress_option) else {
            continue;
        };
        match compress.get(m.part.as_str()) {
            None => {
                compress.insert(&m.part, (value, m));
            }
            Some((first, fm)) if *first != value => cx.error(
                m.options_ptr.clone(),
                format!(
                    "mount option {value} of {} differs from {first} of {} on the same filesystem {}",
                    m.point, fm.point, m.part
                ),
                "btrfs applies compress= to the whole filesystem at its first mount; use one value on every mount and set per-subvolume compression with the subvolume's \"compression\" property",
            ),
            Some(_) => {}
        }
    }
}

fn source(m: &MountDecl) -> String {
    match &m.subvol {
        Some(sv) => format!("{} subvolume {sv}", m.part),
        None => m.part.clone(),
    }
}

#[cfg(test)]
mod tests {
    use crate::diag::Severity;

    /// A state with one `linux` partition of `size` on each disk (after a
    /// BIOS boot partition and an ESP), members `3` of all of them in `raid`.
    fn mirrored(raid: &str, sizes: &[&str], max_sizes: Option<&[&str]>) -> String {
        let disks: Vec<String> = (0..sizes.len())
            .map(|i| format!("/dev/sd{}", (b'a' + i as u8) as char))
            .collect();
        let devices: Vec<String> = disks
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mount = if i == 0 { r#", "mount": "/boot/efi""# } else { "" };
                let selector = max_sizes.map_or(String::new(), |m| {
                    format!(r#""selector": {{"max_size": "{}"}}, "#, m[i])
                });
                format!(
                    r#""{d}": {{{selector}"partitions": [{{"size": "1M", "type": "bios_boot"}}, {{"size": "512M", "type": "efi", "filesystem": "vfat"{mount}}}, {{"size": "{}", "type": "linux"}}]}}"#,
                    sizes[i]
                )
            })
            .collect();
        let members: Vec<String> = disks.iter().map(|d| format!("\"{d}3\"")).collect();
        format!(
            r#"{{"version": 1, "bootstrap": {{"device": "/dev/sda", "hostname": "h", "root_password_hash": "!", "firmware": "both"}},
            "plugins": {{"storage": {{"devices": {{{}}},
            "filesystems": {{"/dev/sda3": {{"type": "btrfs", "raid": "{raid}", "devices": [{}]}}}},
            "btrfs_subvolumes": {{"/dev/sda3": [{{"name": "@", "mount": "/"}}]}}}}}}}}"#,
            devices.join(", "),
            members.join(", ")
        )
    }

    /// Messages of `severity` about plugins.storage, without the not-applied notes.
    fn findings(json: &str, severity: Severity) -> Vec<String> {
        let s = crate::parse::parse_only(json).expect("parses");
        super::super::validate(&s)
            .into_iter()
            .filter(|d| d.severity == severity && d.pointer.starts_with("/plugins/storage"))
            .filter(|d| !d.message.contains("not applied"))
            .map(|d| format!("{}: {}", d.pointer, d.message))
            .collect()
    }

    #[test]
    fn raid10_over_four_disks_and_raid1_over_three_pass() {
        let four = mirrored("raid10", &["100G"; 4], None);
        assert_eq!(findings(&four, Severity::Error), Vec::<String>::new());
        assert_eq!(findings(&four, Severity::Warning), Vec::<String>::new());
        let three = mirrored("raid1", &["100G"; 3], None);
        assert_eq!(findings(&three, Severity::Error), Vec::<String>::new());
    }

    #[test]
    fn uneven_members_warn_only_when_space_is_lost() {
        // raid1 over 1T+1T+2T mirrors every byte: no warning.
        let s = mirrored("raid1", &["1T", "1T", "2T"], None);
        assert_eq!(findings(&s, Severity::Warning), Vec::<String>::new());
        // Two members of 1T and 2T: 1T stays unused.
        let s = mirrored("raid1", &["1T", "2T"], None);
        assert_eq!(
            findings(&s, Severity::Warning),
            vec!["/plugins/storage/filesystems/~1dev~1sda3/devices: members of raid1 on /dev/sda3 differ in size (1T to 2T): about 1T cannot be mirrored and stays unused"]
        );
        // "remaining" partitions: the disks' max_size decides.
        let s = mirrored(
            "raid1",
            &["remaining", "remaining"],
            Some(&["100G", "120G"]),
        );
        assert_eq!(findings(&s, Severity::Warning), Vec::<String>::new());
        let s = mirrored("raid1", &["remaining", "remaining"], Some(&["100G", "1T"]));
        assert_eq!(findings(&s, Severity::Warning).len(), 1);
        // Sizes unknown: nothing to say.
        let s = mirrored("raid1", &["remaining", "remaining"], None);
        assert_eq!(findings(&s, Severity::Warning), Vec::<String>::new());
    }

    #[test]
    fn every_member_disk_needs_its_boot_partitions() {
        let s = mirrored("raid1", &["100G", "100G"], None).replace(
            r#""/dev/sdb": {"partitions": [{"size": "1M", "type": "bios_boot"}, "#,
            r#""/dev/sdb": {"partitions": [{"size": "1M", "type": "linux"}, "#,
        );
        assert_eq!(
            findings(&s, Severity::Error),
            vec!["/plugins/storage/devices/~1dev~1sdb/partitions: no BIOS boot partition on gpt disk /dev/sdb, but the firmware is both"]
        );
    }
}
