//! The op-dbus host layout of seed 001 inside the target: subvolumes under
//! /var/lib/op-dbus with their compression property (plain directories when
//! the target root is not btrfs), the sockets folders and plugin skeletons.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use opdbus_state::model::HostLayout;

use crate::disk::btrfs::{create_subvolume, subvolume_state, SubvolState};
use crate::disk::plan::SubvolumePlan;
use crate::target::Root;

/// What [`create_host_layout`] made.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LayoutReport {
    pub subvolumes: Vec<String>,
    pub directories: Vec<String>,
    pub on_btrfs: bool,
}

/// Creates the layout below `layout.root` in the target; idempotent.
/// `plugin_template` is the text of `templates/layout/plugin.toml`.
pub fn create_host_layout(
    root: &Root,
    layout: &HostLayout,
    plugin_template: &str,
) -> Result<LayoutReport> {
    let base = root.path(&layout.root);
    fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
    let on_btrfs = is_btrfs(&base)?;
    let mut report = LayoutReport {
        on_btrfs,
        ..Default::default()
    };
    for (name, sv) in &layout.subvolumes {
        make_volume(&base, name, sv.compression.clone(), on_btrfs, &mut report)?;
    }
    if layout.sockets {
        for sub in ["sockets/containers", "sockets/plugins", "sockets/api"] {
            let dir = base.join(sub);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            report.directories.push(format!("{}/{sub}", layout.root));
        }
        fs::set_permissions(base.join("sockets"), fs::Permissions::from_mode(0o770))
            .context("setting the mode of the sockets folder")?;
    }
    let plugins = base.join("@plugins");
    if !layout.plugins.is_empty() {
        fs::create_dir_all(&plugins).with_context(|| format!("creating {}", plugins.display()))?;
    }
    for name in &layout.plugins {
        make_volume(&plugins, name, None, on_btrfs, &mut report)?;
        let dir = plugins.join(name);
        for sub in ["state", "cache"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}/{sub}", dir.display()))?;
        }
        let toml = dir.join("plugin.toml");
        if !toml.exists() {
            fs::write(&toml, plugin_template.replace("@NAME@", name))
                .with_context(|| format!("writing {}", toml.display()))?;
        }
    }
    for name in layout.templates.keys() {
        let dir = base.join("@templates");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        make_volume(&dir, name, None, on_btrfs, &mut report)?;
    }
    Ok(report)
}

fn make_volume(
    parent: &Path,
    name: &str,
    compression: Option<String>,
    on_btrfs: bool,
    report: &mut LayoutReport,
) -> Result<()> {
    let path = parent.join(name);
    let shown = path.display().to_string();
    if on_btrfs {
        match subvolume_state(parent, name) {
            SubvolState::Present => return Ok(()),
            SubvolState::NotASubvolume => anyhow::bail!(
                "{shown} exists but is not a btrfs subvolume; move it away so the layout can be created"
            ),
            SubvolState::Missing => {}
        }
        let plan = SubvolumePlan {
            name: name.to_string(),
            compression,
            nodatacow: false,
        };
        create_subvolume(parent, &plan).with_context(|| format!("creating subvolume {shown}"))?;
        report.subvolumes.push(shown);
    } else if !path.exists() {
        fs::create_dir_all(&path).with_context(|| format!("creating {shown}"))?;
        report.directories.push(shown);
    }
    Ok(())
}

fn is_btrfs(path: &Path) -> Result<bool> {
    let st = nix::sys::statfs::statfs(path)
        .with_context(|| format!("inspecting the filesystem of {}", path.display()))?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_directories_when_not_btrfs() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::new(t.path());
        if is_btrfs(t.path()).unwrap() {
            return; // the subvolume path is covered by the privileged install test
        }
        let layout = HostLayout::default();
        let r = create_host_layout(&root, &layout, "name = \"@NAME@\"\n").unwrap();
        assert!(!r.on_btrfs);
        for sv in [
            "@cache",
            "@timing",
            "@vectors",
            "@state",
            "@snapshots",
            "@plugins",
            "@templates",
        ] {
            assert!(
                root.path(&format!("/var/lib/op-dbus/{sv}")).is_dir(),
                "{sv}"
            );
        }
        let toml = root
            .read_to_string("/var/lib/op-dbus/@plugins/ovs/plugin.toml")
            .unwrap();
        assert_eq!(toml, "name = \"ovs\"\n");
        assert!(root.path("/var/lib/op-dbus/sockets/api").is_dir());
        // Idempotent: a second run creates nothing.
        let again = create_host_layout(&root, &layout, "x").unwrap();
        assert!(
            again.directories.iter().all(|d| d.contains("sockets")),
            "{again:?}"
        );
    }
}
