//! The container template the installer builds: `debian-base` under the
//! layout's `@templates`, from the same verified payload as the base system,
//! through the agent's own template code (`opdbus_common::containers`):
//! kernel, bootloaders and firmware stripped, the state's timezone, locale
//! and root SSH keys seeded, `/etc/opdbus/host.json` naming the host. On
//! Proxmox VE also a template tarball in `/var/lib/vz/template/cache/` for
//! `pct create`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use opdbus_common::containers::btrfs;
use opdbus_common::containers::{template, Paths};
use opdbus_common::rootfs::RootDir;
use opdbus_common::Task;
use opdbus_state::model::{Distribution, State};
use serde::Serialize;

use crate::payload::{self, ExpectedSha256};
use crate::target::{self, Root};

/// The template every install makes.
pub const DEBIAN_BASE: &str = "debian-base";
/// Where Proxmox VE looks for container templates (`local:vztmpl`).
pub const PVE_TEMPLATE_CACHE: &str = "/var/lib/vz/template/cache";
/// Where a container sees the host's `sockets/containers` folder.
pub const CONTAINER_SOCKETS: &str = "/var/lib/op-dbus/sockets/host";

/// What [`build_templates`] made.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateReport {
    pub name: String,
    /// In the installed system.
    pub path: String,
    /// Already filled (a re-install that kept the filesystem): left alone.
    pub kept: bool,
    /// Host-only packages dropped from the template.
    pub dropped: Vec<String>,
    pub seconds: f64,
    /// The Proxmox VE template tarball, in the installed system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pve_tarball: Option<String>,
}

/// The host facts a container reads from `/etc/opdbus/host.json`.
#[derive(Debug, Clone, Serialize)]
struct HostLink<'a> {
    host: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// The host's `sockets/containers`, bind-mounted here when it exists.
    sockets: &'a str,
    template: &'a str,
}

/// Where [`BaseSnapshot`] keeps the base system, in the target's root.
pub const BASE_SNAPSHOT: &str = "/.opdbus-template-base";

/// The base system as the payload laid it down, before the install made it
/// a host (identity, accounts, state, agent): a btrfs snapshot of the
/// target's root subvolume with what the payload wrote into the other
/// subvolumes mounted beneath it (`/var/log`, `/home`) copied in (reflinks
/// where the kernel allows). The container template is a snapshot of it, so
/// the payload is not extracted a second time. Deleted on drop, so it never
/// reaches the installed system, whatever fails.
pub struct BaseSnapshot {
    path: PathBuf,
}

