//! The op-dbus host layout of seed 001 (`plugins.opdbus`): subvolumes under
//! its root (`@cache`, `@timing`, ...) with their compression property, the
//! `sockets/` folders, the plugin skeletons under `@plugins/NAME` and the
//! template placeholders under `@templates/NAME`; plain directories where
//! the root is not on btrfs. One implementation for both writers: the
//! installer (in the target, at hand-off) and the agent's storage plugin
//! (on the running host). [`query`] reads what is there, [`steps`] is the
//! pure diff, [`apply`] does one step; every path is opened beneath the
//! root given ([`RootDir`]), so a symlink cannot lead a write out of it.
//! What exists is never changed or removed (a plain directory where a
//! subvolume is wanted stays: converting would move data), except the mode
//! of `sockets/`, which must be 0770.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::containers::btrfs;
use crate::rootfs::RootDir;
use crate::Task;

/// The text of each plugin's `plugin.toml` (`@NAME@` is the plugin's name).
pub const PLUGIN_TOML: &str = include_str!("../../templates/layout/plugin.toml");

/// The folders `sockets: true` makes, below the layout's root.
pub const SOCKET_DIRS: [&str; 3] = ["sockets/containers", "sockets/plugins", "sockets/api"];

/// The mode of `sockets/`: root and the `opdbus` group.
pub const SOCKETS_MODE: u32 = 0o770;

/// The layout as the state names it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Absolute, on the managed system (`/var/lib/op-dbus`).
    pub root: String,
    /// Subvolume name -> its `btrfs.compression` property.
    pub subvolumes: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    pub sockets: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
}

impl From<&opdbus_state::model::HostLayout> for Layout {
    fn from(l: &opdbus_state::model::HostLayout) -> Self {
        Layout {
            root: l.root.clone(),
            subvolumes: l
                .subvolumes
                .iter()
                .map(|(name, sv)| (name.clone(), sv.compression.clone()))
                .collect(),
            plugins: l.plugins.clone(),
            sockets: l.sockets,
            templates: l.templates.keys().cloned().collect(),
        }
    }
}

/// What a path of the layout is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Missing,
    Directory,
    Subvolume,
    /// Something else (a file, a symlink): left alone.
    Other,
}

/// What [`query`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Whether the filesystem holding the root (or its nearest existing
    /// parent) is btrfs.
    pub btrfs: bool,
    /// Every path the layout names, absolute, with what it is.
    pub paths: BTreeMap<String, Kind>,
    /// The mode of `sockets/` when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets_mode: Option<u32>,
}

/// One thing to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Step {
    CreateSubvolume {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compression: Option<String>,
    },
    /// Where the root is not on btrfs, and for plain folders.
    CreateDirectory {
        path: String,
        mode: u32,
    },
    /// `@plugins/NAME/plugin.toml` from [`PLUGIN_TOML`].
    WritePluginToml {
        path: String,
        plugin: String,
    },
    SetMode {
        path: String,
        mode: u32,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateSubvolume {
                path,
                compression: Some(c),
            } => write!(f, "create btrfs subvolume {path} (compression {c})"),
            Step::CreateSubvolume { path, .. } => write!(f, "create btrfs subvolume {path}"),
            Step::CreateDirectory { path, mode } => write!(f, "create directory {path} ({mode:o})"),
            Step::WritePluginToml { path, .. } => write!(f, "write {path}"),
            Step::SetMode { path, mode } => write!(f, "set the mode of {path} to {mode:o}"),
        }
    }
}

impl Step {
    pub fn path(&self) -> &str {
        match self {
            Step::CreateSubvolume { path, .. }
            | Step::CreateDirectory { path, .. }
            | Step::WritePluginToml { path, .. }
            | Step::SetMode { path, .. } => path,
        }
    }
}

/// What the layout wants at each path, in creation order (parents first).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Volume(Option<String>),
    Directory,
    PluginToml(String),
}

