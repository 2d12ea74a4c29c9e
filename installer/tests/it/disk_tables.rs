//! Unprivileged tests on sparse files: GPT and msdos tables written and read
//! back (crates, sgdisk, sfdisk), the ESP in userspace checked by fsck.fat,
//! inspection, and refusals that must leave the target untouched.

use crate::disk_common;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use disk_common::*;
use opdbus_common::Task;
use opdbus_installer::disk::blockdev::{self, SafetyError};
use opdbus_installer::disk::esp::{self, Esp, EspLocation};
use opdbus_installer::disk::partition::{self, FoundTable};
use opdbus_installer::disk::plan::{FsKind, TableKind};
use opdbus_installer::disk::{execute, fs, inspect, ExecOptions, Firmware, ItemStatus, TargetMap};

fn write_plan_table(img: &Path, plan: &opdbus_installer::disk::DiskPlan) {
    let mut f = OpenOptions::new().read(true).write(true).open(img).unwrap();
    partition::write_table(&mut f, &plan.devices[0]).unwrap();
}

#[test]
fn gpt_is_written_and_read_back_by_crate_sgdisk_and_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "gpt.img", 20 * GIB);
    let plan = plan_for(&server_spec(Firmware::Both, 11), 20 * GIB);
    write_plan_table(&img, &plan);
    let dev = &plan.devices[0];

    let mut f = std::fs::File::open(&img).unwrap();
    let found = partition::read_table(&mut f).unwrap();
    assert!(found.matches(dev), "{found:?}");
    let FoundTable::Gpt {
        disk_guid,
        partitions,
    } = &found
    else {
        panic!("not GPT: {found:?}")
    };
    assert_eq!(Some(*disk_guid), dev.disk_guid);
    let p3 = partitions.iter().find(|p| p.number == 3).unwrap();
    assert_eq!((p3.start, p3.size), (MIB, MIB));
    assert_eq!(p3.name, "bios_boot");

    let out = Task::new("sgdisk").arg("-v").arg(&img).read().unwrap();
    assert!(out.contains("No problems found"), "{out}");
    let out = Task::new("sgdisk").arg("-p").arg(&img).read().unwrap();
    // Number, start sector, end sector, size, code, name.
    assert!(
        out.contains("   1            4096         1052671   512.0 MiB   EF00  esp"),
        "{out}"
    );
    assert!(
        out.contains("   3            2048            4095   1024.0 KiB  EF02  bios_boot"),
        "{out}"
    );
    assert!(
        out.contains("   2         1052672        41940991   19.5 GiB    8300  linux"),
        "{out}"
    );

    let json = Task::new("sfdisk").arg("--json").arg(&img).read().unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pt = &v["partitiontable"];
    assert_eq!(pt["label"], "gpt");
    assert_eq!(
        pt["id"].as_str().unwrap().to_lowercase(),
        disk_guid.to_string()
    );
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    // sfdisk lists by entry number: 1 ESP, 2 root, 3 BIOS boot.
    assert_eq!(parts[0]["start"], 4096);
    assert_eq!(parts[0]["size"], 512 * 2048);
    assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(
        parts[0]["uuid"].as_str().unwrap().to_lowercase(),
        dev.partitions[1].part_guid.unwrap().to_string()
    );
    assert_eq!(parts[1]["type"], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(parts[2]["type"], "21686148-6449-6E6F-744E-656564454649");
    assert_eq!(parts[2]["start"], 2048);
}

#[test]
fn msdos_table_is_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "mbr.img", 4 * GIB);
    let mut spec = server_spec(Firmware::Bios, 12);
    spec.devices[0].table = TableKind::Msdos;
    let plan = plan_for(&spec, 4 * GIB);
    write_plan_table(&img, &plan);
    let mut f = std::fs::File::open(&img).unwrap();
    let found = partition::read_table(&mut f).unwrap();
    assert!(found.matches(&plan.devices[0]), "{found:?}");
    let json = Task::new("sfdisk").arg("--json").arg(&img).read().unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let pt = &v["partitiontable"];
    assert_eq!(pt["label"], "dos");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(
        (parts[0]["start"].as_u64(), parts[0]["type"].as_str()),
        (Some(2048), Some("ef"))
    );
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(
        (parts[1]["start"].as_u64(), parts[1]["type"].as_str()),
        (Some(2048 + 512 * 2048), Some("83"))
    );
    assert_eq!(
        parts[1]["size"].as_u64(),
        Some(4 * 1024 * 2048 - 2048 - 512 * 2048)
    );
}

