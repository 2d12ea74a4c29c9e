//! packages plugin: writes the apt sources `plugins.packagekit.sources`
//! names, then installs and removes the packages it names, through
//! PackageKit over D-Bus when it is on the bus, else through `apt-get`;
//! every result says which path was used. Below a root other than `/` it
//! never touches the host: apt-get runs chrooted into that root.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::dbus::packagekit::{filter, status, transaction_flag, Progress};
use crate::dbus::PackageKit;
use crate::engine::{ActionResult, Context, Plugin, PluginAction, RunProgress};
use opdbus_common::Task;
use opdbus_state::model::AptSource;
use opdbus_state::State;

/// The deb822 file the plugin owns on the managed system.
pub const SOURCES_FILE: &str = "/etc/apt/sources.list.d/op-dbus.sources";
/// First line of [`SOURCES_FILE`]: only a file that starts with it is the
/// plugin's to rewrite or remove.
const SOURCES_HEADER: &str =
    "# Written by op-dbus-agent from plugins.packagekit.sources; edit the state, not this file.";
/// At most one progress line in the log per this interval (and one at 100%).
pub const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// At most one progress write of the status file per this interval.
const PROGRESS_STATUS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub install: BTreeSet<String>,
    pub remove: BTreeSet<String>,
    /// `plugins.packagekit.manifest`: a root-only file of more names to
    /// install (format: [`opdbus_state::manifest`]), read by `query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The text of [`SOURCES_FILE`] for `plugins.packagekit.sources`; `None`
    /// when the state names no source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<String>,
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
    /// [`SOURCES_FILE`] as it is now, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Writes [`SOURCES_FILE`] with `content`; the package lists are
    /// refreshed before anything is installed.
    WriteSources {
        content: String,
    },
    /// Removes the plugin's [`SOURCES_FILE`] (the state names no source now).
    RemoveSources,
    Install {
        package: String,
    },
    Remove {
        package: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WriteSources { .. } => write!(f, "write apt sources {SOURCES_FILE}"),
            Action::RemoveSources => write!(f, "remove apt sources {SOURCES_FILE}"),
            Action::Install { package } => write!(f, "install package {package}"),
            Action::Remove { package } => write!(f, "remove package {package}"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::WriteSources { .. } => "write-sources",
            Action::RemoveSources => "remove-sources",
            Action::Install { .. } => "install",
            Action::Remove { .. } => "remove",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::WriteSources { .. } | Action::RemoveSources => format!("file:{SOURCES_FILE}"),
            Action::Install { package } | Action::Remove { package } => {
                format!("package:{package}")
            }
        }
    }
}

/// The deb822 text of [`SOURCES_FILE`] for `sources`, one stanza each.
pub fn render_sources(sources: &[AptSource]) -> String {
    let mut out = format!("{SOURCES_HEADER}\n");
    for s in sources {
        out.push_str(&format!(
            "\nTypes: deb\nURIs: {}\nSuites: {}\n",
            s.uri, s.suite
        ));
        if !s.components.is_empty() {
            out.push_str(&format!("Components: {}\n", s.components.join(" ")));
        }
        if let Some(k) = &s.signed_by {
            out.push_str(&format!("Signed-By: {k}\n"));
        }
        if s.trusted {
            out.push_str("Trusted: yes\n");
        }
    }
    out
}

/// True when `text` is a sources file this plugin wrote.
fn ours(text: &str) -> bool {
    text.lines().next() == Some(SOURCES_HEADER)
}

/// The pure diff: the sources file first, then install what is missing,
/// remove what is present and listed under `remove`. Nothing else is
/// touched; a sources file of that name the plugin did not write is
/// replaced only when the state names sources, never removed.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let installed = |p: &String| current.installed.get(p).copied().unwrap_or(false);
    let wanted: BTreeSet<&String> = desired.install.iter().chain(&current.manifest).collect();
    let mut out = Vec::new();
    match (&desired.sources, &current.sources) {
        (Some(want), have) if have.as_ref() != Some(want) => out.push(Action::WriteSources {
            content: want.clone(),
        }),
        (None, Some(have)) if ours(have) => out.push(Action::RemoveSources),
        _ => {}
    }
    out.extend(
        wanted
            .into_iter()
            .filter(|p| !installed(p))
            .map(|p| Action::Install { package: p.clone() }),
    );
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

