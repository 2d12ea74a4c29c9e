//! Privileged tests (root: loop devices, mounts): a mirrored btrfs root
//! over two disks, from `state-examples/mirrored.json` through the real
//! `op-dbus-install disk`: the raid1 profiles read back with `btrfs
//! filesystem df`, both members and both ESPs, a no-op re-run, and the
//! refusals of a member that holds something else.

use std::path::Path;

use crate::cli_common;
use crate::disk_common;

use cli_common::*;
use disk_common::mkfs_into;
use opdbus_common::Task;
use opdbus_installer::disk::fs::{self, Contents};
use opdbus_installer::disk::{plan_layout, UuidSource};

const SIZE: u64 = 3 * GIB;

fn mirrored() -> std::path::PathBuf {
    repo().join("state-examples/mirrored.json")
}

fn disk(args: &[&str], a: &Path, b: &Path) -> std::process::Output {
    let mut c = installer();
    c.arg("disk").arg(mirrored());
    c.arg("--disk")
        .arg(format!("/dev/vda={}", a.display()))
        .arg("--disk")
        .arg(format!("/dev/vdb={}", b.display()));
    c.args(args);
    c.output().unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What the byte range of partition `n` of the mirrored layout holds.
fn contents(img: &Path, n: u32) -> Contents {
    let (start, size) = range(n);
    let mut f = std::fs::File::open(img).unwrap();
    fs::examine(&mut f, start, size).unwrap()
}

fn range(n: u32) -> (u64, u64) {
    let state =
        opdbus_state::parse::parse_only(&std::fs::read_to_string(mirrored()).unwrap()).unwrap();
    let spec = opdbus_installer::plan::layout_spec(&state, UuidSource::Seeded(1)).unwrap();
    let sizes = [("/dev/vda", SIZE), ("/dev/vdb", SIZE)]
        .map(|(k, s)| (k.to_string(), s))
        .into();
    let plan = plan_layout(&spec, &sizes).unwrap();
    let p = plan.devices[0]
        .partitions
        .iter()
        .find(|p| p.number == n)
        .unwrap();
    (p.start, p.size)
}

fn btrfs_uuid(img: &Path, n: u32) -> String {
    match contents(img, n) {
        Contents::Filesystem(f) => f.uuid,
        other => panic!("partition {n} of {}: {other}", img.display()),
    }
}

/// Data, Metadata and System of the btrfs mounted at `mnt` are `profile`,
/// over `devices` devices.
fn assert_profile(mnt: &Path, profile: &str, devices: u32) {
    let df = Task::new("btrfs")
        .args(["filesystem", "df"])
        .arg(mnt)
        .read()
        .unwrap();
    let profiles = opdbus_installer::disk::btrfs::parse_df(&df);
    for kind in ["Data", "Metadata", "System"] {
        assert!(
            profiles.iter().any(|(k, p)| k == kind && p == profile),
            "{kind} not {profile}: {df}"
        );
    }
    let show = Task::new("btrfs")
        .args(["filesystem", "show"])
        .arg(mnt)
        .read()
        .unwrap();
    assert!(show.contains(&format!("Total devices {devices}")), "{show}");
}

/// Unmounts what the disk phase left mounted at `mnt`, detaches the loop
/// devices of `imgs`.
fn release(mnt: &Path, imgs: &[std::path::PathBuf]) {
    Task::new("umount").arg("-R").arg(mnt).run().unwrap();
    for img in imgs {
        for l in loops_of(img).lines() {
            let dev = l.split(':').next().unwrap();
            Task::new("losetup").args(["-d", dev]).run().unwrap();
        }
    }
}

#[test]
#[ignore = "privileged: loop devices"]
fn a_raid1_root_spans_both_disks_and_a_rerun_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = marked_image(dir.path(), "a.img", SIZE);
    let b = marked_image(dir.path(), "b.img", SIZE);
    let mnt = dir.path().join("target");

    // Fresh disks: nothing is written without consent.
    let before = (marks(&a), marks(&b));
    let out = disk(&[], &a, &b);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_eq!((marks(&a), marks(&b)), before, "written without --yes");

    let out = disk(&["--yes", "--mount-at", mnt.to_str().unwrap()], &a, &b);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("created: /dev/vdb3 as a member of the btrfs on /dev/vda3"),
        "{text}"
    );
    // Data and metadata mirrored, over two devices.
    assert_profile(&mnt, "RAID1", 2);
    let opts = Task::new("findmnt")
        .args(["-n", "-o", "OPTIONS", "--target"])
        .arg(&mnt)
        .read()
        .unwrap();
    assert!(opts.contains("degraded"), "{opts}");
    // Both members carry one filesystem; both disks an ESP.
    let uuid = btrfs_uuid(&a, 3);
    assert_eq!(btrfs_uuid(&b, 3), uuid);
    for img in [&a, &b] {
        assert!(
            matches!(contents(img, 2), Contents::Filesystem(ref f) if f.kind.as_str() == "vfat"),
            "no ESP on {}",
            img.display()
        );
    }
    release(&mnt, &[a.clone(), b.clone()]);

    // A re-run finds everything in place and writes nothing.
    let digest = (disk_common::image_hash(&a), disk_common::image_hash(&b));
    let out = disk(&[], &a, &b);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "nothing to do");
    assert_eq!(
        (disk_common::image_hash(&a), disk_common::image_hash(&b)),
        digest,
        "a no-op re-run wrote"
    );
    for img in [&a, &b] {
        assert_eq!(loops_of(img).trim(), "", "loop devices left attached");
    }
    assert!(mounts_under(dir.path()).is_empty());

    // The second disk replaced by one with an ext4 where the member was:
    // refused without consent, saying why; nothing written.
    let (start, size) = range(3);
    disk_common::put(&b, start, &vec![0u8; MIB as usize]);
    mkfs_into(&b, start, size.min(256 * MIB), "mkfs.ext4", &["-q", "-F"]);
    let digest = (disk_common::image_hash(&a), disk_common::image_hash(&b));
    let out = disk(&[], &a, &b);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/dev/vda3 (a btrfs that does not span all of /dev/vda3, /dev/vdb3)"),
        "{err}"
    );
    assert_eq!(
        (disk_common::image_hash(&a), disk_common::image_hash(&b)),
        digest,
        "a refused run wrote"
    );
    // The dry run names both: the kept btrfs does not span the new disk.
    let out = disk(&["--dry-run"], &a, &b);
    let text = stdout(&out);
    assert!(
        text.contains("would replace: btrfs filesystem on /dev/vda3 (found a btrfs that does not span all of /dev/vda3, /dev/vdb3"),
        "{text}"
    );
    assert!(
        text.contains("would replace: /dev/vdb3 as a member of the btrfs on /dev/vda3 (found ext4"),
        "{text}"
    );
    // With consent the mirror is made again over both.
    let out = disk(&["--yes"], &a, &b);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = btrfs_uuid(&a, 3);
    assert_eq!(btrfs_uuid(&b, 3), again);
    for img in [&a, &b] {
        assert_eq!(loops_of(img).trim(), "", "loop devices left attached");
    }
}