#[test]
fn wiped_table_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "w.img", GIB);
    let plan = plan_for(&server_spec(Firmware::Uefi, 13), GIB);
    write_plan_table(&img, &plan);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    partition::wipe_table(&mut f).unwrap();
    assert_eq!(partition::read_table(&mut f).unwrap(), FoundTable::None);
    let out = Task::new("sfdisk").arg("--json").arg(&img).output();
    assert!(
        out.is_err()
            || String::from_utf8_lossy(&out.unwrap().stdout)
                .trim()
                .is_empty()
    );
}

#[test]
fn esp_is_formatted_written_and_passes_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "esp.img", 2 * GIB);
    let plan = plan_for(&server_spec(Firmware::Uefi, 14), 2 * GIB);
    write_plan_table(&img, &plan);
    let p = &plan.devices[0].partitions[0];
    let uuid = p.filesystem.as_ref().unwrap().uuid.clone();
    let loc = EspLocation {
        disk: img.clone(),
        start: p.start,
        size: p.size,
    };
    esp::format(&loc, &uuid, Some("EFI")).unwrap();
    let e = Esp::open(&loc).unwrap();
    e.write_file("EFI/BOOT/BOOTX64.EFI", b"not really an EFI binary")
        .unwrap();
    e.mkdir_all("loader/entries").unwrap();
    e.write_file("loader/loader.conf", b"timeout 3\n").unwrap();
    e.close().unwrap();

    // Read back in a fresh handle.
    let e = Esp::open(&loc).unwrap();
    assert_eq!(
        e.read_file("/EFI/BOOT/BOOTX64.EFI").unwrap(),
        b"not really an EFI binary"
    );
    assert!(e.exists("loader/entries"));
    e.close().unwrap();

    // Our probe sees FAT32 with the plan's serial; the table is intact.
    let mut f = std::fs::File::open(&img).unwrap();
    let found = fs::probe(&mut f, p.start, p.size).unwrap().unwrap();
    assert_eq!(
        (found.kind, found.uuid.as_str()),
        (FsKind::Vfat, uuid.as_str())
    );
    assert!(partition::read_table(&mut f)
        .unwrap()
        .matches(&plan.devices[0]));

    // fsck.fat on a copy of the byte range; blkid agrees on the serial.
    let copy = dir.path().join("esp.fat");
    Task::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", copy.display()))
        .args(["bs=1M", "conv=sparse"])
        .arg(format!("skip={}", p.start / MIB))
        .arg(format!("count={}", p.size / MIB))
        .run()
        .unwrap();
    let fsck = std::process::Command::new("fsck.fat")
        .arg("-n")
        .arg(&copy)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&fsck.stdout).into_owned();
    assert!(fsck.status.success(), "fsck.fat -n failed: {out}");
    assert!(out.contains("files"), "{out}");
    let out = Task::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&copy)
        .read()
        .unwrap();
    assert!(out.contains(&format!("UUID={uuid}")), "{out}");
    assert!(
        out.contains("TYPE=vfat") && out.contains("LABEL=EFI"),
        "{out}"
    );
}

