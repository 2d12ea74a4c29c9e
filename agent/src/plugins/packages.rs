//! packages plugin: installs and removes the packages `plugins.packagekit`
//! names, through PackageKit over D-Bus when it is on the bus, else through
//! `apt-get`; every result says which path was used.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::dbus::packagekit::{filter, transaction_flag};
use crate::dbus::PackageKit;
use crate::engine::{ActionResult, Context, Plugin, PluginAction};
use opdbus_common::Task;
use opdbus_state::State;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub install: BTreeSet<String>,
    pub remove: BTreeSet<String>,
    /// `plugins.packagekit.manifest`: a root-only file of more names to
    /// install (format: [`opdbus_state::manifest`]), read by `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    /// `packagekit` or `apt`.
    pub backend: String,
    /// Installed or not, for every package the state names.
    pub installed: BTreeMap<String, bool>,
    /// The names the manifest lists, as read now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Install { package: String },
    Remove { package: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Install { package } => write!(f, "install package {package}"),
            Action::Remove { package } => write!(f, "remove package {package}"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Install { .. } => "install",
            Action::Remove { .. } => "remove",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::Install { package } | Action::Remove { package } => {
                format!("package:{package}")
            }
        }
    }
}

/// The pure diff: install what is missing, remove what is present and listed
/// under `remove`. Nothing else is touched.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let installed = |p: &String| current.installed.get(p).copied().unwrap_or(false);
    let wanted: BTreeSet<&String> = desired.install.iter().chain(&current.manifest).collect();
    let mut out: Vec<Action> = wanted
        .into_iter()
        .filter(|p| !installed(p))
        .map(|p| Action::Install { package: p.clone() })
        .collect();
    out.extend(
        desired
            .remove
            .iter()
            .filter(|p| {
                installed(p) && !desired.install.contains(*p) && !current.manifest.contains(p)
            })
            .map(|p| Action::Remove { package: p.clone() }),
    );
    out
}

pub struct PackagesPlugin;

/// The package names of the manifest at `path` (on the managed system): a
/// regular file owned by root (or by the agent's own user) that nobody else
/// may write, at most [`opdbus_state::manifest::MAX_MANIFEST_BYTES`].
pub fn read_manifest(ctx: &Context, path: &str) -> anyhow::Result<Vec<String>> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let shown = ctx.host_path(path);
    let root = opdbus_common::rootfs::RootDir::open(&ctx.root)
        .with_context(|| format!("opening {}", ctx.root.display()))?;
    let f = root.open_read(path).with_context(|| {
        format!(
            "reading the package manifest {} (plugins.packagekit.manifest)",
            shown.display()
        )
    })?;
    let md = f
        .metadata()
        .with_context(|| format!("looking at {}", shown.display()))?;
    anyhow::ensure!(
        md.is_file(),
        "the package manifest {} is not a regular file",
        shown.display()
    );
    let me = nix::unistd::geteuid().as_raw();
    anyhow::ensure!(
        (md.uid() == 0 || md.uid() == me) && md.mode() & 0o022 == 0,
        "the package manifest {} is owned by uid {} with mode {:o}: it decides what root installs, \
         so it must be owned by root and writable by nobody else (chown root {}; chmod go-w {})",
        shown.display(),
        md.uid(),
        md.mode() & 0o7777,
        shown.display(),
        shown.display()
    );
    let max = opdbus_state::manifest::MAX_MANIFEST_BYTES;
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {} (UTF-8 JSON)", shown.display()))?;
    anyhow::ensure!(
        text.len() as u64 <= max,
        "the package manifest {} is larger than {max} bytes",
        shown.display()
    );
    Ok(opdbus_state::manifest::parse(
        &text,
        &shown.display().to_string(),
    )?)
}

/// PackageKit when it owns its name (or is activatable) on the context's bus.
async fn packagekit(ctx: &Context) -> Option<PackageKit> {
    let conn = ctx.bus().await.ok()?;
    if !PackageKit::is_available(&conn).await.unwrap_or(false) {
        return None;
    }
    PackageKit::new(&conn).await.ok()
}

