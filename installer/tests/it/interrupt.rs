//! SIGINT/SIGTERM during `disk` and `install`: the real binary on a loop
//! image, stopped while a command stalls (a fake mkfs.btrfs on PATH, a fake
//! agent); afterwards no loop device backs the image, nothing is mounted
//! under the mount root, no partition node is left and the table is wiped.
//! Tier 2 (root).

use crate::cli_common;

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cli_common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use opdbus_installer::disk::partition::{self, FoundTable};

/// A shell script that records that it runs, then stalls (in a child
/// process of its own, as real tools' helpers do).
fn stalling_script(path: &Path, marker: &Path) {
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\necho $$ > {}\nsleep 600\nexit 1\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn wait_for(marker: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !marker.exists() {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            panic!("the installer ended ({st}) before the stall: {e}");
        }
        assert!(Instant::now() < deadline, "the stalled step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most 60 s) and returns the exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut e = String::new();
            child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
            return (st.code(), e);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the installer did not stop within 60 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn loop_of(img: &Path) -> String {
    let out = loops_of(img);
    out.split(':').next().unwrap_or("").trim().to_string()
}

/// The host is as before the run.
fn assert_clean(img: &Path, loop_dev: &str, mount_root: &Path) {
    assert_eq!(
        loops_of(img).trim(),
        "",
        "a loop device still backs the image"
    );
    assert!(
        mounts_under(mount_root).is_empty(),
        "mounts left: {:?}",
        mounts_under(mount_root)
    );
    let name = loop_dev.trim_start_matches("/dev/");
    // The loop device may be reused at once by someone else: only an unused
    // one must have no partition nodes.
    if !Path::new("/sys/block")
        .join(name)
        .join("loop/backing_file")
        .exists()
    {
        for n in 1..=4 {
            let node = PathBuf::from(format!("{loop_dev}p{n}"));
            assert!(!node.exists(), "partition node {} left", node.display());
        }
    }
    let mut f = std::fs::File::open(img).unwrap();
    assert_eq!(partition::read_table(&mut f).unwrap(), FoundTable::None);
    let size = f.metadata().unwrap().len();
    let mut b = vec![0u8; 512];
    for off in [512, size - 512] {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut b).unwrap();
        assert!(!b.starts_with(b"EFI PART"), "a GPT header remains at {off}");
    }
}

#[test]
#[ignore = "privileged: loop devices, mounts, signals"]
fn sigint_during_mkfs_of_disk_cleans_up_and_exits_130() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), |_| {});
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 * GIB)
        .unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = dir.path().join("mkfs-started");
    stalling_script(&bin.join("mkfs.btrfs"), &marker);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mount = dir.path().join("mnt");
    let mut child = installer()
        .args(["disk"])
        .arg(&st)
        .arg("--disk")
        .arg(format!("/dev/vda={}", img.display()))
        .arg("--yes")
        .arg("--mount-at")
        .arg(&mount)
        .env("PATH", path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&marker, &mut child);
    let loop_dev = loop_of(&img);
    assert!(loop_dev.starts_with("/dev/loop"), "{loop_dev:?}");
    let t0 = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let (code, err) = finish(child);
    let took = t0.elapsed();
    eprintln!("{}", err.lines().last().unwrap_or(""));
    eprintln!("stopped {:.2} s after SIGINT", took.as_secs_f64());
    // The stalled command went at SIGTERM, not at the SIGKILL 5 s later.
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted by SIGINT"), "{err}");
    assert!(err.contains("was wiped again"), "{err}");
    // The stalled script's own child (sleep) was stopped with it.
    let pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "mkfs.btrfs still runs"
    );
    assert_clean(&img, &loop_dev, &mount);
}

#[test]
#[ignore = "privileged: loop devices, mounts, signals"]
fn sigterm_during_install_unmounts_wipes_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path(), |v| {
        v["plugins"]["users"] = serde_json::json!({
            "accounts": {"admin": {"uid": 1000, "shell": "/bin/sh"}}
        });
    });
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 * GIB)
        .unwrap();
    let payload = payload(dir.path(), "base.tar.zst", &base_tree(dir.path()));
    let marker = dir.path().join("agent-started");
    let agent = dir.path().join("op-dbus-agent");
    stalling_script(&agent, &marker);
    let mount = dir.path().join("target");
    let mut child = installer()
        .arg("install")
        .arg(&st)
        .arg("--disk")
        .arg(format!("/dev/vda={}", img.display()))
        .arg("--yes")
        .arg("--payload")
        .arg(&payload)
        .arg("--agent")
        .arg(&agent)
        .arg("--mount-at")
        .arg(&mount)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&marker, &mut child);
    let loop_dev = loop_of(&img);
    assert!(
        !mounts_under(&mount).is_empty(),
        "the target is not mounted"
    );
    let t0 = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, err) = finish(child);
    let took = t0.elapsed();
    eprintln!("{}", err.lines().last().unwrap_or(""));
    eprintln!("stopped {:.2} s after SIGTERM", took.as_secs_f64());
    // The stalled command went at SIGTERM, not at the SIGKILL 5 s later.
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(err.contains("partition table was wiped"), "{err}");
    assert_clean(&img, &loop_dev, &mount);
}
