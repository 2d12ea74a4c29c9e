//! netmaker plugin: `plugins.netmaker`. Writes the enrollment unit
//! (`netmaker-enroll.service`: `netclient join` at a container's first
//! boot, then it disables itself) and the join key (0600, root) into each
//! template it names, below `<layout>/@templates/NAME/rootfs`, and joins the
//! host itself when `netclient` is on PATH. Without netclient the host part
//! is reported as not applied on this host. The key is a secret: it shows
//! only as a fingerprint and is read from its file at apply.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::engine::secret::{fingerprint, redact_keys};
use crate::engine::{ActionResult, Context, Plugin, PluginAction};
use opdbus_common::containers::btrfs;
use opdbus_common::rootfs::RootDir;
use opdbus_state::coverage::Unapplied;
use opdbus_state::State;

pub const PLUGIN: &str = "netmaker";
/// Where the unit, its enablement and the key go inside a template's rootfs.
pub const UNIT_PATH: &str = "/etc/systemd/system/netmaker-enroll.service";
pub const WANTS_PATH: &str = "/etc/systemd/system/multi-user.target.wants/netmaker-enroll.service";
pub const KEY_PATH: &str = "/etc/netmaker/join-key";
const UNIT_MODE: u32 = 0o644;
const KEY_MODE: u32 = 0o600;

/// The enrollment unit for `network`.
pub fn unit_text(network: Option<&str>) -> String {
    let what = match network {
        Some(n) => format!("the Netmaker network {n}"),
        None => "Netmaker".to_string(),
    };
    format!(
        "# Written by op-dbus-agent (plugins.netmaker). Joins this container to\n\
         # {what} at its first boot, then removes the key and disables itself.\n\
         [Unit]\n\
         Description=Join {what} (op-dbus)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         ConditionPathExists={KEY_PATH}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart=/bin/sh -c 'exec netclient join -t \"$$(cat {KEY_PATH})\"'\n\
         ExecStartPost=/bin/rm -f {KEY_PATH}\n\
         ExecStartPost=/bin/systemctl disable netmaker-enroll.service\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// One template the key and unit go into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateWant {
    pub name: String,
    /// The template's rootfs on the managed system.
    pub rootfs: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// The host's file holding the join key (never the key).
    pub key_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub unit: String,
    /// Sorted by name.
    pub templates: Vec<TemplateWant>,
    /// The host joins too (when netclient is on PATH).
    pub host: bool,
}

/// The key file in a template: its fingerprint, owner and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyNow {
    pub fingerprint: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateNow {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyNow>,
    /// Target of the multi-user.target.wants link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wants: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNow {
    /// `netclient` found on PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netclient: Option<String>,
    /// `netclient list` names the network.
    pub joined: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// Fingerprint of the host's join key.
    pub key: String,
    /// Owner the key files get: root when the agent runs as root.
    pub owner: (u32, u32),
    pub templates: Vec<TemplateNow>,
    pub host: HostNow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    WriteUnit {
        template: String,
        rootfs: String,
        content: String,
    },
    EnableUnit {
        template: String,
        rootfs: String,
    },
    /// Copies the host's key file into the template (0600); `key` is the
    /// key's fingerprint, checked again when it is written.
    InstallKey {
        template: String,
        rootfs: String,
        key_file: String,
        key: String,
    },
    /// `netclient join` on the host.
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        key_file: String,
        key: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WriteUnit { template, .. } => {
                write!(f, "write {UNIT_PATH} into template {template}")
            }
            Action::EnableUnit { template, .. } => {
                write!(f, "enable netmaker-enroll.service in template {template}")
            }
            Action::InstallKey { template, key, .. } => write!(
                f,
                "install the Netmaker join key ({key}) as {KEY_PATH} (0600) in template {template}"
            ),
            Action::Join { network, key, .. } => match network {
                Some(n) => write!(f, "join this host to the Netmaker network {n} (key {key})"),
                None => write!(f, "join this host to Netmaker (key {key})"),
            },
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::WriteUnit { .. } => "write-unit",
            Action::EnableUnit { .. } => "enable-unit",
            Action::InstallKey { .. } => "install-key",
            Action::Join { .. } => "join",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::WriteUnit { template, .. }
            | Action::EnableUnit { template, .. }
            | Action::InstallKey { template, .. } => format!("template:{template}"),
            Action::Join { network, .. } => {
                format!("netmaker:{}", network.as_deref().unwrap_or("host"))
            }
        }
    }
}

/// Default key file of a network: seed 001's `@plugins/netmaker/enrollment-keys`.
pub fn default_key_file(layout: &str, network: &str) -> String {
    format!(
        "{}/@plugins/netmaker/enrollment-keys/{network}",
        layout.trim_end_matches('/')
    )
}

