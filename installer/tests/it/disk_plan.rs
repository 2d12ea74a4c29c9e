//! Unprivileged tests of the disk plan: layout math, BIOS boot insertion,
//! errors, mount order, compress placement and fstab text.

use crate::disk_common;

use std::collections::BTreeMap;

use disk_common::*;
use opdbus_installer::disk::layout::{DeviceSpec, PartitionSpec};
use opdbus_installer::disk::plan::{PartRole, TableKind};
use opdbus_installer::disk::{fstab, plan_layout, DiskPlan, Firmware, LayoutError, SizeSpec};

#[test]
fn sizes_parse() {
    assert_eq!(SizeSpec::parse("512M").unwrap(), SizeSpec::Bytes(512 * MIB));
    assert_eq!(SizeSpec::parse("2G").unwrap(), SizeSpec::Bytes(2 * GIB));
    assert_eq!(SizeSpec::parse("2GiB").unwrap(), SizeSpec::Bytes(2 * GIB));
    assert_eq!(SizeSpec::parse("remaining").unwrap(), SizeSpec::Remaining);
    assert_eq!(SizeSpec::parse("4096").unwrap(), SizeSpec::Bytes(4096));
    assert!(matches!(
        SizeSpec::parse("12Q"),
        Err(LayoutError::BadSize(_))
    ));
    assert!(matches!(
        SizeSpec::parse("0M"),
        Err(LayoutError::BadSize(_))
    ));
}

#[test]
fn gpt_uefi_layout_is_aligned_and_leaves_backup_room() {
    let size = 20 * GIB;
    let plan = plan_for(&server_spec(Firmware::Uefi, 1), size);
    let d = &plan.devices[0];
    assert_eq!(d.partitions.len(), 2);
    let (esp, root) = (&d.partitions[0], &d.partitions[1]);
    assert_eq!((esp.number, esp.start, esp.size), (1, MIB, 512 * MIB));
    assert_eq!(esp.key, "/dev/sda1");
    assert_eq!(
        esp.type_guid.to_string().to_uppercase(),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
    );
    assert_eq!((root.number, root.start), (2, 513 * MIB));
    // Remaining ends at the last whole MiB before the GPT backup area.
    assert_eq!(root.end(), size - MIB);
    assert_eq!(
        root.type_guid.to_string().to_uppercase(),
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
    );
    for p in &d.partitions {
        assert_eq!(p.start % MIB, 0);
        assert_eq!(p.size % MIB, 0);
    }
    // An unaligned disk size still ends on a MiB boundary with backup room.
    let odd = 20 * GIB + 12345;
    let plan = plan_for(&server_spec(Firmware::Uefi, 1), odd);
    let end = plan.devices[0].partitions[1].end();
    assert_eq!(end % MIB, 0);
    assert!(end <= odd - 33 * 512);
}

#[test]
fn bios_boot_partition_is_added_for_bios_and_both() {
    for fw in [Firmware::Bios, Firmware::Both] {
        let plan = plan_for(&server_spec(fw, 1), 20 * GIB);
        let parts = &plan.devices[0].partitions;
        assert_eq!(parts.len(), 3, "{fw:?}");
        let bb = &parts[0];
        assert_eq!(bb.role, PartRole::BiosBoot);
        assert_eq!((bb.start, bb.size), (MIB, MIB));
        // Numbered after the state's partitions so /dev/sda1,2 keep meaning.
        assert_eq!(bb.number, 3);
        assert_eq!(
            bb.type_guid.to_string().to_uppercase(),
            "21686148-6449-6E6F-744E-656564454649"
        );
        assert_eq!((parts[1].number, parts[1].start), (1, 2 * MIB));
        assert_eq!((parts[2].number, parts[2].start), (2, 514 * MIB));
        // Mounts still point at the right partitions.
        let efi = plan
            .mounts
            .iter()
            .find(|m| m.path.as_os_str() == "/boot/efi")
            .unwrap();
        assert_eq!(efi.partition, "/dev/sda1");
    }
    // msdos: no BIOS boot partition (the MBR gap holds GRUB).
    let mut spec = server_spec(Firmware::Bios, 1);
    spec.devices[0].table = TableKind::Msdos;
    let plan = plan_for(&spec, 20 * GIB);
    assert_eq!(plan.devices[0].partitions.len(), 2);
    assert_eq!(plan.devices[0].partitions[0].mbr_type, Some(0xEF));
    assert_eq!(plan.devices[0].partitions[1].mbr_type, Some(0x83));
    assert_eq!(plan.devices[0].partitions[1].end(), 20 * GIB);
}

