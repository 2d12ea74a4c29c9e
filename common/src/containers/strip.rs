//! What a host root filesystem carries that a container must not: the
//! kernel, its modules and initramfs, bootloaders and firmware go from the
//! files and from dpkg's database (so apt in a container neither upgrades
//! nor misses them); the host's identity (machine-id, hostname, SSH host
//! keys) is reset, with a unit that makes new SSH host keys at a container's
//! first boot. Every path resolves inside the tree ([`RootDir`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::rootfs::RootDir;

/// What [`strip_host_parts`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StripReport {
    /// Packages dropped from the files and dpkg's database.
    pub packages: Vec<String>,
    /// Host-only packages kept because a kept package needs them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// Files, links and directories removed.
    pub removed: u64,
}

/// Whether a package exists only to boot hardware: kernels, initramfs
/// generators, bootloaders, firmware and microcode.
pub fn host_only(package: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "linux-image-",
        "linux-headers-",
        "linux-modules-",
        "linux-kbuild-",
        "firmware-",
        "grub-",
        "grub2-",
        "systemd-boot",
        "initramfs-tools",
        "dracut",
        "shim-",
    ];
    const NAMES: &[&str] = &[
        "grub2",
        "intel-microcode",
        "amd64-microcode",
        "efibootmgr",
        "os-prober",
        "mokutil",
    ];
    PREFIXES.iter().any(|p| package.starts_with(p)) || NAMES.contains(&package)
}

/// One package stanza of `/var/lib/dpkg/status`.
#[derive(Debug, Clone)]
struct Stanza {
    text: String,
    package: String,
    arch: String,
    installed: bool,
    /// Depends and Pre-Depends, each clause a list of alternatives.
    depends: Vec<Vec<String>>,
    provides: Vec<String>,
}

