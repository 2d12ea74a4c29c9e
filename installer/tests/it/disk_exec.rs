//! Privileged tests (root: loop devices, mounts): the whole disk phase on a
//! 20 GiB sparse image, verified with blkid, btrfs, lsattr and findmnt;
//! re-runs; refusals; cleanup after failure.

use crate::disk_common;

use std::path::Path;

use disk_common::*;
use opdbus_common::Task;
use opdbus_installer::disk::blockdev::{self, SafetyError};
use opdbus_installer::disk::partition::{self, FoundTable};
use opdbus_installer::disk::{execute, Action, ExecOptions, Firmware, Item, TargetMap};

fn loops_of(img: &Path) -> String {
    Task::new("losetup").arg("-j").arg(img).read().unwrap()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    blockdev::parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mountpoint)
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

fn assert_clean(img: &Path, dir: &Path) {
    assert_eq!(loops_of(img).trim(), "", "loop devices left attached");
    assert!(
        mounts_under(dir).is_empty(),
        "mounts left: {:?}",
        mounts_under(dir)
    );
}

#[test]
#[ignore = "privileged: loop devices"]
fn server_layout_on_20g_image_then_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "server.img", 20 * GIB);
    let plan = plan_for(&server_spec(Firmware::Both, 100), 20 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let root = dir.path().join("target");
    let opts = ExecOptions {
        consent: true,
        mount_at: Some(root.clone()),
        ..ExecOptions::default()
    };
    let ex = execute(&plan, &targets, &opts).unwrap();
    assert!(!ex.report.nothing_to_do());
    let mt = ex.mounted.unwrap();
    let esp_uuid = plan.devices[0].partitions[1]
        .filesystem
        .as_ref()
        .unwrap()
        .uuid
        .clone();
    let fs_uuid = plan.devices[0].partitions[2]
        .filesystem
        .as_ref()
        .unwrap()
        .uuid
        .clone();

    // blkid on the partition nodes.
    let p1 = mt.partition_device("/dev/sda1").unwrap().to_path_buf();
    let p2 = mt.partition_device("/dev/sda2").unwrap().to_path_buf();
    let out = Task::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&p2)
        .read()
        .unwrap();
    assert!(
        out.contains(&format!("UUID={fs_uuid}")) && out.contains("TYPE=btrfs"),
        "{out}"
    );
    assert!(out.contains("LABEL=proxmox"), "{out}");
    let out = Task::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(&p1)
        .read()
        .unwrap();
    assert!(
        out.contains(&format!("UUID={esp_uuid}")) && out.contains("TYPE=vfat"),
        "{out}"
    );
    let disk = mt.disk_device("/dev/sda").unwrap().to_path_buf();
    assert!(
        disk.to_string_lossy().starts_with("/dev/loop"),
        "{}",
        disk.display()
    );

    // Subvolumes, properties, +C, default.
    let out = Task::new("btrfs")
        .args(["subvolume", "list"])
        .arg(&root)
        .read()
        .unwrap();
    for sv in ["@", "@home", "@blockchain", "@vm", "@log"] {
        assert!(
            out.lines().any(|l| l.ends_with(&format!("path {sv}"))),
            "{sv} missing: {out}"
        );
    }
    let out = Task::new("btrfs")
        .args(["property", "get"])
        .arg(root.join("var/log"))
        .arg("compression")
        .read()
        .unwrap();
    assert_eq!(out.trim(), "compression=zstd");
    let out = Task::new("btrfs")
        .args(["property", "get"])
        .arg(root.join("home"))
        .arg("compression")
        .read()
        .unwrap();
    assert_eq!(out.trim(), "", "@home must have no compression property");
    let out = Task::new("lsattr")
        .arg("-d")
        .arg(root.join("var/lib/vm"))
        .read()
        .unwrap();
    assert!(
        out.split_whitespace().next().unwrap().contains('C'),
        "{out}"
    );
    let out = Task::new("lsattr")
        .arg("-d")
        .arg(root.join("home"))
        .read()
        .unwrap();
    assert!(
        !out.split_whitespace().next().unwrap().contains('C'),
        "{out}"
    );
    let out = Task::new("btrfs")
        .args(["subvolume", "get-default"])
        .arg(&root)
        .read()
        .unwrap();
    assert!(out.trim().ends_with("path @"), "{out}");

    // findmnt: the tree, with subvol and compress on the first mount.
    let out = Task::new("findmnt")
        .args(["-rn", "-o", "TARGET,FSTYPE,OPTIONS", "-R"])
        .arg(&root)
        .read()
        .unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].contains("btrfs")
            && lines[0].contains("compress=zstd:3")
            && lines[0].contains("subvol=/@"),
        "{out}"
    );
    for (path, sv) in [
        ("home", "@home"),
        ("var/lib/blockchain", "@blockchain"),
        ("var/lib/vm", "@vm"),
        ("var/log", "@log"),
    ] {
        let t = root.join(path);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{} btrfs", t.display()))
                    && l.contains(&format!("subvol=/{sv}"))),
            "{path}: {out}"
        );
    }
    assert!(root.join("boot/efi").is_dir());

    // The ESP through the handle.
    let esp = mt.open_esp().unwrap();
    esp.write_file("EFI/BOOT/BOOTX64.EFI", b"stub").unwrap();
    esp.close().unwrap();
    let esp = mt.open_esp().unwrap();
    assert_eq!(esp.read_file("EFI/BOOT/BOOTX64.EFI").unwrap(), b"stub");
    esp.close().unwrap();

    mt.close().unwrap();
    assert_clean(&img, dir.path());

    // Re-run: nothing to do, image unchanged.
    let before = image_hash(&img);
    let again = ExecOptions {
        consent: false,
        ..ExecOptions::default()
    };
    let ex = execute(&plan, &targets, &again).unwrap();
    assert!(ex.report.nothing_to_do(), "{}", ex.report);
    assert_eq!(ex.report.to_string(), "nothing to do\n");
    assert_clean(&img, dir.path());
    assert_eq!(image_hash(&img), before, "a no-op re-run changed the image");

    // One more subvolume: only it is created, nothing wiped.
    let mut spec = server_spec(Firmware::Both, 100);
    spec.devices[0].partitions[1]
        .filesystem
        .as_mut()
        .unwrap()
        .subvolumes
        .push(subvol("@srv", Some("/srv")));
    let plan2 = plan_for(&spec, 20 * GIB);
    assert_eq!(plan2.devices, {
        let mut d = plan.devices.clone();
        d[0].partitions[2]
            .filesystem
            .as_mut()
            .unwrap()
            .subvolumes
            .push(
                plan2.devices[0].partitions[2]
                    .filesystem
                    .as_ref()
                    .unwrap()
                    .subvolumes[5]
                    .clone(),
            );
        d
    });
    let ex = execute(&plan2, &targets, &again).unwrap();
    let changes: Vec<&Item> = ex.report.changes().iter().map(|i| &i.item).collect();
    assert_eq!(
        changes,
        [&Item::Subvolume {
            partition: "/dev/sda2".into(),
            name: "@srv".into()
        }],
        "{}",
        ex.report
    );
    assert!(ex.report.items.iter().any(
        |i| matches!(&i.item, Item::Subvolume { name, .. } if name == "@home")
            && i.action == Action::Keep
    ));
    assert_clean(&img, dir.path());

    // The ESP file written before is still there (nothing was reformatted).
    let ex = execute(
        &plan2,
        &targets,
        &ExecOptions {
            mount_at: Some(root.clone()),
            ..ExecOptions::default()
        },
    )
    .unwrap();
    assert!(ex.report.nothing_to_do(), "{}", ex.report);
    let mt = ex.mounted.unwrap();
    assert_eq!(
        mt.open_esp()
            .unwrap()
            .read_file("EFI/BOOT/BOOTX64.EFI")
            .unwrap(),
        b"stub"
    );
    assert!(root.join("srv").is_dir());
    mt.close().unwrap();
    assert_clean(&img, dir.path());
}