/// True when the context manages the running system itself (`--root /`).
fn on_host(ctx: &Context) -> bool {
    ctx.root == Path::new("/")
}

/// PackageKit when it owns its name (or is activatable) on the context's bus,
/// and only for the running system: PackageKit on this bus manages the host,
/// so below another root the plugin never asks it.
async fn packagekit(ctx: &Context) -> Option<PackageKit> {
    if !on_host(ctx) {
        return None;
    }
    let conn = ctx.bus().await.ok()?;
    if !PackageKit::is_available(&conn).await.unwrap_or(false) {
        return None;
    }
    PackageKit::new(&conn).await.ok()
}

fn dpkg_installed(ctx: &Context) -> anyhow::Result<BTreeSet<String>> {
    let mut task = Task::new(&ctx.dpkg_query).args(["-W", "-f=${Package}\t${db:Status-Status}\n"]);
    if !on_host(ctx) {
        let status = ctx.host_path("/var/lib/dpkg/status");
        anyhow::ensure!(
            status.is_file(),
            "{} has no dpkg database ({} is missing): --root must name an installed Debian system",
            ctx.root.display(),
            status.display()
        );
        // Reads the target's database only; nothing runs from the target.
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

/// Bind mounts of /dev, /proc and /sys into a managed root while its own
/// apt-get runs there (maintainer scripts need them); /run is left out so
/// no service of the root is started. Released in reverse order by
/// [`TargetMounts::close`], best effort on drop. The mount points are
/// opened beneath the root without following a symlink, so a root's
/// `proc -> /somewhere` cannot move a mount onto the host.
struct TargetMounts {
    mounted: Vec<PathBuf>,
}

impl TargetMounts {
    fn enter(root: &Path) -> anyhow::Result<Self> {
        use nix::mount::{mount, MsFlags};
        let dir = opdbus_common::rootfs::RootDir::open(root)
            .with_context(|| format!("opening the managed root {}", root.display()))?;
        let mut m = TargetMounts {
            mounted: Vec::new(),
        };
        for name in ["dev", "proc", "sys"] {
            let abs = format!("/{name}");
            let shown = root.join(name);
            dir.create_dir_all(&abs, 0o755)
                .with_context(|| format!("creating {}", shown.display()))?;
            let fd = dir.open_dir_nofollow(&abs).with_context(|| {
                format!(
                    "opening {} (it must be a directory, not a symlink)",
                    shown.display()
                )
            })?;
            let on = PathBuf::from(format!(
                "/proc/self/fd/{}",
                std::os::fd::AsRawFd::as_raw_fd(&fd)
            ));
            let src = Path::new("/").join(name);
            mount(
                Some(&src),
                &on,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting {} on {}", src.display(), shown.display()))?;
            m.mounted.push(shown.clone());
            // Unmounting below the target must not propagate to the host.
            mount(
                None::<&str>,
                &shown,
                None::<&str>,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("making {} a slave mount", shown.display()))?;
        }
        Ok(m)
    }

    fn close(mut self) -> anyhow::Result<()> {
        self.release()
    }

    fn release(&mut self) -> anyhow::Result<()> {
        use nix::mount::{umount2, MntFlags};
        let mut first = Ok(());
        while let Some(dir) = self.mounted.pop() {
            if let Err(e) = umount2(&dir, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
                if first.is_ok() {
                    first = Err(e).with_context(|| format!("unmounting {}", dir.display()));
                }
            }
        }
        first
    }
}

impl Drop for TargetMounts {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

/// One apt-get call on the managed system: the configured program on the
/// host, `chroot ROOT apt-get` (the root's own apt, configuration and
/// keyrings) below another root. `apt-get -o Dir=ROOT` was not used: it
/// would still read the host's apt configuration and run the host's dpkg.
fn apt(ctx: &Context, args: &[&str]) -> anyhow::Result<()> {
    let what = format!("apt-get {}", args.join(" "));
    let task = |program: &str| Task::new(program).env("DEBIAN_FRONTEND", "noninteractive");
    if on_host(ctx) {
        return task(&ctx.apt_get)
            .args(args)
            .run()
            .with_context(|| what.clone());
    }
    let program = if ctx.apt_get.starts_with('/') {
        vec![ctx.apt_get.clone()]
    } else {
        ["/usr/bin/", "/bin/"]
            .iter()
            .map(|d| format!("{d}{}", ctx.apt_get))
            .collect()
    };
    anyhow::ensure!(
        program.iter().any(|p| ctx.host_path(p).is_file()),
        "{} has no {} of its own ({} is missing): the packages plugin runs the root's apt, never the host's",
        ctx.root.display(),
        ctx.apt_get,
        ctx.host_path(&program[0]).display()
    );
    let mounts = TargetMounts::enter(&ctx.root)?;
    let shown = format!("{what} in {}", ctx.root.display());
    let run = task("chroot")
        .arg(&ctx.root)
        .arg(&ctx.apt_get)
        .args(args)
        .run()
        .with_context(|| shown.clone());
    let closed = mounts.close();
    run?;
    closed
}

fn apt_apply(ctx: &Context, install: bool, names: &[&str]) -> anyhow::Result<()> {
    let verb = if install { "install" } else { "remove" };
    let mut args = vec![verb, "-y", "--no-install-recommends"];
    args.extend_from_slice(names);
    apt(ctx, &args)
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

/// Which progress reports become log lines: the first of each operation,
/// then at most one per interval, and the one that reaches 100%.
#[derive(Debug)]
pub struct ProgressLog {
    interval: Duration,
    last: Option<(&'static str, Instant)>,
}

impl ProgressLog {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
        }
    }

    /// The line to log for `progress` arriving at `now`, if one is due.
    pub fn line(&mut self, now: Instant, progress: &Progress) -> Option<String> {
        let due = match self.last {
            Some((op, at)) if op == progress.op => {
                now.duration_since(at) >= self.interval || progress.percentage == Some(100)
            }
            _ => true,
        };
        if !due {
            return None;
        }
        self.last = Some((progress.op, now));
        Some(run_progress(progress).to_string())
    }
}

/// A PackageKit progress report as the status file shows it.
pub fn run_progress(p: &Progress) -> RunProgress {
    RunProgress {
        plugin: "packages".into(),
        operation: p.op.to_string(),
        percentage: p.percentage,
        stage: p.status.map(|s| status::name(s).to_string()),
        item: p.item.as_ref().map(|(id, st, pct)| {
            let name = id.split(';').next().unwrap_or(id);
            match pct {
                Some(pct) => format!("{name} {} {pct}%", status::name(*st)),
                None => format!("{name} {}", status::name(*st)),
            }
        }),
        updated: crate::engine::status::now(),
    }
}

/// Sends PackageKit's progress to the log (rate-limited lines) and to the
/// status file (the latest report, at most once per second) while the
/// package transactions run; [`ProgressSink::finish`] clears the status
/// file's progress.
struct ProgressSink {
    tx: tokio::sync::watch::Sender<Option<RunProgress>>,
    writer: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<ProgressLog>>,
}

impl ProgressSink {
    fn start(state_dir: &Path) -> Self {
        let (tx, mut rx) = tokio::sync::watch::channel(None::<RunProgress>);
        let dir = state_dir.to_path_buf();
        let writer = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let latest = rx.borrow_and_update().clone();
                if let Err(e) = crate::engine::status::set_progress(&dir, latest) {
                    tracing::debug!("writing package progress to the status file: {e:#}");
                }
                tokio::time::sleep(PROGRESS_STATUS_INTERVAL).await;
            }
        });
        Self {
            tx,
            writer,
            log: Arc::new(Mutex::new(ProgressLog::new(PROGRESS_LOG_INTERVAL))),
        }
    }

    fn observer(&self) -> crate::dbus::packagekit::ProgressObserver {
        let tx = self.tx.clone();
        let log = self.log.clone();
        Arc::new(move |p: &Progress| {
            let line = log
                .lock()
                .map(|mut l| l.line(Instant::now(), p))
                .unwrap_or(None);
            if let Some(line) = line {
                tracing::info!("{line}");
            }
            tx.send_replace(Some(run_progress(p)));
        })
    }

    async fn finish(self, state_dir: &Path) {
        let ProgressSink { tx, writer, .. } = self;
        drop(tx);
        writer.abort();
        let _ = writer.await;
        if let Err(e) = crate::engine::status::set_progress(state_dir, None) {
            tracing::debug!("clearing package progress in the status file: {e:#}");
        }
    }
}

/// Writes or removes [`SOURCES_FILE`] below the context's root (0644, its
/// directory opened beneath the root).
fn write_sources(ctx: &Context, content: Option<&str>) -> anyhow::Result<()> {
    let root = opdbus_common::rootfs::RootDir::open(&ctx.root)
        .with_context(|| format!("opening {}", ctx.root.display()))?;
    let shown = ctx.host_path(SOURCES_FILE);
    match content {
        Some(text) => root
            .write_atomic(SOURCES_FILE, text.as_bytes(), 0o644, Some((0, 0)))
            .with_context(|| format!("writing {}", shown.display())),
        None => root
            .remove_file(SOURCES_FILE)
            .with_context(|| format!("removing {}", shown.display())),
    }
}

fn read_sources(ctx: &Context) -> anyhow::Result<Option<String>> {
    let root = opdbus_common::rootfs::RootDir::open(&ctx.root)
        .with_context(|| format!("opening {}", ctx.root.display()))?;
    match root.read_to_string(SOURCES_FILE) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => {
            Err(e).with_context(|| format!("reading {}", ctx.host_path(SOURCES_FILE).display()))
        }
    }
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
            sources: (!pk.sources.is_empty()).then(|| render_sources(&pk.sources)),
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
            sources: read_sources(ctx)?,
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

    /// Writes the sources, refreshes the package lists when anything is
    /// installed (or the sources changed), installs in one transaction (or
    /// one apt-get call), then removes in one.
    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        let sink = ProgressSink::start(&ctx.state_dir);
        let pk = packagekit(ctx)
            .await
            .map(|pk| pk.with_progress(sink.observer()));
        let via = if pk.is_some() {
            "via PackageKit"
        } else if on_host(ctx) {
            "via apt-get"
        } else {
            "via apt-get in the root"
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
        // Sources first; a failure there fails every package action after it.
        let mut sources_result: Option<Result<(), String>> = None;
        for a in actions {
            let r = match a {
                Action::WriteSources { content } => write_sources(ctx, Some(content)),
                Action::RemoveSources => write_sources(ctx, None),
                _ => continue,
            };
            sources_result = Some(r.map_err(|e| format!("{e:#}")));
        }
        let sources_failed = sources_result
            .as_ref()
            .and_then(|r| r.as_ref().err())
            .cloned();
        let mut outcome: BTreeMap<bool, Result<(), String>> = BTreeMap::new();
        let installs = pick(true);
        let refresh = match (
            &sources_failed,
            installs.is_empty() && sources_result.is_none(),
        ) {
            (Some(e), _) => Err(format!(
                "not attempted: the apt sources were not written: {e}"
            )),
            (None, true) => Ok(()),
            (None, false) => match &pk {
                // Forced when the sources changed: the old lists are stale.
                Some(pk) => pk
                    .refresh_cache(sources_result.is_some())
                    .await
                    .map_err(anyhow::Error::from),
                None => apt(ctx, &["update"]),
            }
            .map_err(|e| format!("refreshing the package lists: {e:#} ({via})")),
        };
        // A refresh that fails (one unreachable mirror of several, as on a
        // host without a route to the Internet but with a local repository)
        // does not stop the install, as with `apt-get update`: the lists
        // that could be read are used, and an install that then fails says
        // why the lists may be stale.
        let stale = match (&refresh, &sources_failed) {
            (Err(e), None) => {
                tracing::warn!(
                    plugin = "packages",
                    "{e}; installing from the lists apt has"
                );
                Some(e.clone())
            }
            _ => None,
        };
        for install in [true, false] {
            let names = pick(install);
            if names.is_empty() {
                continue;
            }
            let r = match (&refresh, &pk) {
                (Err(e), _) if sources_failed.is_some() => Err(e.clone()),
                (_, Some(pk)) => pk_apply(pk, install, &names)
                    .await
                    .map_err(|e| format!("{e:#} ({via})")),
                (_, None) => apt_apply(ctx, install, &names).map_err(|e| format!("{e:#} ({via})")),
            };
            let r = match (r, &stale) {
                (Err(e), Some(s)) if install => Err(format!("{e}; before it, {s}")),
                (r, _) => r,
            };
            outcome.insert(install, r);
        }
        drop(pk);
        sink.finish(&ctx.state_dir).await;
        actions
            .iter()
            .map(|a| {
                let r = match a {
                    Action::WriteSources { .. } | Action::RemoveSources => {
                        sources_result.clone().unwrap_or(Ok(()))
                    }
                    Action::Install { .. } => outcome[&true].clone(),
                    Action::Remove { .. } => outcome[&false].clone(),
                };
                match r {
                    Ok(()) if matches!(a, Action::WriteSources { .. } | Action::RemoveSources) => {
                        Ok(None)
                    }
                    Ok(()) => Ok(Some(via.to_string())),
                    Err(e) => Err(anyhow::anyhow!("{e}").into()),
                }
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
            sources: None,
        };
        let current = Current {
            backend: "apt".into(),
            installed: [("vim", false), ("htop", true), ("pve-manager", false)]
                .into_iter()
                .map(|(n, i)| (n.to_string(), i))
                .collect(),
            manifest: vec!["pve-manager".into(), "htop".into()],
            sources: None,
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

    #[test]
    fn sources_render_as_deb822_and_only_our_file_is_removed() {
        let sources = vec![
            AptSource {
                uri: "file:/srv/repo".into(),
                suite: "./".into(),
                trusted: true,
                ..AptSource::default()
            },
            AptSource {
                uri: "https://deb.example.org/debian".into(),
                suite: "bookworm".into(),
                components: vec!["main".into(), "contrib".into()],
                signed_by: Some("/usr/share/keyrings/example.gpg".into()),
                ..AptSource::default()
            },
        ];
        let text = render_sources(&sources);
        assert_eq!(
            text,
            format!(
                "{SOURCES_HEADER}\n\nTypes: deb\nURIs: file:/srv/repo\nSuites: ./\nTrusted: yes\n\n\
                 Types: deb\nURIs: https://deb.example.org/debian\nSuites: bookworm\n\
                 Components: main contrib\nSigned-By: /usr/share/keyrings/example.gpg\n"
            )
        );
        let want = Desired {
            sources: Some(text.clone()),
            install: ["hello".to_string()].into(),
            ..Desired::default()
        };
        let mut cur = Current::default();
        let got: Vec<String> = diff(&cur, &want).iter().map(|a| a.to_string()).collect();
        assert_eq!(
            got,
            [
                "write apt sources /etc/apt/sources.list.d/op-dbus.sources",
                "install package hello"
            ]
        );
        cur.sources = Some(text.clone());
        cur.installed.insert("hello".into(), true);
        assert!(diff(&cur, &want).is_empty());
        // No sources in the state: our file goes, someone else's stays.
        let none = Desired::default();
        assert_eq!(diff(&cur, &none), [Action::RemoveSources]);
        cur.sources = Some("Types: deb\nURIs: http://x/\n".into());
        assert!(diff(&cur, &none).is_empty());
    }

    #[test]
    fn progress_lines_are_rate_limited_per_operation() {
        let mut log = ProgressLog::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let p = |op: &'static str, pct: u32| Progress {
            op,
            percentage: Some(pct),
            status: Some(status::INSTALL),
            item: Some(("htop;3.2.2-2;amd64;main".into(), status::DOWNLOAD, None)),
        };
        let mut lines = Vec::new();
        // 300 reports in 12 s: the first, one each 5 s, and 100%.
        for k in 0..300u64 {
            let pct = (k * 100 / 299) as u32;
            lines.extend(log.line(at(k * 40), &p("install", pct)));
        }
        assert_eq!(
            lines,
            [
                "packages install 0%, install, htop download",
                "packages install 41%, install, htop download",
                "packages install 83%, install, htop download",
                "packages install 100%, install, htop download",
            ]
        );
        // A new operation logs at once.
        assert!(log.line(at(12_001), &p("remove", 0)).is_some());
        assert!(log.line(at(12_002), &p("remove", 1)).is_none());
    }
}