#[test]
#[ignore = "privileged: loop devices"]
fn a_raid10_spans_four_disks() {
    let dir = tempfile::tempdir().unwrap();
    // mirrored.json with four disks and the root in raid10.
    let text = std::fs::read_to_string(mirrored()).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let storage = &mut v["plugins"]["storage"];
    for d in ["/dev/vdc", "/dev/vdd"] {
        storage["devices"][d] = storage["devices"]["/dev/vdb"].clone();
    }
    storage["filesystems"]["/dev/vda3"]["raid"] = "raid10".into();
    storage["filesystems"]["/dev/vda3"]["devices"] =
        serde_json::json!(["/dev/vda3", "/dev/vdb3", "/dev/vdc3", "/dev/vdd3"]);
    let state = dir.path().join("raid10.json");
    std::fs::write(&state, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = installer().arg("validate").arg(&state).output().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));

    let mnt = dir.path().join("target");
    let mut c = installer();
    c.arg("disk").arg(&state);
    let mut imgs = Vec::new();
    for k in ["vda", "vdb", "vdc", "vdd"] {
        let img = disk_common::sparse_image(dir.path(), &format!("{k}.img"), 2 * GIB);
        c.arg("--disk").arg(format!("/dev/{k}={}", img.display()));
        imgs.push(img);
    }
    c.args(["--yes", "--mount-at"]).arg(&mnt);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_profile(&mnt, "RAID10", 4);
    release(&mnt, &imgs);
    let uuid = btrfs_uuid(&imgs[0], 3);
    for img in &imgs[1..] {
        assert_eq!(btrfs_uuid(img, 3), uuid);
    }
}
