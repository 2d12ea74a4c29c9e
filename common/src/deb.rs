//! Debian packages of op-dbus: what goes into `op-dbus-agent` and
//! `op-dbus-install` (binaries, units, D-Bus policy, man pages, completions,
//! state directory, maintainer scripts), staged and built with `dpkg-deb`.
//! One definition serves `op-dbus-iso package`, the ISO and the installer.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::Task;

/// Where the live system carries the agent package (the installer's default).
pub const LIVE_AGENT_PACKAGE: &str = "/usr/share/op-dbus/packages/op-dbus-agent.deb";

/// The units the agent package ships and enables.
pub const AGENT_UNITS: [&str; 2] = ["op-dbus-agent.service", "op-dbus-result.service"];

/// Shared-library dependencies measured with `dpkg-shlibdeps` on Debian 12,
/// used when `dpkg-shlibdeps` (dpkg-dev) is not installed (a live system).
const AGENT_SHLIBS_FALLBACK: &str = "libc6 (>= 2.34), libgcc-s1 (>= 4.2)";
const INSTALLER_SHLIBS_FALLBACK: &str =
    "libbtrfsutil1 (>= 5.6), libc6 (>= 2.34), libgcc-s1 (>= 4.2)";

/// One file or directory of a package.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A copy of `src` at `dest`.
    File {
        src: PathBuf,
        dest: String,
        mode: u32,
    },
    /// An (empty) directory the package owns.
    Dir { dest: String, mode: u32 },
}

/// A binary package, before it is built.
#[derive(Debug, Clone)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    pub depends: Vec<String>,
    pub recommends: Vec<String>,
    pub section: String,
    pub description: String,
    pub entries: Vec<Entry>,
    /// Maintainer scripts by name (`postinst`, `prerm`, `postrm`).
    pub scripts: Vec<(&'static str, String)>,
}

/// What the packages are made of.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `op-dbus-agent` (and `op-dbus-install` for the installer package).
    pub agent: PathBuf,
    pub installer: Option<PathBuf>,
    /// The repository's `templates/` (units, D-Bus policy, host layout).
    pub templates: PathBuf,
    /// The repository's `dist/` (man pages, completions); None leaves them out.
    pub dist: Option<PathBuf>,
    /// Debian version; the workspace version when built by op-dbus.
    pub version: String,
}

impl Inputs {
    /// `dist/` beside `templates/` when it exists (a checkout), else none.
    pub fn dist_beside(templates: &Path) -> Option<PathBuf> {
        let d = templates.parent()?.join("dist");
        d.join("man").is_dir().then_some(d)
    }
}

/// The `op-dbus-agent` package.
pub fn agent_package(inputs: &Inputs) -> Result<Package> {
    let t = &inputs.templates;
    let mut entries = vec![file(&inputs.agent, "/usr/bin/op-dbus-agent", 0o755)];
    for unit in AGENT_UNITS {
        entries.push(file(
            &t.join("systemd").join(unit),
            &format!("/lib/systemd/system/{unit}"),
            0o644,
        ));
    }
    entries.push(file(
        &t.join("dbus/org.opdbus.conf"),
        "/usr/share/dbus-1/system.d/org.opdbus.conf",
        0o644,
    ));
    entries.push(Entry::Dir {
        dest: "/var/lib/op-dbus".into(),
        mode: 0o700,
    });
    entries.push(Entry::Dir {
        dest: "/etc/op-dbus".into(),
        mode: 0o700,
    });
    if let Some(dist) = &inputs.dist {
        entries.extend(docs(dist, "op-dbus-agent")?);
    }
    Ok(Package {
        name: "op-dbus-agent".into(),
        version: inputs.version.clone(),
        architecture: architecture()?,
        depends: vec![
            shlib_depends(&[&inputs.agent], AGENT_SHLIBS_FALLBACK)?,
            "dbus".into(),
            "systemd".into(),
        ],
        recommends: vec!["btrfs-progs".into()],
        section: "admin".into(),
        description: "op-dbus agent: keeps this host equal to /etc/op-dbus/state.json\n \
             The resident agent (org.opdbus on the system bus) applies the declared\n \
             state of network, units, users, packages and storage as one\n \
             transaction and repairs drift; every change goes to a hash-chained\n \
             audit log in /var/lib/op-dbus."
            .into(),
        entries,
        scripts: vec![
            ("postinst", AGENT_POSTINST.into()),
            ("prerm", AGENT_PRERM.into()),
            ("postrm", AGENT_POSTRM.into()),
        ],
    })
}