impl BaseSnapshot {
    /// Takes it right after the base system is laid down. `None` when the
    /// root is not the root of a btrfs subvolume (then the template comes
    /// from the payload). `mounted` are the target's mount points in mount
    /// order (the root's own first); the op-dbus layout (`layout_root`,
    /// where the templates live) and what is beneath it are not copied.
    pub fn take(root: &Root, mounted: &[PathBuf], layout_root: &str) -> Result<Option<Self>> {
        let top = root.dir();
        if btrfs::subvolume(top).is_none() {
            return Ok(None);
        }
        let path = root.display_path(BASE_SNAPSHOT);
        if let Some(stale) = btrfs::subvolume(&path) {
            // An interrupted earlier run on an adopted filesystem.
            if stale.read_only {
                btrfs::set_read_only(&path, false)?;
            }
            btrfs::delete(&path)?;
        }
        btrfs::snapshot(top, &path)?;
        let snap = BaseSnapshot { path };
        let layout = Path::new(layout_root.trim_start_matches('/'));
        for mp in mounted {
            let Ok(rel) = mp.strip_prefix(top) else {
                continue;
            };
            if rel.as_os_str().is_empty() || rel.starts_with(layout) {
                continue;
            }
            let dest = snap.path.join(rel);
            // The mount point as the snapshot has it: a real directory, no
            // symlink on the way (the copy stays inside the snapshot).
            let canonical = std::fs::canonicalize(&dest)
                .with_context(|| format!("finding {} in the base snapshot", rel.display()))?;
            if canonical != dest || !dest.is_dir() {
                bail!(
                    "{} is not a plain directory in the base snapshot {}",
                    rel.display(),
                    snap.path.display()
                );
            }
            let mut src = mp.as_os_str().to_owned();
            src.push("/.");
            Task::new("cp")
                .args(["-a", "-x", "--reflink=auto", "--"])
                .arg(&src)
                .arg(&dest)
                .run()
                .with_context(|| format!("copying /{} into the base snapshot", rel.display()))?;
        }
        Ok(Some(snap))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BaseSnapshot {
    fn drop(&mut self) {
        if let Err(e) = btrfs::delete(&self.path) {
            tracing::warn!("deleting the base snapshot {}: {e}", self.path.display());
        }
    }
}

/// Builds `debian-base` in the target: a snapshot of `base_system` when given and
/// on the layout's filesystem, else from `payload` (verified against
/// `expected` again as it is read). `None` when the layout is not on btrfs
/// (templates are subvolumes; the caller says so).
pub fn build_templates(
    state: &State,
    root: &Root,
    base_system: Option<&BaseSnapshot>,
    payload: &Path,
    expected: &ExpectedSha256,
    address: Option<std::net::IpAddr>,
) -> Result<Option<TemplateReport>> {
    let b = state
        .bootstrap
        .as_ref()
        .context("an install needs a bootstrap section")?;
    let layout = state.plugins.opdbus.clone().unwrap_or_default();
    let base = layout.root.trim_end_matches('/').to_string();
    let paths = Paths::new(root.display_path(&base), root.display_path("/var/lib/lxc"));
    if !opdbus_common::containers::btrfs::is_btrfs(&paths.templates()) {
        return Ok(None);
    }
    let shown = format!("{base}/@templates/{DEBIAN_BASE}");
    let started = Instant::now();
    let existing = template::list(&paths)?
        .into_iter()
        .find(|t| t.name == DEBIAN_BASE && t.usable());
    if existing.is_some() {
        return Ok(Some(TemplateReport {
            name: DEBIAN_BASE.into(),
            path: shown,
            kept: true,
            dropped: Vec::new(),
            seconds: 0.0,
            pve_tarball: None,
        }));
    }
    let host_locale = root.display_path("/usr/lib/locale/locale-archive");
    let link = HostLink {
        host: &b.hostname,
        domain: b.domain.as_deref(),
        address: address.map(|a| a.to_string()),
        sockets: CONTAINER_SOCKETS,
        template: DEBIAN_BASE,
    };
    let seed = |r: &RootDir| -> Result<()> {
        let t = Root::open(r.path())?;
        target::write_timezone(&t, &b.timezone)?;
        target::write_locale(&t, &b.locale)?;
        // The host's compiled locales (same glibc): no locale-gen per template.
        if target::locale_needs_generation(&b.locale) && host_locale.is_file() {
            let data = std::fs::read(&host_locale)
                .with_context(|| format!("reading {}", host_locale.display()))?;
            t.write("/usr/lib/locale/locale-archive", data, 0o644)?;
        }
        target::write_root_authorized_keys(&t, &b.root_ssh_authorized_keys)?;
        t.create_dir_all("/etc/opdbus", 0o755)?;
        t.write(
            "/etc/opdbus/host.json",
            serde_json::to_vec_pretty(&link)?,
            0o644,
        )
    };
    let mut lines = String::new();
    if layout.sockets {
        lines.push_str(&format!(
            "lxc.mount.entry = {base}/sockets/containers {} none bind,create=dir,optional 0 0\n",
            CONTAINER_SOCKETS.trim_start_matches('/')
        ));
    }
    let from_payload = || template::Source::Fill {
        what: format!("the payload {}", payload.display()),
        fill: Box::new(|dir: &Path| {
            payload::extract_payload(payload, expected, dir, false)
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }),
    };
    let options = || template::Options {
        seed: Some(&seed),
        lxc_lines: Some(lines.clone()),
    };
    let made = match base_system {
        Some(base_system) => {
            let snapshot = template::Source::Snapshot {
                what: format!("the base system of the payload {}", payload.display()),
                subvolume: base_system.path().to_path_buf(),
            };
            match template::create_with(&paths, DEBIAN_BASE, snapshot, options()) {
                Err(e)
                    if matches!(
                        e.downcast_ref::<btrfs::BtrfsError>(),
                        Some(btrfs::BtrfsError::CrossDevice { .. })
                    ) =>
                {
                    // The layout is on another filesystem than the root.
                    template::create_with(&paths, DEBIAN_BASE, from_payload(), options())
                }
                other => other,
            }
        }
        None => template::create_with(&paths, DEBIAN_BASE, from_payload(), options()),
    }
    .with_context(|| format!("building the container template {shown}"))?;
    let pve_tarball = if b.distribution == Distribution::Proxmox {
        Some(write_pve_tarball(root, &made.template.rootfs_path())?)
    } else {
        None
    };
    Ok(Some(TemplateReport {
        name: DEBIAN_BASE.into(),
        path: shown,
        kept: false,
        dropped: made.strip.packages,
        seconds: started.elapsed().as_secs_f64(),
        pve_tarball,
    }))
}

/// The Debian major version of a root filesystem (`/etc/debian_version`).
fn debian_major(rootfs: &Path) -> String {
    std::fs::read_to_string(rootfs.join("etc/debian_version"))
        .ok()
        .and_then(|v| {
            v.trim()
                .split(['.', '/'])
                .next()
                .map(str::to_string)
                .filter(|m| m.chars().all(|c| c.is_ascii_digit()) && !m.is_empty())
        })
        .unwrap_or_else(|| "12".to_string())
}

/// The name Proxmox VE shows for the template (`OS-VERSION-NAME_VER_ARCH`).
pub fn pve_tarball_name(rootfs: &Path) -> String {
    format!("debian-{}-opdbus_1.0-1_amd64.tar.zst", debian_major(rootfs))
}

/// Writes `rootfs` as a zstd tarball into the target's
/// [`PVE_TEMPLATE_CACHE`] (numeric owners, xattrs, `/dev` left empty as in
/// Proxmox's own templates); returns its path in the installed system.
pub fn write_pve_tarball(root: &Root, rootfs: &Path) -> Result<String> {
    root.create_dir_all(PVE_TEMPLATE_CACHE, 0o755)?;
    let name = pve_tarball_name(rootfs);
    let abs = format!("{PVE_TEMPLATE_CACHE}/{name}");
    let dir = root.open_dir(PVE_TEMPLATE_CACHE)?;
    let (tmp_path, file) = opdbus_common::rootfs::create_temp(dir.fd(), name.as_ref(), 0o644)
        .with_context(|| format!("creating {}", root.display_path(&abs).display()))?;
    let tmp = dir.path().join(&tmp_path);
    let result = (|| -> Result<()> {
        let mut child = Command::new("tar")
            .args([
                "--create",
                "--file=-",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "--one-file-system",
                "--sparse",
                "--exclude=./dev/*",
                "-C",
            ])
            .arg(rootfs)
            .arg(".")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running tar")?;
        let mut out = child.stdout.take().context("tar's output")?;
        let mut enc = zstd::stream::Encoder::new(file, 3)?;
        std::io::copy(&mut out, &mut enc).context("compressing the template tarball")?;
        let f = enc.finish()?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        f.sync_all()?;
        let res = child.wait_with_output()?;
        anyhow::ensure!(
            res.status.success(),
            "tar of {} failed: {}",
            rootfs.display(),
            String::from_utf8_lossy(&res.stderr).trim()
        );
        Ok(())
    })();
    match result {
        Ok(()) => {
            std::fs::rename(&tmp, dir.path().join(&name))
                .with_context(|| format!("renaming into {}", root.display_path(&abs).display()))?;
            Ok(abs)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e.context(format!("writing {}", root.display_path(&abs).display())))
        }
    }
}
