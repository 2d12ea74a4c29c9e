//! The op-dbus host layout of seed 001 inside the target: subvolumes under
//! /var/lib/op-dbus with their compression property (plain directories when
//! the target root is not btrfs), the sockets folders and plugin skeletons.

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
    let base = layout.root.trim_end_matches('/').to_string();
    root.create_dir_all(&base, 0o755)?;
    let on_btrfs = is_btrfs(root, &base)?;
    let mut report = LayoutReport {
        on_btrfs,
        ..Default::default()
    };
    for (name, sv) in &layout.subvolumes {
        make_volume(
            root,
            &base,
            name,
            sv.compression.clone(),
            on_btrfs,
            &mut report,
        )?;
    }
    if layout.sockets {
        for sub in ["sockets/containers", "sockets/plugins", "sockets/api"] {
            root.create_dir_all(&format!("{base}/{sub}"), 0o755)?;
            report.directories.push(format!("{}/{sub}", layout.root));
        }
        root.set_dir_mode(&format!("{base}/sockets"), 0o770)
            .context("setting the mode of the sockets folder")?;
    }
    let plugins = format!("{base}/@plugins");
    if !layout.plugins.is_empty() {
        root.create_dir_all(&plugins, 0o755)?;
    }
    for name in &layout.plugins {
        make_volume(root, &plugins, name, None, on_btrfs, &mut report)?;
        let dir = format!("{plugins}/{name}");
        for sub in ["state", "cache"] {
            root.create_dir_all(&format!("{dir}/{sub}"), 0o755)?;
        }
        let toml = format!("{dir}/plugin.toml");
        if !root.exists(&toml) {
            root.write(&toml, plugin_template.replace("@NAME@", name), 0o644)?;
        }
    }
    for name in layout.templates.keys() {
        let dir = format!("{base}/@templates");
        root.create_dir_all(&dir, 0o755)?;
        make_volume(root, &dir, name, None, on_btrfs, &mut report)?;
    }
    Ok(report)
}

/// A subvolume (or plain directory) `name` in the target directory
/// `parent`, which is opened beneath the root and handed to the btrfs
/// calls as its `/proc/self/fd` path, so a symlink cannot redirect them.
fn make_volume(
    root: &Root,
    parent: &str,
    name: &str,
    compression: Option<String>,
    on_btrfs: bool,
    report: &mut LayoutReport,
) -> Result<()> {
    if !opdbus_common::rootfs::is_plain_name(std::ffi::OsStr::new(name)) {
        anyhow::bail!("layout volume name {name:?} is not a plain name (no '/', '.' or '..')");
    }
    let abs = format!("{parent}/{name}");
    let shown = root.display_path(&abs).display().to_string();
    if on_btrfs {
        let dir = root.open_dir(parent)?;
        match subvolume_state(&dir.path(), name) {
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
        create_subvolume(&dir.path(), &plan)
            .with_context(|| format!("creating subvolume {shown}"))?;
        report.subvolumes.push(shown);
    } else if !root.exists(&abs) {
        root.create_dir_all(&abs, 0o755)?;
        report.directories.push(shown);
    }
    Ok(())
}

fn is_btrfs(root: &Root, abs: &str) -> Result<bool> {
    let dir = root.open_dir(abs)?;
    let st = nix::sys::statfs::fstatfs(dir.fd())
        .with_context(|| format!("inspecting the filesystem of {}", dir.shown().display()))?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_directories_when_not_btrfs() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        if is_btrfs(&root, "/").unwrap() {
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
            assert!(root.is_dir(&format!("/var/lib/op-dbus/{sv}")), "{sv}");
        }
        let toml = root
            .read_to_string("/var/lib/op-dbus/@plugins/ovs/plugin.toml")
            .unwrap();
        assert_eq!(toml, "name = \"ovs\"\n");
        assert!(root.is_dir("/var/lib/op-dbus/sockets/api"));
        // Idempotent: a second run creates nothing.
        let again = create_host_layout(&root, &layout, "x").unwrap();
        assert!(
            again.directories.iter().all(|d| d.contains("sockets")),
            "{again:?}"
        );
    }
}