#[test]
fn inspect_reports_table_and_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "i.img", 2 * GIB);
    let plan = plan_for(&server_spec(Firmware::Uefi, 15), 2 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let ins = inspect(&plan, &targets).unwrap();
    assert_eq!(ins[0].table, ItemStatus::Missing);

    write_plan_table(&img, &plan);
    let p = &plan.devices[0].partitions[0];
    let loc = EspLocation {
        disk: img.clone(),
        start: p.start,
        size: p.size,
    };
    esp::format(&loc, &p.filesystem.as_ref().unwrap().uuid, None).unwrap();
    let ins = inspect(&plan, &targets).unwrap();
    assert_eq!(ins[0].table, ItemStatus::Present);
    assert_eq!(ins[0].filesystems[&1], ItemStatus::Present);
    assert_eq!(ins[0].filesystems[&2], ItemStatus::Missing);

    // Another plan (other UUIDs, same ranges): the ESP is kept and its
    // on-disk UUID adopted, in the partition and in the mount.
    let other = plan_for(&server_spec(Firmware::Uefi, 16), 2 * GIB);
    let ins = inspect(&other, &targets).unwrap();
    assert_eq!(ins[0].table, ItemStatus::Present);
    assert_eq!(ins[0].filesystems[&1], ItemStatus::Present);
    let dry = ExecOptions {
        dry_run: true,
        ..ExecOptions::default()
    };
    let ex = execute(&other, &targets, &dry).unwrap();
    let on_disk = &p.filesystem.as_ref().unwrap().uuid;
    let esp_of = |plan: &opdbus_installer::disk::DiskPlan| {
        plan.devices[0].partitions[0]
            .filesystem
            .as_ref()
            .unwrap()
            .uuid
            .clone()
    };
    assert_ne!(&esp_of(&other), on_disk);
    assert_eq!(&esp_of(&ex.plan), on_disk);
    let m = ex
        .plan
        .mounts
        .iter()
        .find(|m| m.path == Path::new("/boot/efi"))
        .unwrap();
    assert_eq!(&m.uuid, on_disk);
    assert!(
        ex.report.to_string().contains(&format!(
            "present: vfat filesystem on /dev/sda1 (kept, UUID {on_disk})"
        )),
        "{}",
        ex.report
    );
    // --reformat: a filesystem of the planned kind is replaced (with consent).
    let reformat = ExecOptions {
        dry_run: true,
        reformat: true,
        ..ExecOptions::default()
    };
    let text = execute(&other, &targets, &reformat)
        .unwrap()
        .report
        .to_string();
    assert!(
        text.contains(&format!(
            "would replace: vfat filesystem on /dev/sda1 (found vfat filesystem UUID {on_disk}; replacing it needs --yes)"
        )),
        "{text}"
    );
    let err = execute(
        &other,
        &targets,
        &ExecOptions {
            reformat: true,
            ..ExecOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::NoConsent { .. }),
        "{err:#}"
    );
    // Another layout: the table conflicts.
    let other = plan_for(&server_spec(Firmware::Both, 15), 2 * GIB);
    assert_eq!(
        inspect(&other, &targets).unwrap()[0].table,
        ItemStatus::Conflicting
    );

    // Dry run reports and writes nothing.
    let before = image_hash(&img);
    let opts = ExecOptions {
        dry_run: true,
        ..ExecOptions::default()
    };
    let ex = execute(&other, &targets, &opts).unwrap();
    assert!(!ex.report.nothing_to_do());
    assert!(
        ex.report
            .to_string()
            .contains("would replace: partition table of /dev/sda"),
        "{}",
        ex.report
    );
    assert_eq!(image_hash(&img), before);
}

fn safety(err: &anyhow::Error) -> &SafetyError {
    err.downcast_ref::<SafetyError>()
        .unwrap_or_else(|| panic!("not a refusal: {err:#}"))
}

#[test]
fn running_system_disk_is_refused_first() {
    // The disk "/" lives on, whatever its name (this project's machines:
    // vda). A machine whose root is on no block device cannot run this test,
    // and that is a failure, not a pass.
    let root = blockdev::running_system_disks().unwrap();
    let name = root
        .iter()
        .next()
        .unwrap_or_else(|| panic!("not run: / is on no block device here ({root:?})"))
        .clone();
    let dev = PathBuf::from(format!("/dev/{name}"));
    let vda = dev.as_path();
    assert!(vda.exists(), "{} does not exist", vda.display());
    // Even with a size requirement it can't meet, the root-disk refusal wins.
    let err = blockdev::check_target(vda, u64::MAX).unwrap_err();
    assert!(
        matches!(err, SafetyError::RunningSystemDisk { ref disk, .. } if *disk == name),
        "{err}"
    );
    assert!(err.to_string().contains("choose another disk"), "{err}");
    // A partition of it too.
    let part = PathBuf::from(blockdev::partition_name(&format!("/dev/{name}"), 1));
    if part.exists() {
        let err = blockdev::check_target(&part, 0).unwrap_err();
        assert!(
            matches!(err, SafetyError::RunningSystemDisk { .. }),
            "{err}"
        );
    }

    // execute() with consent refuses and writes nothing.
    let before = ends_hash(vda);
    let plan = plan_for(&server_spec(Firmware::Uefi, 17), 20 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), vda.to_path_buf())]);
    let opts = ExecOptions {
        consent: true,
        ..ExecOptions::default()
    };
    let err = execute(&plan, &targets, &opts).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::RunningSystemDisk { .. }),
        "{err:#}"
    );
    assert_eq!(ends_hash(vda), before, "{} changed", vda.display());
}

