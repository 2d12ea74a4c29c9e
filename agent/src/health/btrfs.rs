//! Degraded btrfs arrays: mounted btrfs filesystems with member devices
//! missing (a raid1 whose second disk was pulled, mounted `-o degraded`),
//! read from sysfs and mountinfo so `status` can tell the operator.
//!
//! The kernel keeps `/sys/fs/btrfs/<fsid>/` for each mounted filesystem,
//! named by its UUID (blkid's `UUID`), with `devinfo/<devid>/missing` (kernel
//! 5.6 and later; `1` for a member that was absent at mount) for every member
//! and `devices/<name>` symlinks for the members present only. mountinfo has
//! no UUID for btrfs: its source is the path of one present member (the
//! kernel's name of the lowest present devid, `/dev/vda3` or
//! `/dev/mapper/root`) and its device number is anonymous (`0:NN`). So a
//! mount belongs to a filesystem when its source, symlinks resolved, has
//! the kernel name of one of the filesystem's `devices/` entries, or, for a
//! node not named like the kernel's (`/dev/mapper/x` made without udev), the
//! same device number as that entry's `dev` file. A block device belongs to
//! at most one mounted btrfs, so the join is unambiguous; every subvolume
//! and bind mount of the filesystem is found.
//!
//! The kernel marks a member missing only when it is absent at mount time: a
//! disk that fails while mounted shows as I/O errors
//! (`devinfo/<devid>/error_stats`, kernel 5.14 and later), and as missing
//! from the next boot on. Those counters are listed too, for any btrfs, one
//! disk or several: they are kept on disk across boots until `btrfs device
//! stats -z` resets them, so a member that once failed stays listed until
//! the operator has dealt with it.

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One mounted btrfs with members missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degraded {
    /// The filesystem UUID (the `/sys/fs/btrfs/` directory name).
    pub uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Its mount points in this mount namespace (subvolume and bind mounts
    /// included), in mountinfo order; empty when it is mounted elsewhere only.
    #[serde(default)]
    pub mounts: Vec<String>,
    pub devices_total: u32,
    pub devices_missing: u32,
    /// What `btrfs replace start` takes to replace each missing member.
    pub missing_devids: Vec<u64>,
    /// The members present, as `/dev/<kernel name>`.
    pub present: Vec<String>,
    /// Members with I/O or checksum errors recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<MemberErrors>,
}

/// The error counters of one member (`btrfs device stats`), where any is
/// not zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberErrors {
    pub devid: u64,
    pub write: u64,
    pub read: u64,
    pub flush: u64,
    pub corruption: u64,
    pub generation: u64,
}

impl MemberErrors {
    /// Parses `error_stats` ("write_errs 0\nread_errs 3\n…"); `None` when
    /// every counter is zero.
    fn parse(devid: u64, text: &str) -> Option<Self> {
        let mut e = MemberErrors {
            devid,
            write: 0,
            read: 0,
            flush: 0,
            corruption: 0,
            generation: 0,
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once(char::is_whitespace) else {
                continue;
            };
            let Ok(n) = value.trim().parse::<u64>() else {
                continue;
            };
            match key {
                "write_errs" => e.write = n,
                "read_errs" => e.read = n,
                "flush_errs" => e.flush = n,
                "corruption_errs" => e.corruption = n,
                "generation_errs" => e.generation = n,
                _ => {}
            }
        }
        (e.write + e.read + e.flush + e.corruption + e.generation > 0).then_some(e)
    }
}

impl std::fmt::Display for MemberErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts: Vec<String> = [
            (self.write, "write"),
            (self.read, "read"),
            (self.flush, "flush"),
            (self.corruption, "corruption"),
            (self.generation, "generation"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        write!(f, "devid {} has {} errors", self.devid, counts.join(", "))
    }
}

