//! Block devices: the safety checks made before any write (not the running
//! system's disk, not the live medium, not mounted, not swap, not held, big
//! enough), and telling the kernel about new partitions without udev.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a target path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A whole-disk block device, with its kernel name (`sda`, `loop3`).
    BlockDevice { name: String },
    /// A regular file used as a disk image.
    ImageFile,
}

/// A target that passed the safety checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    pub path: PathBuf,
    pub kind: TargetKind,
    pub size: u64,
}

/// A refusal: each says what was found and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("target {path} cannot be read; check the path")]
    NotFound {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("target {path} is neither a block device nor a regular file; give a whole disk (/dev/sdX) or an image file")]
    NotBlockOrFile { path: PathBuf },
    #[error("target {path} is a partition of /dev/{disk}; give the whole disk instead")]
    IsPartition { path: PathBuf, disk: String },
    #[error("refusing {path}: /dev/{disk} holds the running system's root filesystem; choose another disk")]
    RunningSystemDisk { path: PathBuf, disk: String },
    #[error("refusing {path}: /dev/{disk} is the live medium this system booted from; choose another disk")]
    LiveMedium { path: PathBuf, disk: String },
    #[error("refusing {path}: /dev/{device} is mounted on {mountpoint}; unmount it first")]
    Mounted {
        path: PathBuf,
        device: String,
        mountpoint: String,
    },
    #[error("refusing {path}: /dev/{device} is active swap; run `swapoff /dev/{device}` first")]
    ActiveSwap { path: PathBuf, device: String },
    #[error("refusing {path}: /dev/{device} is in use by {holders} (LVM, RAID or dm-crypt); stop those first")]
    Held {
        path: PathBuf,
        device: String,
        holders: String,
    },
    #[error("refusing {path}: the image is attached to /dev/{device} and in use there; detach it with `losetup -d /dev/{device}` first")]
    LoopAttached { path: PathBuf, device: String },
    #[error("target {path} has {available} bytes but the plan needs {needed}; use a bigger disk or image")]
    TooSmall {
        path: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("refusing {path}: {what} would be overwritten and no consent was given; re-run with --yes to wipe it")]
    NoConsent { path: PathBuf, what: String },
    #[error("reading {what} to check the target")]
    Probe {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn probe_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SafetyError {
    let what = what.into();
    move |source| SafetyError::Probe { what, source }
}

/// The kernel name (`vda1`) of a block device number, from `/sys/dev/block`.
pub fn name_of_devno(major: u64, minor: u64) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    link.file_name().map(|n| n.to_string_lossy().into_owned())
}

fn sys_block(name: &str) -> PathBuf {
    Path::new("/sys/class/block").join(name)
}

/// The whole disks under a block device: a partition's parent, a dm/md
/// device's slaves (recursively), or the disk itself.
pub fn disks_of(name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    disks_of_into(name, &mut out, 0);
    out
}