fn wants(layout: &Layout) -> Vec<(String, Want)> {
    let base = layout.root.trim_end_matches('/');
    let mut out = Vec::new();
    for (name, compression) in &layout.subvolumes {
        out.push((format!("{base}/{name}"), Want::Volume(compression.clone())));
    }
    if layout.sockets {
        out.push((format!("{base}/sockets"), Want::Directory));
        for sub in SOCKET_DIRS {
            out.push((format!("{base}/{sub}"), Want::Directory));
        }
    }
    let plugins = format!("{base}/@plugins");
    if !layout.plugins.is_empty() && !layout.subvolumes.contains_key("@plugins") {
        out.push((plugins.clone(), Want::Directory));
    }
    for name in &layout.plugins {
        let dir = format!("{plugins}/{name}");
        out.push((dir.clone(), Want::Volume(None)));
        for sub in ["state", "cache"] {
            out.push((format!("{dir}/{sub}"), Want::Directory));
        }
        out.push((format!("{dir}/plugin.toml"), Want::PluginToml(name.clone())));
    }
    let templates = format!("{base}/@templates");
    if !layout.templates.is_empty() && !layout.subvolumes.contains_key("@templates") {
        out.push((templates.clone(), Want::Directory));
    }
    for name in &layout.templates {
        out.push((format!("{templates}/{name}"), Want::Volume(None)));
    }
    out
}

/// Refuses names that would leave their parent.
pub fn check(layout: &Layout) -> anyhow::Result<()> {
    let names = layout
        .subvolumes
        .keys()
        .chain(&layout.plugins)
        .chain(&layout.templates);
    for name in names {
        if !crate::rootfs::is_plain_name(std::ffi::OsStr::new(name)) {
            anyhow::bail!("layout volume name {name:?} is not a plain name (no '/', '.' or '..')");
        }
    }
    if !layout.root.starts_with('/') {
        anyhow::bail!("the layout root {:?} is not an absolute path", layout.root);
    }
    Ok(())
}

/// Reads what each path of `layout` is beneath `root`.
pub fn query(root: &RootDir, layout: &Layout) -> anyhow::Result<Facts> {
    check(layout)?;
    let mut facts = Facts {
        btrfs: btrfs::is_btrfs(&root.display_path(&layout.root)),
        ..Facts::default()
    };
    for (path, _) in wants(layout) {
        let kind = match root.symlink_metadata(&path) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                // A btrfs subvolume's root directory has inode number 256.
                if st.st_ino == 256 && facts.btrfs {
                    Kind::Subvolume
                } else {
                    Kind::Directory
                }
            }
            Ok(_) => Kind::Other,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kind::Missing,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("inspecting {}", root.display_path(&path).display()))
            }
        };
        facts.paths.insert(path, kind);
    }
    if layout.sockets {
        let sockets = format!("{}/sockets", layout.root.trim_end_matches('/'));
        facts.sockets_mode = root
            .symlink_metadata(&sockets)
            .ok()
            .filter(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .map(|st| st.st_mode & 0o7777);
    }
    Ok(facts)
}

/// The pure diff: a step for every missing path (subvolumes become plain
/// directories off btrfs), and the mode of `sockets/`.
pub fn steps(facts: &Facts, layout: &Layout) -> Vec<Step> {
    let mut out = Vec::new();
    for (path, want) in wants(layout) {
        if facts.paths.get(&path).copied().unwrap_or(Kind::Missing) != Kind::Missing {
            continue;
        }
        out.push(match want {
            Want::Volume(compression) if facts.btrfs => Step::CreateSubvolume { path, compression },
            Want::Volume(_) | Want::Directory => Step::CreateDirectory {
                mode: if path.ends_with("/sockets") {
                    SOCKETS_MODE
                } else {
                    0o755
                },
                path,
            },
            Want::PluginToml(plugin) => Step::WritePluginToml { path, plugin },
        });
    }
    if layout.sockets {
        let sockets = format!("{}/sockets", layout.root.trim_end_matches('/'));
        if facts.sockets_mode.is_some_and(|m| m != SOCKETS_MODE) {
            out.push(Step::SetMode {
                path: sockets,
                mode: SOCKETS_MODE,
            });
        }
    }
    out
}