/// Reading sysfs or mountinfo failed (other than a filesystem unmounted
/// while it was read, which is skipped).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ScanError + '_ {
    move |source| ScanError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// The text of a sysfs attribute, trimmed; `None` when it does not exist.
fn attr(path: &Path) -> Result<Option<String>, ScanError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_err(path)(e)),
    }
}

/// Entry names of a directory, sorted; empty when it does not exist.
fn names(dir: &Path) -> Result<Vec<String>, ScanError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        out.push(
            e.map_err(read_err(dir))?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    out.sort();
    Ok(out)
}

/// The degraded btrfs filesystems under `sysfs` (`/sys`), with their mount
/// points from `mountinfo` (`/proc/self/mountinfo`), by UUID. A healthy or
/// single-device filesystem is not listed; nothing is listed when btrfs is
/// not loaded. mountinfo is read only when some filesystem is degraded.
/// The devid 0 a running `btrfs replace` gives its target is not counted.
pub fn degraded(sysfs: &Path, mountinfo: &Path) -> Result<Vec<Degraded>, ScanError> {
    let root = sysfs.join("fs/btrfs");
    let mut found = Vec::new();
    for uuid in names(&root)? {
        let dir = root.join(&uuid);
        let devinfo = dir.join("devinfo");
        // `features/`, and every filesystem on kernels before 5.6.
        if !devinfo.is_dir() {
            continue;
        }
        let mut total = 0;
        let mut missing_devids = Vec::new();
        let mut errors = Vec::new();
        for id in names(&devinfo)? {
            let Ok(devid) = id.parse::<u64>() else {
                continue;
            };
            if devid == 0 {
                continue;
            }
            total += 1;
            if attr(&devinfo.join(&id).join("missing"))?.as_deref() == Some("1") {
                missing_devids.push(devid);
            }
            if let Some(e) = attr(&devinfo.join(&id).join("error_stats"))?
                .and_then(|t| MemberErrors::parse(devid, &t))
            {
                errors.push(e);
            }
        }
        if missing_devids.is_empty() && errors.is_empty() {
            continue;
        }
        missing_devids.sort_unstable();
        errors.sort_by_key(|e| e.devid);
        found.push((dir, uuid, total, missing_devids, errors));
    }
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(mountinfo).map_err(read_err(mountinfo))?;
    let mounts = parse_mountinfo(&text);
    let mut out = Vec::new();
    for (dir, uuid, total, missing_devids, errors) in found {
        let members = names(&dir.join("devices"))?;
        let mut points: Vec<String> = Vec::new();
        for m in &mounts {
            if !points.contains(&m.mountpoint) && is_member(&m.source, &dir, &members)? {
                points.push(m.mountpoint.clone());
            }
        }
        out.push(Degraded {
            label: attr(&dir.join("label"))?.filter(|l| !l.is_empty()),
            uuid,
            mounts: points,
            devices_total: total,
            devices_missing: missing_devids.len() as u32,
            missing_devids,
            present: members.iter().map(|n| format!("/dev/{n}")).collect(),
            errors,
        });
    }
    Ok(out)
}

