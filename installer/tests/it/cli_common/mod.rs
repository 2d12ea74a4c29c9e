//! Shared helpers for tests that run the real `op-dbus-install` binary:
//! states written from `state-examples/default.json`, marked images, loop
//! and mount listings.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use opdbus_common::Task;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// The repository root (templates/, state-examples/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `state-examples/default.json`, changed by `edit`, written into `dir`.
pub fn state(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("state-examples/default.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut v);
    let p = dir.join("state.json");
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    p
}

/// A sparse image with 4 KiB of 0xAB at the start, at 1 MiB, at 600 MiB and
/// at the end: any write of a table or filesystem changes one of them.
pub fn marked_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    for off in [0, MIB, 600 * MIB, size - 4096] {
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&[0xAB; 4096]).unwrap();
    }
    p
}

/// The marked ranges' bytes.
pub fn marks(img: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut f = std::fs::File::open(img).unwrap();
    let size = f.metadata().unwrap().len();
    let mut out = Vec::new();
    for off in [0, MIB, 600 * MIB, size - 4096] {
        let mut b = vec![0u8; 4096];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut b).unwrap();
        out.extend(b);
    }
    out
}

pub fn installer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_op-dbus-install"));
    c.current_dir(repo());
    c
}

pub fn run(args: &[&std::ffi::OsStr]) -> Output {
    installer().args(args).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `losetup -j IMG`: the loop devices backed by the image.
pub fn loops_of(img: &Path) -> String {
    Task::new("losetup").arg("-j").arg(img).read().unwrap()
}

/// Mount points at or below `dir` in this namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    opdbus_installer::disk::blockdev::parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mountpoint)
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

/// A loop device the test attached itself; detached on drop.
pub struct TestLoop(pub String);

impl TestLoop {
    pub fn attach(img: &Path) -> Self {
        let out = Task::new("losetup")
            .args(["--find", "--show"])
            .arg(img)
            .read()
            .unwrap();
        TestLoop(out.trim().to_string())
    }
}

impl Drop for TestLoop {
    fn drop(&mut self) {
        let _ = Task::new("losetup").args(["-d", &self.0]).run();
    }
}

/// Packs `tree` into `dir/NAME` (tar.zst) with its `NAME.sha256` beside it.
pub fn payload(dir: &Path, name: &str, tree: &Path) -> PathBuf {
    let p = dir.join(name);
    Task::new("tar")
        .arg("--zstd")
        .arg("-cf")
        .arg(&p)
        .arg("-C")
        .arg(tree)
        .arg(".")
        .run()
        .unwrap();
    let sum = Task::new("sha256sum").arg(&p).read().unwrap();
    std::fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{}  {name}\n", &sum[..64]),
    )
    .unwrap();
    p
}

/// A minimal base system: what configure edits and the bootloader step
/// looks for (empty kernel, initrd, systemd-boot binary, GRUB modules).
pub fn base_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let files: [(&str, &str); 7] = [
        ("etc/shadow", "root:*:19000:0:99999:7:::\n"),
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        (
            "usr/lib/systemd/system/systemd-networkd.service",
            "[Unit]\n",
        ),
        ("boot/vmlinuz-6.1.0-1-amd64", ""),
        ("boot/initrd.img-6.1.0-1-amd64", ""),
        ("usr/lib/systemd/boot/efi/systemd-bootx64.efi", ""),
        ("usr/lib/grub/i386-pc/modinfo.sh", ""),
    ];
    for (rel, text) in files {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    tree
}

/// Held by tests that build or read the shared payload cache
/// (target/opdbus-cache): in one test binary they run in parallel, and
/// mmdebstrap is not reproducible, so two builds of one key must not race.
pub static PAYLOAD_CACHE: std::sync::Mutex<()> = std::sync::Mutex::new(());
