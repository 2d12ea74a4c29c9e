//! FAT in user space, the one writer for every FAT the project makes: the
//! installer's EFI system partition (FAT32 over the partition's byte range of
//! the disk, image or block device) and the ISO's `efi.img` (a small image
//! file). Formats with `fatfs`, opens to write and read files later, with no
//! kernel vfat driver and no mount, and repairs what fatfs 0.3 gets wrong in
//! directories (see [`fix_dot_entries`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fscommon::StreamSlice;

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("opening {path} for the FAT filesystem")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("formatting bytes {start}..{end} of {path} as FAT")]
    Format {
        path: PathBuf,
        start: u64,
        end: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("'{0}' is not a FAT volume serial (XXXX-XXXX)")]
    BadUuid(String),
    #[error("FAT path '{path}'")]
    Fat {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a FAT filesystem lies: a disk (image or whole block device) and a
/// byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub disk: PathBuf,
    pub start: u64,
    pub size: u64,
}

fn open_disk(path: &Path) -> Result<File, FatError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| FatError::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// `XXXX-XXXX`, the way blkid prints a FAT volume serial.
pub fn uuid_string(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)
}

/// The volume serial of a FAT UUID as blkid shows it (`XXXX-XXXX`).
pub fn volume_id(uuid: &str) -> Option<u32> {
    let (hi, lo) = uuid.split_once('-')?;
    if hi.len() != 4 || lo.len() != 4 {
        return None;
    }
    Some((u32::from_str_radix(hi, 16).ok()? << 16) | u32::from_str_radix(lo, 16).ok()?)
}

/// How [`format`] makes the filesystem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Format {
    /// FAT32 (an ESP); else the type fatfs picks for the size.
    pub fat32: bool,
    /// The volume serial (see [`volume_id`]); else fatfs picks one.
    pub volume_id: Option<u32>,
    /// At most 11 characters, upper-cased; `NO NAME` when unset.
    pub label: Option<String>,
}

/// Formats the range, after zeroing its first MiB so no old signature
/// (btrfs at 64 KiB) survives.
pub fn format(loc: &Location, how: &Format) -> Result<(), FatError> {
    let err = |source| FatError::Format {
        path: loc.disk.clone(),
        start: loc.start,
        end: loc.start + loc.size,
        source,
    };
    let file = open_disk(&loc.disk)?;
    let mut slice = StreamSlice::new(file, loc.start, loc.start + loc.size).map_err(err)?;
    let zeros = vec![0u8; (loc.size.min(1 << 20)) as usize];
    slice.write_all(&zeros).map_err(err)?;
    slice.seek(SeekFrom::Start(0)).map_err(err)?;
    let mut opts = fatfs::FormatVolumeOptions::new();
    if how.fat32 {
        opts = opts.fat_type(fatfs::FatType::Fat32);
    }
    if let Some(id) = how.volume_id {
        opts = opts.volume_id(id);
    }
    if let Some(label) = &how.label {
        let mut name = [b' '; 11];
        for (d, s) in name.iter_mut().zip(label.to_ascii_uppercase().bytes()) {
            *d = s;
        }
        opts = opts.volume_label(name);
    }
    fatfs::format_volume(&mut slice, opts).map_err(err)?;
    slice.flush().map_err(err)?;
    Ok(())
}

const MIB: u64 = 1 << 20;

/// Size of a FAT image that holds `payload` bytes of files with room to spare
/// (whole MiB, at least 4 MiB).
pub fn image_size(payload: u64) -> u64 {
    let with_slack = payload + payload / 8 + 2 * MIB;
    with_slack.div_ceil(MIB).max(4) * MIB
}

/// Writes `image` as a new FAT image file labelled `label`, sized for
/// `files` ([`image_size`]): (path inside with `/` separators, bytes).
pub fn write_image(image: &Path, label: &str, files: &[(&str, Vec<u8>)]) -> Result<(), FatError> {
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let size = image_size(total);
    let created = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .and_then(|f| f.set_len(size));
    created.map_err(|source| FatError::Open {
        path: image.to_path_buf(),
        source,
    })?;
    let loc = Location {
        disk: image.to_path_buf(),
        start: 0,
        size,
    };
    format(
        &loc,
        &Format {
            label: Some(label.to_string()),
            ..Format::default()
        },
    )?;
    let fat = Volume::open(&loc)?;
    for (path, bytes) in files {
        fat.write_file(path, bytes)?;
    }
    fat.close()
}

/// An open FAT filesystem: write and read files by `/`-separated paths.
pub struct Volume {
    fs: Option<fatfs::FileSystem<StreamSlice<File>>>,
    loc: Location,
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume").finish_non_exhaustive()
    }
}