fn dpkg_installed(ctx: &Context) -> anyhow::Result<BTreeSet<String>> {
    let mut task = Task::new(&ctx.dpkg_query).args(["-W", "-f=${Package}\t${db:Status-Status}\n"]);
    if ctx.root != std::path::Path::new("/") {
        task = task.arg(format!(
            "--admindir={}",
            ctx.host_path("/var/lib/dpkg").display()
        ));
    }
    let text = task
        .read()
        .context("listing installed packages with dpkg-query")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, st)| *st == "installed")
        .map(|(name, _)| name.to_string())
        .collect())
}

fn apt(ctx: &Context, verb: &str, packages: &[&str]) -> anyhow::Result<()> {
    Task::new(&ctx.apt_get)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args([verb, "-y", "--no-install-recommends"])
        .args(packages)
        .run()
        .with_context(|| format!("apt-get {verb} {}", packages.join(" ")))
}

async fn pk_apply(pk: &PackageKit, install: bool, names: &[&str]) -> anyhow::Result<()> {
    let f = if install {
        filter::NOT_INSTALLED | filter::NEWEST
    } else {
        filter::INSTALLED
    };
    let found = pk.resolve(f, names).await?;
    let mut ids = Vec::new();
    for name in names {
        let id = found
            .iter()
            .find(|p| p.name() == *name)
            .map(|p| p.package_id.clone())
            .with_context(|| format!("PackageKit does not know package '{name}' (check the name and the apt sources)"))?;
        ids.push(id);
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    if install {
        pk.install(transaction_flag::ONLY_TRUSTED, &ids).await?;
    } else {
        pk.remove(transaction_flag::NONE, &ids, false, false)
            .await?;
    }
    Ok(())
}

impl Plugin for PackagesPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = ();

    fn name(&self) -> &'static str {
        "packages"
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        let Some(pk) = &state.plugins.packagekit else {
            return Ok(None);
        };
        Ok(Some(Desired {
            manifest: pk.manifest.clone(),
            install: pk
                .packages
                .iter()
                .chain(&pk.additional_packages)
                .cloned()
                .collect(),
            remove: pk.remove.iter().cloned().collect(),
        }))
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let manifest = match &desired.manifest {
            Some(m) => read_manifest(ctx, m)?,
            None => Vec::new(),
        };
        let names: Vec<&str> = desired
            .install
            .iter()
            .chain(&desired.remove)
            .chain(&manifest)
            .map(String::as_str)
            .collect();
        let mut cur = Current {
            manifest: manifest.clone(),
            ..Current::default()
        };
        if names.is_empty() {
            return Ok(cur);
        }
        let installed: BTreeSet<String> = match packagekit(ctx).await {
            Some(pk) => {
                cur.backend = "packagekit".into();
                pk.resolve(filter::INSTALLED, &names)
                    .await?
                    .iter()
                    .filter(|p| p.is_installed() || p.data().starts_with("installed"))
                    .map(|p| p.name().to_string())
                    .collect()
            }
            None => {
                cur.backend = "apt".into();
                dpkg_installed(ctx)?
            }
        };
        for n in names {
            cur.installed.insert(n.to_string(), installed.contains(n));
        }
        Ok(cur)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    /// Installs in one transaction (or one apt-get call), then removes in one.
    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        let pk = packagekit(ctx).await;
        let via = if pk.is_some() {
            "via PackageKit"
        } else {
            "via apt-get"
        };
        let pick = |install: bool| -> Vec<&str> {
            actions
                .iter()
                .filter_map(|a| match (a, install) {
                    (Action::Install { package }, true) | (Action::Remove { package }, false) => {
                        Some(package.as_str())
                    }
                    _ => None,
                })
                .collect()
        };
        let mut outcome: BTreeMap<bool, Result<(), String>> = BTreeMap::new();
        for install in [true, false] {
            let names = pick(install);
            if names.is_empty() {
                continue;
            }
            let r = match &pk {
                Some(pk) => pk_apply(pk, install, &names).await,
                None => apt(ctx, if install { "install" } else { "remove" }, &names),
            };
            outcome.insert(install, r.map_err(|e| format!("{e:#} ({via})")));
        }
        actions
            .iter()
            .map(|a| match &outcome[&matches!(a, Action::Install { .. })] {
                Ok(()) => Ok(Some(via.to_string())),
                Err(e) => Err(anyhow::anyhow!("{e}").into()),
            })
            .collect()
    }

    /// The packages installed by hand (see [`manual_packages`]), read from
    /// dpkg's and apt's databases below the root.
    async fn discover(&self, ctx: &Context) -> anyhow::Result<Option<serde_json::Value>> {
        let read = |path: &str| -> anyhow::Result<String> {
            let p = ctx.host_path(path);
            match std::fs::read_to_string(&p) {
                Ok(t) => Ok(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
            }
        };
        let status = read("/var/lib/dpkg/status")?;
        if status.is_empty() {
            return Ok(None);
        }
        let packages = manual_packages(&status, &read("/var/lib/apt/extended_states")?);
        if packages.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::json!({ "packagekit": { "packages": packages } }),
        ))
    }
}

