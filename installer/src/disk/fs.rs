//! Filesystem signatures and the mkfs tools: reads which filesystem (and
//! UUID) a byte range holds straight from its superblock, and makes ext4,
//! swap and btrfs with the plan's UUID and label through `Task`.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use opdbus_common::{Task, TaskError};

use super::layout::vfat_uuid_string;
use super::plan::{FilesystemPlan, FsKind};

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

/// Looks for a btrfs, ext4, swap or FAT32 signature in the range starting at
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
    // FAT32: "FAT32   " at 0x52, volume id at 0x43, boot signature 55AA.
    let mut bs = [0u8; 512];
    if len > 512
        && read_at(dev, start, &mut bs)?
        && &bs[0x52..0x5A] == b"FAT32   "
        && bs[510..] == [0x55, 0xAA]
    {
        let id = u32::from_le_bytes([bs[0x43], bs[0x44], bs[0x45], bs[0x46]]);
        return Ok(Some(FoundFs {
            kind: FsKind::Vfat,
            uuid: vfat_uuid_string(id),
        }));
    }
    Ok(None)
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
