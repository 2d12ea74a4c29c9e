//! `op-dbus-install auto`: the live ISO's unattended entry. Reads `opdbus.*`
//! from the kernel command line, gets and checks the state, refuses unless
//! it selects exactly one disk, installs, then powers off, reboots or stays.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use opdbus_common::logging::Chain;
use opdbus_common::Task;
use opdbus_state::model::AfterInstall;

use crate::live::{self, RetryPolicy, StateSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kernel command line to read (a file, for tests).
    #[arg(long, value_name = "FILE", default_value = "/proc/cmdline")]
    pub cmdline: PathBuf,
    /// Run even when `opdbus.auto` is absent from the command line.
    #[arg(long)]
    pub force: bool,
    /// Stop after the state is fetched and validated; install nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to keep retrying an http(s) state URL while the network comes up.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub network_timeout: u64,
    /// Where the fetched state is saved (the install and its logs read it there).
    #[arg(long, value_name = "FILE", default_value = "/run/opdbus/state.json")]
    pub save_to: PathBuf,
    /// Do not power off or reboot at the end, whatever the state says.
    #[arg(long)]
    pub no_finish: bool,
}

/// Prints one line on stdout (the unit sends it to the console and journal).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    say(live::MARKER_START);
    match run_inner(&args) {
        Ok(code) => Ok(code),
        Err(err) => {
            say(&format!(
                "OPDBUS-LIVE: auto install failed: {}",
                Chain(err.as_ref())
            ));
            say("OPDBUS-LIVE: nothing was written to disk unless stated above; a root shell is on tty1 and the serial console");
            Err(err)
        }
    }
}

fn run_inner(args: &Args) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.cmdline)
        .with_context(|| format!("reading the kernel command line {}", args.cmdline.display()))?;
    let live_args = live::parse_cmdline(&text).context("parsing the kernel command line")?;
    if !live_args.auto && !args.force {
        anyhow::bail!(
            "opdbus.auto is not on the kernel command line ({}); pick \"Automated install\" in the boot menu or pass --force",
            args.cmdline.display()
        );
    }
    let source = live_args
        .state
        .clone()
        .unwrap_or_else(|| StateSource::Path(PathBuf::from(live::EMBEDDED_STATE)));
    say(&format!("OPDBUS-LIVE: reading the state from {source}"));
    let policy = RetryPolicy {
        total: Duration::from_secs(args.network_timeout),
        ..RetryPolicy::default()
    };
    let pins = live::Pins {
        sha256: live_args.state_sha256.as_deref(),
        cert_sha256: live_args.state_cert_sha256.as_deref(),
    };
    let bytes = live::fetch_state(&source, pins, &policy, &mut |line| say(line))
        .with_context(|| format!("getting the state from {source}"))?;
    if pins.sha256.is_some() {
        say("OPDBUS-LIVE: state sha256 matches opdbus.state_sha256");
    }
    let state = validate(&bytes, &source.to_string())?;
    save(&args.save_to, &bytes)?;
    let disk = live::chosen_disk(&state).context("choosing the disk to install on")?;
    let hostname = state
        .bootstrap
        .as_ref()
        .map(|b| b.hostname.as_str())
        .unwrap_or("(none)");
    say(&format!(
        "OPDBUS-LIVE: state valid: hostname {hostname}, target disk {disk}, saved to {}",
        args.save_to.display()
    ));
    if args.dry_run {
        say("OPDBUS-LIVE: --dry-run: stopping before the install");
        return Ok(ExitCode::SUCCESS);
    }
    install(&args.save_to, &disk)?;
    say("OPDBUS-LIVE: install finished");
    let after = state
        .bootstrap
        .as_ref()
        .map(|b| b.after_install)
        .unwrap_or_default();
    if !args.no_finish {
        finish(after)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Parses and validates the state text; errors name the source.
fn validate(bytes: &[u8], name: &str) -> anyhow::Result<opdbus_state::State> {
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("the state from {name} is not UTF-8 text"))?;
    let loaded = opdbus_state::parse_str(text, name)
        .context("the state is not valid (check it with `op-dbus-install validate FILE`)")?;
    for w in &loaded.warnings {
        say(&w.render(name));
    }
    Ok(loaded.state)
}

/// Saves the state (it carries the root password hash) 0600, exactly,
/// whatever the umask: a fresh file renamed over the old one, never written
/// through a link. Directories it creates are 0700.
fn save(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        anyhow::bail!("--save-to {} does not name a file", path.display());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    create_private_dirs(dir)?;
    let root = opdbus_common::rootfs::RootDir::open(dir)
        .with_context(|| format!("opening {}", dir.display()))?;
    root.write_atomic(name, bytes, 0o600, None)
        .with_context(|| format!("saving the state to {}", path.display()))
}

/// Creates `dir` and its missing parents 0700 (exactly); directories that
/// already exist keep their mode.
fn create_private_dirs(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dirs(parent)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting the mode of {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", dir.display())),
    }
}

