//! Benchmark (root only): the whole disk phase on a 20 GiB sparse image with
//! the engine vs the same layout done with sgdisk + mkfs + btrfs tools, in
//! one run. Prints both times and the ratio.
#![allow(clippy::unwrap_used)]

#[path = "../tests/it/disk_common/mod.rs"]
mod disk_common;

use std::time::{Duration, Instant};

use disk_common::*;
use opdbus_common::Task;
use opdbus_installer::disk::{execute, ExecOptions, Firmware, TargetMap};

const SHELL: &str = r#"
set -eu
img=$1
sgdisk -o -n 1:1M:+512M -t 1:EF00 -c 1:esp -n 2:0:0 -t 2:8300 -c 2:linux "$img" >/dev/null
lo=$(losetup --find --show --partscan "$img")
trap 'umount "$mnt" 2>/dev/null || true; losetup -d "$lo"; rmdir "$mnt"' EXIT
partx -u "$lo" 2>/dev/null || partx -a "$lo" 2>/dev/null || true
for i in $(seq 100); do [ -b "${lo}p2" ] && break; sleep 0.02; done
mkfs.fat -F 32 -n EFI "${lo}p1" >/dev/null
mkfs.btrfs -f -L proxmox "${lo}p2" >/dev/null
mnt=$(mktemp -d)
mount -o subvolid=5 "${lo}p2" "$mnt"
for sv in @ @home @blockchain @vm @log; do btrfs subvolume create "$mnt/$sv" >/dev/null; done
chattr +C "$mnt/@vm"
btrfs property set "$mnt/@log" compression zstd
btrfs subvolume set-default "$mnt/@"
umount "$mnt"
"#;

fn time_engine(dir: &std::path::Path, i: usize) -> Duration {
    let img = sparse_image(dir, &format!("engine{i}.img"), 20 * GIB);
    let plan = plan_for(&server_spec(Firmware::Uefi, 1000 + i as u64), 20 * GIB);
    let targets = TargetMap::from([("/dev/sda".to_string(), img)]);
    let opts = ExecOptions {
        consent: true,
        ..ExecOptions::default()
    };
    let t = Instant::now();
    execute(&plan, &targets, &opts).unwrap();
    t.elapsed()
}

fn time_shell(dir: &std::path::Path, i: usize) -> Duration {
    let img = sparse_image(dir, &format!("shell{i}.img"), 20 * GIB);
    let t = Instant::now();
    Task::new("bash")
        .args(["-c", SHELL, "bench"])
        .arg(&img)
        .run()
        .unwrap();
    t.elapsed()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("disk bench skipped: needs root (loop devices, mounts)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rounds = 5;
    let mut engine = Vec::new();
    let mut shell = Vec::new();
    for i in 0..rounds {
        engine.push(time_engine(dir.path(), i));
        shell.push(time_shell(dir.path(), i));
    }
    engine.sort();
    shell.sort();
    let (e, s) = (engine[rounds / 2], shell[rounds / 2]);
    println!("disk phase on a 20 GiB sparse image, median of {rounds}:");
    println!(
        "  engine (gpt crate, fatfs, mkfs.btrfs, libbtrfsutil): {:.1} ms",
        e.as_secs_f64() * 1e3
    );
    println!(
        "  shell tools (sgdisk, mkfs.fat, mkfs.btrfs, btrfs):   {:.1} ms",
        s.as_secs_f64() * 1e3
    );
    println!(
        "  ratio engine/shell: {:.2}",
        e.as_secs_f64() / s.as_secs_f64()
    );
}