fn disks_of_into(name: &str, out: &mut BTreeSet<String>, depth: u32) {
    let dir = sys_block(name);
    if depth > 8 {
        return;
    }
    if dir.join("partition").exists() {
        if let Some(parent) = std::fs::canonicalize(&dir).ok().and_then(|p| {
            p.parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        }) {
            disks_of_into(&parent, out, depth + 1);
            return;
        }
    }
    let slaves: Vec<String> = std::fs::read_dir(dir.join("slaves"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if slaves.is_empty() {
        out.insert(name.to_string());
    } else {
        for s in slaves {
            disks_of_into(&s, out, depth + 1);
        }
    }
}

/// The partitions (kernel names) of a whole disk.
pub fn partitions_of(disk: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(sys_block(disk)) else {
        return Vec::new();
    };
    let mut parts: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("partition").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    parts
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub major: u64,
    pub minor: u64,
    pub mountpoint: String,
    pub source: String,
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (maj, min) = fields.get(2)?.split_once(':')?;
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                mountpoint: unescape(fields.get(4)?),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect()
}

/// The mounts of this process's namespace.
pub fn mounts() -> Result<Vec<MountEntry>, SafetyError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(probe_err("/proc/self/mountinfo"))?;
    Ok(parse_mountinfo(&text))
}

/// The block device behind a mount: its device number when real, else (btrfs
/// and other anonymous numbers) the `/dev/…` source.
pub fn mount_device(m: &MountEntry) -> Option<String> {
    if m.major != 0 {
        if let Some(n) = name_of_devno(m.major, m.minor) {
            return Some(n);
        }
    }
    devname_of_path(Path::new(&m.source))
}

fn devname_of_path(p: &Path) -> Option<String> {
    let md = std::fs::metadata(p).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let rdev = md.rdev();
    name_of_devno(nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

/// The disks holding the filesystems mounted on `mountpoint`.
pub fn disks_at_mountpoint(entries: &[MountEntry], mountpoint: &str) -> BTreeSet<String> {
    entries
        .iter()
        .filter(|m| m.mountpoint == mountpoint)
        .filter_map(mount_device)
        .flat_map(|n| disks_of(&n))
        .collect()
}

/// The disks the running system lives on (holding `/`).
pub fn running_system_disks() -> Result<BTreeSet<String>, SafetyError> {
    Ok(disks_at_mountpoint(&mounts()?, "/"))
}

/// Loop devices (kernel names) whose backing file is `image`: the same path
/// after resolving symlinks, or the same file (device and inode, so a hard
/// link or a bind-mounted copy of the path counts too).
pub fn loops_backing(image: &Path) -> Vec<String> {
    let Ok(canon) = std::fs::canonicalize(image) else {
        return Vec::new();
    };
    let inode = std::fs::metadata(image).ok().map(|m| (m.dev(), m.ino()));
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let back = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let back = Path::new(back.trim_end_matches('\n'));
            let same_file = inode.is_some()
                && std::fs::metadata(back).ok().map(|m| (m.dev(), m.ino())) == inode;
            (back == canon || same_file).then_some(name)
        })
        .collect();
    out.sort();
    out
}

/// What a target path is underneath its name: two targets are the same disk
/// when their identities share an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetIdentity {
    /// A block device number (`major:minor`).
    Block(u64),
    /// A file: filesystem device and inode.
    File { dev: u64, ino: u64 },
    /// A path that cannot be looked at (yet), after resolving symlinks.
    Path(PathBuf),
}

/// Every identity of `path`: its canonical path, its device number or inode,
/// and for a loop device also its backing file's inode.
pub fn target_identities(path: &Path) -> Vec<TargetIdentity> {
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = vec![TargetIdentity::Path(canon)];
    let Ok(md) = std::fs::metadata(path) else {
        return out;
    };
    if md.file_type().is_block_device() {
        out.push(TargetIdentity::Block(md.rdev()));
        let (maj, min) = (
            nix::sys::stat::major(md.rdev()),
            nix::sys::stat::minor(md.rdev()),
        );
        let backing = name_of_devno(maj, min)
            .and_then(|n| std::fs::read_to_string(sys_block(&n).join("loop/backing_file")).ok());
        if let Some(b) = backing {
            if let Ok(bm) = std::fs::metadata(b.trim_end_matches('\n')) {
                out.push(TargetIdentity::File {
                    dev: bm.dev(),
                    ino: bm.ino(),
                });
            }
        }
    } else {
        out.push(TargetIdentity::File {
            dev: md.dev(),
            ino: md.ino(),
        });
    }
    out
}

