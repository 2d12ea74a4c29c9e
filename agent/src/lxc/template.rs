//! Templates: `<layout>/@templates/NAME`, a read-only subvolume with a
//! read-only `rootfs` subvolume (what containers snapshot) and `config/`.
//! `create` fills one from a directory (reflink copy where possible) or a
//! tarball, and removes what it made when a step fails.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{btrfs, validate_name, Paths};
use opdbus_common::Task;

/// One template as `template list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub path: PathBuf,
    /// The rootfs subvolume; `None` for a template not filled yet (the
    /// installer's empty `debian-base`).
    pub rootfs: Option<btrfs::Subvolume>,
    /// Where it was made from (`config/template.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Template {
    /// Whether containers can be made from it.
    pub fn usable(&self) -> bool {
        self.rootfs.is_some()
    }

    pub fn rootfs_path(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    /// The template's own LXC lines (`config/lxc.conf`), empty when none.
    pub fn lxc_lines(&self) -> anyhow::Result<String> {
        let p = self.path.join("config/lxc.conf");
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    name: String,
    source: String,
}

fn read(path: &Path, name: &str) -> Template {
    let source = std::fs::read(path.join("config/template.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
        .map(|m| m.source);
    Template {
        name: name.to_string(),
        path: path.to_path_buf(),
        rootfs: btrfs::subvolume(&path.join("rootfs")),
        source,
    }
}

/// The template `name`, or an error saying which templates exist.
pub fn get(paths: &Paths, name: &str) -> anyhow::Result<Template> {
    validate_name("template", name)?;
    let path = paths.template(name);
    if !path.is_dir() {
        let names: Vec<String> = list(paths)?.into_iter().map(|t| t.name).collect();
        anyhow::bail!(
            "no template {name:?} in {} (templates: {}); make one with `op-dbus-agent template create {name} --from DIR|TARBALL`",
            paths.templates().display(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        );
    }
    Ok(read(&path, name))
}

/// Every directory under `@templates`, by name.
pub fn list(paths: &Paths) -> anyhow::Result<Vec<Template>> {
    let dir = paths.templates();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("listing {}", dir.display()))?;
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if e.file_type().is_ok_and(|t| t.is_dir()) && validate_name("template", &name).is_ok() {
            out.push(read(&e.path(), &name));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Makes template `name` from `from`: a directory (copied with reflinks
/// where the filesystem allows) or a tarball (any compression tar knows).
/// An empty template of that name (the installer's placeholder) is filled;
/// a filled one is an error.
pub fn create(paths: &Paths, name: &str, from: &Path) -> anyhow::Result<Template> {
    validate_name("template", name)?;
    let templates = paths.templates();
    btrfs::require_btrfs(&templates, "the layout (--layout)")?;
    let meta = std::fs::metadata(from)
        .with_context(|| format!("reading the template source {}", from.display()))?;
    let path = paths.template(name);
    let mut made_outer = false;
    match btrfs::subvolume(&path) {
        Some(sv) if btrfs::subvolume(&path.join("rootfs")).is_some() => {
            let _ = sv;
            anyhow::bail!(
                "template {name:?} already exists at {}; pick another name",
                path.display()
            )
        }
        Some(sv) => {
            if sv.read_only {
                btrfs::set_read_only(&path, false)?;
            }
        }
        None if path.exists() => anyhow::bail!(
            "{} exists and is not a btrfs subvolume; remove it or pick another name",
            path.display()
        ),
        None => {
            std::fs::create_dir_all(&templates)
                .with_context(|| format!("creating {}", templates.display()))?;
            btrfs::create(&path)?;
            made_outer = true;
        }
    }
    let rootfs = path.join("rootfs");
    let result = fill(&path, &rootfs, name, from, meta.is_dir());
    if let Err(e) = result {
        if rootfs.exists() {
            let _ = btrfs::set_read_only(&rootfs, false);
            let _ = btrfs::delete(&rootfs);
        }
        if made_outer {
            let _ = std::fs::remove_dir_all(path.join("config"));
            let _ = btrfs::delete(&path);
        }
        return Err(e);
    }
    Ok(read(&path, name))
}

fn fill(path: &Path, rootfs: &Path, name: &str, from: &Path, is_dir: bool) -> anyhow::Result<()> {
    btrfs::create(rootfs)?;
    if is_dir {
        let mut src = from.as_os_str().to_owned();
        src.push("/.");
        Task::new("cp")
            .args(["-a", "--reflink=auto", "--"])
            .arg(&src)
            .arg(rootfs)
            .run()
            .with_context(|| format!("copying {} into template {name:?}", from.display()))?;
    } else {
        Task::new("tar")
            .args([
                "-x",
                "-p",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-f",
            ])
            .arg(from)
            .arg("-C")
            .arg(rootfs)
            .run()
            .with_context(|| format!("extracting {} into template {name:?}", from.display()))?;
    }
    let config = path.join("config");
    std::fs::create_dir_all(&config).with_context(|| format!("creating {}", config.display()))?;
    let meta = Meta {
        name: name.to_string(),
        source: from.display().to_string(),
    };
    std::fs::write(
        config.join("template.json"),
        serde_json::to_vec_pretty(&meta)?,
    )
    .with_context(|| format!("writing {}/template.json", config.display()))?;
    btrfs::set_read_only(rootfs, true)?;
    btrfs::set_read_only(path, true)?;
    Ok(())
}