fn field(text: &str, name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for line in text.lines() {
        if let Some(o) = out.as_mut() {
            if line.starts_with(' ') || line.starts_with('\t') {
                o.push(' ');
                o.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
            out = Some(rest.trim().to_string());
        }
    }
    out
}

/// A package name out of a relation (`libc6 (>= 2.36)`, `python3:any`).
fn relation_name(rel: &str) -> String {
    let name = rel.trim().split(['(', ' ', '[', '<']).next().unwrap_or("");
    name.split(':').next().unwrap_or("").to_string()
}

fn parse_status(text: &str) -> Vec<Stanza> {
    text.split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let s = s.trim_matches('\n').to_string();
            let rels = |f: &str| -> Vec<Vec<String>> {
                field(&s, f)
                    .map(|v| {
                        v.split(',')
                            .map(|c| c.split('|').map(relation_name).collect())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let mut depends = rels("Depends");
            depends.extend(rels("Pre-Depends"));
            let provides = rels("Provides").into_iter().flatten().collect();
            Stanza {
                package: field(&s, "Package").unwrap_or_default(),
                arch: field(&s, "Architecture").unwrap_or_default(),
                installed: field(&s, "Status").is_some_and(|st| {
                    st.ends_with(" installed") || st.ends_with(" half-configured")
                }),
                depends,
                provides,
                text: s,
            }
        })
        .collect()
}

/// The host-only packages of `status` that can go: every installed one
/// unless a package that stays depends on it (directly or through a
/// virtual package only it provides). Returns (drop, kept).
fn plan_drop(stanzas: &[Stanza]) -> (BTreeSet<String>, Vec<String>) {
    let installed: Vec<&Stanza> = stanzas.iter().filter(|s| s.installed).collect();
    let mut drop: BTreeSet<String> = installed
        .iter()
        .filter(|s| host_only(&s.package))
        .map(|s| s.package.clone())
        .collect();
    let mut kept = Vec::new();
    loop {
        // What satisfies a name: the package itself or its providers.
        let mut satisfiers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in &installed {
            satisfiers.entry(&s.package).or_default().push(&s.package);
            for p in &s.provides {
                satisfiers.entry(p).or_default().push(&s.package);
            }
        }
        let mut undrop = BTreeSet::new();
        for s in installed.iter().filter(|s| !drop.contains(&s.package)) {
            for clause in &s.depends {
                let by: Vec<&str> = clause
                    .iter()
                    .flat_map(|a| satisfiers.get(a.as_str()).cloned().unwrap_or_default())
                    .collect();
                if !by.is_empty() && by.iter().all(|p| drop.contains(*p)) {
                    for p in by {
                        if undrop.insert(p.to_string()) {
                            kept.push(format!("{p} (needed by {})", s.package));
                        }
                    }
                }
            }
        }
        if undrop.is_empty() {
            break;
        }
        drop.retain(|p| !undrop.contains(p));
    }
    (drop, kept)
}

fn is_dir(root: &RootDir, abs: &Path) -> bool {
    root.symlink_metadata(abs)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Removes `abs` and, if it is a directory (not a symlink to one), all in
/// it. Returns how many entries went.
pub fn remove_tree(root: &RootDir, abs: &Path) -> io::Result<u64> {
    let Ok(st) = root.symlink_metadata(abs) else {
        return Ok(0);
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        root.remove_file(abs)?;
        return Ok(1);
    }
    let mut n = 0;
    for name in root.read_dir(abs)? {
        n += remove_tree(root, &abs.join(name))?;
    }
    root.remove_dir(abs)?;
    Ok(n + 1)
}

/// Removes what is inside directory `abs`, keeping the directory.
fn empty_dir(root: &RootDir, abs: &Path) -> io::Result<u64> {
    if !is_dir(root, abs) {
        return Ok(0);
    }
    let mut n = 0;
    for name in root.read_dir(abs)? {
        n += remove_tree(root, &abs.join(name))?;
    }
    Ok(n)
}

/// Drops the host-only packages (files, maintainer scripts, database
/// stanzas) and what they left behind (`/boot`, `/lib/modules`, the
/// `/vmlinuz` links, initramfs state). A tree without dpkg is left as is
/// apart from `/boot` and the kernel links.
pub fn strip_host_parts(root: &RootDir) -> anyhow::Result<StripReport> {
    let mut report = StripReport::default();
    let status_path = Path::new("/var/lib/dpkg/status");
    let status = match root.read_to_string(status_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading {}", root.display_path(status_path).display()))
        }
    };
    let mut kernel_kept = false;
    if let Some(status) = status {
        let stanzas = parse_status(&status);
        let (drop, kept) = plan_drop(&stanzas);
        kernel_kept = stanzas.iter().any(|s| {
            s.installed && s.package.starts_with("linux-image-") && !drop.contains(&s.package)
        });
        let info = Path::new("/var/lib/dpkg/info");
        let info_files = root.read_dir(info).unwrap_or_default();
        let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
        for s in stanzas.iter().filter(|s| drop.contains(&s.package)) {
            let names = [s.package.clone(), format!("{}:{}", s.package, s.arch)];
            for n in &names {
                let list = info.join(format!("{n}.list"));
                let Ok(text) = root.read_to_string(&list) else {
                    continue;
                };
                for line in text.lines().filter(|l| l.starts_with('/') && *l != "/.") {
                    let p = Path::new(line);
                    if is_dir(root, p) {
                        dirs.insert(p.to_path_buf());
                    } else if root.open_dir(p).is_ok() {
                        // A link to a directory (`/lib -> usr/lib`): shared.
                    } else if root.exists(p) {
                        root.remove_file(p).with_context(|| {
                            format!("removing {}", root.display_path(p).display())
                        })?;
                        report.removed += 1;
                    }
                }
            }
            for f in &info_files {
                let f = f.to_string_lossy();
                if names.iter().any(|n| {
                    f.strip_prefix(n.as_str())
                        .is_some_and(|r| r.starts_with('.'))
                }) {
                    root.remove_file(info.join(&*f))?;
                }
            }
        }
        // Deepest first; a directory another package still uses stays.
        for d in dirs.iter().rev() {
            if root.read_dir(d).is_ok_and(|n| n.is_empty()) && root.remove_dir(d).is_ok() {
                report.removed += 1;
            }
        }
        let kept_text: Vec<&str> = stanzas
            .iter()
            .filter(|s| !drop.contains(&s.package))
            .map(|s| s.text.as_str())
            .collect();
        if !drop.is_empty() {
            let mut out = kept_text.join("\n\n");
            out.push('\n');
            root.write_atomic(status_path, out.as_bytes(), 0o644, None)
                .with_context(|| format!("writing {}", root.display_path(status_path).display()))?;
        }
        report.packages = drop.into_iter().collect();
        report.kept = kept;
    }
    if !kernel_kept {
        for d in ["/boot", "/usr/lib/modules", "/var/lib/initramfs-tools"] {
            report.removed += empty_dir(root, Path::new(d))
                .with_context(|| format!("emptying {}", root.display_path(d).display()))?;
        }
        for l in ["/vmlinuz", "/vmlinuz.old", "/initrd.img", "/initrd.img.old"] {
            if root.exists(l) {
                root.remove_file(l)?;
                report.removed += 1;
            }
        }
    }
    Ok(report)
}

/// The unit that makes a container's own SSH host keys at its first boot.
pub const SSH_HOSTKEYS_UNIT: &str = "opdbus-ssh-hostkeys.service";

/// Resets what identifies one machine, so containers made from the tree do
/// not share it: an empty machine-id (systemd makes one at first boot), no
/// hostname (LXC's `lxc.uts.name` stays), a neutral `/etc/hosts`, no SSH
/// host keys (made at first boot by [`SSH_HOSTKEYS_UNIT`]).
pub fn reset_identity(root: &RootDir) -> anyhow::Result<()> {
    let w = |abs: &str, data: &[u8], mode: u32| {
        root.write_atomic(abs, data, mode, None)
            .with_context(|| format!("writing {}", root.display_path(abs).display()))
    };
    if root.exists("/etc/machine-id") {
        w("/etc/machine-id", b"", 0o444)?;
    }
    if root
        .symlink_metadata("/var/lib/dbus/machine-id")
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
    {
        root.remove_file("/var/lib/dbus/machine-id")?;
    }
    root.remove_file("/etc/hostname")?;
    if root.exists("/etc/hosts") {
        w(
            "/etc/hosts",
            b"127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n",
            0o644,
        )?;
    }
    if is_dir(root, Path::new("/etc/ssh")) {
        for name in root.read_dir("/etc/ssh")? {
            let n = name.to_string_lossy();
            if n.starts_with("ssh_host_") {
                root.remove_file(Path::new("/etc/ssh").join(&*n))?;
            }
        }
    }
    if root.exists("/usr/sbin/sshd") {
        let unit = format!("/etc/systemd/system/{SSH_HOSTKEYS_UNIT}");
        w(
            &unit,
            b"[Unit]\n\
Description=SSH host keys of this container (made at its first boot)\n\
Before=ssh.service\n\
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key\n\n\
[Service]\n\
Type=oneshot\n\
ExecStart=/usr/bin/ssh-keygen -A\n\n\
[Install]\n\
WantedBy=ssh.service\n",
            0o644,
        )?;
        let link = format!("/etc/systemd/system/ssh.service.wants/{SSH_HOSTKEYS_UNIT}");
        root.symlink(&unit, &link)
            .with_context(|| format!("enabling {SSH_HOSTKEYS_UNIT}"))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stanza(pkg: &str, extra: &str) -> String {
        format!("Package: {pkg}\nStatus: install ok installed\nArchitecture: amd64\n{extra}")
    }

    #[test]
    fn host_only_packages_go_unless_a_kept_one_needs_them() {
        let status = [
            stanza("linux-image-6.1.0-28-amd64", "Provides: linux-image, wireguard-modules (= 1.0.0)\nDepends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool"),
            stanza("linux-image-amd64", "Depends: linux-image-6.1.0-28-amd64 (= 6.1.119-1)"),
            stanza("initramfs-tools", "Provides: linux-initramfs-tool\nDepends: initramfs-tools-core (= 0.142)"),
            stanza("initramfs-tools-core", ""),
            stanza("grub-common", ""),
            stanza("grub2-common", "Depends: grub-common (= 2.06-13)"),
            stanza("kmod", "Depends: libc6"),
            stanza("wg-dkms-user", "Depends: wireguard-modules | wireguard-dkms"),
            stanza("libc6", ""),
        ]
        .join("\n\n");
        let (drop, kept) = plan_drop(&parse_status(&status));
        // wg-dkms-user needs a virtual only the kernel provides: the kernel
        // and what it needs stay.
        assert_eq!(
            drop.into_iter().collect::<Vec<_>>(),
            ["grub-common", "grub2-common", "linux-image-amd64"],
            "{kept:?}"
        );
        assert!(
            kept[0].starts_with("linux-image-6.1.0-28-amd64 (needed by wg-dkms-user)"),
            "{kept:?}"
        );
        let plain = status.replace("Depends: wireguard-modules | wireguard-dkms", "");
        let (drop, kept) = plan_drop(&parse_status(&plain));
        assert_eq!(drop.len(), 6, "{drop:?} {kept:?}");
        assert!(kept.is_empty());
    }

    #[test]
    fn strip_removes_the_files_the_scripts_and_the_stanzas() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "var/lib/dpkg/info",
            "usr/lib/modules/6.1/kernel",
            "boot/grub",
            "etc/ssh",
            "usr/bin",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.1"), "k").unwrap();
        std::fs::write(r.join("boot/initrd.img-6.1"), "i").unwrap();
        std::fs::write(r.join("usr/lib/modules/6.1/kernel/a.ko"), "m").unwrap();
        std::fs::write(r.join("usr/lib/modules/6.1/modules.dep"), "d").unwrap();
        std::fs::write(r.join("usr/bin/keep"), "x").unwrap();
        std::os::unix::fs::symlink("boot/vmlinuz-6.1", r.join("vmlinuz")).unwrap();
        std::fs::write(
            r.join("var/lib/dpkg/info/linux-image-6.1.list"),
            "/.\n/boot\n/boot/vmlinuz-6.1\n/lib\n/lib/modules\n/lib/modules/6.1\n/lib/modules/6.1/kernel\n/lib/modules/6.1/kernel/a.ko\n",
        )
        .unwrap();
        std::fs::write(
            r.join("var/lib/dpkg/info/linux-image-6.1.postrm"),
            "#!/bin/sh\n",
        )
        .unwrap();
        std::fs::write(r.join("var/lib/dpkg/info/keep.list"), "/usr/bin/keep\n").unwrap();
        std::fs::write(
            r.join("var/lib/dpkg/status"),
            format!(
                "{}\n\n{}\n",
                stanza("keep", "Depends: libc6"),
                stanza("linux-image-6.1", "")
            ),
        )
        .unwrap();
        std::fs::write(r.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
        std::fs::write(r.join("etc/machine-id"), "0123\n").unwrap();
        std::fs::write(r.join("etc/hostname"), "buildhost\n").unwrap();

        let root = RootDir::open(r).unwrap();
        let rep = strip_host_parts(&root).unwrap();
        assert_eq!(rep.packages, ["linux-image-6.1"]);
        assert!(!r.join("boot/vmlinuz-6.1").exists() && !r.join("boot/grub").exists());
        assert!(r.join("boot").is_dir());
        assert!(!r.join("usr/lib/modules/6.1").exists());
        assert!(r.join("lib").is_symlink(), "a shared directory link went");
        assert!(!r.join("vmlinuz").is_symlink());
        assert!(r.join("usr/bin/keep").exists());
        assert!(!r.join("var/lib/dpkg/info/linux-image-6.1.postrm").exists());
        assert!(r.join("var/lib/dpkg/info/keep.list").exists());
        let status = std::fs::read_to_string(r.join("var/lib/dpkg/status")).unwrap();
        assert_eq!(status, format!("{}\n", stanza("keep", "Depends: libc6")));

        reset_identity(&root).unwrap();
        assert!(!r.join("etc/ssh/ssh_host_ed25519_key").exists());
        assert_eq!(std::fs::read(r.join("etc/machine-id")).unwrap(), b"");
        assert!(!r.join("etc/hostname").exists());
        // A second strip finds nothing more to do.
        let again = strip_host_parts(&root).unwrap();
        assert!(again.packages.is_empty() && again.removed == 0, "{again:?}");
    }
}