impl Volume {
    /// Opens the FAT filesystem in the range.
    pub fn open(loc: &Location) -> Result<Self, FatError> {
        let file = open_disk(&loc.disk)?;
        let err = |source| FatError::Fat {
            path: "/".into(),
            source,
        };
        let slice = StreamSlice::new(file, loc.start, loc.start + loc.size).map_err(err)?;
        let fs = fatfs::FileSystem::new(slice, fatfs::FsOptions::new()).map_err(err)?;
        Ok(Volume {
            fs: Some(fs),
            loc: loc.clone(),
        })
    }

    fn fs(&self) -> &fatfs::FileSystem<StreamSlice<File>> {
        self.fs
            .as_ref()
            .expect("filesystem is open until close or drop")
    }

    fn finish(&mut self) -> Result<(), FatError> {
        let err = |source| FatError::Fat {
            path: "/".into(),
            source,
        };
        if let Some(fs) = self.fs.take() {
            fs.unmount().map_err(err)?;
            let file = open_disk(&self.loc.disk)?;
            let mut slice = StreamSlice::new(file, self.loc.start, self.loc.start + self.loc.size)
                .map_err(err)?;
            fix_dot_entries(&mut slice).map_err(err)?;
            slice.flush().map_err(err)?;
        }
        Ok(())
    }

    /// Creates the directory and its parents (like `mkdir -p`).
    pub fn mkdir_all(&self, path: &str) -> Result<(), FatError> {
        let mut dir = self.fs().root_dir();
        for comp in path.split('/').filter(|c| !c.is_empty()) {
            dir = match dir.open_dir(comp) {
                Ok(d) => d,
                Err(_) => dir.create_dir(comp).map_err(|source| FatError::Fat {
                    path: path.into(),
                    source,
                })?,
            };
        }
        Ok(())
    }

    /// Writes (creates or replaces) a file; parent directories are created.
    pub fn write_file(&self, path: &str, data: &[u8]) -> Result<(), FatError> {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.mkdir_all(parent)?;
        }
        let err = |source| FatError::Fat {
            path: path.into(),
            source,
        };
        let mut f = self.fs().root_dir().create_file(path).map_err(err)?;
        f.truncate().map_err(err)?;
        f.write_all(data).map_err(err)?;
        f.flush().map_err(err)?;
        Ok(())
    }

    /// Reads a whole file.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, FatError> {
        let path = path.trim_start_matches('/');
        let err = |source| FatError::Fat {
            path: path.into(),
            source,
        };
        let mut f = self.fs().root_dir().open_file(path).map_err(err)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out).map_err(err)?;
        Ok(out)
    }

    /// The names in directory `path`; empty when it does not exist.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>, FatError> {
        let path = path.trim_matches('/');
        let root = self.fs().root_dir();
        let dir = if path.is_empty() {
            root
        } else {
            match root.open_dir(path) {
                Ok(d) => d,
                Err(_) => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(|source| FatError::Fat {
                path: path.into(),
                source,
            })?;
            let name = e.file_name();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes a file or an empty directory; a missing one is fine.
    pub fn remove(&self, path: &str) -> Result<(), FatError> {
        let path = path.trim_start_matches('/');
        if !self.exists(path) {
            return Ok(());
        }
        self.fs()
            .root_dir()
            .remove(path)
            .map_err(|source| FatError::Fat {
                path: path.into(),
                source,
            })
    }

    /// Whether a file or directory exists.
    pub fn exists(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        self.fs().root_dir().open_file(path).is_ok() || self.fs().root_dir().open_dir(path).is_ok()
    }

    /// Flushes and closes the filesystem (and repairs `.`/`..` entries).
    pub fn close(mut self) -> Result<(), FatError> {
        self.finish()
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(error = %e, "closing the FAT filesystem");
        }
    }
}