#[test]
fn remaining_must_be_last() {
    let mut spec = server_spec(Firmware::Uefi, 1);
    spec.devices[0].partitions.swap(0, 1);
    let err =
        plan_layout(&spec, &BTreeMap::from([("/dev/sda".to_string(), 20 * GIB)])).unwrap_err();
    assert_eq!(
        err,
        LayoutError::RemainingNotLast {
            device: "/dev/sda".into(),
            number: 2
        }
    );
    assert!(err.to_string().contains("move it to the end"), "{err}");
}

#[test]
fn too_small_disk_is_an_error() {
    let spec = server_spec(Firmware::Both, 1);
    let err = plan_layout(
        &spec,
        &BTreeMap::from([("/dev/sda".to_string(), 512 * MIB)]),
    )
    .unwrap_err();
    // 1 MiB lead-in + 1 MiB BIOS boot + 512 MiB ESP + 1 MiB minimum root + backup.
    assert_eq!(
        err,
        LayoutError::TooSmall {
            device: "/dev/sda".into(),
            needed: 515 * MIB + 33 * 512,
            available: 512 * MIB
        }
    );
    assert!(err.to_string().contains("use a bigger disk"), "{err}");
    let err = plan_layout(&spec, &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, LayoutError::UnknownSize { .. }));
}

#[test]
fn other_layout_errors() {
    let sizes = BTreeMap::from([("/dev/sda".to_string(), 20 * GIB)]);
    let mut spec = server_spec(Firmware::Uefi, 1);
    spec.devices[0].partitions[1].number = Some(3);
    assert!(matches!(
        plan_layout(&spec, &sizes),
        Err(LayoutError::NumberGap { number: 2, .. })
    ));
    let mut spec = server_spec(Firmware::Uefi, 1);
    spec.devices[0].table = TableKind::Msdos;
    spec.devices[0].partitions.insert(
        0,
        PartitionSpec {
            member_of: None,
            number: Some(3),
            start: None,
            size: SizeSpec::Bytes(MIB),
            role: PartRole::BiosBoot,
            label: None,
            filesystem: None,
        },
    );
    assert!(matches!(
        plan_layout(&spec, &sizes),
        Err(LayoutError::RoleNeedsGpt { .. })
    ));
    let mut spec = server_spec(Firmware::Uefi, 1);
    let fs = spec.devices[0].partitions[1].filesystem.as_mut().unwrap();
    fs.subvolumes.push(subvol("@var/lib", None));
    assert!(matches!(
        plan_layout(&spec, &sizes),
        Err(LayoutError::SubvolumeParentMissing { .. })
    ));
}

#[test]
fn mounts_parents_first_and_compress_only_on_first_mount() {
    let plan = plan_for(&server_spec(Firmware::Uefi, 1), 20 * GIB);
    let paths: Vec<String> = plan
        .mounts
        .iter()
        .map(|m| m.path.display().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            "/",
            "/home",
            "/boot/efi",
            "/var/log",
            "/var/lib/blockchain",
            "/var/lib/vm"
        ]
    );
    let opts: Vec<String> = plan.mounts.iter().map(|m| m.option_string()).collect();
    assert_eq!(opts[0], "subvol=@,compress=zstd:3");
    assert_eq!(opts[1], "subvol=@home");
    assert!(
        opts.iter().skip(1).all(|o| !o.contains("compress")),
        "{opts:?}"
    );
    let fsp = plan.devices[0].partitions[1].filesystem.as_ref().unwrap();
    assert_eq!(fsp.default_subvolume.as_deref(), Some("@"));
    assert!(fsp
        .subvolumes
        .iter()
        .any(|s| s.name == "@vm" && s.nodatacow));
}