/// Checks everything that must hold before writing `path`: exists, is a
/// whole block device or a regular file, is not the running system's disk
/// (checked first), not the live medium, not mounted, not swap, not held,
/// and has at least `needed` bytes.
pub fn check_target(path: &Path, needed: u64) -> Result<TargetInfo, SafetyError> {
    let md = std::fs::metadata(path).map_err(|source| SafetyError::NotFound {
        path: path.to_path_buf(),
        source,
    })?;
    let ft = md.file_type();
    let (kind, disks, size) = if ft.is_block_device() {
        let (maj, min) = (
            nix::sys::stat::major(md.rdev()),
            nix::sys::stat::minor(md.rdev()),
        );
        let name = name_of_devno(maj, min).ok_or_else(|| SafetyError::NotBlockOrFile {
            path: path.to_path_buf(),
        })?;
        if sys_block(&name).join("partition").exists() {
            let disk = disks_of(&name).into_iter().next().unwrap_or_default();
            let root = running_system_disks()?;
            if root.contains(&disk) {
                return Err(SafetyError::RunningSystemDisk {
                    path: path.to_path_buf(),
                    disk,
                });
            }
            return Err(SafetyError::IsPartition {
                path: path.to_path_buf(),
                disk,
            });
        }
        let sectors: u64 = std::fs::read_to_string(sys_block(&name).join("size"))
            .map_err(probe_err(format!("the size of /dev/{name}")))?
            .trim()
            .parse()
            .unwrap_or(0);
        (
            TargetKind::BlockDevice { name: name.clone() },
            vec![name],
            sectors * 512,
        )
    } else if ft.is_file() {
        (TargetKind::ImageFile, loops_backing(path), md.len())
    } else {
        return Err(SafetyError::NotBlockOrFile {
            path: path.to_path_buf(),
        });
    };

    let entries = mounts()?;
    // 1. The running system's disk, before anything else.
    let root = disks_at_mountpoint(&entries, "/");
    if let Some(d) = disks.iter().find(|d| root.contains(*d)) {
        return Err(SafetyError::RunningSystemDisk {
            path: path.to_path_buf(),
            disk: d.clone(),
        });
    }
    // 2. The live medium.
    for mp in ["/run/live/medium", "/lib/live/mount/medium"] {
        let live = disks_at_mountpoint(&entries, mp);
        if let Some(d) = disks.iter().find(|d| live.contains(*d)) {
            return Err(SafetyError::LiveMedium {
                path: path.to_path_buf(),
                disk: d.clone(),
            });
        }
    }
    // 3. Mounted: the disk or any of its partitions (or, for an image, of a
    //    loop device backed by it).
    let mut members: Vec<String> = Vec::new();
    for d in &disks {
        members.push(d.clone());
        members.extend(partitions_of(d));
    }
    for m in &entries {
        if let Some(dev) = mount_device(m) {
            if members.contains(&dev) {
                return Err(SafetyError::Mounted {
                    path: path.to_path_buf(),
                    device: dev,
                    mountpoint: m.mountpoint.clone(),
                });
            }
        }
    }
    // 4. Active swap.
    let swaps = std::fs::read_to_string("/proc/swaps").map_err(probe_err("/proc/swaps"))?;
    for line in swaps.lines().skip(1) {
        let Some(src) = line.split_whitespace().next() else {
            continue;
        };
        if let Some(dev) = devname_of_path(Path::new(&unescape(src))) {
            if members.contains(&dev) {
                return Err(SafetyError::ActiveSwap {
                    path: path.to_path_buf(),
                    device: dev,
                });
            }
        }
    }
    // 5. Held by dm/md/LVM.
    for dev in &members {
        let holders: Vec<String> = std::fs::read_dir(sys_block(dev).join("holders"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !holders.is_empty() {
            return Err(SafetyError::Held {
                path: path.to_path_buf(),
                device: dev.clone(),
                holders: holders.join(", "),
            });
        }
    }
    // 6. An image already attached to a loop device: someone else's disk
    //    now, and writes through two paths would interleave.
    if kind == TargetKind::ImageFile {
        if let Some(device) = disks.first() {
            return Err(SafetyError::LoopAttached {
                path: path.to_path_buf(),
                device: device.clone(),
            });
        }
    }
    // 7. Size.
    if size < needed {
        return Err(SafetyError::TooSmall {
            path: path.to_path_buf(),
            needed,
            available: size,
        });
    }
    Ok(TargetInfo {
        path: path.to_path_buf(),
        kind,
        size,
    })
}

/// Kernel name of partition `n` of `disk`: `sda` → `sda2`, `loop0` → `loop0p2`.
pub fn partition_name(disk: &str, n: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{n}")
    } else {
        format!("{disk}{n}")
    }
}

const BLKRRPART: libc::c_ulong = 0x125F;
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_ADD_PARTITION: libc::c_int = 1;
const BLKPG_DEL_PARTITION: libc::c_int = 2;

/// `struct blkpg_partition` of linux/blkpg.h.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// `struct blkpg_ioctl_arg` of linux/blkpg.h.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// Asks the kernel to re-read the partition table of a whole disk (BLKRRPART).
#[allow(unsafe_code)]
pub fn reread_partitions(disk: &File) -> std::io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the fd is a valid open descriptor
    // owned by `disk` for the duration of the call.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKRRPART as _, 0) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[allow(unsafe_code)]
fn blkpg(disk: &File, op: libc::c_int, pno: u32, start: u64, length: u64) -> std::io::Result<()> {
    let mut part = BlkpgPartition {
        start: start as libc::c_longlong,
        length: length as libc::c_longlong,
        pno: pno as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` and the `part` it points to are live, correctly laid out
    // (#[repr(C)] copies of linux/blkpg.h) for the whole call; the kernel only
    // reads them.
    let rc = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg as *mut BlkpgIoctlArg) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// BLKPG "add partition": tells the kernel of one partition (bytes).
pub fn blkpg_add(disk: &File, pno: u32, start: u64, length: u64) -> std::io::Result<()> {
    blkpg(disk, BLKPG_ADD_PARTITION, pno, start, length)
}

/// BLKPG "delete partition".
pub fn blkpg_del(disk: &File, pno: u32) -> std::io::Result<()> {
    blkpg(disk, BLKPG_DEL_PARTITION, pno, 0, 0)
}

/// Whether udev is running (it creates device nodes for us).
pub fn udev_running() -> bool {
    Path::new("/run/udev/control").exists()
}

/// A partition device node made visible by [`expose_partitions`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionNode {
    pub number: u32,
    pub path: PathBuf,
    /// We made the node with mknod (no udev): remove it when done.
    pub created: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("the kernel did not show partition {number} of /dev/{disk} within {secs} s; run `partx -a /dev/{disk}` and retry")]
    Timeout {
        disk: String,
        number: u32,
        secs: u64,
    },
    #[error("creating device node {path}")]
    Mknod {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn read_sys_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Makes the kernel show the partitions `(number, start, size)` of the whole
/// disk `disk_name` (open as `disk`) and makes sure `/dev/<part>` nodes exist
/// with the right device numbers: BLKRRPART, then BLKPG per missing or
/// mismatched partition, then wait (udev) or mknod (no udev).
pub fn expose_partitions(
    disk: &File,
    disk_name: &str,
    parts: &[(u32, u64, u64)],
    timeout: Duration,
) -> Result<Vec<PartitionNode>, NodeError> {
    if let Err(e) = reread_partitions(disk) {
        tracing::debug!(disk = disk_name, error = %e, "BLKRRPART failed; using BLKPG");
    }
    let mut nodes = Vec::new();
    for &(n, start, size) in parts {
        let pname = partition_name(disk_name, n);
        let sys = sys_block(&pname);
        let matches = sys.exists()
            && read_sys_u64(&sys.join("start")) == Some(start / 512)
            && read_sys_u64(&sys.join("size")) == Some(size / 512);
        if !matches {
            if sys.exists() {
                let _ = blkpg_del(disk, n);
            }
            if let Err(e) = blkpg_add(disk, n, start, size) {
                tracing::debug!(partition = %pname, error = %e, "BLKPG add failed");
            }
        }
        let deadline = Instant::now() + timeout;
        let devno = loop {
            if let Ok(text) = std::fs::read_to_string(sys.join("dev")) {
                if let Some((a, b)) = text.trim().split_once(':') {
                    if let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>()) {
                        break (a, b);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(NodeError::Timeout {
                    disk: disk_name.into(),
                    number: n,
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let path = Path::new("/dev").join(&pname);
        let want = nix::sys::stat::makedev(devno.0, devno.1);
        let node_ok = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.file_type().is_block_device() && m.rdev() == want)
                .unwrap_or(false)
        };
        if udev_running() {
            while !node_ok(&path) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut created = false;
        if !node_ok(&path) {
            if path.exists() {
                std::fs::remove_file(&path).map_err(|source| NodeError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            nix::sys::stat::mknod(
                &path,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o660),
                want,
            )
            .map_err(|source| NodeError::Mknod {
                path: path.clone(),
                source,
            })?;
            created = true;
        }
        nodes.push(PartitionNode {
            number: n,
            path,
            created,
        });
    }
    Ok(nodes)
}
