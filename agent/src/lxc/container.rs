//! Containers: create (snapshot the template's rootfs, write the config,
//! record ownership), reconfigure, read back, list and delete. Only a
//! container the ownership registry names is reconfigured or deleted, and a
//! read-only subvolume (a template's) is never deleted.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::config::{self, AppArmor, Cgroups, Spec};
use super::{btrfs, idmap, runner, template, validate_name, Paths, OWNER_KIND, OWNER_PLUGIN};
use crate::engine::ownership::Ownership;
use opdbus_common::rootfs::RootDir;

/// Running or not, as LXC says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Stopped,
}

/// One container as `container list` shows it and the plugin compares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub status: Status,
    /// Created by op-dbus (in the ownership registry).
    pub owned: bool,
    #[serde(flatten)]
    pub config: config::Parsed,
    /// The rootfs subvolume; its `parent_uuid` is the template's rootfs UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subvolume: Option<btrfs::Subvolume>,
}

fn config_path(paths: &Paths, name: &str) -> PathBuf {
    paths.container(name).join("config")
}

/// The container `name`, or `None` when `<lxc-path>/NAME/config` is missing.
pub fn read(paths: &Paths, owners: &Ownership, name: &str) -> anyhow::Result<Option<Container>> {
    let cfg = config_path(paths, name);
    let text = match std::fs::read_to_string(&cfg) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", cfg.display())),
    };
    let parsed = config::parse(&text);
    let rootfs = parsed
        .rootfs
        .clone()
        .unwrap_or_else(|| paths.container(name).join("rootfs"));
    Ok(Some(Container {
        name: name.to_string(),
        status: runner::status(paths, name)?,
        owned: is_owned(owners, name)?,
        subvolume: btrfs::subvolume(&rootfs),
        config: parsed,
    }))
}

pub fn is_owned(owners: &Ownership, name: &str) -> anyhow::Result<bool> {
    Ok(owners
        .owned(OWNER_PLUGIN, OWNER_KIND)?
        .iter()
        .any(|o| o.id == name))
}

/// Every container under the lxc path (a directory with a `config`).
pub fn list(paths: &Paths, owners: &Ownership) -> anyhow::Result<Vec<Container>> {
    let dir = &paths.lxc_path;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if let Some(c) = read(paths, owners, &n)? {
            out.push(c);
        }
    }
    Ok(out)
}

fn write_config(paths: &Paths, spec: &Spec, extra: &str) -> anyhow::Result<()> {
    let rootfs = paths.container(&spec.name).join("rootfs");
    let text = config::render(spec, &rootfs, Cgroups::detect(), AppArmor::detect(), extra);
    let root = RootDir::open(&paths.lxc_path)
        .with_context(|| format!("opening {}", paths.lxc_path.display()))?;
    root.write_atomic(
        format!("/{}/config", spec.name),
        text.as_bytes(),
        0o640,
        None,
    )
    .with_context(|| format!("writing {}", config_path(paths, &spec.name).display()))
}

fn check(spec: &Spec) -> anyhow::Result<()> {
    validate_name("container", &spec.name)?;
    validate_name("template", &spec.template)?;
    if let Some(n) = &spec.network {
        n.validate()?;
    }
    if spec.cpus == Some(0) {
        anyhow::bail!("--cpus 0: a container needs at least one CPU");
    }
    Ok(())
}