/// The `op-dbus-install` package (needs the agent: it hands off to it).
pub fn installer_package(inputs: &Inputs) -> Result<Package> {
    let installer = inputs
        .installer
        .as_ref()
        .context("the installer package needs the op-dbus-install binary")?;
    let mut entries = vec![file(installer, "/usr/bin/op-dbus-install", 0o755)];
    entries.extend(tree(&inputs.templates, "/usr/share/op-dbus/templates")?);
    if let Some(dist) = &inputs.dist {
        entries.extend(docs(dist, "op-dbus-install")?);
    }
    Ok(Package {
        name: "op-dbus-install".into(),
        version: inputs.version.clone(),
        architecture: architecture()?,
        depends: vec![
            shlib_depends(&[installer.as_path()], INSTALLER_SHLIBS_FALLBACK)?,
            format!("op-dbus-agent (= {})", inputs.version),
            "btrfs-progs".into(),
            "e2fsprogs".into(),
            "util-linux".into(),
            "mount".into(),
            "tar".into(),
            "zstd".into(),
            "openssl".into(),
            "mmdebstrap | debootstrap".into(),
        ],
        recommends: vec!["mmdebstrap".into()],
        section: "admin".into(),
        description: "op-dbus installer: a Debian host from one state.json\n \
             Partitions, formats (btrfs subvolumes), extracts a base system, makes\n \
             it bootable (systemd-boot, GRUB) and hands the host to op-dbus-agent;\n \
             interactive (wizard) or unattended (auto)."
            .into(),
        entries,
        scripts: Vec::new(),
    })
}

fn file(src: &Path, dest: &str, mode: u32) -> Entry {
    Entry::File {
        src: src.to_path_buf(),
        dest: dest.into(),
        mode,
    }
}