pub fn desired_of(state: &State) -> anyhow::Result<Option<Desired>> {
    let Some(nm) = state.plugins.netmaker.as_ref().filter(|n| n.enabled) else {
        return Ok(None);
    };
    let layout = state.plugins.opdbus.clone().unwrap_or_default();
    let key_file = match (&nm.join_key_file, &nm.network) {
        (Some(f), _) => f.clone(),
        (None, Some(n)) => default_key_file(&layout.root, n),
        (None, None) => anyhow::bail!(
            "/plugins/netmaker: enabled without join_key_file or network; \
             name the file that holds the enrollment key"
        ),
    };
    let mut names: Vec<String> = nm.templates.clone();
    names.extend(
        layout
            .templates
            .iter()
            .filter(|(_, t)| t.netmaker)
            .map(|(n, _)| n.clone()),
    );
    names.sort();
    names.dedup();
    let paths = opdbus_common::containers::Paths::new(&layout.root, "/var/lib/lxc");
    let mut templates = Vec::new();
    for name in names {
        opdbus_common::containers::validate_name("template", &name)
            .with_context(|| "/plugins/netmaker/templates".to_string())?;
        templates.push(TemplateWant {
            rootfs: paths.template(&name).join("rootfs").display().to_string(),
            name,
        });
    }
    Ok(Some(Desired {
        key_file,
        network: nm.network.clone(),
        unit: unit_text(nm.network.as_deref()),
        templates,
        host: true,
    }))
}

/// The key in the host's file, trimmed; an error says where to put it.
fn read_key(ctx: &Context, key_file: &str) -> anyhow::Result<String> {
    let root =
        RootDir::open(&ctx.root).with_context(|| format!("opening {}", ctx.root.display()))?;
    let text = match root.read_to_string(key_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "the Netmaker join key file {key_file} does not exist: write the network's \
             enrollment key there (mode 0600) and apply again"
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {key_file}")),
    };
    let key = text.trim().to_string();
    anyhow::ensure!(
        !key.is_empty() && !key.contains(char::is_whitespace),
        "{key_file} must hold one Netmaker enrollment key (one word, no spaces)"
    );
    Ok(key)
}

fn rootfs_dir(ctx: &Context, t: &TemplateWant) -> anyhow::Result<RootDir> {
    let path = ctx.host_path(&t.rootfs);
    RootDir::open(&path).with_context(|| {
        format!(
            "template {} has no rootfs at {}: make the template first \
             (op-dbus-agent template create, or the installer's debian-base)",
            t.name,
            path.display()
        )
    })
}

fn query_template(ctx: &Context, t: &TemplateWant) -> anyhow::Result<TemplateNow> {
    let dir = rootfs_dir(ctx, t)?;
    let missing = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let unit = match dir.read_to_string(UNIT_PATH) {
        Ok(s) => Some(s),
        Err(e) if missing(&e) => None,
        Err(e) => return Err(e).with_context(|| format!("reading {UNIT_PATH} of {}", t.name)),
    };
    let unit_mode = dir.owner_of(UNIT_PATH).ok().map(|(_, _, m)| m & 0o7777);
    let key = match dir.read_to_string(KEY_PATH) {
        Ok(s) => {
            let (uid, gid, mode) = dir
                .owner_of(KEY_PATH)
                .with_context(|| format!("reading the owner of {KEY_PATH} in {}", t.name))?;
            Some(KeyNow {
                fingerprint: fingerprint(s.trim()),
                uid,
                gid,
                mode: mode & 0o7777,
            })
        }
        Err(e) if missing(&e) => None,
        Err(e) => return Err(e).with_context(|| format!("reading {KEY_PATH} of {}", t.name)),
    };
    let wants = std::fs::read_link(dir.display_path(WANTS_PATH))
        .ok()
        .map(|p| p.display().to_string());
    Ok(TemplateNow {
        name: t.name.clone(),
        unit,
        unit_mode,
        key,
        wants,
    })
}

