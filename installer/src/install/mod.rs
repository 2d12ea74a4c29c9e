//! The whole install, phase by phase: validate, plan (with the preflight
//! checks that need no write), disk, base system,
//! configuration, hand-off to the agent, bootloader, report, clean finish.
//! Every phase after the partition table is written leaves the disk
//! unbootable on failure (the table is wiped) rather than half-good.

mod preflight;
mod progress;

pub use preflight::{preflight, TEMPLATE_FILES};
pub use progress::{PhaseTime, Progress};

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use opdbus_common::logging::Chain;
use opdbus_common::Task;
use opdbus_state::model::{Bootloader, Distribution, PayloadKind, State};
use serde::Serialize;

use crate::bootloader::{self, BootConfig};
use crate::disk::layout::UuidSource;
use crate::disk::plan::FsKind;
use crate::disk::{execute, ExecOptions, MountedTarget, TargetMap};
use crate::payload::{self, ExpectedSha256, PayloadSpec};
use crate::plan::{install_plan, resolve_targets, InstallPlan};
use crate::target::{self, Root};

/// Where the base system comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSource {
    /// A rootfs tar.zst (with `FILE.sha256` beside it unless the state pins it).
    Payload(PathBuf),
    /// Build one now with mmdebstrap/debootstrap (cached under `cache`).
    Debootstrap { cache: Option<PathBuf> },
}

/// Everything `install` needs besides the state.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub state_path: PathBuf,
    pub disks: Vec<(String, PathBuf)>,
    /// None: what the state's `bootstrap.payload` says, else the ISO's payload.
    pub source: Option<BaseSource>,
    /// Wipe permission (`--yes`, or `opdbus.auto`).
    pub consent: bool,
    /// Replace filesystems of the planned kind instead of keeping them
    /// (`--reformat`).
    pub reformat: bool,
    pub report: Option<PathBuf>,
    pub json_progress: bool,
    /// Where the target is mounted while installing.
    pub mount_at: PathBuf,
    /// The agent binary (run on this system for the users plugin; packaged
    /// when there is no `agent_package`).
    pub agent_binary: PathBuf,
    /// The op-dbus-agent .deb installed into the target (`--agent-package`);
    /// None: the live medium's, else one built from `agent_binary`.
    pub agent_package: Option<PathBuf>,
    /// The `templates/` folder.
    pub templates: PathBuf,
    /// The live system's kernel command line (for `console=`).
    pub proc_cmdline: String,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub uuids: UuidSource,
    /// Where the live medium keeps Proxmox's release keys
    /// ([`crate::proxmox::MEDIUM_KEYS`] on the ISO).
    pub proxmox_keys: PathBuf,
}

/// Where the ISO carries its payload.
pub const EMBEDDED_PAYLOAD: &str = "/run/live/medium/opdbus/payload.tar.zst";

/// What an install did; also written to /var/log/op-dbus/install.json.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    pub installer_version: String,
    pub plan: InstallPlan,
    pub phases: Vec<PhaseTime>,
    pub payload_sha256: Option<String>,
    pub kernels: Vec<String>,
    pub bootloaders: Vec<String>,
}

/// Runs the whole install.
pub fn install(opts: &InstallOptions) -> Result<InstallReport> {
    let mut progress = Progress::new(opts.json_progress);
    let result = run(opts, &mut progress);
    if let Err(e) = &result {
        progress.end(false, Some(&Chain(e.as_ref()).to_string()));
    }
    result
}

