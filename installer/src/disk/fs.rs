//! Filesystem signatures and the mkfs tools: reads what a byte range holds
//! (a filesystem the engine makes, with its UUID; a foreign signature; data
//! of unknown type; or provably nothing) and makes ext4, swap and btrfs with
//! the plan's UUID and label through `Task`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use opdbus_common::{Task, TaskError};

use super::plan::{FilesystemPlan, FsKind};
use opdbus_common::fat::uuid_string as vfat_uuid_string;

/// A filesystem found in a byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFs {
    pub kind: FsKind,
    /// As blkid prints it (see [`FilesystemPlan::uuid`]).
    pub uuid: String,
}

fn read_at<D: Read + Seek>(dev: &mut D, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
    dev.seek(SeekFrom::Start(offset))?;
    match dev.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn uuid_at(b: &[u8]) -> String {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[..16]);
    uuid::Uuid::from_bytes(a).hyphenated().to_string()
}

/// What a partition's byte range holds. Offsets count from the range's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// No signature, and only zeros in every region of [`EMPTY_REGIONS`].
    Empty,
    /// A filesystem of a kind the engine makes (FAT12/16/32 count as vfat).
    Filesystem(FoundFs),
    /// A signature of something the engine does not make (XFS, LUKS, …).
    Foreign { name: &'static str, offset: u64 },
    /// Non-zero bytes of no known type: data all the same.
    UnknownData { offset: u64 },
}

impl std::fmt::Display for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Contents::Empty => {
                f.write_str("nothing (only zeros where filesystems keep superblocks)")
            }
            Contents::Filesystem(fs) => {
                write!(f, "{} filesystem UUID {}", fs.kind.as_str(), fs.uuid)
            }
            Contents::Foreign { name, offset } => write!(f, "{name} signature at {offset:#x}"),
            Contents::UnknownData { offset } => write!(f, "unknown data at {offset:#x}"),
        }
    }
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Where a range must hold only zeros to count as empty, as (offset, length)
/// from the start; negative offsets count from the end. Together they cover
/// the superblocks, labels and headers of every common format:
/// - the first MiB: boot sectors (FAT, NTFS), XFS, ext2/3/4 (1 KiB), minix,
///   iso9660 (32 KiB), btrfs (64 KiB), LUKS1/2 headers, LVM2 labels,
///   md-raid 1.1/1.2, bcache, swap, ZFS labels L0 and L1 (first 512 KiB);
/// - the last MiB: ZFS labels L2 and L3, md-raid 0.90/1.0 superblocks, the
///   NTFS backup boot sector;
/// - 4 KiB at 8, 32 and 128 MiB (ext backup superblocks for 1, 2 and 4 KiB
///   blocks) and at 64 MiB and 256 GiB (btrfs superblock mirrors).
pub const EMPTY_REGIONS: [(i64, u64); 7] = [
    (0, MIB),
    (-(MIB as i64), MIB),
    (8 * MIB as i64, 4 * KIB),
    (32 * MIB as i64, 4 * KIB),
    (64 * MIB as i64, 4 * KIB),
    (128 * MIB as i64, 4 * KIB),
    (256 * GIB as i64, 4 * KIB),
];

/// Reads `buf.len()` bytes at `offset`, or fewer at the end of the range.
fn read_clipped<D: Read + Seek>(
    dev: &mut D,
    start: u64,
    len: u64,
    offset: u64,
    buf: &mut Vec<u8>,
    want: u64,
) -> std::io::Result<()> {
    buf.clear();
    if offset >= len {
        return Ok(());
    }
    let n = want.min(len - offset);
    dev.seek(SeekFrom::Start(start + offset))?;
    dev.take(n).read_to_end(buf)?;
    Ok(())
}

