//! Unprivileged containers: container root is host uid/gid [`BASE`] and up
//! ([`COUNT`] ids), the rootfs shown to it through an idmapped mount
//! (`lxc.rootfs.options = idmap=container`, kernel 5.12+, btrfs 5.15+), so
//! the snapshot is not chowned. The range is reserved for root in
//! `/etc/subuid` and `/etc/subgid`; the line op-dbus adds is recorded in the
//! ownership registry and removed when its last unprivileged container goes.

use std::path::Path;

use anyhow::Context as _;

use crate::engine::ownership::Ownership;
use opdbus_common::rootfs::RootDir;

/// First host id of the container's range (Proxmox VE uses the same).
pub const BASE: u32 = 100_000;
/// Ids mapped: 0-65535 inside.
pub const COUNT: u32 = 65_536;
/// Ownership registry kind of the subordinate-id lines.
pub const OWNER_KIND: &str = "subid";
/// Ownership registry kind of a subordinate-id file op-dbus created.
pub const FILE_KIND: &str = "subid-file";

const FILES: [&str; 2] = ["subuid", "subgid"];

fn line() -> String {
    format!("root:{BASE}:{COUNT}")
}

/// `(user, start, count)` of each well-formed line.
fn ranges(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (u, s, c) = (f.next()?, f.next()?.parse().ok()?, f.next()?.parse().ok()?);
            Some((u.to_string(), s, c))
        })
        .collect()
}

/// What to do with one file's text: `Ok(None)` when root already holds the
/// range, `Ok(Some(new text))` with op-dbus's line appended, an error when
/// another user holds part of it.
pub fn plan(file: &str, text: &str) -> anyhow::Result<Option<String>> {
    let (lo, hi) = (u64::from(BASE), u64::from(BASE) + u64::from(COUNT));
    let rs = ranges(text);
    if rs
        .iter()
        .any(|(u, s, c)| u == "root" && *s <= lo && s + c >= hi)
    {
        return Ok(None);
    }
    if let Some((u, s, c)) = rs
        .iter()
        .find(|(u, s, c)| u != "root" && *s < hi && s + c > lo)
    {
        anyhow::bail!(
            "/etc/{file} hands ids {s}-{} to {u:?}, which overlaps the range unprivileged containers use ({lo}-{}); move {u:?} to another range",
            s + c - 1,
            hi - 1
        );
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&line());
    out.push('\n');
    Ok(Some(out))
}

/// Reserves the range for root in `etc/subuid` and `etc/subgid`, recording
/// each line op-dbus adds. Returns the files changed.
pub fn ensure(etc: &Path, owners: &Ownership) -> anyhow::Result<Vec<String>> {
    let dir = RootDir::open(etc).with_context(|| format!("opening {}", etc.display()))?;
    let mut changed = Vec::new();
    for f in FILES {
        let abs = format!("/{f}");
        let (text, missing) = match dir.read_to_string(&abs) {
            Ok(t) => (t, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), true),
            Err(e) => return Err(e).with_context(|| format!("reading {}/{f}", etc.display())),
        };
        if let Some(new) = plan(f, &text)? {
            if missing {
                owners.record(crate::lxc::OWNER_PLUGIN, FILE_KIND, f, None)?;
            }
            owners.record(
                crate::lxc::OWNER_PLUGIN,
                OWNER_KIND,
                &format!("{f}:{}", line()),
                None,
            )?;
            dir.write_atomic(&abs, new.as_bytes(), 0o644, Some((0, 0)))
                .with_context(|| format!("writing {}/{f}", etc.display()))?;
            changed.push(format!("{}/{f}", etc.display()));
        }
    }
    Ok(changed)
}

/// Removes the lines [`ensure`] added (and only those). Returns the files
/// changed.
pub fn release(etc: &Path, owners: &Ownership) -> anyhow::Result<Vec<String>> {
    let dir = RootDir::open(etc).with_context(|| format!("opening {}", etc.display()))?;
    let mine = owners.owned(crate::lxc::OWNER_PLUGIN, OWNER_KIND)?;
    let files = owners.owned(crate::lxc::OWNER_PLUGIN, FILE_KIND)?;
    let mut changed = Vec::new();
    for f in FILES {
        let id = format!("{f}:{}", line());
        if !mine.iter().any(|o| o.id == id) {
            continue;
        }
        let abs = format!("/{f}");
        if let Ok(text) = dir.read_to_string(&abs) {
            let mut dropped = false;
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    let me = !dropped && l.trim() == line();
                    dropped |= me;
                    !me
                })
                .collect();
            let created = files.iter().any(|o| o.id == f);
            if dropped && kept.is_empty() && created {
                dir.remove_file(&abs)
                    .with_context(|| format!("removing {}/{f}", etc.display()))?;
                changed.push(format!("{}/{f}", etc.display()));
            } else if dropped {
                let mut out = kept.join("\n");
                if !out.is_empty() {
                    out.push('\n');
                }
                dir.write_atomic(&abs, out.as_bytes(), 0o644, Some((0, 0)))
                    .with_context(|| format!("writing {}/{f}", etc.display()))?;
                changed.push(format!("{}/{f}", etc.display()));
            }
        }
        owners.forget(crate::lxc::OWNER_PLUGIN, OWNER_KIND, &id)?;
        owners.forget(crate::lxc::OWNER_PLUGIN, FILE_KIND, f)?;
    }
    Ok(changed)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plan_adds_root_only_when_missing_and_refuses_an_overlap() {
        assert_eq!(plan("subuid", "").unwrap().unwrap(), "root:100000:65536\n");
        assert_eq!(
            plan("subuid", "alice:200000:65536").unwrap().unwrap(),
            "alice:200000:65536\nroot:100000:65536\n"
        );
        assert_eq!(plan("subuid", "root:100000:65536\n").unwrap(), None);
        assert_eq!(plan("subuid", "root:0:1000000\n").unwrap(), None);
        let e = plan("subuid", "bob:150000:1000\n").unwrap_err().to_string();
        assert!(
            e.contains("/etc/subuid hands ids 150000-150999 to \"bob\""),
            "{e}"
        );
    }

    #[test]
    fn ensure_then_release_leaves_the_files_as_they_were() {
        let t = tempfile::tempdir().unwrap();
        let etc = t.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(etc.join("subuid"), "alice:200000:65536\n").unwrap();
        let owners = Ownership::new(t.path().join("state"));
        assert_eq!(ensure(&etc, &owners).unwrap().len(), 2);
        assert_eq!(
            std::fs::read_to_string(etc.join("subuid")).unwrap(),
            "alice:200000:65536\nroot:100000:65536\n"
        );
        assert!(ensure(&etc, &owners).unwrap().is_empty());
        assert_eq!(release(&etc, &owners).unwrap().len(), 2);
        assert_eq!(
            std::fs::read_to_string(etc.join("subuid")).unwrap(),
            "alice:200000:65536\n"
        );
        // The file op-dbus created goes with its line.
        assert!(!etc.join("subgid").exists());
        // A line op-dbus did not add is never removed.
        std::fs::write(etc.join("subuid"), "root:100000:65536\n").unwrap();
        std::fs::write(etc.join("subgid"), "root:100000:65536\n").unwrap();
        assert!(ensure(&etc, &owners).unwrap().is_empty());
        assert!(release(&etc, &owners).unwrap().is_empty());
        assert_eq!(
            std::fs::read_to_string(etc.join("subuid")).unwrap(),
            "root:100000:65536\n"
        );
    }
}