/// Does one step beneath `root`; its parent directories exist (or are
/// created 0755).
pub fn apply(root: &RootDir, step: &Step) -> anyhow::Result<()> {
    let path = step.path();
    let shown = root.display_path(path);
    match step {
        Step::CreateSubvolume { compression, .. } => {
            let (parent, name) = split(path)?;
            root.create_dir_all(parent, 0o755)
                .with_context(|| format!("creating {}", root.display_path(parent).display()))?;
            // The parent opened beneath the root, handed over as its
            // /proc/PID/fd path (valid for the btrfs tool this process
            // runs too): a symlink cannot redirect the call.
            let dir = root
                .open_dir(parent)
                .with_context(|| format!("opening {}", root.display_path(parent).display()))?;
            let at = PathBuf::from(format!(
                "/proc/{}/fd/{}/{name}",
                std::process::id(),
                dir.as_raw_fd()
            ));
            btrfs::create(&at)
                .with_context(|| format!("creating subvolume {}", shown.display()))?;
            if let Some(c) = compression {
                Task::new("btrfs")
                    .args(["property", "set"])
                    .arg(&at)
                    .args(["compression", c])
                    .run()
                    .with_context(|| {
                        format!("setting compression {c} on subvolume {}", shown.display())
                    })?;
            }
        }
        Step::CreateDirectory { mode, .. } => {
            root.create_dir_all(path, *mode)
                .with_context(|| format!("creating {}", shown.display()))?;
            root.set_dir_mode(path, *mode)
                .with_context(|| format!("setting the mode of {}", shown.display()))?;
        }
        Step::WritePluginToml { plugin, .. } => {
            root.write_atomic(
                path,
                PLUGIN_TOML.replace("@NAME@", plugin).as_bytes(),
                0o644,
                None,
            )
            .with_context(|| format!("writing {}", shown.display()))?;
        }
        Step::SetMode { mode, .. } => root
            .set_dir_mode(path, *mode)
            .with_context(|| format!("setting the mode of {}", shown.display()))?,
    }
    Ok(())
}

fn split(path: &str) -> anyhow::Result<(&str, &str)> {
    match path.rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() => {
            Ok((if parent.is_empty() { "/" } else { parent }, name))
        }
        _ => anyhow::bail!("{path:?} has no parent directory"),
    }
}

/// What [`create`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub on_btrfs: bool,
    pub steps: Vec<Step>,
}

/// Query, diff and every step: the whole layout, idempotent.
pub fn create(root: &RootDir, layout: &Layout) -> anyhow::Result<Report> {
    let facts = query(root, layout)?;
    let steps = steps(&facts, layout);
    for s in &steps {
        apply(root, s)?;
    }
    Ok(Report {
        on_btrfs: facts.btrfs,
        steps,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout {
            root: "/var/lib/op-dbus".into(),
            subvolumes: [
                ("@cache".to_string(), Some("zstd".to_string())),
                ("@plugins".to_string(), None),
                ("@timing".to_string(), None),
            ]
            .into_iter()
            .collect(),
            plugins: vec!["ovs".into()],
            sockets: true,
            templates: vec!["debian-base".into()],
        }
    }

    #[test]
    fn plain_directories_when_not_btrfs_and_a_second_run_does_nothing() {
        let t = tempfile::tempdir().unwrap();
        let root = RootDir::open(t.path()).unwrap();
        if btrfs::is_btrfs(t.path()) {
            return; // subvolumes: the privileged tests
        }
        let r = create(&root, &layout()).unwrap();
        assert!(!r.on_btrfs);
        assert!(r
            .steps
            .iter()
            .all(|s| !matches!(s, Step::CreateSubvolume { .. })));
        for d in [
            "@cache",
            "@timing",
            "@plugins/ovs/state",
            "@templates/debian-base",
        ] {
            assert!(t.path().join("var/lib/op-dbus").join(d).is_dir(), "{d}");
        }
        let toml =
            std::fs::read_to_string(t.path().join("var/lib/op-dbus/@plugins/ovs/plugin.toml"))
                .unwrap();
        assert!(toml.contains("name = \"ovs\""), "{toml}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(t.path().join("var/lib/op-dbus/sockets"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, SOCKETS_MODE);
        assert!(t.path().join("var/lib/op-dbus/sockets/api").is_dir());
        assert_eq!(create(&root, &layout()).unwrap().steps, Vec::new());
    }

    #[test]
    fn steps_create_only_what_is_missing() {
        let l = layout();
        let mut facts = Facts {
            btrfs: true,
            ..Facts::default()
        };
        for (p, _) in wants(&l) {
            facts.paths.insert(p, Kind::Directory);
        }
        facts.sockets_mode = Some(0o755);
        facts
            .paths
            .insert("/var/lib/op-dbus/@cache".into(), Kind::Missing);
        assert_eq!(
            steps(&facts, &l),
            vec![
                Step::CreateSubvolume {
                    path: "/var/lib/op-dbus/@cache".into(),
                    compression: Some("zstd".into())
                },
                Step::SetMode {
                    path: "/var/lib/op-dbus/sockets".into(),
                    mode: SOCKETS_MODE
                }
            ]
        );
    }

    #[test]
    fn names_that_leave_their_parent_are_refused() {
        let mut l = layout();
        l.plugins.push("../../etc".into());
        assert!(check(&l).is_err());
    }
}