fn run(opts: &InstallOptions, progress: &mut Progress) -> Result<InstallReport> {
    progress.phase("validate", &opts.state_path.display().to_string());
    let loaded = opdbus_state::load(&opts.state_path)?;
    for w in &loaded.warnings {
        progress.note(&w.render(&loaded.file));
    }
    let state = loaded.state;
    let state_text = std::fs::read(&opts.state_path)
        .with_context(|| format!("reading {}", opts.state_path.display()))?;

    progress.step("plan", "resolving disks and layout")?;
    let targets: TargetMap = resolve_targets(&state, &opts.disks, &opts.sys, &opts.dev)?;
    let mut plan = install_plan(&state, targets.clone(), opts.uuids)?;
    for (k, t) in &plan.targets {
        progress.note(&format!("{k} -> {}", t.display()));
    }
    let source = base_source(&state, opts)?;
    // Before the first write: a typo must cost a message, not a disk.
    preflight(&state, &source, opts)?;

    progress.step("disk", "partitioning, formatting, mounting")?;
    std::fs::create_dir_all(&opts.mount_at)
        .with_context(|| format!("creating {}", opts.mount_at.display()))?;
    let exec = execute(
        &plan.disk,
        &plan.targets,
        &ExecOptions {
            consent: opts.consent,
            reformat: opts.reformat,
            dry_run: false,
            mount_at: Some(opts.mount_at.clone()),
            ..Default::default()
        },
    )?;
    for line in exec.report.to_string().lines() {
        progress.note(line);
    }
    // Kept filesystems keep their UUIDs: fstab and the bootloader use them.
    plan.disk = exec.plan;
    plan.fstab = crate::disk::fstab(&plan.disk);
    let mounted = exec
        .mounted
        .context("the disk phase returned no mounted target")?;

    // From here on a failure must not leave a bootable half-install.
    match populate(
        &state,
        &state_text,
        &plan,
        &source,
        &mounted,
        opts,
        progress,
    ) {
        Ok((sha, kernels, loaders)) => {
            progress.phase("finish", "syncing and unmounting");
            nix::unistd::sync();
            mounted.close().context("unmounting the installed system")?;
            progress.end(true, None);
            let report = InstallReport {
                installer_version: env!("CARGO_PKG_VERSION").to_string(),
                plan,
                phases: progress.phases.clone(),
                payload_sha256: sha,
                kernels,
                bootloaders: loaders,
            };
            if let Some(path) = &opts.report {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing the report {}", path.display()))?;
            }
            Ok(report)
        }
        Err(e) => {
            let close = mounted.close();
            let wipe = wipe_targets(&plan.targets);
            let mut err = e.context("the install failed; the target disk's partition table was wiped so it does not boot half-installed");
            if let Err(c) = close {
                err = err.context(format!("also failed to clean up: {c:#}"));
            }
            if let Err(w) = wipe {
                err = err.context(format!("also failed to wipe the partition table: {w:#}"));
            }
            Err(err)
        }
    }
}

fn base_source(state: &State, opts: &InstallOptions) -> Result<BaseSource> {
    if let Some(s) = &opts.source {
        return Ok(s.clone());
    }
    let p = state.bootstrap.as_ref().and_then(|b| b.payload.as_ref());
    Ok(match p.map(|p| p.source) {
        Some(PayloadKind::Debootstrap) => BaseSource::Debootstrap { cache: None },
        Some(PayloadKind::File) => BaseSource::Payload(PathBuf::from(
            p.and_then(|p| p.path.clone())
                .context("bootstrap.payload.source is \"file\" but has no path")?,
        )),
        Some(PayloadKind::Embedded) | None => {
            if Path::new(EMBEDDED_PAYLOAD).exists() {
                BaseSource::Payload(PathBuf::from(EMBEDDED_PAYLOAD))
            } else {
                bail!("no base system source: pass --payload FILE or --debootstrap (the ISO's payload {EMBEDDED_PAYLOAD} is not here)")
            }
        }
    })
}

type Populated = (Option<String>, Vec<String>, Vec<String>);

