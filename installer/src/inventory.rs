//! The machine's disks as sysfs describes them (model, size, serial, by-id
//! links, removable, read-only), and resolving a state's disk selector to
//! exactly one of them. Paths to /sys and /dev are injectable for tests.

use std::fs;
use std::path::{Path, PathBuf};

use opdbus_state::model::{DiskSelector, Size};
use serde::Serialize;

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskInfo {
    /// Kernel name (`sda`, `vda`, `nvme0n1`).
    pub name: String,
    /// `/dev/NAME`.
    pub path: PathBuf,
    pub size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// `/dev/disk/by-id/*` links pointing at it (empty without udev).
    pub by_id: Vec<PathBuf>,
    pub removable: bool,
    pub read_only: bool,
}

impl DiskInfo {
    /// The most stable way to name this disk in a state: a by-id path, else
    /// its serial, else its kernel path.
    pub fn stable_selector(&self) -> DiskSelector {
        if let Some(id) = self.by_id.iter().find(|p| {
            let n = p.to_string_lossy();
            !n.contains("/wwn-") && !n.contains("/nvme-eui")
        }) {
            return DiskSelector {
                path: Some(id.to_string_lossy().into_owned()),
                ..Default::default()
            };
        }
        if let Some(s) = &self.serial {
            return DiskSelector {
                serial: Some(s.clone()),
                ..Default::default()
            };
        }
        DiskSelector {
            path: Some(self.path.to_string_lossy().into_owned()),
            ..Default::default()
        }
    }
}

/// Why a selector did not resolve to exactly one disk.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectError {
    #[error(
        "no disk of this machine matches the selector for {key} ({criteria}); disks seen: {seen}"
    )]
    NoMatch {
        key: String,
        criteria: String,
        seen: String,
    },
    #[error("{count} disks match the selector for {key} ({criteria}): {matches}; make it specific (a by-id path or a serial) so the installer cannot pick the wrong disk")]
    Ambiguous {
        key: String,
        criteria: String,
        count: usize,
        matches: String,
    },
}

