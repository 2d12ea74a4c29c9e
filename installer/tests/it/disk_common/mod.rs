//! Shared helpers for the disk engine tests: layouts like seed 000's server,
//! sparse images, and a sparse-aware image hash.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use opdbus_installer::disk::layout::{DeviceSpec, FsSpec, PartitionSpec, SubvolSpec};
use opdbus_installer::disk::plan::{FsKind, PartRole, TableKind};
use opdbus_installer::disk::{DiskPlan, Firmware, LayoutSpec, SizeSpec, UuidSource};
use sha2::{Digest, Sha256};

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;

pub fn subvol(name: &str, mount: Option<&str>) -> SubvolSpec {
    SubvolSpec {
        name: name.into(),
        mount: mount.map(PathBuf::from),
        compression: None,
        nodatacow: false,
        mount_options: vec![],
    }
}

/// Seed 000's complete server: ESP 512M vfat + btrfs `remaining` with @,
/// @home, @blockchain, a nodatacow @vm and a compressed @log.
pub fn server_spec(firmware: Firmware, seed: u64) -> LayoutSpec {
    let mut vm = subvol("@vm", Some("/var/lib/vm"));
    vm.nodatacow = true;
    let mut log = subvol("@log", Some("/var/log"));
    log.compression = Some("zstd".into());
    LayoutSpec {
        firmware,
        uuids: UuidSource::Seeded(seed),
        devices: vec![DeviceSpec {
            key: "/dev/sda".into(),
            table: TableKind::Gpt,
            partitions: vec![
                PartitionSpec {
                    member_of: None,
                    number: Some(1),
                    start: None,
                    size: SizeSpec::parse("512M").unwrap(),
                    role: PartRole::Efi,
                    label: None,
                    filesystem: Some(FsSpec {
                        raid: None,
                        kind: FsKind::Vfat,
                        label: Some("EFI".into()),
                        mount: Some("/boot/efi".into()),
                        subvol: None,
                        mount_options: vec![],
                        subvolumes: vec![],
                    }),
                },
                PartitionSpec {
                    member_of: None,
                    number: Some(2),
                    start: None,
                    size: SizeSpec::Remaining,
                    role: PartRole::Linux,
                    label: None,
                    filesystem: Some(FsSpec {
                        raid: None,
                        kind: FsKind::Btrfs,
                        label: Some("proxmox".into()),
                        mount: None,
                        subvol: None,
                        mount_options: vec!["compress=zstd:3".into()],
                        subvolumes: vec![
                            subvol("@", Some("/")),
                            subvol("@home", Some("/home")),
                            subvol("@blockchain", Some("/var/lib/blockchain")),
                            vm,
                            log,
                        ],
                    }),
                },
            ],
        }],
    }
}

pub fn plan_for(spec: &LayoutSpec, size: u64) -> DiskPlan {
    let sizes: BTreeMap<String, u64> = spec.devices.iter().map(|d| (d.key.clone(), size)).collect();
    opdbus_installer::disk::plan_layout(spec, &sizes).unwrap()
}

/// A sparse image of `size` bytes in `dir`.
pub fn sparse_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    p
}

/// sha256 over the file length and every data extent (offset + bytes):
/// equal content and layout give equal hashes, without reading holes.
pub fn image_hash(path: &Path) -> String {
    use nix::unistd::{lseek, Whence};
    let mut f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut h = Sha256::new();
    h.update(len.to_le_bytes());
    let mut pos: i64 = 0;
    let mut buf = vec![0u8; 1 << 20];
    while (pos as u64) < len {
        let start = match lseek(f.as_fd(), pos, Whence::SeekData) {
            Ok(s) => s,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => panic!("SEEK_DATA: {e}"),
        };
        let end = lseek(f.as_fd(), start, Whence::SeekHole).unwrap();
        h.update((start as u64).to_le_bytes());
        f.seek(SeekFrom::Start(start as u64)).unwrap();
        let mut left = (end - start) as u64;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n]).unwrap();
            h.update(&buf[..n]);
            left -= n as u64;
        }
        pos = end;
    }
    hex::encode(h.finalize())
}

/// sha256 of the first and last MiB of a device or file (read-only).
pub fn ends_hash(path: &Path) -> Option<String> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.seek(SeekFrom::End(0)).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_exact(&mut buf).ok()?;
    h.update(&buf);
    f.seek(SeekFrom::Start(len - MIB)).ok()?;
    f.read_exact(&mut buf).ok()?;
    h.update(&buf);
    Some(hex::encode(h.finalize()))
}

/// Writes `bytes` at `offset` of the image (no truncation).
pub fn put(img: &Path, offset: u64, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Makes a filesystem with `mkfs` (and its `args`) in a scratch file of
/// `size` bytes, then copies the file into the image at `offset`: a real
/// filesystem inside a partition's range, without root.
pub fn mkfs_into(img: &Path, offset: u64, size: u64, mkfs: &str, args: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let scratch = sparse_image(dir.path(), "fs.img", size);
    opdbus_common::Task::new(mkfs)
        .args(args.iter().copied())
        .arg(&scratch)
        .run()
        .unwrap();
    opdbus_common::Task::new("dd")
        .arg(format!("if={}", scratch.display()))
        .arg(format!("of={}", img.display()))
        .args([
            "bs=1M",
            "conv=notrunc,sparse",
            "oflag=seek_bytes",
            "status=none",
        ])
        .arg(format!("seek={offset}"))
        .run()
        .unwrap();
}