/// Man pages (`BIN.1`, `BIN-*.1`, gzipped) and bash/zsh/fish completions.
fn docs(dist: &Path, bin: &str) -> Result<Vec<Entry>> {
    let man = dist.join("man");
    let mut out = Vec::new();
    let mut names: Vec<String> = fs::read_dir(&man)
        .with_context(|| format!("listing the man pages in {}", man.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n == &format!("{bin}.1") || (n.starts_with(&format!("{bin}-")) && n.ends_with(".1"))
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!(
            "no man page for {bin} in {} (run `cargo run -p opdbus-docgen`)",
            man.display()
        );
    }
    for n in names {
        out.push(file(
            &man.join(&n),
            &format!("/usr/share/man/man1/{n}"),
            0o644,
        ));
    }
    let c = dist.join("completions");
    for (src, dest) in [
        (
            c.join("bash").join(bin),
            format!("/usr/share/bash-completion/completions/{bin}"),
        ),
        (
            c.join("zsh").join(format!("_{bin}")),
            format!("/usr/share/zsh/vendor-completions/_{bin}"),
        ),
        (
            c.join("fish").join(format!("{bin}.fish")),
            format!("/usr/share/fish/vendor_completions.d/{bin}.fish"),
        ),
    ] {
        if !src.is_file() {
            bail!(
                "no completion {} (run `cargo run -p opdbus-docgen`)",
                src.display()
            );
        }
        out.push(file(&src, &dest, 0o644));
    }
    Ok(out)
}

/// Every file of `src` beneath `dest` (0755 executables stay executable).
fn tree(src: &Path, dest: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut items: Vec<_> = fs::read_dir(src)
        .with_context(|| format!("listing {}", src.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", src.display()))?;
    items.sort_by_key(|e| e.file_name());
    for e in items {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let d = format!("{dest}/{name}");
        let meta = fs::symlink_metadata(&path)
            .with_context(|| format!("inspecting {}", path.display()))?;
        if meta.is_dir() {
            out.extend(tree(&path, &d)?);
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            out.push(file(&path, &d, mode));
        } else {
            bail!(
                "{} is neither a file nor a directory: a package cannot carry it",
                path.display()
            );
        }
    }
    Ok(out)
}

/// `dpkg --print-architecture` (amd64 here).
fn architecture() -> Result<String> {
    Ok(Task::new("dpkg")
        .arg("--print-architecture")
        .read()
        .context("asking dpkg for the architecture")?
        .trim()
        .to_string())
}

/// `shlibs:Depends` of `binaries` from `dpkg-shlibdeps`, or `fallback` when
/// dpkg-dev is not installed.
fn shlib_depends(binaries: &[&Path], fallback: &str) -> Result<String> {
    let dir = tempfile::tempdir().context("creating a directory for dpkg-shlibdeps")?;
    fs::create_dir(dir.path().join("debian")).context("creating debian/ for dpkg-shlibdeps")?;
    fs::write(
        dir.path().join("debian/control"),
        "Source: op-dbus\n\nPackage: op-dbus\nArchitecture: any\n",
    )
    .context("writing debian/control for dpkg-shlibdeps")?;
    let mut task = Task::new("dpkg-shlibdeps")
        .current_dir(dir.path())
        .arg("-O");
    for b in binaries {
        let abs = fs::canonicalize(b).with_context(|| format!("finding {}", b.display()))?;
        task = task.arg(format!("-e{}", abs.display()));
    }
    match task.read() {
        Ok(out) => out
            .lines()
            .find_map(|l| l.strip_prefix("shlibs:Depends="))
            .map(str::to_owned)
            .context("dpkg-shlibdeps printed no shlibs:Depends line"),
        Err(crate::TaskError::Spawn { .. }) => Ok(fallback.to_owned()),
        Err(e) => Err(e).context("computing shared-library dependencies"),
    }
}

/// The package's file name: `NAME_VERSION_ARCH.deb`.
pub fn file_name(p: &Package) -> String {
    format!("{}_{}_{}.deb", p.name, p.version, p.architecture)
}

/// Stages `p` and builds it into `out` (a file path), owned by root.
pub fn build(p: &Package, out: &Path) -> Result<()> {
    let stage = tempfile::tempdir().context("creating the package staging directory")?;
    let root = stage.path().join("root");
    let debian = root.join("DEBIAN");
    mkdir(&debian, 0o755)?;
    let mut md5_paths = Vec::new();
    let mut size = 0u64;
    for e in &p.entries {
        match e {
            Entry::File { src, dest, mode } => {
                let to = root.join(dest.trim_start_matches('/'));
                if let Some(parent) = to.parent() {
                    mkdirs(&root, parent)?;
                }
                let data = fs::read(src)
                    .with_context(|| format!("reading {} for package {}", src.display(), p.name))?;
                size += data.len() as u64;
                fs::write(&to, &data).with_context(|| format!("staging {}", to.display()))?;
                set_mode(&to, *mode)?;
                md5_paths.push(dest.trim_start_matches('/').to_owned());
            }
            Entry::Dir { dest, mode } => {
                let to = root.join(dest.trim_start_matches('/'));
                mkdirs(&root, &to)?;
                set_mode(&to, *mode)?;
            }
        }
    }
    let md5 = if md5_paths.is_empty() {
        String::new()
    } else {
        Task::new("md5sum")
            .current_dir(&root)
            .args(&md5_paths)
            .read()
            .context("computing md5sums")?
    };
    write_mode(&debian.join("md5sums"), md5.as_bytes(), 0o644)?;
    write_mode(&debian.join("control"), control(p, size).as_bytes(), 0o644)?;
    for (name, text) in &p.scripts {
        write_mode(&debian.join(name), text.as_bytes(), 0o755)?;
    }
    Task::new("dpkg-deb")
        .args(["--root-owner-group", "-Zzstd", "--build"])
        .arg(&root)
        .arg(out)
        .run()
        .with_context(|| format!("building {} into {}", p.name, out.display()))?;
    Ok(())
}

/// Builds `p` into `dir` under its Debian file name and returns the path.
pub fn build_into(p: &Package, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(file_name(p));
    build(p, &out)?;
    Ok(out)
}

fn control(p: &Package, size: u64) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "Package: {}", p.name);
    let _ = writeln!(c, "Version: {}", p.version);
    let _ = writeln!(c, "Architecture: {}", p.architecture);
    let _ = writeln!(c, "Maintainer: op-dbus developers <op-dbus@localhost>");
    let _ = writeln!(c, "Installed-Size: {}", size.div_ceil(1024));
    if !p.depends.is_empty() {
        let _ = writeln!(c, "Depends: {}", p.depends.join(", "));
    }
    if !p.recommends.is_empty() {
        let _ = writeln!(c, "Recommends: {}", p.recommends.join(", "));
    }
    let _ = writeln!(c, "Section: {}", p.section);
    let _ = writeln!(c, "Priority: optional");
    let _ = writeln!(c, "Description: {}", p.description);
    c
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    set_mode(path, mode)
}

/// Creates `path` and its parents below `root`, each 0755 when new.
fn mkdirs(root: &Path, path: &Path) -> Result<()> {
    if path == root || path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdirs(root, parent)?;
    }
    mkdir(path, 0o755)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))
}