fn populate(
    state: &State,
    state_text: &[u8],
    plan: &InstallPlan,
    source: &BaseSource,
    mounted: &MountedTarget,
    opts: &InstallOptions,
    progress: &mut Progress,
) -> Result<Populated> {
    let root = Root::open(mounted.root())?;
    let bootstrap = state.bootstrap.as_ref();

    progress.step("base", "laying down the base system")?;
    let payload_path = match source {
        BaseSource::Payload(p) => p.clone(),
        BaseSource::Debootstrap { cache } => {
            let b = bootstrap.context("an install needs a bootstrap section")?;
            let spec = PayloadSpec::new(
                match b.distribution {
                    opdbus_state::model::Distribution::Debian => payload::Distribution::Debian,
                    opdbus_state::model::Distribution::Proxmox => payload::Distribution::Proxmox,
                },
                &b.suite,
                b.mirror.clone(),
                &b.packages,
            );
            let out =
                std::env::temp_dir().join(format!("opdbus-base-{}.tar.zst", std::process::id()));
            progress.note("building the base system with mmdebstrap (no payload given)");
            payload::build_payload(&spec, &out, cache.as_deref())?.path
        }
    };
    let expected = expected_sha256(state);
    let ex = payload::extract_payload(&payload_path, &expected, root.dir(), !opts.json_progress)?;
    progress.note(&format!(
        "{} entries, {} MB in {:.1} s, sha256 {}",
        ex.entries,
        ex.unpacked_bytes / 1_000_000,
        ex.elapsed.as_secs_f64(),
        ex.sha256
    ));
    // The container template's base, before the install makes the root a
    // host: a snapshot now saves a second extraction of the payload later.
    let layout_root = state.plugins.opdbus.clone().unwrap_or_default().root;
    let base = crate::templates::BaseSnapshot::take(&root, &mounted.mount_points(), &layout_root)
        .context("taking the base snapshot for the container template")?;

    if let Some(b) = bootstrap.filter(|b| b.distribution == Distribution::Proxmox) {
        progress.step("proxmox", "Proxmox VE repository, key, pinning, proxmox-ve")?;
        let mut po = crate::proxmox::ProxmoxOptions::new(&b.suite, &b.hostname);
        po.domain = b.domain.clone();
        po.address = static_address(state);
        po.repo_url = b.mirror.clone().filter(|m| m.contains("proxmox"));
        let key = crate::proxmox::medium_keyring(&opts.proxmox_keys, &b.suite);
        po.keyring = key.exists().then_some(key);
        // PVE checks /etc/hosts for the node's address: write it first.
        target::write_identity(&root, &b.hostname, b.domain.as_deref(), po.address)?;
        let r = crate::proxmox::install_proxmox(&root, &po)?;
        progress.note(&format!("{} ({:?})", r.repo_line, r.packages));
    }

    progress.step("configure", "fstab, identity, locale, accounts, network")?;
    configure(state, state_text, plan, &root, opts)?;

    progress.step("handoff", "agent, units, D-Bus policy, host layout")?;
    handoff(state, &root, opts)?;

    progress.step("templates", "container template debian-base")?;
    let built = crate::templates::build_templates(
        state,
        &root,
        base.as_ref(),
        &payload_path,
        &expected,
        static_address(state),
    );
    // Gone before the bootloader and the report: nothing of it stays.
    drop(base);
    match built? {
        Some(t) if t.kept => progress.note(&format!("{} kept (already filled)", t.path)),
        Some(t) => {
            progress.note(&format!(
                "{} in {:.1} s, without {}",
                t.path,
                t.seconds,
                if t.dropped.is_empty() {
                    "any host-only package".to_string()
                } else {
                    t.dropped.join(", ")
                }
            ));
            if let Some(p) = &t.pve_tarball {
                progress.note(&format!("Proxmox VE template {p}"));
            }
        }
        None => progress
            .note("the layout is not on btrfs: no container templates (they are btrfs subvolumes)"),
    }

    progress.step("bootloader", "making the disk bootable")?;
    let (kernels, loaders) = install_bootloaders(state, plan, mounted, &root, opts)?;
    for l in &loaders {
        progress.note(l);
    }

    progress.step("report", "/var/log/op-dbus/install.json")?;
    let report = serde_json::json!({
        "installer_version": env!("CARGO_PKG_VERSION"),
        "plan": plan,
        "phases": progress.phases,
        "payload_sha256": ex.sha256,
        "kernels": kernels,
        "bootloaders": loaders,
    });
    root.write(
        "/var/log/op-dbus/install.json",
        serde_json::to_vec_pretty(&report)?,
        0o600,
    )?;
    Ok((Some(ex.sha256), kernels, loaders))
}