fn safety(err: &anyhow::Error) -> &SafetyError {
    err.downcast_ref::<SafetyError>()
        .unwrap_or_else(|| panic!("not a refusal: {err:#}"))
}

#[test]
#[ignore = "privileged: loop devices"]
fn refusals_leave_the_image_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "r.img", 20 * GIB);
    let plan = plan_for(&server_spec(Firmware::Uefi, 200), 20 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let yes = ExecOptions {
        consent: true,
        ..ExecOptions::default()
    };
    execute(&plan, &targets, &yes).unwrap();
    assert_clean(&img, dir.path());

    // A mounted partition of the image.
    let other = plan_for(&server_spec(Firmware::Uefi, 201), 20 * GIB);
    let lo = Task::new("losetup")
        .args(["--find", "--show", "--partscan"])
        .arg(&img)
        .read()
        .unwrap();
    let lo = lo.trim().to_string();
    let mnt = dir.path().join("m");
    std::fs::create_dir_all(&mnt).unwrap();
    let lo_file = std::fs::File::open(&lo).unwrap();
    let p = &plan.devices[0].partitions[1];
    let nodes = blockdev::expose_partitions(
        &lo_file,
        &lo[5..],
        &[(2, p.start, p.size)],
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    drop(lo_file);
    let part = nodes[0].path.display().to_string();
    Task::new("mount")
        .args(["-o", "ro", &part])
        .arg(&mnt)
        .run()
        .unwrap();
    let before = image_hash(&img);
    let err = execute(&other, &targets, &yes).unwrap_err();
    Task::new("umount").arg(&mnt).run().unwrap();
    if nodes[0].created {
        let _ = std::fs::remove_file(&part);
    }
    Task::new("losetup").args(["-d", &lo]).run().unwrap();
    assert!(
        matches!(safety(&err), SafetyError::Mounted { .. }),
        "{err:#}"
    );
    assert!(err.to_string().contains("unmount it first"), "{err}");
    assert_eq!(image_hash(&img), before);

    // No consent for a conflicting layout (a BIOS boot partition in front).
    let other = plan_for(&server_spec(Firmware::Both, 201), 20 * GIB);
    let err = execute(&other, &targets, &ExecOptions::default()).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::NoConsent { .. }),
        "{err:#}"
    );
    assert_eq!(image_hash(&img), before);

    // Too small.
    let small = sparse_image(dir.path(), "small.img", 10 * GIB);
    let before_small = image_hash(&small);
    let t2 = TargetMap::from([("/dev/sda".to_string(), small.clone())]);
    let err = execute(&plan, &t2, &yes).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::TooSmall { .. }),
        "{err:#}"
    );
    assert_eq!(image_hash(&small), before_small);

    // The running system's disk.
    if Path::new("/dev/vda").exists() {
        let before_vda = ends_hash(Path::new("/dev/vda"));
        let t3 = TargetMap::from([("/dev/sda".to_string(), "/dev/vda".into())]);
        let err = execute(&plan, &t3, &yes).unwrap_err();
        assert!(
            matches!(safety(&err), SafetyError::RunningSystemDisk { .. }),
            "{err:#}"
        );
        assert_eq!(ends_hash(Path::new("/dev/vda")), before_vda);
    }
    assert_eq!(image_hash(&img), before);
    assert_clean(&img, dir.path());
}