#[test]
fn fstab_names_filesystems_by_uuid() {
    let plan = plan_for(&server_spec(Firmware::Uefi, 7), 20 * GIB);
    let esp = plan.devices[0].partitions[0]
        .filesystem
        .as_ref()
        .unwrap()
        .uuid
        .clone();
    let root = plan.devices[0].partitions[1]
        .filesystem
        .as_ref()
        .unwrap()
        .uuid
        .clone();
    assert_eq!(esp.len(), 9, "{esp}");
    let expected = format!(
        "# /etc/fstab: written by op-dbus-install\n\
         # <file system> <mount point> <type> <options> <dump> <pass>\n\
         UUID={root} / btrfs subvol=@,compress=zstd:3 0 0\n\
         UUID={root} /home btrfs subvol=@home 0 0\n\
         UUID={esp} /boot/efi vfat umask=0077 0 2\n\
         UUID={root} /var/log btrfs subvol=@log 0 0\n\
         UUID={root} /var/lib/blockchain btrfs subvol=@blockchain 0 0\n\
         UUID={root} /var/lib/vm btrfs subvol=@vm 0 0\n"
    );
    assert_eq!(fstab(&plan), expected);
}

#[test]
fn swap_and_ext4_get_fstab_lines() {
    use opdbus_installer::disk::layout::FsSpec;
    use opdbus_installer::disk::plan::FsKind;
    let mut spec = server_spec(Firmware::Uefi, 3);
    spec.devices.push(DeviceSpec {
        key: "/dev/nvme0n1".into(),
        table: TableKind::Gpt,
        partitions: vec![
            PartitionSpec {
                member_of: None,
                number: None,
                start: None,
                size: SizeSpec::parse("2G").unwrap(),
                role: PartRole::Swap,
                label: None,
                filesystem: Some(FsSpec {
                    raid: None,
                    kind: FsKind::Swap,
                    label: None,
                    mount: None,
                    subvol: None,
                    mount_options: vec![],
                    subvolumes: vec![],
                }),
            },
            PartitionSpec {
                member_of: None,
                number: None,
                start: None,
                size: SizeSpec::Remaining,
                role: PartRole::Linux,
                label: None,
                filesystem: Some(FsSpec {
                    raid: None,
                    kind: FsKind::Ext4,
                    label: Some("data".into()),
                    mount: Some("/srv".into()),
                    subvol: None,
                    mount_options: vec!["noatime".into()],
                    subvolumes: vec![],
                }),
            },
        ],
    });
    let plan = plan_for(&spec, 20 * GIB);
    let d = &plan.devices[1];
    assert_eq!(d.partitions[0].key, "/dev/nvme0n1p1");
    let swap = d.partitions[0].filesystem.as_ref().unwrap().uuid.clone();
    let data = d.partitions[1].filesystem.as_ref().unwrap().uuid.clone();
    let text = fstab(&plan);
    assert!(
        text.contains(&format!("UUID={data} /srv ext4 noatime 0 2\n")),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("UUID={swap} none swap sw 0 0\n")),
        "{text}"
    );
}

#[test]
fn uuids_are_seeded_or_random() {
    let a = plan_for(&server_spec(Firmware::Uefi, 5), 20 * GIB);
    let b = plan_for(&server_spec(Firmware::Uefi, 5), 20 * GIB);
    assert_eq!(a, b);
    let mut spec = server_spec(Firmware::Uefi, 5);
    spec.uuids = opdbus_installer::disk::UuidSource::Random;
    let c = plan_for(&spec, 20 * GIB);
    let d = plan_for(&spec, 20 * GIB);
    assert_ne!(c.devices[0].disk_guid, d.devices[0].disk_guid);
    let u = uuid::Uuid::parse_str(&c.devices[0].partitions[1].filesystem.as_ref().unwrap().uuid)
        .unwrap();
    assert_eq!(u.get_version_num(), 4);
}