fn le16(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// fatfs 0.3 writes long-name entries before `.` and `..` and points `..`
/// at the root cluster instead of 0, which `fsck.fat` rejects. This walks
/// every directory of a FAT32 volume and puts `.` in slot 0 and `..` in
/// slot 1 with the right clusters (idempotent). FAT12/16 volumes (the ISO's
/// small image) are left as they are.
fn fix_dot_entries<D: Read + Write + Seek>(vol: &mut D) -> std::io::Result<()> {
    let mut bs = [0u8; 512];
    vol.seek(SeekFrom::Start(0))?;
    vol.read_exact(&mut bs)?;
    // FAT32 has no 16-bit sectors-per-FAT count.
    if le16(&bs, 22) != 0 {
        return Ok(());
    }
    let bps = u64::from(le16(&bs, 11));
    let spc = u64::from(bs[13]);
    let rsv = u64::from(le16(&bs, 14));
    let nfats = u64::from(bs[16]);
    let fat_sectors = u64::from(le32(&bs, 36));
    let root = le32(&bs, 44);
    let cluster_size = (bps * spc) as usize;
    let fat_start = rsv * bps;
    let data_start = (rsv + nfats * fat_sectors) * bps;
    let cluster_off = |c: u32| data_start + u64::from(c - 2) * cluster_size as u64;

    let next = |vol: &mut D, c: u32| -> std::io::Result<Option<u32>> {
        let mut e = [0u8; 4];
        vol.seek(SeekFrom::Start(fat_start + u64::from(c) * 4))?;
        vol.read_exact(&mut e)?;
        let n = u32::from_le_bytes(e) & 0x0FFF_FFFF;
        Ok((2..0x0FFF_FFF8).contains(&n).then_some(n))
    };
    // (directory cluster, parent cluster)
    let mut stack = vec![(root, 0u32)];
    let mut seen = std::collections::BTreeSet::new();
    while let Some((dir, parent)) = stack.pop() {
        if !seen.insert(dir) {
            continue;
        }
        let mut chain = vec![dir];
        while let Some(n) = next(vol, *chain.last().unwrap_or(&dir))? {
            if chain.len() > 1 << 20 || chain.contains(&n) {
                break;
            }
            chain.push(n);
        }
        for (ci, &c) in chain.iter().enumerate() {
            let mut buf = vec![0u8; cluster_size];
            vol.seek(SeekFrom::Start(cluster_off(c)))?;
            vol.read_exact(&mut buf)?;
            if ci == 0 && dir != root {
                let name = |i: usize| &buf[i * 32..i * 32 + 11];
                let slots = cluster_size / 32;
                let dot = (0..slots.min(8)).find(|&i| name(i) == b".          ");
                let dotdot = (0..slots.min(8)).find(|&i| name(i) == b"..         ");
                if let (Some(d), Some(dd)) = (dot, dotdot) {
                    let mut e_dot = buf[d * 32..d * 32 + 32].to_vec();
                    let mut e_dd = buf[dd * 32..dd * 32 + 32].to_vec();
                    let set = |e: &mut [u8], cl: u32| {
                        e[20..22].copy_from_slice(&((cl >> 16) as u16).to_le_bytes());
                        e[26..28].copy_from_slice(&(cl as u16).to_le_bytes());
                    };
                    set(&mut e_dot, dir);
                    set(&mut e_dd, if parent == root { 0 } else { parent });
                    for i in 0..=d.max(dd) {
                        buf[i * 32] = 0xE5;
                    }
                    buf[0..32].copy_from_slice(&e_dot);
                    buf[32..64].copy_from_slice(&e_dd);
                    vol.seek(SeekFrom::Start(cluster_off(c)))?;
                    vol.write_all(&buf)?;
                }
            }
            for e in buf.chunks(32) {
                let attr = e[11];
                let first = e[0];
                if first == 0 {
                    break;
                }
                if first == 0xE5 || first == b'.' || attr == 0x0F || attr & 0x08 != 0 {
                    continue;
                }
                if attr & 0x10 != 0 {
                    let cl = (le16(e, 20) << 16) | le16(e, 26);
                    if cl >= 2 {
                        stack.push((cl, dir));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_whole_mib() {
        assert_eq!(image_size(0), 4 * MIB);
        assert_eq!(image_size(6 * MIB) % MIB, 0);
        assert!(image_size(6 * MIB) >= 6 * MIB + 6 * MIB / 8 + 2 * MIB);
    }

    #[test]
    fn volume_ids_round_trip() {
        assert_eq!(volume_id("ABCD-0123"), Some(0xABCD_0123));
        assert_eq!(uuid_string(0xABCD_0123), "ABCD-0123");
        assert_eq!(volume_id("ABCD0123"), None);
    }

    #[test]
    fn image_files_read_back_through_fatfs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("efi.img");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        write_image(
            &img,
            "opdbus-efi",
            &[
                ("EFI/BOOT/BOOTX64.EFI", big.clone()),
                ("EFI/BOOT/grub.cfg", b"x".to_vec()),
            ],
        )
        .unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let fs =
            fatfs::FileSystem::new(fscommon::BufStream::new(f), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "OPDBUS-EFI");
        let mut got = Vec::new();
        fs.root_dir()
            .open_file("EFI/BOOT/BOOTX64.EFI")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, big);
    }

    #[test]
    fn mtools_sees_the_image_files() {
        if std::process::Command::new("mdir")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("mtools not installed; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("efi.img");
        write_image(&img, "OPDBUS", &[("EFI/BOOT/BOOTX64.EFI", vec![7u8; 1000])]).unwrap();
        let out = std::process::Command::new("mdir")
            .args(["-b", "-i"])
            .arg(&img)
            .arg("::/EFI/BOOT")
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("BOOTX64.EFI"),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