#[test]
#[ignore = "privileged: loop devices"]
fn failure_after_partitioning_wipes_the_table_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "f.img", 4 * GIB);
    let mut plan = plan_for(&server_spec(Firmware::Uefi, 300), 4 * GIB);
    // mkfs.btrfs refuses a label longer than 255 bytes.
    plan.devices[0].partitions[1]
        .filesystem
        .as_mut()
        .unwrap()
        .label = Some("x".repeat(300));
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let root = dir.path().join("t");
    let opts = ExecOptions {
        consent: true,
        mount_at: Some(root),
        ..ExecOptions::default()
    };
    let err = execute(&plan, &targets, &opts).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("was wiped again") && msg.contains("mkfs.btrfs"),
        "{msg}"
    );
    let mut f = std::fs::File::open(&img).unwrap();
    assert_eq!(partition::read_table(&mut f).unwrap(), FoundTable::None);
    assert_clean(&img, dir.path());
}

#[test]
#[ignore = "privileged: loop devices"]
fn msdos_with_swap_and_ext4() {
    use opdbus_installer::disk::layout::{DeviceSpec, FsSpec, LayoutSpec, PartitionSpec};
    use opdbus_installer::disk::plan::{FsKind, PartRole, TableKind};
    use opdbus_installer::disk::{SizeSpec, UuidSource};
    let fs = |kind, mount: Option<&str>| FsSpec {
        raid: None,
        kind,
        label: Some("t".into()),
        mount: mount.map(Into::into),
        subvol: None,
        mount_options: vec![],
        subvolumes: vec![],
    };
    let spec = LayoutSpec {
        firmware: Firmware::Bios,
        uuids: UuidSource::Random,
        devices: vec![DeviceSpec {
            key: "/dev/vdb".into(),
            table: TableKind::Msdos,
            partitions: vec![
                PartitionSpec {
                    member_of: None,
                    number: None,
                    start: None,
                    size: SizeSpec::parse("256M").unwrap(),
                    role: PartRole::Swap,
                    label: None,
                    filesystem: Some(fs(FsKind::Swap, None)),
                },
                PartitionSpec {
                    member_of: None,
                    number: None,
                    start: None,
                    size: SizeSpec::Remaining,
                    role: PartRole::Linux,
                    label: None,
                    filesystem: Some(fs(FsKind::Ext4, Some("/"))),
                },
            ],
        }],
    };
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "m.img", 2 * GIB);
    let plan = plan_for(&spec, 2 * GIB);
    let targets = TargetMap::from([("/dev/vdb".to_string(), img.clone())]);
    let root = dir.path().join("t");
    let opts = ExecOptions {
        consent: true,
        mount_at: Some(root.clone()),
        ..ExecOptions::default()
    };
    let mt = execute(&plan, &targets, &opts).unwrap().mounted.unwrap();
    for (i, kind) in [(0, "swap"), (1, "ext4")] {
        let p = &plan.devices[0].partitions[i];
        let node = mt.partition_device(&p.key).unwrap();
        let out = Task::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(node)
            .read()
            .unwrap();
        let uuid = &p.filesystem.as_ref().unwrap().uuid;
        assert!(
            out.contains(&format!("UUID={uuid}")) && out.contains(&format!("TYPE={kind}")),
            "{out}"
        );
    }
    let out = Task::new("findmnt")
        .args(["-rn", "-o", "FSTYPE"])
        .arg(&root)
        .read()
        .unwrap();
    assert_eq!(out.trim(), "ext4");
    mt.close().unwrap();
    assert_clean(&img, dir.path());
    let ex = execute(&plan, &targets, &ExecOptions::default()).unwrap();
    assert!(ex.report.nothing_to_do(), "{}", ex.report);
    assert_clean(&img, dir.path());
}