/// The `Field: value` stanzas of a deb822 file (dpkg status, apt's
/// extended_states); continuation lines are dropped.
fn stanzas(text: &str) -> Vec<BTreeMap<&str, &str>> {
    text.split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter(|l| !l.starts_with([' ', '\t']))
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim(), v.trim()))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|m| m.contains_key("Package"))
        .collect()
}

/// What `apt-mark showmanual` lists, less the base system: installed
/// packages (dpkg `status`) that apt did not mark as installed
/// automatically (`extended_states`), without the essential ones and those
/// of priority required or important (what debootstrap installs). Sorted,
/// without architecture qualifiers.
pub fn manual_packages(status: &str, extended_states: &str) -> Vec<String> {
    let auto: BTreeSet<&str> = stanzas(extended_states)
        .iter()
        .filter(|m| m.get("Auto-Installed") == Some(&"1"))
        .filter_map(|m| m.get("Package").copied())
        .collect();
    let mut out: BTreeSet<String> = BTreeSet::new();
    for m in stanzas(status) {
        let name = m["Package"];
        let installed = m.get("Status").is_some_and(|s| s.ends_with(" installed"));
        let base = m.get("Essential") == Some(&"yes")
            || matches!(m.get("Priority"), Some(&"required") | Some(&"important"));
        if installed && !base && !auto.contains(name) {
            out.insert(name.to_string());
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn ctx(root: &std::path::Path) -> Context {
        Context::new(root.join("state")).with_root(root)
    }

    fn write(root: &std::path::Path, text: &str, mode: u32) {
        let p = root.join("root/m.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn manifest_packages_are_installed_with_the_listed_ones_and_never_removed() {
        let desired = Desired {
            install: ["vim".to_string()].into(),
            remove: ["htop".to_string()].into(),
            manifest: Some("/root/m.json".into()),
        };
        let current = Current {
            backend: "apt".into(),
            installed: [("vim", false), ("htop", true), ("pve-manager", false)]
                .into_iter()
                .map(|(n, i)| (n.to_string(), i))
                .collect(),
            manifest: vec!["pve-manager".into(), "htop".into()],
        };
        let got: Vec<String> = diff(&current, &desired)
            .iter()
            .map(|a| a.to_string())
            .collect();
        // htop is both under remove and in the manifest: installing wins.
        assert_eq!(got, ["install package pve-manager", "install package vim"]);
    }

    #[test]
    fn the_manifest_is_read_below_the_root_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let c = ctx(dir.path());
        write(
            dir.path(),
            r#"{"packages": [{"name": "pve-manager"}, "qemu-server"]}"#,
            0o600,
        );
        assert_eq!(
            read_manifest(&c, "/root/m.json").unwrap(),
            ["pve-manager", "qemu-server"]
        );
        write(dir.path(), r#"["vim"]"#, 0o666);
        let e = format!("{:#}", read_manifest(&c, "/root/m.json").unwrap_err());
        assert!(e.contains("writable by nobody else"), "{e}");
        write(dir.path(), "[\n  \"vim\",\n  \"No Such\"\n]", 0o644);
        let e = format!("{:#}", read_manifest(&c, "/root/m.json").unwrap_err());
        assert!(
            e.contains("root/m.json:3:3: \"No Such\" is not a Debian package name"),
            "{e}"
        );
        let e = format!("{:#}", read_manifest(&c, "/root/missing.json").unwrap_err());
        assert!(e.contains("plugins.packagekit.manifest"), "{e}");
    }
}