/// Creates the container: a writable snapshot of the template's rootfs at
/// `<lxc-path>/NAME/rootfs` and the config next to it; records it as
/// op-dbus's. An existing name is an error; a failed step removes what this
/// call made.
pub fn create(paths: &Paths, owners: &Ownership, spec: &Spec) -> anyhow::Result<Container> {
    check(spec)?;
    let tpl = template::get(paths, &spec.template)?;
    anyhow::ensure!(
        tpl.usable(),
        "template {:?} at {} has no rootfs subvolume yet; fill it with `op-dbus-agent template create {} --from DIR|TARBALL`",
        tpl.name,
        tpl.path.display(),
        tpl.name
    );
    let dir = paths.container(&spec.name);
    if dir.exists() {
        anyhow::bail!(
            "container {:?} already exists ({}); pick another name, or delete it first",
            spec.name,
            dir.display()
        );
    }
    std::fs::create_dir_all(&paths.lxc_path)
        .with_context(|| format!("creating {}", paths.lxc_path.display()))?;
    btrfs::require_btrfs(&paths.lxc_path, "the containers (--lxc-path)")?;
    let extra = tpl.lxc_lines()?;
    if spec.unprivileged {
        idmap::ensure(&paths.etc, owners)?;
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let rootfs = dir.join("rootfs");
    let made = btrfs::snapshot(&tpl.rootfs_path(), &rootfs)
        .map_err(anyhow::Error::from)
        .and_then(|()| owners.record(OWNER_PLUGIN, OWNER_KIND, &spec.name, None))
        .and_then(|()| write_config(paths, spec, &extra));
    if let Err(e) = made {
        if btrfs::subvolume(&rootfs).is_some() {
            let _ = btrfs::delete(&rootfs);
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = owners.forget(OWNER_PLUGIN, OWNER_KIND, &spec.name);
        return Err(e.context(format!("creating container {:?}", spec.name)));
    }
    // Just made, so stopped: no need to ask LXC (a process start per call).
    let text = std::fs::read_to_string(config_path(paths, &spec.name))
        .with_context(|| format!("reading {}", config_path(paths, &spec.name).display()))?;
    Ok(Container {
        name: spec.name.clone(),
        status: Status::Stopped,
        owned: true,
        config: config::parse(&text),
        subvolume: btrfs::subvolume(&rootfs),
    })
}

/// Rewrites the config of a container op-dbus created (takes effect at its
/// next start).
pub fn reconfigure(paths: &Paths, owners: &Ownership, spec: &Spec) -> anyhow::Result<()> {
    check(spec)?;
    refuse_unowned(owners, &spec.name, "reconfigure")?;
    let extra = template::get(paths, &spec.template)
        .ok()
        .map(|t| t.lxc_lines())
        .transpose()?
        .unwrap_or_default();
    if spec.unprivileged {
        idmap::ensure(&paths.etc, owners)?;
    }
    write_config(paths, spec, &extra)
}

fn refuse_unowned(owners: &Ownership, name: &str, verb: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        is_owned(owners, name)?,
        "container {name:?} was not created by op-dbus (not in {}); op-dbus does not {verb} it: use lxc-* tools",
        owners.path().display()
    );
    Ok(())
}

/// Stops (if running) and removes a container op-dbus created: its rootfs
/// snapshot, config and directory. Refuses any other container, and a
/// rootfs that is read-only or not a subvolume (a template, a bind).
pub fn delete(paths: &Paths, owners: &Ownership, name: &str) -> anyhow::Result<()> {
    validate_name("container", name)?;
    let Some(c) = read(paths, owners, name)? else {
        anyhow::bail!("no container {name:?} in {}", paths.lxc_path.display());
    };
    refuse_unowned(owners, name, "delete")?;
    let dir = paths.container(name);
    let rootfs = dir.join("rootfs");
    if let Some(p) = &c.config.rootfs {
        anyhow::ensure!(
            p == &rootfs,
            "container {name:?} has its rootfs at {} instead of {}; op-dbus deletes only the rootfs it made",
            p.display(),
            rootfs.display()
        );
    }
    let templates = std::fs::canonicalize(paths.templates()).unwrap_or_else(|_| paths.templates());
    if std::fs::canonicalize(&rootfs).is_ok_and(|r| r.starts_with(&templates)) {
        anyhow::bail!(
            "{} resolves into the templates; refusing to delete it",
            rootfs.display()
        );
    }
    if c.status == Status::Running {
        runner::kill(paths, name)?;
    }
    match btrfs::subvolume(&rootfs) {
        Some(sv) if sv.read_only => anyhow::bail!(
            "{} is a read-only subvolume (a template?); op-dbus does not delete it",
            rootfs.display()
        ),
        Some(_) => btrfs::delete(&rootfs)?,
        None if rootfs.exists() => anyhow::bail!(
            "{} is not a btrfs subvolume; op-dbus deletes only the snapshot it made",
            rootfs.display()
        ),
        None => {}
    }
    remove_dir_contents(&dir)?;
    owners.forget(OWNER_PLUGIN, OWNER_KIND, name)?;
    // The subordinate ids go with op-dbus's last unprivileged container.
    if c.config.unprivileged && !any_owned_unprivileged(paths, owners)? {
        idmap::release(&paths.etc, owners)?;
    }
    Ok(())
}

/// Whether a container op-dbus made is unprivileged (configs only, no LXC call).
fn any_owned_unprivileged(paths: &Paths, owners: &Ownership) -> anyhow::Result<bool> {
    for o in owners.owned(OWNER_PLUGIN, OWNER_KIND)? {
        if let Ok(text) = std::fs::read_to_string(config_path(paths, &o.id)) {
            if config::parse(&text).unprivileged {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Removes the files LXC and op-dbus keep in a container's directory
/// (config, logs) and the directory; never descends into another mount.
fn remove_dir_contents(dir: &Path) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            anyhow::bail!(
                "{} holds a directory {} op-dbus did not make; remove it by hand",
                dir.display(),
                p.display()
            );
        }
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    std::fs::remove_dir(dir).with_context(|| format!("removing {}", dir.display()))
}