fn fs_uuid(plan: &opdbus_installer::disk::DiskPlan, i: usize) -> String {
    plan.devices[0].partitions[i]
        .filesystem
        .as_ref()
        .unwrap()
        .uuid
        .clone()
}

fn on_disk_uuid(img: &Path, plan: &opdbus_installer::disk::DiskPlan, i: usize) -> String {
    let p = &plan.devices[0].partitions[i];
    let mut f = std::fs::File::open(img).unwrap();
    opdbus_installer::disk::fs::probe(&mut f, p.start, p.size)
        .unwrap()
        .unwrap()
        .uuid
}

#[test]
#[ignore = "privileged: loop devices"]
fn rerun_with_random_uuids_keeps_and_adopts_filesystems() {
    use opdbus_installer::disk::{fstab, UuidSource};
    let dir = tempfile::tempdir().unwrap();
    let img = sparse_image(dir.path(), "rr.img", 4 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let random_plan = || {
        let mut spec = server_spec(Firmware::Uefi, 0);
        spec.uuids = UuidSource::Random;
        plan_for(&spec, 4 * GIB)
    };
    let root = dir.path().join("t");
    let first = random_plan();
    let opts = ExecOptions {
        consent: true,
        mount_at: Some(root.clone()),
        ..ExecOptions::default()
    };
    let mt = execute(&first, &targets, &opts).unwrap().mounted.unwrap();
    std::fs::write(root.join("home/keep"), b"data").unwrap();
    mt.close().unwrap();
    assert_clean(&img, dir.path());
    let (esp, btrfs) = (on_disk_uuid(&img, &first, 0), on_disk_uuid(&img, &first, 1));

    // A second run plans fresh random UUIDs: nothing is replaced, without --yes.
    let second = random_plan();
    assert_ne!(fs_uuid(&second, 1), btrfs);
    let before = image_hash(&img);
    let ex = execute(&second, &targets, &ExecOptions::default()).unwrap();
    assert!(ex.report.nothing_to_do(), "{}", ex.report);
    assert_eq!(image_hash(&img), before, "a re-run changed the image");
    assert_clean(&img, dir.path());
    // The executed plan carries the on-disk UUIDs, in partitions, mounts, fstab.
    assert_eq!(
        (fs_uuid(&ex.plan, 0), fs_uuid(&ex.plan, 1)),
        (esp.clone(), btrfs.clone())
    );
    assert!(ex
        .plan
        .mounts
        .iter()
        .all(|m| m.uuid == esp || m.uuid == btrfs));
    let tab = fstab(&ex.plan);
    assert!(tab.contains(&format!("UUID={btrfs} / btrfs")), "{tab}");
    assert!(tab.contains(&format!("UUID={esp} /boot/efi vfat")), "{tab}");

    // Mounted again: the subvolumes and their files are the first run's.
    let ex = execute(
        &second,
        &targets,
        &ExecOptions {
            mount_at: Some(root.clone()),
            ..ExecOptions::default()
        },
    )
    .unwrap();
    assert!(ex.report.nothing_to_do(), "{}", ex.report);
    let mt = ex.mounted.unwrap();
    assert_eq!(std::fs::read(root.join("home/keep")).unwrap(), b"data");
    mt.close().unwrap();
    assert_clean(&img, dir.path());

    // --reformat replaces them, and only with consent.
    let reformat = ExecOptions {
        reformat: true,
        ..ExecOptions::default()
    };
    let err = execute(&second, &targets, &reformat).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::NoConsent { .. }),
        "{err:#}"
    );
    let ex = execute(
        &second,
        &targets,
        &ExecOptions {
            consent: true,
            ..reformat
        },
    )
    .unwrap();
    let text = ex.report.to_string();
    assert!(
        text.contains(&format!(
            "replaced: btrfs filesystem on /dev/sda2 (found btrfs filesystem UUID {btrfs})"
        )),
        "{text}"
    );
    assert_eq!(on_disk_uuid(&img, &second, 1), fs_uuid(&second, 1));
    assert_eq!(on_disk_uuid(&img, &second, 0), fs_uuid(&second, 0));
    assert_clean(&img, dir.path());
}