fn write_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, mode)
}

// Maintainer scripts: what dh_installsystemd generates, written out. They
// work without systemd running (a chroot, an installer target): enabling is
// links in /etc, start and stop only happen on a booted system.
const AGENT_POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
	mkdir -p /var/lib/op-dbus /etc/op-dbus
	chmod 0700 /var/lib/op-dbus /etc/op-dbus
fi
if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
	for unit in op-dbus-agent.service op-dbus-result.service; do
		deb-systemd-helper unmask "$unit" >/dev/null || true
		# was-enabled is true on a first install: enable; keep an operator's
		# disable on upgrades.
		if deb-systemd-helper --quiet was-enabled "$unit"; then
			deb-systemd-helper enable "$unit" >/dev/null
		else
			deb-systemd-helper update-state "$unit" >/dev/null || true
		fi
	done
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		# An upgrade restarts a running agent; a first install does not
		# start it (the installer's first boot does).
		if [ -n "$2" ]; then
			deb-systemd-invoke try-restart op-dbus-agent.service >/dev/null || true
		fi
	fi
fi
exit 0
"#;

const AGENT_PRERM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	deb-systemd-invoke stop op-dbus-agent.service >/dev/null || true
fi
exit 0
"#;

const AGENT_POSTRM: &str = r#"#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
for unit in op-dbus-agent.service op-dbus-result.service; do
	if [ "$1" = remove ] && [ -x /usr/bin/deb-systemd-helper ]; then
		deb-systemd-helper mask "$unit" >/dev/null || true
	fi
	if [ "$1" = purge ] && [ -x /usr/bin/deb-systemd-helper ]; then
		deb-systemd-helper purge "$unit" >/dev/null || true
		deb-systemd-helper unmask "$unit" >/dev/null || true
	fi
done
if [ "$1" = purge ]; then
	# The state (with password hashes) and the audit chain go with a purge.
	rm -rf /var/lib/op-dbus /etc/op-dbus
fi
exit 0
"#;