fn read_trim(p: &Path) -> Option<String> {
    let s = fs::read_to_string(p).ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Whole disks under `sys/block` (loop, ram, zram, sr and dm devices and
/// empty devices are skipped).
pub fn disks(sys: &Path, dev: &Path) -> Vec<DiskInfo> {
    let mut by_id: Vec<(PathBuf, PathBuf)> = Vec::new();
    if let Ok(rd) = fs::read_dir(dev.join("disk/by-id")) {
        for e in rd.flatten() {
            if let Ok(target) = fs::canonicalize(e.path()) {
                by_id.push((e.path(), target));
            }
        }
    }
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(sys.join("block")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd"]
            .iter()
            .any(|p| name.starts_with(p))
        {
            continue;
        }
        let base = e.path();
        let size = read_trim(&base.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        if size == 0 {
            continue;
        }
        let path = dev.join(&name);
        let canon = canonical(&path);
        let mut links: Vec<PathBuf> = by_id
            .iter()
            .filter(|(_, t)| *t == canon)
            .map(|(l, _)| l.clone())
            .collect();
        links.sort();
        out.push(DiskInfo {
            serial: read_trim(&base.join("device/serial"))
                .or_else(|| read_trim(&base.join("serial")))
                .or_else(|| read_trim(&base.join("device/wwid"))),
            model: read_trim(&base.join("device/model")),
            removable: read_trim(&base.join("removable")).as_deref() == Some("1"),
            read_only: read_trim(&base.join("ro")).as_deref() == Some("1"),
            by_id: links,
            name,
            path,
            size,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `p` with every symlink resolved; `p` itself when it does not exist.
fn canonical(p: &Path) -> PathBuf {
    fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn size_text(s: &Option<Size>) -> String {
    s.map(|s| s.to_string()).unwrap_or_default()
}

fn criteria(sel: &DiskSelector) -> String {
    let mut c = Vec::new();
    if let Some(p) = &sel.path {
        c.push(format!("path {p}"));
    }
    if let Some(s) = &sel.serial {
        c.push(format!("serial {s}"));
    }
    if let Some(m) = &sel.model {
        c.push(format!("model {m}"));
    }
    if sel.min_size.is_some() {
        c.push(format!("min_size {}", size_text(&sel.min_size)));
    }
    if sel.max_size.is_some() {
        c.push(format!("max_size {}", size_text(&sel.max_size)));
    }
    if c.is_empty() {
        "no criteria".into()
    } else {
        c.join(", ")
    }
}

fn matches(d: &DiskInfo, sel: &DiskSelector) -> bool {
    let bytes = |s: &Option<Size>| match s {
        Some(Size::Bytes(b)) => Some(*b),
        _ => None,
    };
    if let Some(p) = &sel.path {
        // The whole path after resolving symlinks (`/dev/disk/by-id/…`),
        // never the base name: `/srv/images/sda` is not `/dev/sda`.
        let want = canonical(Path::new(p));
        let hit = canonical(&d.path) == want || d.by_id.iter().any(|l| canonical(l) == want);
        if !hit {
            return false;
        }
    }
    if let Some(s) = &sel.serial {
        if d.serial.as_deref() != Some(s.as_str()) {
            return false;
        }
    }
    if let Some(m) = &sel.model {
        if !d.model.as_deref().is_some_and(|dm| dm.contains(m.as_str())) {
            return false;
        }
    }
    if bytes(&sel.min_size).is_some_and(|min| d.size < min) {
        return false;
    }
    if bytes(&sel.max_size).is_some_and(|max| d.size > max) {
        return false;
    }
    true
}

/// The one disk the selector names; zero or several matches is an error.
pub fn select<'a>(
    key: &str,
    sel: &DiskSelector,
    disks: &'a [DiskInfo],
) -> Result<&'a DiskInfo, SelectError> {
    let hits: Vec<&DiskInfo> = disks.iter().filter(|d| matches(d, sel)).collect();
    let names = |v: &[&DiskInfo]| {
        v.iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(SelectError::NoMatch {
            key: key.to_string(),
            criteria: criteria(sel),
            seen: {
                let all: Vec<&DiskInfo> = disks.iter().collect();
                let s = names(&all);
                if s.is_empty() {
                    "none".into()
                } else {
                    s
                }
            },
        }),
        many => Err(SelectError::Ambiguous {
            key: key.to_string(),
            criteria: criteria(sel),
            count: many.len(),
            matches: names(many),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fake_disk(sys: &Path, name: &str, sectors: u64, serial: &str, model: &str) {
        let b = sys.join("block").join(name);
        fs::create_dir_all(b.join("device")).unwrap();
        fs::write(b.join("size"), format!("{sectors}\n")).unwrap();
        fs::write(b.join("removable"), "0\n").unwrap();
        fs::write(b.join("ro"), "0\n").unwrap();
        fs::write(b.join("device/serial"), format!("{serial}\n")).unwrap();
        fs::write(b.join("device/model"), format!("{model}  \n")).unwrap();
    }

    fn machine() -> (tempfile::TempDir, Vec<DiskInfo>) {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let dev = t.path().join("dev");
        fake_disk(
            &sys,
            "sda",
            2 * 1024 * 1024 * 1024 / 512 * 100,
            "S1",
            "Samsung SSD",
        );
        fake_disk(
            &sys,
            "sdb",
            2 * 1024 * 1024 * 1024 / 512 * 500,
            "S2",
            "WDC HDD",
        );
        fake_disk(&sys, "loop0", 2048, "", "");
        fs::create_dir_all(sys.join("block/sr0")).unwrap();
        fs::create_dir_all(dev.join("disk/by-id")).unwrap();
        fs::write(dev.join("sda"), "").unwrap();
        std::os::unix::fs::symlink("../../sda", dev.join("disk/by-id/ata-Samsung_SSD_S1")).unwrap();
        let d = disks(&sys, &dev);
        (t, d)
    }

    #[test]
    fn lists_whole_disks_with_details() {
        let (_t, d) = machine();
        let names: Vec<_> = d.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["sda", "sdb"]);
        assert_eq!(d[0].size, 200 << 30);
        assert_eq!(d[0].model.as_deref(), Some("Samsung SSD"));
        assert_eq!(d[0].serial.as_deref(), Some("S1"));
        assert_eq!(d[0].by_id.len(), 1);
        assert!(d[0]
            .stable_selector()
            .path
            .unwrap()
            .ends_with("by-id/ata-Samsung_SSD_S1"));
        assert_eq!(d[1].stable_selector().serial.as_deref(), Some("S2"));
    }

    #[test]
    fn selector_by_serial_by_id_and_size() {
        let (_t, d) = machine();
        let by_serial = DiskSelector {
            serial: Some("S2".into()),
            ..Default::default()
        };
        assert_eq!(select("/dev/sda", &by_serial, &d).unwrap().name, "sdb");
        let by_id = DiskSelector {
            path: Some(d[0].by_id[0].to_string_lossy().into_owned()),
            ..Default::default()
        };
        assert_eq!(select("/dev/sda", &by_id, &d).unwrap().name, "sda");
        let small = DiskSelector {
            max_size: Some(Size::Bytes(300 << 30)),
            ..Default::default()
        };
        assert_eq!(select("/dev/sda", &small, &d).unwrap().name, "sda");
    }

    #[test]
    fn paths_match_exactly_never_by_base_name() {
        let (t, d) = machine();
        let other = t.path().join("other");
        fs::create_dir_all(&other).unwrap();
        for name in ["sda", "sdb", "vda"] {
            fs::write(other.join(name), "image").unwrap();
            let sel = DiskSelector {
                path: Some(other.join(name).to_string_lossy().into_owned()),
                ..Default::default()
            };
            let e = select(name, &sel, &d).unwrap_err();
            assert!(matches!(e, SelectError::NoMatch { .. }), "{name}: {e}");
        }
        // A by-id link outside /dev pointing at another folder's sda is not sda.
        let by_id = t.path().join("dev/disk/by-id/ata-Other");
        std::os::unix::fs::symlink(other.join("sda"), &by_id).unwrap();
        let d = disks(&t.path().join("sys"), &t.path().join("dev"));
        assert_eq!(d[0].by_id.len(), 1, "{:?}", d[0].by_id);
        // The disk's own path, and a symlink to it anywhere, do match.
        let link = t.path().join("link-to-sda");
        std::os::unix::fs::symlink(t.path().join("dev/sda"), &link).unwrap();
        for p in [t.path().join("dev/sda"), link, d[0].by_id[0].clone()] {
            let sel = DiskSelector {
                path: Some(p.to_string_lossy().into_owned()),
                ..Default::default()
            };
            assert_eq!(
                select("k", &sel, &d).unwrap().name,
                "sda",
                "{}",
                p.display()
            );
        }
        let sel = DiskSelector {
            path: Some(t.path().join("dev/sdb").to_string_lossy().into_owned()),
            ..Default::default()
        };
        assert_eq!(select("k", &sel, &d).unwrap().name, "sdb");
    }

    #[test]
    fn zero_or_several_matches_are_errors() {
        let (_t, d) = machine();
        let any = DiskSelector {
            min_size: Some(Size::Bytes(1 << 30)),
            ..Default::default()
        };
        let e = select("/dev/sda", &any, &d).unwrap_err().to_string();
        assert!(
            e.starts_with("2 disks match the selector for /dev/sda (min_size 1G)"),
            "{e}"
        );
        let none = DiskSelector {
            serial: Some("nope".into()),
            ..Default::default()
        };
        let e = select("/dev/sda", &none, &d).unwrap_err().to_string();
        assert!(e.contains("no disk of this machine matches"), "{e}");
        assert!(e.contains("serial nope"), "{e}");
    }
}
