//! A real degraded btrfs raid1: two sparse images on loop devices, the
//! second detached, the first mounted `-o degraded`; the health check on the
//! real /sys and /proc, and `status` (human, `--json`, `--result-line`)
//! showing it with its exit code unchanged. Privileged; touches only its own
//! loop devices, and the guards undo every mount and loop device.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opdbus_agent::engine::{Phase, Status};
use opdbus_agent::health::btrfs;
use opdbus_common::Task;

/// A loop device on an image file; detached (and forgotten by btrfs) on drop.
struct LoopDev(Option<String>);

impl LoopDev {
    fn attach(img: &Path) -> LoopDev {
        let dev = Task::new("losetup")
            .args(["-f", "--show"])
            .arg(img)
            .read()
            .unwrap();
        LoopDev(Some(dev.trim().to_string()))
    }

    fn path(&self) -> &str {
        self.0.as_deref().expect("attached")
    }

    /// Forgets the device in btrfs (while it still exists: the loop node may
    /// be reused by someone else's image once free), then detaches it.
    fn close(&mut self) -> anyhow::Result<()> {
        if let Some(dev) = self.0.take() {
            forget(&dev)?;
            Task::new("losetup").args(["-d", &dev]).run()?;
        }
        Ok(())
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        if let Some(dev) = self.0.take() {
            let _ = forget(&dev);
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
    }
}

/// `btrfs device scan --forget DEV`, retried while btrfs answers "busy":
/// this host's mounts are private, so a concurrent test's `ip netns exec`
/// copies the mount namespace with our mount in it and holds the filesystem
/// open after our `umount`, until that process exits. Mounting `degraded`
/// before then would find both devices still open and test nothing.
fn forget(dev: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Task::new("btrfs")
            .args(["device", "scan", "--forget", dev])
            .run()
        {
            Ok(()) => return Ok(()),
            Err(e) if e.to_string().contains("busy") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A mount; unmounted on drop (lazily when busy).
struct Mount(Option<PathBuf>);

impl Mount {
    fn new(dev: &str, at: &Path, options: &[&str]) -> Mount {
        let mut t = Task::new("mount");
        if !options.is_empty() {
            t = t.arg("-o").arg(options.join(","));
        }
        t.arg(dev).arg(at).run().unwrap();
        Mount(Some(at.to_path_buf()))
    }

    fn close(&mut self) -> anyhow::Result<()> {
        if let Some(at) = self.0.take() {
            Task::new("umount").arg(&at).run()?;
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(at) = self.0.take() {
            let ok = Command::new("umount")
                .arg(&at)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&at).status();
            }
        }
    }
}

fn ours(uuid: &str) -> Option<btrfs::Degraded> {
    btrfs::degraded(Path::new("/sys"), Path::new("/proc/self/mountinfo"))
        .unwrap()
        .into_iter()
        .find(|d| d.uuid == uuid)
}

fn agent(state_dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"))
        .arg("--state-dir")
        .arg(state_dir)
        .arg("status")
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
#[ignore = "privileged: loop devices, btrfs"]
fn a_raid1_with_a_member_missing_is_reported_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let (a_img, b_img) = (dir.path().join("a.img"), dir.path().join("b.img"));
    for img in [&a_img, &b_img] {
        std::fs::File::create(img)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
    }
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let state_dir = dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    // Declared after `dir`: dropped (unmounted, detached) before it.
    let a = LoopDev::attach(&a_img);
    let mut b = LoopDev::attach(&b_img);
    Task::new("mkfs.btrfs")
        .args(["-q", "-L", "opdbus-t", "-d", "raid1", "-m", "raid1"])
        .args([a.path(), b.path()])
        .run()
        .unwrap();
    let uuid = Task::new("blkid")
        .args(["-s", "UUID", "-o", "value", a.path()])
        .read()
        .unwrap()
        .trim()
        .to_string();
    assert!(!uuid.is_empty());

    // Both members there: nothing to report.
    let mut healthy = Mount::new(a.path(), &mnt, &[]);
    assert_eq!(ours(&uuid), None);
    // The status file is written while the array is healthy, as by a
    // first reconcile before the disk was pulled.
    let mut s = Status::fatal(String::new());
    s.status = Phase::Done;
    s.errors.clear();
    assert!(s.degraded.iter().all(|d| !d.to_string().contains(&uuid)));
    s.write(&state_dir).unwrap();
    healthy.close().unwrap();

    // The second disk is pulled: forgotten by btrfs, detached.
    let b_dev = b.path().to_string();
    b.close().unwrap();
    let _degraded = Mount::new(a.path(), &mnt, &["degraded"]);
    let d = ours(&uuid).expect("the degraded raid1 is reported");
    println!("{d:#?}");
    assert_eq!(
        d,
        btrfs::Degraded {
            uuid: uuid.clone(),
            label: Some("opdbus-t".into()),
            mounts: vec![mnt.display().to_string()],
            devices_total: 2,
            devices_missing: 1,
            missing_devids: vec![2],
            present: vec![a.path().to_string()],
            errors: vec![],
        }
    );
    assert!(!d.present.contains(&b_dev));

    // `status`, run later by an operator, reads the kernel again.
    let (code, human) = agent(&state_dir, &[]);
    print!("{human}");
    let line = format!(
        "degraded: btrfs {uuid} (label opdbus-t) at {}: 1 of 2 devices missing (devid 2); \
         present: {}; replace the disk, then run `btrfs replace start 2 /dev/NEW {}`",
        mnt.display(),
        a.path(),
        mnt.display()
    );
    assert!(human.lines().any(|l| l == line), "{human}");
    assert_eq!(code, Some(0), "a degraded array is a warning: done stays 0");

    let (code, result) = agent(&state_dir, &["--result-line"]);
    print!("{result}");
    assert_eq!(code, Some(0));
    let json: serde_json::Value =
        serde_json::from_str(result.strip_prefix("OPDBUS-RESULT ").unwrap().trim()).unwrap();
    let ours_json = json["degraded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["uuid"] == uuid.as_str())
        .unwrap();
    assert_eq!(ours_json["kind"], "btrfs");
    assert_eq!(ours_json["devices_missing"], 1);
    assert_eq!(ours_json["devices_total"], 2);
    assert_eq!(ours_json["missing_devids"], serde_json::json!([2]));

    let (_, json_out) = agent(&state_dir, &["--json"]);
    assert!(
        json_out.contains(&format!("\"uuid\":\"{uuid}\"")),
        "{json_out}"
    );
}