/// `netclient` on the agent's PATH.
fn find_netclient() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("netclient"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether `netclient list` names `network` (any network when `None`).
fn joined(netclient: &Path, network: Option<&str>) -> bool {
    let Ok(out) = std::process::Command::new(netclient).arg("list").output() else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    match network {
        Some(n) => text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .any(|w| w == n),
        None => text.contains("network"),
    }
}

/// The pure diff.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    for t in &desired.templates {
        let now = current.templates.iter().find(|c| c.name == t.name);
        if now.and_then(|n| n.unit.as_ref()) != Some(&desired.unit)
            || now.and_then(|n| n.unit_mode) != Some(UNIT_MODE)
        {
            out.push(Action::WriteUnit {
                template: t.name.clone(),
                rootfs: t.rootfs.clone(),
                content: desired.unit.clone(),
            });
        }
        if now.and_then(|n| n.wants.as_deref()) != Some(UNIT_PATH) {
            out.push(Action::EnableUnit {
                template: t.name.clone(),
                rootfs: t.rootfs.clone(),
            });
        }
        let key_ok = now.and_then(|n| n.key.as_ref()).is_some_and(|k| {
            k.fingerprint == current.key && k.mode == KEY_MODE && (k.uid, k.gid) == current.owner
        });
        if !key_ok {
            out.push(Action::InstallKey {
                template: t.name.clone(),
                rootfs: t.rootfs.clone(),
                key_file: desired.key_file.clone(),
                key: current.key.clone(),
            });
        }
    }
    if desired.host && current.host.netclient.is_some() && !current.host.joined {
        out.push(Action::Join {
            network: desired.network.clone(),
            key_file: desired.key_file.clone(),
            key: current.key.clone(),
        });
    }
    out
}

fn owner() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

/// Runs `f` on the template's rootfs, made writable for it when it is a
/// read-only btrfs subvolume (as templates are) and read-only again after.
fn in_rootfs<T>(
    ctx: &Context,
    template: &str,
    rootfs: &str,
    f: impl FnOnce(&RootDir) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let path = ctx.host_path(rootfs);
    let read_only = btrfs::subvolume(&path).is_some_and(|s| s.read_only);
    if read_only {
        btrfs::set_read_only(&path, false)
            .with_context(|| format!("making template {template}'s rootfs writable"))?;
    }
    let dir = RootDir::open(&path).with_context(|| format!("opening {}", path.display()));
    let r = dir.and_then(|d| f(&d));
    if read_only {
        btrfs::set_read_only(&path, true)
            .with_context(|| format!("making template {template}'s rootfs read-only again"))?;
    }
    r
}