fn configure(
    state: &State,
    state_text: &[u8],
    plan: &InstallPlan,
    root: &Root,
    opts: &InstallOptions,
) -> Result<()> {
    root.write("/etc/fstab", &plan.fstab, 0o644)?;
    let b = state
        .bootstrap
        .as_ref()
        .context("an install needs a bootstrap section")?;
    let net = state.network_spec();
    target::write_identity(
        root,
        &b.hostname,
        b.domain.as_deref(),
        static_address(state),
    )?;
    target::write_timezone(root, &b.timezone)?;
    target::write_locale(root, &b.locale)?;
    if target::locale_needs_generation(&b.locale) && root.exists("/usr/sbin/locale-gen") {
        let chroot = target::Chroot::enter(root)?;
        chroot
            .task("/usr/sbin/locale-gen")
            .run()
            .context("generating the locale in the target")?;
        chroot.close()?;
    }
    target::write_keyboard(root, &b.keyboard)?;
    target::reset_machine_id(root)?;
    if let Some(h) = &b.root_password_hash {
        target::set_root_password_hash(root, h)?;
    }
    target::write_root_authorized_keys(root, &b.root_ssh_authorized_keys)?;
    target::write_first_boot_network(root, &first_boot_network(&net))?;
    // The state carries password hashes: a private directory, a 0600 file.
    root.create_dir_all("/etc/op-dbus", 0o700)?;
    root.set_dir_mode("/etc/op-dbus", 0o700)?;
    root.write("/etc/op-dbus/state.json", state_text, 0o600)?;
    let _ = opts;
    Ok(())
}

/// The node's first static IPv4 address (hosts file, Proxmox VE).
fn static_address(state: &State) -> Option<std::net::IpAddr> {
    state.network_spec().interfaces.iter().find_map(|i| {
        i.addresses
            .iter()
            .find(|a| a.addr().is_ipv4())
            .map(|a| a.addr())
    })
}

/// DHCP everywhere except links the state enslaves; a static address when
/// the state puts one directly on an ethernet link.
fn first_boot_network(net: &opdbus_state::NetworkSpec) -> target::FirstBootNetwork {
    use opdbus_state::IfaceKind;
    let except = member_links(net);
    for i in &net.interfaces {
        // A port of a bridge, bond or OVS bridge (an OVS internal port is
        // declared as an ethernet link) is the agent's to configure: a
        // networkd config on it would fight the agent at every boot.
        if matches!(i.kind, IfaceKind::Ethernet) && !except.contains(&i.name) {
            if let Some(a) = i.addresses.iter().find(|a| a.addr().is_ipv4()) {
                return target::FirstBootNetwork::Static {
                    link: i.name.clone(),
                    address: a.to_string(),
                    gateway: i.gateway4.map(|g| g.to_string()),
                    dns: i.dns.iter().map(|d| d.to_string()).collect(),
                };
            }
        }
    }
    target::FirstBootNetwork::Dhcp { except }
}

/// The links the state makes members of bonds, bridges and OVS bridges.
fn member_links(net: &opdbus_state::NetworkSpec) -> Vec<String> {
    use opdbus_state::IfaceKind;
    let mut except: Vec<String> = Vec::new();
    for i in &net.interfaces {
        match &i.kind {
            IfaceKind::Bond { slaves, .. } => except.extend(slaves.iter().cloned()),
            IfaceKind::Bridge { ports } => except.extend(ports.iter().cloned()),
            IfaceKind::OvsBridge { ports } => {
                except.extend(ports.iter().map(|p| p.name.clone()));
                // An OVS bond's members.
                except.extend(ports.iter().flat_map(|p| p.interfaces.iter().cloned()));
            }
            _ => {}
        }
    }
    except.sort();
    except.dedup();
    except
}