/// Whether the mount source `source` is one of `members` (kernel names of
/// the filesystem at `fs_dir`): by name with symlinks resolved, else by
/// device number.
fn is_member(source: &str, fs_dir: &Path, members: &[String]) -> Result<bool, ScanError> {
    let path = Path::new(source);
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Some(name) = resolved.file_name().and_then(|n| n.to_str()) {
        if members.iter().any(|m| m == name) {
            return Ok(true);
        }
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(false);
    };
    if !meta.file_type().is_block_device() {
        return Ok(false);
    }
    let number = format!("{}:{}", libc::major(meta.rdev()), libc::minor(meta.rdev()));
    for m in members {
        if attr(&fs_dir.join("devices").join(m).join("dev"))?.as_deref() == Some(&number) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A btrfs line of mountinfo.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    mountpoint: String,
    source: String,
}

/// The btrfs mounts of mountinfo text ("36 25 0:32 /@ / rw - btrfs /dev/vda3 rw,...").
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            (*fields.get(sep + 1)? == "btrfs").then(|| Mount {
                mountpoint: unescape(fields.get(4).copied().unwrap_or_default()),
                source: unescape(fields.get(sep + 2).copied().unwrap_or_default()),
            })
        })
        .filter(|m| !m.mountpoint.is_empty())
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            out.push(
                d.iter()
                    .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// "btrfs UUID (label L) at /, /home: 1 of 2 devices missing (devid 2);
/// present: /dev/vda3; replace the disk, then run `btrfs replace start 2
/// /dev/NEW /`".
impl std::fmt::Display for Degraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "btrfs {}", self.uuid)?;
        if let Some(l) = &self.label {
            write!(f, " (label {l})")?;
        }
        match self.mounts.as_slice() {
            [] => write!(f, " (not mounted in this mount namespace)")?,
            m => write!(f, " at {}", m.join(", "))?,
        }
        let at = self.mounts.first().map_or("MOUNTPOINT", String::as_str);
        if self.missing_devids.is_empty() {
            // All members there, some failing.
            let errs: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
            return write!(
                f,
                ": {}; see `btrfs device stats {at}` and the disk's SMART data (smartctl -a), \
                 replace a failing disk with `btrfs replace start DEVID /dev/NEW {at}`, then reset \
                 the counters with `btrfs device stats -z {at}`",
                errs.join("; ")
            );
        }
        let ids: Vec<String> = self.missing_devids.iter().map(u64::to_string).collect();
        write!(
            f,
            ": {} of {} devices missing ({} {}); present: {}; ",
            self.devices_missing,
            self.devices_total,
            if ids.len() == 1 { "devid" } else { "devids" },
            ids.join(", "),
            if self.present.is_empty() {
                "none".to_string()
            } else {
                self.present.join(", ")
            }
        )?;
        for e in &self.errors {
            write!(f, "{e}; ")?;
        }
        match ids.as_slice() {
            [id] => write!(
                f,
                "replace the disk, then run `btrfs replace start {id} /dev/NEW {at}`"
            ),
            _ => write!(
                f,
                "replace the disks, then run `btrfs replace start DEVID /dev/NEW {at}` for each devid"
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::fs;

    /// A fake sysfs under `sys`: `/sys/fs/btrfs/<uuid>/` with `label`,
    /// `devinfo/<devid>/missing`, and `devices/<name>` symlinks into
    /// `devices/virtual/block/<name>` (with its `dev`) for members present.
    fn fake_fs(sys: &Path, uuid: &str, label: &str, members: &[(u64, Option<&str>)]) {
        let dir = sys.join("fs/btrfs").join(uuid);
        fs::create_dir_all(sys.join("fs/btrfs/features")).unwrap();
        fs::create_dir_all(dir.join("devices")).unwrap();
        fs::write(dir.join("label"), format!("{label}\n")).unwrap();
        for (i, (devid, name)) in members.iter().enumerate() {
            let info = dir.join("devinfo").join(devid.to_string());
            fs::create_dir_all(&info).unwrap();
            let missing = if name.is_some() { "0\n" } else { "1\n" };
            fs::write(info.join("missing"), missing).unwrap();
            if let Some(name) = name {
                let block = sys.join("devices/virtual/block").join(name);
                fs::create_dir_all(&block).unwrap();
                fs::write(block.join("dev"), format!("254:{i}\n")).unwrap();
                std::os::unix::fs::symlink(
                    format!("../../../../devices/virtual/block/{name}"),
                    dir.join("devices").join(name),
                )
                .unwrap();
            }
        }
    }

    const U1: &str = "96109988-6352-4323-b85e-f709b8dd4567";
    const U2: &str = "0b5e1c2a-7d3f-4e8a-9c61-2f4d8e0a1b3c";

    fn mountinfo(dir: &Path, lines: &[&str]) -> PathBuf {
        let p = dir.join("mountinfo");
        fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    }

    const EXT4: &str = "22 1 254:1 / /boot rw,relatime shared:2 - ext4 /dev/sdx1 rw";

    #[test]
    fn a_member_with_io_errors_is_reported_though_none_is_missing() {
        let t = tempfile::tempdir().unwrap();
        fake_fs(
            t.path(),
            U1,
            "root",
            &[(1, Some("sdx3")), (2, Some("sdy3"))],
        );
        let info = t.path().join("fs/btrfs").join(U1).join("devinfo");
        let stats = |w: u64, r: u64| {
            format!("write_errs {w}\nread_errs {r}\nflush_errs 0\ncorruption_errs 0\ngeneration_errs 0\n")
        };
        fs::write(info.join("1/error_stats"), stats(0, 0)).unwrap();
        fs::write(info.join("2/error_stats"), stats(12, 3)).unwrap();
        let mi = mountinfo(t.path(), &["21 1 0:26 /@ / rw - btrfs /dev/sdx3 rw"]);
        let d = degraded(t.path(), &mi).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].devices_missing, 0);
        assert_eq!(
            d[0].errors,
            [MemberErrors {
                devid: 2,
                write: 12,
                read: 3,
                flush: 0,
                corruption: 0,
                generation: 0
            }]
        );
        assert_eq!(
            d[0].to_string(),
            format!(
                "btrfs {U1} (label root) at /: devid 2 has 12 write, 3 read errors; see \
                 `btrfs device stats /` and the disk's SMART data (smartctl -a), replace a \
                 failing disk with `btrfs replace start DEVID /dev/NEW /`, then reset the \
                 counters with `btrfs device stats -z /`"
            )
        );
        // Counters all zero again (after `btrfs device stats -z`): nothing.
        fs::write(info.join("2/error_stats"), stats(0, 0)).unwrap();
        assert_eq!(degraded(t.path(), &mi).unwrap(), vec![]);
    }

    #[test]
    fn a_healthy_raid1_reports_nothing() {
        let t = tempfile::tempdir().unwrap();
        fake_fs(
            t.path(),
            U1,
            "root",
            &[(1, Some("sdx3")), (2, Some("sdy3"))],
        );
        let mi = mountinfo(
            t.path(),
            &[
                "21 1 0:26 /@ / rw shared:1 - btrfs /dev/sdx3 rw,space_cache=v2",
                EXT4,
            ],
        );
        assert_eq!(degraded(t.path(), &mi).unwrap(), vec![]);
    }

    #[test]
    fn a_single_device_filesystem_reports_nothing() {
        let t = tempfile::tempdir().unwrap();
        fake_fs(t.path(), U1, "", &[(1, Some("sdx3"))]);
        let mi = mountinfo(t.path(), &["21 1 0:26 /@ / rw - btrfs /dev/sdx3 rw"]);
        assert_eq!(degraded(t.path(), &mi).unwrap(), vec![]);
    }

    #[test]
    fn a_missing_member_is_reported_with_every_mount_point() {
        let t = tempfile::tempdir().unwrap();
        fake_fs(t.path(), U1, "root", &[(1, Some("sdx3")), (2, None)]);
        // Another, healthy, array is not listed and its mounts not taken.
        fake_fs(
            t.path(),
            U2,
            "data",
            &[(1, Some("sdz1")), (2, Some("sdw1"))],
        );
        let mi = mountinfo(
            t.path(),
            &[
                "21 1 0:26 /@ / rw shared:1 - btrfs /dev/sdx3 rw,degraded,subvol=/@",
                EXT4,
                "23 21 0:26 /@home /home rw shared:3 - btrfs /dev/sdx3 rw,degraded,subvol=/@home",
                "24 21 0:27 / /srv/my\\040data rw - btrfs /dev/sdz1 rw",
                // A bind mount of / again: one mount point per path.
                "25 21 0:26 /@ / rw - btrfs /dev/sdx3 rw,degraded",
            ],
        );
        let d = degraded(t.path(), &mi).unwrap();
        assert_eq!(
            d,
            vec![Degraded {
                uuid: U1.into(),
                label: Some("root".into()),
                mounts: vec!["/".into(), "/home".into()],
                devices_total: 2,
                devices_missing: 1,
                missing_devids: vec![2],
                present: vec!["/dev/sdx3".into()],
                errors: vec![],
            }]
        );
        assert_eq!(
            d[0].to_string(),
            format!(
                "btrfs {U1} (label root) at /, /home: 1 of 2 devices missing (devid 2); \
                 present: /dev/sdx3; replace the disk, then run \
                 `btrfs replace start 2 /dev/NEW /`"
            )
        );
    }

    #[test]
    fn a_source_through_a_symlink_is_joined_by_its_kernel_name() {
        let t = tempfile::tempdir().unwrap();
        fake_fs(t.path(), U1, "", &[(1, None), (2, Some("dm-0")), (3, None)]);
        // `/dev/mapper/root -> ../dm-0`, as udev makes it.
        let dev = t.path().join("dev");
        fs::create_dir_all(dev.join("mapper")).unwrap();
        fs::write(dev.join("dm-0"), "").unwrap();
        std::os::unix::fs::symlink("../dm-0", dev.join("mapper/root")).unwrap();
        let line = format!(
            "21 1 0:26 / /mnt/raid rw - btrfs {} rw,degraded",
            dev.join("mapper/root").display()
        );
        let mi = mountinfo(t.path(), &[&line]);
        let d = degraded(t.path(), &mi).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].mounts, vec!["/mnt/raid".to_string()]);
        assert_eq!(d[0].missing_devids, vec![1, 3]);
        assert_eq!(d[0].label, None);
        assert_eq!(
            d[0].to_string(),
            format!(
                "btrfs {U1} at /mnt/raid: 2 of 3 devices missing (devids 1, 3); \
                 present: /dev/dm-0; replace the disks, then run \
                 `btrfs replace start DEVID /dev/NEW /mnt/raid` for each devid"
            )
        );
    }

    #[test]
    fn mounted_in_another_namespace_only_is_still_reported() {
        let t = tempfile::tempdir().unwrap();
        fake_fs(t.path(), U1, "", &[(1, Some("sdx3")), (2, None)]);
        let mi = mountinfo(t.path(), &[EXT4]);
        let d = degraded(t.path(), &mi).unwrap();
        assert_eq!(d[0].mounts, Vec::<String>::new());
        assert!(
            d[0].to_string()
                .contains("(not mounted in this mount namespace): 1 of 2"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn no_btrfs_loaded_reads_no_mountinfo() {
        let t = tempfile::tempdir().unwrap();
        let absent = t.path().join("no-mountinfo");
        assert_eq!(degraded(t.path(), &absent).unwrap(), vec![]);
        // A degraded filesystem needs mountinfo, and says which file failed.
        fake_fs(t.path(), U1, "", &[(1, Some("sdx3")), (2, None)]);
        let e = degraded(t.path(), &absent).unwrap_err();
        assert_eq!(e.to_string(), format!("reading {}", absent.display()));
    }

    #[test]
    fn a_replace_target_is_not_a_member() {
        let t = tempfile::tempdir().unwrap();
        fake_fs(
            t.path(),
            U1,
            "",
            &[(0, Some("sdy3")), (1, Some("sdx3")), (2, None)],
        );
        let mi = mountinfo(t.path(), &["21 1 0:26 / / rw - btrfs /dev/sdx3 rw"]);
        let d = degraded(t.path(), &mi).unwrap();
        assert_eq!((d[0].devices_total, d[0].devices_missing), (2, 1));
    }
}