#[test]
fn plan_round_trips_through_json() {
    let plan = plan_for(&server_spec(Firmware::Both, 9), 20 * GIB);
    let text = serde_json::to_string_pretty(&plan).unwrap();
    assert!(text.contains("\"table\": \"gpt\""), "{text}");
    assert!(text.contains("\"role\": \"bios_boot\""), "{text}");
    let back: DiskPlan = serde_json::from_str(&text).unwrap();
    assert_eq!(back, plan);
}

fn sizes20() -> BTreeMap<String, u64> {
    BTreeMap::from([("/dev/sda".to_string(), 20 * GIB)])
}

#[test]
fn a_size_of_u64_max_is_an_error_naming_the_partition() {
    let mut spec = server_spec(Firmware::Uefi, 1);
    spec.devices[0].partitions[0].size = SizeSpec::Bytes(u64::MAX);
    let err = plan_layout(&spec, &sizes20()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/plugins/storage/devices/~1dev~1sda/partitions/0/size: 18446744073709551615 bytes is \
         larger than any disk; give a size such as \"512M\" or \"20G\""
    );
}

#[test]
fn sizes_that_overflow_when_added_are_an_error() {
    let mut spec = server_spec(Firmware::Uefi, 1);
    spec.devices[0].partitions[0].size = SizeSpec::Bytes(1 << 63);
    spec.devices[0].partitions.insert(
        1,
        PartitionSpec {
            member_of: None,
            number: Some(3),
            start: None,
            size: SizeSpec::Bytes(1 << 63),
            role: PartRole::Linux,
            label: None,
            filesystem: None,
        },
    );
    spec.devices[0].partitions[2].number = Some(2);
    let err = plan_layout(&spec, &sizes20()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/plugins/storage/devices/~1dev~1sda/partitions/1/size: this partition would end past \
         the largest byte offset there is (2^64); shrink it or the partitions before it"
    );
}

/// `state-examples/default.json` (BIOS boot 1M, ESP 512M, btrfs remaining on
/// /dev/vda) with `edit` applied to its root partition, planned on a 20 GiB
/// sparse file.
fn plan_default_with_root(
    edit: impl FnOnce(&mut serde_json::Value),
) -> anyhow::Result<opdbus_installer::plan::InstallPlan> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/default.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    edit(&mut v["plugins"]["storage"]["devices"]["/dev/vda"]["partitions"][2]);
    // Not validated: the planner must hold on its own.
    let state =
        opdbus_state::parse::parse_only(&v.to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let dir = tempfile::tempdir()?;
    let img = sparse_image(dir.path(), "vda.img", 20 * GIB);
    let targets = opdbus_installer::disk::TargetMap::from([("/dev/vda".to_string(), img)]);
    opdbus_installer::plan::install_plan(
        &state,
        targets,
        opdbus_installer::disk::UuidSource::Seeded(3),
    )
}

#[test]
fn start_is_honoured() {
    let plan = plan_default_with_root(|p| p["start"] = "600M".into()).unwrap();
    // `validate` accepts it too.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/default.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["plugins"]["storage"]["devices"]["/dev/vda"]["partitions"][2]["start"] = "600M".into();
    opdbus_state::parse_str(&v.to_string(), "default.json").unwrap();
    let parts = &plan.disk.devices[0].partitions;
    assert_eq!(parts[1].end(), 514 * MIB);
    assert_eq!(parts[2].start, 600 * MIB);
    assert_eq!(
        parts[2].end(),
        20 * GIB - MIB,
        "remaining runs to the GPT backup"
    );
}

#[test]
fn start_inside_the_previous_partition_is_an_error() {
    let err = plan_default_with_root(|p| p["start"] = "513M".into()).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "/plugins/storage/devices/~1dev~1vda/partitions/2/start: start 537919488 lies inside \
         partition 2, which ends at 538968064; start at 538968064 or later, or leave start out"
    );
}