fn handoff(state: &State, root: &Root, opts: &InstallOptions) -> Result<()> {
    // The installer itself: its `boot-sync` keeps the boot menus current
    // after kernel updates (the same code that wrote them now).
    let me = std::env::current_exe().context("finding the installer's own binary")?;
    let installer =
        std::fs::read(&me).with_context(|| format!("reading the installer {}", me.display()))?;
    root.write("/usr/bin/op-dbus-install", installer, 0o755)?;
    let t = &opts.templates;
    let hook = t.join("kernel/zzz-op-dbus");
    let text =
        std::fs::read(&hook).with_context(|| format!("reading template {}", hook.display()))?;
    for dest in bootloader::KERNEL_HOOKS {
        root.write(dest, &text, 0o755)?;
    }
    // The firewall unit loads the agent's last applied table at boot,
    // before network-pre.target (so from sysinit.target). The agent's own
    // units and D-Bus policy come with its package (below).
    let unit = "op-dbus-firewall.service";
    let src = t.join("systemd").join(unit);
    let text =
        std::fs::read(&src).with_context(|| format!("reading template {}", src.display()))?;
    root.write(&format!("/etc/systemd/system/{unit}"), text, 0o644)?;
    target::enable_unit(root, unit, "sysinit.target")?;
    // What it loads at first boot: the state's table, rendered by the
    // agent's own code, so the rules hold before the network and the agent.
    write_firewall_boot_file(root, state)?;
    lxc_default_bridge_off(root, state)?;
    // The host layout, by the code the agent's storage plugin runs.
    let layout = state.plugins.opdbus.clone().unwrap_or_default();
    opdbus_common::layout::create(root.rootdir(), &(&layout).into())
        .context("creating the op-dbus host layout (plugins.opdbus) in the target")?;
    if state.plugins.users.is_some() {
        // Accounts and SSH keys exist before first boot: the agent's own
        // users plugin, run against the target root (audited in the
        // target's chain like any later change).
        Task::new(&opts.agent_binary)
            .arg("apply")
            .arg(root.display_path("/etc/op-dbus/state.json"))
            .args(["--plugin", "users", "--root"])
            .arg(root.dir())
            .arg("--state-dir")
            .arg(root.display_path("/var/lib/op-dbus"))
            .run()
            .context("creating the state's users in the target before first boot")?;
    }
    install_agent_package(
        root,
        opts.agent_package.as_deref(),
        &opts.agent_binary,
        &opts.templates,
    )
}

/// Writes the state's firewall into the target as the boot file the agent
/// keeps (`/etc/op-dbus/firewall.json`, 0600 in the 0700 `/etc/op-dbus`),
/// rendered by the agent's own code (`opdbus_state::nft`): the first boot
/// loads it from sysinit, before `network-pre.target`, and the agent's
/// first reconcile then finds it current. Returns whether it wrote one (no
/// `plugins.firewall`: nothing, the unit's condition skips it).
pub fn write_firewall_boot_file(root: &Root, state: &State) -> Result<bool> {
    use opdbus_state::nft;
    let Some(table) = nft::desired_table(state).context("rendering plugins.firewall")? else {
        return Ok(false);
    };
    root.create_dir_all("/etc/op-dbus", 0o700)?;
    root.set_dir_mode("/etc/op-dbus", 0o700)?;
    root.write(nft::BOOT_FILE, nft::batch_text(&table), 0o600)?;
    Ok(true)
}

