//! Templates: `<layout>/@templates/NAME`, a read-only subvolume with a
//! read-only `rootfs` subvolume (what containers snapshot) and `config/`.
//! [`create_with`] fills one from a directory (reflink copy where possible),
//! a tarball or the caller's own filler (the installer's verified payload
//! extractor), strips what only a host needs ([`super::strip`]), lets the
//! caller seed defaults, and removes what it made when a step fails.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::{btrfs, strip, validate_name, Paths};
use crate::rootfs::RootDir;
use crate::Task;

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

/// Fills an empty rootfs directory.
pub type Filler<'a> = Box<dyn FnOnce(&Path) -> anyhow::Result<()> + 'a>;

/// Where a template's root filesystem comes from.
pub enum Source<'a> {
    /// A directory, copied with reflinks where the filesystem allows.
    Dir(PathBuf),
    /// A tarball (any compression tar knows).
    Tarball(PathBuf),
    /// The caller fills the (empty) rootfs directory it is given.
    Fill { what: String, fill: Filler<'a> },
    /// A writable btrfs snapshot of `subvolume` (on the same filesystem as
    /// the layout; [`btrfs::BtrfsError::CrossDevice`] otherwise) becomes
    /// the rootfs: no data is copied.
    Snapshot { what: String, subvolume: PathBuf },
}

impl Source<'_> {
    /// A directory or a tarball, by what `from` is.
    pub fn from_path(from: &Path) -> anyhow::Result<Source<'static>> {
        let meta = std::fs::metadata(from)
            .with_context(|| format!("reading the template source {}", from.display()))?;
        Ok(if meta.is_dir() {
            Source::Dir(from.to_path_buf())
        } else {
            Source::Tarball(from.to_path_buf())
        })
    }

    fn describe(&self) -> String {
        match self {
            Source::Dir(p) | Source::Tarball(p) => p.display().to_string(),
            Source::Fill { what, .. } | Source::Snapshot { what, .. } => what.clone(),
        }
    }
}

/// What seeds a template's rootfs after it is filled and stripped, before
/// it turns read-only (the installer writes the state's timezone, locale
/// and keys).
pub type Seed<'a> = &'a dyn Fn(&RootDir) -> anyhow::Result<()>;

/// Options of [`create_with`].
#[derive(Default)]
pub struct Options<'a> {
    /// Called with the filled, stripped rootfs.
    pub seed: Option<Seed<'a>>,
    /// Lines for `config/lxc.conf` (copied into each container's config).
    pub lxc_lines: Option<String>,
}

/// What [`create_with`] made.
#[derive(Debug, Clone)]
pub struct Created {
    pub template: Template,
    pub strip: strip::StripReport,
}

/// Makes template `name` from `from` (a directory or a tarball), see
/// [`create_with`].
pub fn create(paths: &Paths, name: &str, from: &Path) -> anyhow::Result<Template> {
    Ok(create_with(paths, name, Source::from_path(from)?, Options::default())?.template)
}

/// Makes template `name`: fills its rootfs from `source`, strips the
/// kernel, bootloaders and firmware and the host's identity, seeds it,
/// writes `config/`, and makes both subvolumes read-only. An empty template
/// of that name (the installer's placeholder) is filled; a filled one is an
/// error.
pub fn create_with(
    paths: &Paths,
    name: &str,
    source: Source<'_>,
    opts: Options<'_>,
) -> anyhow::Result<Created> {
    validate_name("template", name)?;
    let templates = paths.templates();
    btrfs::require_btrfs(&templates, "the layout (--layout)")?;
    let path = paths.template(name);
    let mut made_outer = false;
    match btrfs::subvolume(&path) {
        Some(_) if btrfs::subvolume(&path.join("rootfs")).is_some() => {
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
    match fill(&path, &rootfs, name, source, &opts) {
        Ok(strip) => Ok(Created {
            template: read(&path, name),
            strip,
        }),
        Err(e) => {
            if btrfs::subvolume(&rootfs).is_some() {
                let _ = btrfs::set_read_only(&rootfs, false);
                let _ = btrfs::delete(&rootfs);
            }
            let _ = std::fs::remove_dir_all(path.join("config"));
            if made_outer {
                let _ = btrfs::delete(&path);
            }
            Err(e)
        }
    }
}

fn fill(
    path: &Path,
    rootfs: &Path,
    name: &str,
    source: Source<'_>,
    opts: &Options<'_>,
) -> anyhow::Result<strip::StripReport> {
    let what = source.describe();
    match &source {
        Source::Snapshot { subvolume, .. } => btrfs::snapshot(subvolume, rootfs)?,
        _ => btrfs::create(rootfs)?,
    }
    match source {
        Source::Dir(from) => {
            let mut src = from.as_os_str().to_owned();
            src.push("/.");
            // -x: another filesystem or subvolume mounted or nested in the
            // tree (/proc, a template inside a root) is not copied.
            Task::new("cp")
                .args(["-a", "-x", "--reflink=auto", "--"])
                .arg(&src)
                .arg(rootfs)
                .run()
                .with_context(|| format!("copying {} into template {name:?}", from.display()))?;
        }
        Source::Tarball(from) => {
            Task::new("tar")
                .args([
                    "-x",
                    "-p",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    "-f",
                ])
                .arg(&from)
                .arg("-C")
                .arg(rootfs)
                .run()
                .with_context(|| format!("extracting {} into template {name:?}", from.display()))?;
        }
        Source::Fill { what, fill } => {
            fill(rootfs).with_context(|| format!("filling template {name:?} from {what}"))?
        }
        Source::Snapshot { .. } => {}
    }
    let root = RootDir::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    let stripped = strip::strip_host_parts(&root)
        .with_context(|| format!("stripping the host-only parts of template {name:?}"))?;
    strip::reset_identity(&root)
        .with_context(|| format!("resetting the machine identity of template {name:?}"))?;
    if let Some(seed) = opts.seed {
        seed(&root).with_context(|| format!("seeding template {name:?}"))?;
    }
    let config = path.join("config");
    std::fs::create_dir_all(&config).with_context(|| format!("creating {}", config.display()))?;
    let meta = Meta {
        name: name.to_string(),
        source: what,
    };
    std::fs::write(
        config.join("template.json"),
        serde_json::to_vec_pretty(&meta)?,
    )
    .with_context(|| format!("writing {}/template.json", config.display()))?;
    if let Some(lines) = &opts.lxc_lines {
        std::fs::write(config.join("lxc.conf"), lines)
            .with_context(|| format!("writing {}/lxc.conf", config.display()))?;
    }
    btrfs::set_read_only(rootfs, true)?;
    btrfs::set_read_only(path, true)?;
    Ok(stripped)
}