#[test]
fn refusals_on_images_leave_them_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // No consent: a fresh image would get a partition table.
    let img = sparse_image(dir.path(), "n.img", 2 * GIB);
    let plan = plan_for(&server_spec(Firmware::Uefi, 18), 2 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let before = image_hash(&img);
    let err = execute(&plan, &targets, &ExecOptions::default()).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::NoConsent { .. }),
        "{err:#}"
    );
    assert!(err.to_string().contains("--yes"), "{err}");
    assert_eq!(image_hash(&img), before);

    // Too small.
    let small = sparse_image(dir.path(), "s.img", GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), small.clone())]);
    let before = image_hash(&small);
    let opts = ExecOptions {
        consent: true,
        ..ExecOptions::default()
    };
    let err = execute(&plan, &targets, &opts).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::TooSmall { .. }),
        "{err:#}"
    );
    assert_eq!(image_hash(&small), before);

    // Neither a block device nor a file.
    let targets = TargetMap::from([("/dev/sda".to_string(), dir.path().to_path_buf())]);
    let err = execute(&plan, &targets, &opts).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::NotBlockOrFile { .. }),
        "{err:#}"
    );

    // Unmapped device.
    let err = execute(&plan, &TargetMap::new(), &opts).unwrap_err();
    assert!(err.to_string().contains("--disk /dev/sda=TARGET"), "{err}");
}

#[test]
fn mountinfo_parsing() {
    let text = "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                40 36 0:33 / / rw - btrfs /dev/vda1 rw\n";
    let m = blockdev::parse_mountinfo(text);
    assert_eq!(m.len(), 2);
    assert_eq!((m[0].major, m[0].minor), (98, 0));
    assert_eq!(m[0].mountpoint, "/mnt/my disk");
    assert_eq!(m[0].source, "/dev/root");
    assert_eq!(m[1].source, "/dev/vda1");
    assert_eq!(blockdev::partition_name("loop0", 2), "loop0p2");
    assert_eq!(blockdev::partition_name("sda", 2), "sda2");
}

/// Seed 000's server with the root partition left without a filesystem:
/// only the ESP is formatted, in userspace, so no loop device is needed.
fn esp_only_plan(seed: u64) -> opdbus_installer::disk::DiskPlan {
    let mut spec = server_spec(Firmware::Uefi, seed);
    spec.devices[0].partitions[1].filesystem = None;
    plan_for(&spec, 2 * GIB)
}

#[test]
fn fat16_esp_is_kept_without_consent() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "f16.img", 2 * GIB);
    let plan = esp_only_plan(19);
    write_plan_table(&img, &plan);
    let p = &plan.devices[0].partitions[0];
    mkfs_into(
        &img,
        p.start,
        p.size,
        "mkfs.fat",
        &["-F", "16", "-i", "12345678"],
    );
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    assert_eq!(
        inspect(&plan, &targets).unwrap()[0].filesystems[&1],
        ItemStatus::Present
    );
    let before = image_hash(&img);
    let ex = execute(&plan, &targets, &ExecOptions::default()).unwrap();
    assert!(ex.report.nothing_to_do(), "{}", ex.report);
    assert_eq!(image_hash(&img), before, "the FAT16 ESP was reformatted");
}