/// `netclient join -t KEY`; the key never reaches the error (netclient's
/// own output is scrubbed of it).
fn join(netclient: &Path, key: &str, network: Option<&str>) -> anyhow::Result<String> {
    let out = std::process::Command::new(netclient)
        .args(["join", "-t", key])
        .output()
        .with_context(|| format!("running {}", netclient.display()))?;
    let scrub = |b: &[u8]| String::from_utf8_lossy(b).replace(key, &fingerprint(key));
    if !out.status.success() {
        let err = scrub(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        anyhow::bail!(
            "netclient join {} failed ({}): {}",
            network.unwrap_or(""),
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(format!("joined via {}", netclient.display()))
}

fn apply_one(ctx: &Context, a: &Action) -> ActionResult {
    let (uid, gid) = owner();
    match a {
        Action::WriteUnit {
            template,
            rootfs,
            content,
        } => {
            in_rootfs(ctx, template, rootfs, |dir| {
                dir.write_atomic(UNIT_PATH, content.as_bytes(), UNIT_MODE, Some((uid, gid)))
                    .with_context(|| format!("writing {UNIT_PATH} in template {template}"))
            })?;
            Ok(None)
        }
        Action::EnableUnit { template, rootfs } => {
            in_rootfs(ctx, template, rootfs, |dir| {
                let wants = Path::new(WANTS_PATH).parent().unwrap_or(Path::new("/"));
                dir.create_dir_all(wants, 0o755)?;
                dir.symlink(UNIT_PATH, WANTS_PATH)
                    .with_context(|| format!("linking {WANTS_PATH} in template {template}"))
            })?;
            Ok(None)
        }
        Action::InstallKey {
            template,
            rootfs,
            key_file,
            key: fp,
        } => {
            let key = read_key(ctx, key_file)?;
            if fingerprint(&key) != *fp {
                return Err(anyhow::anyhow!(
                    "{key_file} changed since the diff (now {}); apply again",
                    fingerprint(&key)
                )
                .into());
            }
            in_rootfs(ctx, template, rootfs, |dir| {
                dir.create_dir_all("/etc/netmaker", 0o700)?;
                dir.write_atomic(
                    KEY_PATH,
                    format!("{key}\n").as_bytes(),
                    KEY_MODE,
                    Some((uid, gid)),
                )
                .with_context(|| format!("writing {KEY_PATH} in template {template}"))
            })?;
            Ok(Some(format!("key {fp}")))
        }
        Action::Join {
            network, key_file, ..
        } => {
            let netclient = find_netclient()
                .context("netclient is no longer on PATH; install it and apply again")?;
            let key = read_key(ctx, key_file)?;
            Ok(Some(join(&netclient, &key, network.as_deref())?))
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct NetmakerPlugin;

impl Plugin for NetmakerPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = ();

    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        desired_of(state)
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let key = fingerprint(&read_key(ctx, &desired.key_file)?);
        let mut templates = Vec::new();
        for t in &desired.templates {
            templates.push(query_template(ctx, t)?);
        }
        let netclient = find_netclient();
        let joined = netclient
            .as_deref()
            .is_some_and(|n| joined(n, desired.network.as_deref()));
        Ok(Current {
            key,
            owner: owner(),
            templates,
            host: HostNow {
                netclient: netclient.map(|p| p.display().to_string()),
                joined,
            },
        })
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        actions.iter().map(|a| apply_one(ctx, a)).collect()
    }

    fn not_applied(&self, current: &Current, desired: &Desired) -> Vec<Unapplied> {
        if !desired.host || current.host.netclient.is_some() {
            return Vec::new();
        }
        let net = desired
            .network
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        vec![Unapplied::on_host(
            "/plugins/netmaker",
            PLUGIN,
            format!(
                "netclient is not on PATH, so this host did not join the Netmaker network{net} \
                 (the templates got the key and the enrollment unit); install Netmaker's \
                 netclient on the host and apply again"
            ),
        )]
    }

    fn redact(&self, v: &mut serde_json::Value) {
        redact_keys(v, &["join_key"]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn desired() -> Desired {
        Desired {
            key_file: "/etc/op-dbus/netmaker.key".into(),
            network: Some("mesh".into()),
            unit: unit_text(Some("mesh")),
            templates: vec![TemplateWant {
                name: "debian-base".into(),
                rootfs: "/var/lib/op-dbus/@templates/debian-base/rootfs".into(),
            }],
            host: true,
        }
    }

    fn current(templates: Vec<TemplateNow>, netclient: bool, joined: bool) -> Current {
        Current {
            key: fingerprint("k"),
            owner: (0, 0),
            templates,
            host: HostNow {
                netclient: netclient.then(|| "/usr/bin/netclient".into()),
                joined,
            },
        }
    }

    #[test]
    fn a_fresh_template_gets_unit_link_and_key_and_a_done_one_nothing() {
        let d = desired();
        let fresh = current(vec![], false, false);
        let kinds: Vec<&str> = diff(&fresh, &d).iter().map(|a| a.kind()).collect();
        assert_eq!(kinds, ["write-unit", "enable-unit", "install-key"]);
        let done = TemplateNow {
            name: "debian-base".into(),
            unit: Some(d.unit.clone()),
            unit_mode: Some(0o644),
            key: Some(KeyNow {
                fingerprint: fingerprint("k"),
                uid: 0,
                gid: 0,
                mode: 0o600,
            }),
            wants: Some(UNIT_PATH.into()),
        };
        assert_eq!(diff(&current(vec![done.clone()], false, false), &d), []);
        // A key readable by others, or another key, is drift.
        let mut loose = done.clone();
        loose.key.as_mut().unwrap().mode = 0o644;
        assert_eq!(
            diff(&current(vec![loose], false, false), &d)[0].kind(),
            "install-key"
        );
        // netclient on PATH and not joined: the host joins.
        let a = diff(&current(vec![done.clone()], true, false), &d);
        assert_eq!(a.len(), 1);
        assert_eq!(
            a[0].to_string(),
            format!(
                "join this host to the Netmaker network mesh (key {})",
                fingerprint("k")
            )
        );
        assert_eq!(diff(&current(vec![done], true, true), &d), []);
    }

    #[test]
    fn the_unit_runs_netclient_once_and_only_with_a_key() {
        let u = unit_text(Some("mesh"));
        assert!(u.contains("ConditionPathExists=/etc/netmaker/join-key\n"));
        assert!(u.contains(
            "ExecStart=/bin/sh -c 'exec netclient join -t \"$$(cat /etc/netmaker/join-key)\"'\n"
        ));
        assert!(u.contains("ExecStartPost=/bin/systemctl disable netmaker-enroll.service\n"));
        assert!(u.contains("WantedBy=multi-user.target\n"));
    }

    #[test]
    fn without_netclient_the_host_part_is_not_applied() {
        let p = NetmakerPlugin;
        let d = desired();
        let u = p.not_applied(&current(vec![], false, false), &d);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].pointer, "/plugins/netmaker");
        assert!(u[0].on_host);
        assert!(u[0]
            .to_string()
            .starts_with("/plugins/netmaker: not applied on this host; netclient is not on PATH"));
        assert_eq!(p.not_applied(&current(vec![], true, false), &d), []);
    }
}
