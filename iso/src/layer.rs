//! The op-dbus layer: a small second squashfs (`/live/op-dbus.squashfs`,
//! stacked by live-boot over the base) with the binaries, `templates/` and
//! the live units. It changes with every code change and repacks in seconds.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use opdbus_common::Task;

/// Inputs of the layer.
#[derive(Debug, Clone)]
pub struct LayerInputs {
    pub installer: PathBuf,
    pub agent: PathBuf,
    /// The repository's `templates/`; `templates/live/rootfs/` is copied to `/`.
    pub templates: PathBuf,
    /// Proxmox release keys (suite, file), checked by [`ProxmoxKey::parse`];
    /// copied to where the installer looks for them.
    pub proxmox_keys: Vec<ProxmoxKey>,
}

/// A Proxmox repository key for the live medium (`--proxmox-key`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxmoxKey {
    pub suite: String,
    pub path: PathBuf,
}

impl ProxmoxKey {
    /// `FILE`: one of the release keys Proxmox publishes, recognised by its
    /// digest (the suite follows from it); `SUITE=FILE`: the key of another
    /// Proxmox repository (a mirror or a local one), taken as it is.
    pub fn parse(arg: &str) -> anyhow::Result<ProxmoxKey> {
        use opdbus_installer::proxmox::{identify_release_key, release_key, RELEASE_KEYS};
        if let Some((suite, file)) = arg.split_once('=').filter(|(s, _)| !s.contains('/')) {
            release_key(suite).with_context(|| format!("--proxmox-key {arg}"))?;
            let path = PathBuf::from(file);
            fs::metadata(&path)
                .with_context(|| format!("--proxmox-key {arg}: reading {}", path.display()))?;
            return Ok(ProxmoxKey {
                suite: suite.to_string(),
                path,
            });
        }
        let path = PathBuf::from(arg);
        let data = fs::read(&path)
            .with_context(|| format!("--proxmox-key: reading {}", path.display()))?;
        match identify_release_key(&data) {
            Some(k) => Ok(ProxmoxKey {
                suite: k.suite.to_string(),
                path,
            }),
            None => anyhow::bail!(
                "--proxmox-key {}: not one of Proxmox's release keys (its digest matches none of {}); \
                 download the key of your suite from Proxmox, or give SUITE=FILE for the key of another Proxmox repository",
                path.display(),
                RELEASE_KEYS
                    .iter()
                    .map(|k| format!("{} ({})", k.url, k.fingerprint))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Lays out the layer's tree under `root`.
pub fn stage(inputs: &LayerInputs, root: &Path) -> anyhow::Result<()> {
    let bin = root.join("usr/local/bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    for (src, name) in [
        (&inputs.installer, "op-dbus-install"),
        (&inputs.agent, "op-dbus-agent"),
    ] {
        let dest = bin.join(name);
        fs::copy(src, &dest).with_context(|| {
            format!(
                "copying {} (build it with `cargo build --release`)",
                src.display()
            )
        })?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", dest.display()))?;
    }
    copy_tree(&inputs.templates, &root.join("usr/share/op-dbus/templates"))?;
    let keys = root.join(
        opdbus_installer::proxmox::MEDIUM_KEYS
            .strip_prefix('/')
            .unwrap_or(opdbus_installer::proxmox::MEDIUM_KEYS),
    );
    for k in &inputs.proxmox_keys {
        let dest = opdbus_installer::proxmox::medium_keyring(&keys, &k.suite);
        fs::copy(&k.path, &dest)
            .with_context(|| format!("copying the Proxmox key {}", k.path.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))
            .with_context(|| format!("setting the mode of {}", dest.display()))?;
    }
    let live_root = inputs.templates.join("live/rootfs");
    if live_root.is_dir() {
        copy_tree(&live_root, root)?;
    }
    enable_units(root)
}

/// Packs `root` into `output` (a squashfs owned by root).
pub fn pack(root: &Path, output: &Path) -> anyhow::Result<()> {
    Task::new("mksquashfs")
        .arg(root)
        .arg(output)
        .args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-all-root",
            "-comp",
            "zstd",
        ])
        .run()
        .with_context(|| format!("packing the op-dbus layer {}", output.display()))
}

/// Copies `src` into `dest` recursively, keeping file modes and symlinks.
pub fn copy_tree(src: &Path, dest: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry.with_context(|| format!("listing {}", src.display()))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let ty = entry
            .file_type()
            .with_context(|| format!("inspecting {}", from.display()))?;
        if ty.is_dir() {
            copy_tree(&from, &to)?;
        } else if ty.is_symlink() {
            let target =
                fs::read_link(&from).with_context(|| format!("reading link {}", from.display()))?;
            let _ = fs::remove_file(&to);
            symlink(&target, &to).with_context(|| format!("linking {}", to.display()))?;
        } else {
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// `systemctl enable` for the units in `root/etc/systemd/system`: a link in
/// `<target>.wants/` for each `WantedBy=` of each unit file.
pub fn enable_units(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("etc/systemd/system");
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if !path.is_file() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for target in wanted_by(&text) {
            let wants = dir.join(format!("{target}.wants"));
            fs::create_dir_all(&wants).with_context(|| format!("creating {}", wants.display()))?;
            let link = wants.join(&name);
            let _ = fs::remove_file(&link);
            symlink(format!("/etc/systemd/system/{name}"), &link)
                .with_context(|| format!("enabling {name} in {}", wants.display()))?;
        }
    }
    Ok(())
}

/// Targets named by `WantedBy=` lines of the `[Install]` section.
pub fn wanted_by(unit: &str) -> Vec<String> {
    let mut in_install = false;
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_install = line == "[Install]";
        } else if in_install {
            if let Some(v) = line.strip_prefix("WantedBy=") {
                out.extend(v.split_whitespace().map(str::to_owned));
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn proxmox_keys_are_recognised_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.gpg");
        fs::write(&other, b"a key that is not Proxmox's").unwrap();
        let e = format!(
            "{:#}",
            ProxmoxKey::parse(other.to_str().unwrap()).unwrap_err()
        );
        assert!(e.contains("not one of Proxmox's release keys"), "{e}");
        assert!(
            e.contains("24B30F06ECC1836A4E5EFECBA7BCD1420BFE778E"),
            "{e}"
        );
        let local = ProxmoxKey::parse(&format!("bookworm={}", other.display())).unwrap();
        assert_eq!(local.suite, "bookworm");
        let e = format!(
            "{:#}",
            ProxmoxKey::parse(&format!("bullseye={}", other.display())).unwrap_err()
        );
        assert!(e.contains("bullseye"), "{e}");
    }

    #[test]
    fn wanted_by_reads_only_the_install_section() {
        let unit = "[Unit]\nWantedBy=nope.target\n[Service]\nExecStart=/x\n[Install]\nWantedBy=multi-user.target getty.target\n";
        assert_eq!(wanted_by(unit), ["multi-user.target", "getty.target"]);
    }

    #[test]
    fn staging_copies_binaries_templates_and_enables_units() {
        let dir = tempfile::tempdir().unwrap();
        let tpl = dir.path().join("templates");
        let units = tpl.join("live/rootfs/etc/systemd/system");
        fs::create_dir_all(&units).unwrap();
        fs::write(
            units.join("a.service"),
            "[Install]\nWantedBy=multi-user.target\n",
        )
        .unwrap();
        fs::write(dir.path().join("inst"), "#!/bin/sh\n").unwrap();
        fs::write(dir.path().join("agent"), "#!/bin/sh\n").unwrap();
        let root = dir.path().join("root");
        stage(
            &LayerInputs {
                installer: dir.path().join("inst"),
                agent: dir.path().join("agent"),
                templates: tpl,
                proxmox_keys: vec![ProxmoxKey {
                    suite: "trixie".into(),
                    path: dir.path().join("agent"),
                }],
            },
            &root,
        )
        .unwrap();
        let mode = fs::metadata(root.join("usr/local/bin/op-dbus-install"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(root
            .join("usr/share/op-dbus/templates/live/rootfs/etc/systemd/system/a.service")
            .is_file());
        assert!(root
            .join("usr/share/op-dbus/proxmox-release-trixie.gpg")
            .is_file());
        assert_eq!(
            fs::read_link(root.join("etc/systemd/system/multi-user.target.wants/a.service"))
                .unwrap(),
            Path::new("/etc/systemd/system/a.service")
        );
        let missing = stage(
            &LayerInputs {
                installer: dir.path().join("nope"),
                agent: dir.path().join("agent"),
                templates: dir.path().join("templates"),
                proxmox_keys: Vec::new(),
            },
            &dir.path().join("root2"),
        )
        .unwrap_err();
        assert!(format!("{missing:#}").contains("build it with `cargo build --release`"));
    }
}