#[test]
#[ignore = "privileged: loop devices"]
fn only_an_empty_partition_is_formatted_without_consent() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_for(&server_spec(Firmware::Uefi, 500), 4 * GIB);
    let p2 = plan.devices[0].partitions[1].clone();
    let table = |img: &Path| {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(img)
            .unwrap();
        partition::write_table(&mut f, &plan.devices[0]).unwrap();
    };

    // A minix root where the plan wants btrfs: refused, untouched.
    let img = sparse_image(dir.path(), "minix.img", 4 * GIB);
    table(&img);
    mkfs_into(&img, p2.start, 64 * MIB, "mkfs.minix", &["-3"]);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let before = image_hash(&img);
    let err = execute(&plan, &targets, &ExecOptions::default()).unwrap_err();
    assert!(
        matches!(safety(&err), SafetyError::NoConsent { .. }),
        "{err:#}"
    );
    assert!(err.to_string().contains("minix signature"), "{err}");
    assert_eq!(image_hash(&img), before);
    assert_clean(&img, dir.path());

    // The plan's table with empty partitions: formatted without consent.
    let img = sparse_image(dir.path(), "empty.img", 4 * GIB);
    table(&img);
    let targets = TargetMap::from([("/dev/sda".to_string(), img.clone())]);
    let ex = execute(&plan, &targets, &ExecOptions::default()).unwrap();
    let text = ex.report.to_string();
    assert!(
        text.contains("present: partition table of /dev/sda")
            && text.contains("created: vfat filesystem on /dev/sda1")
            && text.contains("created: btrfs filesystem on /dev/sda2")
            && text.contains("created: subvolume @home on /dev/sda2"),
        "{text}"
    );
    assert_eq!(on_disk_uuid(&img, &plan, 1), fs_uuid(&plan, 1));
    assert_clean(&img, dir.path());
}