/// LXC's own bridge (`lxcbr0`, 10.0.3.0/24 with its dnsmasq and NAT, made by
/// `lxc-net.service`) is a network the state does not name: on an op-dbus
/// host the containers hang on the state's bridges. It is turned off in
/// the target's `/etc/default/lxc-net` unless the state names `lxcbr0`.
/// Returns whether it changed the file.
pub fn lxc_default_bridge_off(root: &Root, state: &State) -> Result<bool> {
    const FILE: &str = "/etc/default/lxc-net";
    if !root.exists(FILE)
        || state
            .network_spec()
            .interfaces
            .iter()
            .any(|i| i.name == "lxcbr0")
    {
        return Ok(false);
    }
    let text = root.read_to_string(FILE)?;
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l2 = l.trim_start();
            if l2.starts_with("USE_LXC_BRIDGE=") && !l2.starts_with("USE_LXC_BRIDGE=\"false\"") {
                changed = true;
                "USE_LXC_BRIDGE=\"false\"  # op-dbus: containers use the state's bridges".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if changed {
        root.write(FILE, lines.join("\n") + "\n", 0o644)?;
    }
    Ok(changed)
}

/// The agent, its units (enabled by the package's postinst) and D-Bus
/// policy as the `op-dbus-agent` package, installed with the target's own
/// dpkg: `dpkg -s op-dbus-agent` works there and apt can upgrade it.
/// `package` None: the live medium's, else one built from `agent_binary`
/// and `templates` (with `dist/` beside them when there is one).
pub fn install_agent_package(
    root: &Root,
    package: Option<&Path>,
    agent_binary: &Path,
    templates: &Path,
) -> Result<()> {
    use opdbus_common::deb;
    let built;
    let package = match package {
        Some(p) => p.to_path_buf(),
        None if Path::new(deb::LIVE_AGENT_PACKAGE).is_file() => {
            PathBuf::from(deb::LIVE_AGENT_PACKAGE)
        }
        None => {
            built = tempfile::tempdir().context("creating a directory for the agent package")?;
            let inputs = deb::Inputs {
                agent: agent_binary.to_path_buf(),
                installer: None,
                dist: deb::Inputs::dist_beside(templates),
                templates: templates.to_path_buf(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            deb::build_into(&deb::agent_package(&inputs)?, built.path())
                .context("packaging the agent binary (or pass --agent-package)")?
        }
    };
    let data = std::fs::read(&package).with_context(|| {
        format!(
            "reading the agent package {} (build it with ci/build-debs, or pass --agent-package)",
            package.display()
        )
    })?;
    const IN_TARGET: &str = "/var/cache/op-dbus/op-dbus-agent.deb";
    root.create_dir_all("/var/cache/op-dbus", 0o755)?;
    root.write(IN_TARGET, data, 0o644)?;
    let chroot = target::Chroot::enter(root)?;
    let result = chroot
        .task("dpkg")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["--force-confold", "-i", IN_TARGET])
        .run()
        .with_context(|| format!("installing {} into the target with dpkg", package.display()));
    chroot.close()?;
    result?;
    root.remove_file(IN_TARGET)
}

fn install_bootloaders(
    state: &State,
    plan: &InstallPlan,
    mounted: &MountedTarget,
    root: &Root,
    opts: &InstallOptions,
) -> Result<(Vec<String>, Vec<String>)> {
    let b = state
        .bootstrap
        .as_ref()
        .context("an install needs a bootstrap section")?;
    let root_mount = plan
        .disk
        .mounts
        .iter()
        .find(|m| m.path == Path::new("/"))
        .context("the layout mounts nothing at /")?;
    let boot_mount = plan
        .disk
        .mounts
        .iter()
        .find(|m| m.path == Path::new("/boot"));
    let (boot_uuid, boot_dir) = match boot_mount {
        Some(m) => (m.uuid.clone(), "/".to_string()),
        None => (
            root_mount.uuid.clone(),
            match (&root_mount.subvol, root_mount.fstype) {
                (Some(sv), FsKind::Btrfs) => format!("/{}/boot", sv.trim_matches('/')),
                _ => "/boot".to_string(),
            },
        ),
    };
    let consoles = bootloader::console_args(&opts.proc_cmdline);
    let cmdline = bootloader::kernel_cmdline(
        &root_mount.uuid,
        root_mount.subvol.as_deref(),
        root_mount.options.iter().any(|o| o == "degraded"),
        &b.kernel_cmdline,
        &consoles,
    );
    let cfg = BootConfig {
        title: b.hostname.clone(),
        cmdline,
        boot_fs_uuid: boot_uuid,
        boot_dir_in_fs: boot_dir,
    };
    let kernels: Vec<String> = bootloader::installed_kernels(root)?
        .into_iter()
        .map(|k| k.version)
        .collect();
    let mut done = Vec::new();
    let uefi = b.firmware.uefi() && b.bootloader != Bootloader::Grub;
    let grub = b.firmware.bios() || b.bootloader == Bootloader::Grub;
    // Kept in the target: the kernel hooks' `boot-sync` writes the same.
    // Every ESP's mount point: the hooks write each one that is mounted.
    let esp_mounts: Vec<String> = plan
        .disk
        .esps()
        .iter()
        .filter_map(|(_, p)| {
            plan.disk
                .mounts
                .iter()
                .find(|m| m.partition == p.key)
                .map(|m| m.path.display().to_string())
        })
        .collect();
    let setup = bootloader::BootSetup {
        config: cfg.clone(),
        systemd_boot: uefi,
        grub_bios: grub,
        esps: if esp_mounts.len() > 1 {
            esp_mounts
        } else {
            Vec::new()
        },
    };
    root.write(
        bootloader::BOOT_SETUP,
        serde_json::to_vec_pretty(&setup).context("serializing the boot setup")?,
        0o644,
    )?;
    if uefi {
        let locations = mounted.esp_locations();
        if locations.is_empty() {
            // The same error as opening a missing one.
            mounted
                .open_esp()
                .context("opening the ESP (a UEFI install needs an efi partition)")?;
        }
        // One alike on every disk of a mirror: any one boots alone.
        for loc in locations {
            let esp = crate::disk::esp::Esp::open(loc).with_context(|| {
                format!(
                    "opening the ESP at byte {} of {}",
                    loc.start,
                    loc.disk.display()
                )
            })?;
            let r = bootloader::install_systemd_boot(&esp, root, &cfg)?;
            esp.close().context("closing the ESP")?;
            done.push(format!(
                "systemd-boot on the ESP of {}: {}",
                loc.disk.display(),
                r.entries.join(", ")
            ));
        }
    }
    if grub {
        for key in grub_disk_keys(state, plan)? {
            let disk = mounted
                .disk_device(&key)
                .with_context(|| format!("no block device for {key}"))?;
            bootloader::install_grub_bios(root, disk, &cfg)?;
            done.push(format!("GRUB (i386-pc) on {}", disk.display()));
        }
    }
    Ok((kernels, done))
}

/// The disks GRUB goes on: every disk holding a member of a mirrored root
/// (any one of them boots alone), else `bootstrap.device`, else the disk
/// holding `/`.
fn grub_disk_keys(state: &State, plan: &InstallPlan) -> Result<Vec<String>> {
    let root_part = plan
        .disk
        .mounts
        .iter()
        .find(|m| m.path == Path::new("/"))
        .map(|m| m.partition.as_str())
        .context("the layout mounts nothing at /")?;
    let members = match plan
        .disk
        .partition(root_part)
        .and_then(|(_, p)| p.filesystem.as_ref()?.raid.as_ref())
    {
        Some(raid) => raid.devices.clone(),
        None => {
            if let Some(d) = state.bootstrap.as_ref().and_then(|b| b.device.clone()) {
                return Ok(vec![d]);
            }
            vec![root_part.to_string()]
        }
    };
    let keys: Vec<String> = plan
        .disk
        .devices
        .iter()
        .filter(|d| d.partitions.iter().any(|p| members.contains(&p.key)))
        .map(|d| d.key.clone())
        .collect();
    if keys.is_empty() {
        anyhow::bail!("no disk of the layout holds {root_part}, the partition mounted at /");
    }
    Ok(keys)
}

/// Zeroes the partition tables (both GPT copies and the MBR) of every target.
pub fn wipe_targets(targets: &TargetMap) -> Result<()> {
    for t in targets.values() {
        let mut f = OpenOptions::new()
            .write(true)
            .open(t)
            .with_context(|| format!("opening {} to wipe it", t.display()))?;
        crate::disk::partition::wipe_table(&mut f)
            .with_context(|| format!("wiping the partition table of {}", t.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", t.display()))?;
    }
    Ok(())
}

/// The digest the payload must have: the state's pin, else the `.sha256`
/// file next to the payload.
pub(crate) fn expected_sha256(state: &State) -> ExpectedSha256 {
    match state
        .bootstrap
        .as_ref()
        .and_then(|b| b.payload.as_ref())
        .and_then(|p| p.sha256.clone())
    {
        Some(sha) => ExpectedSha256::Value {
            sha256: sha,
            origin: "bootstrap.payload.sha256 in the state".into(),
        },
        None => ExpectedSha256::Sidecar,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The e2e state puts its address on an OVS internal port (declared as
    /// an ethernet link): no networkd config may claim it, or every boot
    /// after the first has networkd and the agent fighting over it.
    #[test]
    fn a_port_of_a_bridge_or_bond_never_gets_the_first_boot_config() {
        let state: State =
            serde_json::from_str(include_str!("../../../state-examples/ci-e2e.json")).unwrap();
        match first_boot_network(&state.network_spec()) {
            target::FirstBootNetwork::Dhcp { except } => {
                for l in ["eth0", "eth1", "ovsint0"] {
                    assert!(
                        except.iter().any(|e| e == l),
                        "{l} not excepted: {except:?}"
                    );
                }
            }
            other => panic!("a static first-boot config: {other:?}"),
        }
    }
}