/// The whole install onto `disk` (the state's one device key, resolved
/// against this machine's disks), from the ISO's payload, with consent:
/// `opdbus.auto` is the operator's explicit permission to wipe.
fn install(state: &Path, disk: &str) -> anyhow::Result<()> {
    let opts = crate::install::InstallOptions {
        state_path: state.to_path_buf(),
        disks: Vec::new(),
        source: None,
        consent: true,
        reformat: false,
        report: None,
        json_progress: false,
        mount_at: PathBuf::from("/run/opdbus/target"),
        agent_binary: PathBuf::from("/usr/local/bin/op-dbus-agent"),
        agent_package: None,
        templates: super::install::default_templates(),
        proc_cmdline: std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
        sys: PathBuf::from("/sys"),
        dev: PathBuf::from("/dev"),
        uuids: crate::disk::layout::UuidSource::Random,
        proxmox_keys: PathBuf::from(crate::proxmox::MEDIUM_KEYS),
    };
    say(&format!("OPDBUS-LIVE: installing onto {disk}"));
    let report = crate::install::install(&opts)?;
    for p in &report.phases {
        say(&format!(
            "OPDBUS-LIVE: phase {} took {:.1} s",
            p.phase, p.seconds
        ));
    }
    Ok(())
}

fn finish(after: AfterInstall) -> anyhow::Result<()> {
    let verb = match after {
        AfterInstall::Poweroff => "poweroff",
        AfterInstall::Reboot => "reboot",
        AfterInstall::Shell => {
            say("OPDBUS-LIVE: bootstrap.after_install is \"shell\": staying in the live system");
            return Ok(());
        }
    };
    say(&format!("OPDBUS-LIVE: {verb} (bootstrap.after_install)"));
    Task::new("systemctl")
        .arg(verb)
        .run()
        .with_context(|| format!("asking systemd to {verb}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(dir: &Path, cmdline: &str) -> Args {
        let p = dir.join("cmdline");
        std::fs::write(&p, cmdline).unwrap();
        Args {
            cmdline: p,
            force: false,
            dry_run: true,
            network_timeout: 1,
            save_to: dir.join("saved/state.json"),
            no_finish: true,
        }
    }

    #[test]
    fn dry_run_fetches_checks_and_saves_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = include_bytes!("../../../state-examples/default.json");
        let sp = dir.path().join("state.json");
        std::fs::write(&sp, state).unwrap();
        let sha = live::fetch::sha256_hex(state);
        let a = args(
            dir.path(),
            &format!(
                "boot=live opdbus.auto opdbus.state={} opdbus.state_sha256={sha}",
                sp.display()
            ),
        );
        assert_eq!(run_inner(&a).unwrap(), ExitCode::SUCCESS);
        assert_eq!(
            std::fs::read(dir.path().join("saved/state.json")).unwrap(),
            state.as_slice()
        );
    }

    #[test]
    fn refuses_without_opdbus_auto() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_inner(&args(dir.path(), "boot=live quiet")).unwrap_err();
        assert!(format!("{err:#}").starts_with("opdbus.auto is not on the kernel command line"));
    }

    #[test]
    fn sha_mismatch_stops_before_saving() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("state.json");
        std::fs::write(&sp, r#"{"version":1}"#).unwrap();
        let a = args(
            dir.path(),
            &format!(
                "opdbus.auto opdbus.state={} opdbus.state_sha256={}",
                sp.display(),
                "0".repeat(64)
            ),
        );
        let err = format!("{:#}", run_inner(&a).unwrap_err());
        assert!(err.contains("but opdbus.state_sha256 is 0000"), "{err}");
        assert!(!dir.path().join("saved/state.json").exists());
    }

    #[test]
    fn several_disks_are_refused_and_invalid_state_named() {
        let dir = tempfile::tempdir().unwrap();
        let sp = dir.path().join("state.json");
        let mut v: serde_json::Value =
            serde_json::from_str(include_str!("../../../state-examples/default.json")).unwrap();
        v["plugins"]["storage"]["devices"]["/dev/vdb"] = serde_json::json!({
            "partitions": [{"size": "1G", "type": "linux", "filesystem": "ext4", "mount": "/srv"}]
        });
        // Two disks and no bootstrap.device: which one holds the system is
        // ambiguous, and the state is refused before anything is chosen.
        v["bootstrap"].as_object_mut().unwrap().remove("device");
        std::fs::write(&sp, serde_json::to_vec(&v).unwrap()).unwrap();
        let a = args(
            dir.path(),
            &format!("opdbus.auto opdbus.state={}", sp.display()),
        );
        let err = format!("{:#}", run_inner(&a).unwrap_err());
        assert!(err.contains("the state is not valid"), "{err}");
        assert!(err.contains("/bootstrap"), "{err}");
        assert!(!dir.path().join("saved/state.json").exists());
        std::fs::write(&sp, r#"{"version":1,"bogus":true}"#).unwrap();
        let err = format!("{:#}", run_inner(&a).unwrap_err());
        assert!(err.contains("the state is not valid"), "{err}");
        assert!(err.contains("/bogus"), "{err}");
    }
}