/// Signatures of formats the engine does not make: (name, offset, magic).
const FOREIGN: &[(&str, u64, &[u8])] = &[
    ("xfs", 0, b"XFSB"),
    ("LUKS", 0, b"LUKS\xba\xbe"),
    ("LUKS2 secondary header", 0x4000, b"SKUL\xba\xbe"),
    ("ntfs", 3, b"NTFS    "),
    ("exfat", 3, b"EXFAT   "),
    ("squashfs", 0, b"hsqs"),
    ("iso9660", 0x8001, b"CD001"),
    ("md-raid member", 0, b"\xfc\x4e\x2b\xa9"),
    ("md-raid member", 0x1000, b"\xfc\x4e\x2b\xa9"),
    ("bcache", 0x1018, b"\xc6\x85\x73\xf6\x4e\x1a\x45\xca"),
    ("swap (8 KiB pages)", 0x2000 - 10, b"SWAPSPACE2"),
    ("swap (16 KiB pages)", 0x4000 - 10, b"SWAPSPACE2"),
    ("swap (64 KiB pages)", 0x10000 - 10, b"SWAPSPACE2"),
    ("swap (old format)", 0x1000 - 10, b"SWAP-SPACE"),
];

/// What the range starting at `start` of length `len` holds: a filesystem
/// [`probe`] knows, a foreign signature, unknown data, or nothing.
pub fn examine<D: Read + Seek>(dev: &mut D, start: u64, len: u64) -> std::io::Result<Contents> {
    if let Some(fs) = probe(dev, start, len)? {
        return Ok(Contents::Filesystem(fs));
    }
    let mut head = Vec::new();
    read_clipped(dev, start, len, 0, &mut head, MIB)?;
    let at =
        |off: u64, magic: &[u8]| head.get(off as usize..off as usize + magic.len()) == Some(magic);
    for (name, off, magic) in FOREIGN {
        if at(*off, magic) {
            return Ok(Contents::Foreign { name, offset: *off });
        }
    }
    // LVM2: "LABELONE" in one of the first four sectors, "LVM2 001" at +24.
    for sector in 0..4u64 {
        let off = sector * 512;
        if at(off, b"LABELONE") && at(off + 24, b"LVM2 001") {
            return Ok(Contents::Foreign {
                name: "LVM2 physical volume",
                offset: off,
            });
        }
    }
    // minix: superblock at 1 KiB; v1/v2 magic at +0x10, v3 at +0x18.
    let u16_at = |off: usize| {
        head.get(off..off + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if matches!(u16_at(0x410), Some(0x137F | 0x138F | 0x2468 | 0x2478))
        || u16_at(0x418) == Some(0x4D5A)
    {
        return Ok(Contents::Foreign {
            name: "minix",
            offset: 0x400,
        });
    }
    // ZFS: uberblock magic 0x00bab10c (either byte order) in label 0's
    // uberblock array (128 KiB..256 KiB, 1 KiB slots).
    for slot in (128 * KIB..256 * KIB).step_by(KIB as usize) {
        let b = head.get(slot as usize..slot as usize + 8);
        if b == Some(&[0x0c, 0xb1, 0xba, 0, 0, 0, 0, 0])
            || b == Some(&[0, 0, 0, 0, 0, 0xba, 0xb1, 0x0c])
        {
            return Ok(Contents::Foreign {
                name: "zfs member",
                offset: slot,
            });
        }
    }
    let mut buf = Vec::new();
    for (off, n) in EMPTY_REGIONS {
        let off = if off < 0 {
            len.saturating_sub(off.unsigned_abs())
        } else {
            off as u64
        };
        read_clipped(dev, start, len, off, &mut buf, n)?;
        if let Some(i) = buf.iter().position(|b| *b != 0) {
            return Ok(Contents::UnknownData {
                offset: off + i as u64,
            });
        }
    }
    Ok(Contents::Empty)
}

/// Looks for a btrfs, ext4, swap or FAT (12, 16 or 32) signature in the range starting at
/// `start` of length `len`. `None` when none of them is there.
pub fn probe<D: Read + Seek>(
    dev: &mut D,
    start: u64,
    len: u64,
) -> std::io::Result<Option<FoundFs>> {
    // btrfs: superblock at 64 KiB, magic at +0x40, fsid at +0x20.
    let mut sb = [0u8; 0x48];
    if len > 0x10000 + 0x48
        && read_at(dev, start + 0x10000, &mut sb)?
        && &sb[0x40..0x48] == b"_BHRfS_M"
    {
        return Ok(Some(FoundFs {
            kind: FsKind::Btrfs,
            uuid: uuid_at(&sb[0x20..]),
        }));
    }
    // ext2/3/4: superblock at 1 KiB, magic 0xEF53 at +0x38, uuid at +0x68.
    let mut ext = [0u8; 0x78];
    if len > 2048 && read_at(dev, start + 1024, &mut ext)? && ext[0x38..0x3A] == [0x53, 0xEF] {
        return Ok(Some(FoundFs {
            kind: FsKind::Ext4,
            uuid: uuid_at(&ext[0x68..]),
        }));
    }
    // swap (4 KiB pages): "SWAPSPACE2" at 4086, uuid at 1024 + 12.
    let mut sw = [0u8; 10];
    if len > 4096 && read_at(dev, start + 4086, &mut sw)? && &sw == b"SWAPSPACE2" {
        let mut u = [0u8; 16];
        read_at(dev, start + 1036, &mut u)?;
        return Ok(Some(FoundFs {
            kind: FsKind::Swap,
            uuid: uuid_at(&u),
        }));
    }
    // FAT32: "FAT32   " at 0x52, volume id at 0x43; FAT12/16: "FAT1x   " at
    // 0x36, volume id at 0x27; boot signature 55AA. All of them are vfat.
    let mut bs = [0u8; 512];
    if len > 512 && read_at(dev, start, &mut bs)? && bs[510..] == [0x55, 0xAA] {
        let id_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]);
        let id = if &bs[0x52..0x5A] == b"FAT32   " {
            Some(id_at(0x43))
        } else if &bs[0x36..0x3E] == b"FAT16   " || &bs[0x36..0x3E] == b"FAT12   " {
            Some(id_at(0x27))
        } else {
            None
        };
        if let Some(id) = id {
            return Ok(Some(FoundFs {
                kind: FsKind::Vfat,
                uuid: vfat_uuid_string(id),
            }));
        }
    }
    Ok(None)
}