#[test]
fn unknown_contents_need_consent_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_for(&server_spec(Firmware::Uefi, 20), 2 * GIB);
    let p2 = plan.devices[0].partitions[1].clone();
    let (s, size) = (p2.start, p2.size);
    type Setup = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Setup, String)> = vec![
        (
            "minix",
            Box::new(move |img| mkfs_into(img, s, 64 * MIB, "mkfs.minix", &["-3"])),
            "minix signature at 0x400".into(),
        ),
        (
            "xfs",
            Box::new(move |img| put(img, s, b"XFSB\0\0\x10\0")),
            "xfs signature at 0x0".into(),
        ),
        (
            "luks",
            Box::new(move |img| put(img, s, b"LUKS\xba\xbe\0\x02")),
            "LUKS signature at 0x0".into(),
        ),
        (
            "lvm",
            Box::new(move |img| {
                put(img, s + 512, b"LABELONE");
                put(img, s + 512 + 24, b"LVM2 001");
            }),
            "LVM2 physical volume signature at 0x200".into(),
        ),
        (
            "ntfs",
            Box::new(move |img| put(img, s + 3, b"NTFS    ")),
            "ntfs signature at 0x3".into(),
        ),
        (
            "ext4",
            Box::new(move |img| mkfs_into(img, s, 64 * MIB, "mkfs.ext4", &["-q", "-F"])),
            "ext4 filesystem".into(),
        ),
        (
            "marker",
            Box::new(move |img| put(img, s + 0x12345, b"data")),
            "unknown data at 0x12345".into(),
        ),
        (
            "tail marker",
            Box::new(move |img| put(img, s + size - 100, b"x")),
            format!("unknown data at {:#x}", size - 100),
        ),
        (
            "btrfs mirror",
            Box::new(move |img| put(img, s + 64 * MIB + 0x40, b"_BHRfS_M")),
            format!("unknown data at {:#x}", 64 * MIB + 0x40),
        ),
    ];
    for (name, setup, found) in cases {
        let img = sparse_image(dir.path(), &format!("{name}.img"), 2 * GIB);
        write_plan_table(&img, &plan);
        setup(&img);
        let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
        let ins = inspect(&plan, &targets).unwrap();
        assert_eq!(ins[0].filesystems[&1], ItemStatus::Missing, "{name}: ESP");
        assert_eq!(
            ins[0].filesystems[&2],
            ItemStatus::Conflicting,
            "{name}: a partition with data is not missing"
        );
        let before = image_hash(&img);
        let err = execute(&plan, &targets, &ExecOptions::default()).unwrap_err();
        assert!(
            matches!(safety(&err), SafetyError::NoConsent { .. }),
            "{name}: {err:#}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("/dev/sda2") && msg.contains(&found),
            "{name}: {msg}"
        );
        assert_eq!(image_hash(&img), before, "{name}: image changed");

        let dry = ExecOptions {
            dry_run: true,
            ..ExecOptions::default()
        };
        let text = execute(&plan, &targets, &dry).unwrap().report.to_string();
        let want = format!("would replace: btrfs filesystem on /dev/sda2 (found {found}");
        assert!(text.contains(&want), "{name}: {text}");
        assert!(text.contains("needs --yes"), "{name}: {text}");
        assert_eq!(
            image_hash(&img),
            before,
            "{name}: dry run changed the image"
        );
    }
}

#[test]
fn data_on_a_disk_without_a_table_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "luks.img", 2 * GIB);
    put(&img, 0, b"LUKS\xba\xbe\0\x02");
    let plan = plan_for(&server_spec(Firmware::Uefi, 21), 2 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    assert_eq!(
        inspect(&plan, &targets).unwrap()[0].table,
        ItemStatus::Conflicting
    );
    let before = image_hash(&img);
    let err = execute(&plan, &targets, &ExecOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("/dev/sda (LUKS signature at 0x0) would be overwritten"),
        "{err}"
    );
    let dry = ExecOptions {
        dry_run: true,
        ..ExecOptions::default()
    };
    let text = execute(&plan, &targets, &dry).unwrap().report.to_string();
    assert!(
        text.contains(
            "would replace: partition table of /dev/sda (found LUKS signature at 0x0; replacing it needs --yes)"
        ),
        "{text}"
    );
    assert_eq!(image_hash(&img), before);
}