#[test]
fn start_off_a_mib_boundary_is_an_error() {
    let err = plan_default_with_root(|p| p["start"] = (600 * MIB + 1000).into()).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "/plugins/storage/devices/~1dev~1vda/partitions/2/start: start 629146600 is not a \
         multiple of 1 MiB (1048576); partitions start on 1 MiB boundaries, e.g. 630194176"
    );
}

#[test]
fn start_beyond_the_disk_is_an_error() {
    let err = plan_default_with_root(|p| p["start"] = "30G".into()).unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("/dev/vda: the layout needs 32213320192 bytes but the disk has 21474836480"),
        "{err:#}"
    );
}

#[test]
fn start_on_the_first_partition_and_the_added_bios_boot_partition() {
    let mut spec = server_spec(Firmware::Both, 1);
    spec.devices[0].partitions[0].start = Some(MIB);
    let err = plan_layout(&spec, &sizes20()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/plugins/storage/devices/~1dev~1sda/partitions/0/start: start 1048576 lies inside \
         partition 3 (the 1 MiB BIOS boot partition added for BIOS firmware), which ends at \
         2097152; start at 2097152 or later, or leave start out"
    );
    spec.devices[0].partitions[0].start = Some(4 * MIB);
    let plan = plan_layout(&spec, &sizes20()).unwrap();
    let p = &plan.devices[0].partitions;
    assert_eq!(
        (p[0].start, p[1].start, p[2].start),
        (MIB, 4 * MIB, 516 * MIB)
    );
}

#[test]
fn a_mirrored_btrfs_is_planned_over_both_disks_and_mounts_degraded() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/mirrored.json");
    let state = opdbus_state::parse::parse_only(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut spec =
        opdbus_installer::plan::layout_spec(&state, opdbus_installer::disk::UuidSource::Seeded(3))
            .unwrap();
    let sizes: BTreeMap<String, u64> = [("/dev/vda", 8 * GIB), ("/dev/vdb", 8 * GIB)]
        .map(|(k, s)| (k.to_string(), s))
        .into();
    let plan = plan_layout(&spec, &sizes).unwrap();
    let (_, root) = plan.partition("/dev/vda3").unwrap();
    let raid = root.filesystem.as_ref().unwrap().raid.as_ref().unwrap();
    assert_eq!(raid.profile.name(), "raid1");
    assert_eq!(raid.devices, ["/dev/vda3", "/dev/vdb3"]);
    // The second member carries no filesystem of its own.
    let (_, member) = plan.partition("/dev/vdb3").unwrap();
    assert_eq!(member.member_of.as_deref(), Some("/dev/vda3"));
    assert!(member.filesystem.is_none());
    // Every mount of the mirror is degraded-capable; each disk's ESP is
    // mounted, neither one needed to boot.
    for m in plan.mounts.iter().filter(|m| m.partition == "/dev/vda3") {
        assert!(m.options.iter().any(|o| o == "degraded"), "{m:?}");
    }
    assert_eq!(plan.esps().len(), 2);
    let esp_mounts: Vec<(&str, String)> = plan
        .mounts
        .iter()
        .filter(|m| m.fstype == opdbus_installer::disk::plan::FsKind::Vfat)
        .map(|m| (m.partition.as_str(), m.option_string()))
        .collect();
    assert_eq!(
        esp_mounts,
        [
            ("/dev/vda2", "umask=0077,nofail".to_string()),
            ("/dev/vdb2", "umask=0077,nofail".to_string()),
        ]
    );
    assert_eq!(
        plan.mounts
            .iter()
            .find(|m| m.partition == "/dev/vdb2")
            .unwrap()
            .path,
        std::path::Path::new("/boot/efi2")
    );
    // A member whose disk is not in the layout is refused, not left out.
    spec.devices.retain(|d| d.key == "/dev/vda");
    let err = plan_layout(&spec, &sizes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/dev/vda3: raid member /dev/vdb3 is no partition of the layout; declare its disk and \
         partition, or remove it from devices"
    );
}