/// Makes the btrfs of `fs` over every member in `devs` (the first member
/// first), data and metadata in `profile` (`raid1`, `raid10`).
pub fn mkfs_multi(
    devs: &[std::path::PathBuf],
    fs: &FilesystemPlan,
    profile: &str,
) -> Result<(), TaskError> {
    let mut t = Task::new("mkfs.btrfs").args(["-f", "-U", &fs.uuid, "-d", profile, "-m", profile]);
    if let Some(l) = &fs.label {
        t = t.args(["-L", l]);
    }
    t.args(devs).run()
}

/// Makes the filesystem of `fs` on the block device `dev` (btrfs, ext4 or
/// swap; vfat is written by [`super::esp`]).
pub fn mkfs(dev: &Path, fs: &FilesystemPlan) -> Result<(), TaskError> {
    let label = fs.label.clone();
    let task = match fs.kind {
        FsKind::Btrfs => {
            let mut t = Task::new("mkfs.btrfs").args(["-f", "-U", &fs.uuid]);
            if let Some(l) = &label {
                t = t.args(["-L", l]);
            }
            t
        }
        FsKind::Ext4 => {
            let mut t = Task::new("mkfs.ext4").args(["-F", "-q", "-U", &fs.uuid]);
            if let Some(l) = &label {
                t = t.args(["-L", l]);
            }
            t
        }
        FsKind::Swap => {
            let mut t = Task::new("mkswap").args(["-f", "-U", &fs.uuid]);
            if let Some(l) = &label {
                t = t.args(["-L", l]);
            }
            t
        }
        FsKind::Vfat => unreachable!("vfat is formatted in userspace by esp::format"),
    };
    task.arg(dev).run()
}
