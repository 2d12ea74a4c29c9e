//! `op-dbus-install install STATE --disk NAME=TARGET… [--payload FILE |
//! --debootstrap] [--yes] [--report FILE] [--json-progress]`: the whole install.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::install::{install, BaseSource, InstallOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state file.
    pub state: PathBuf,
    /// Base system from this rootfs tar.zst (FILE.sha256 beside it).
    #[arg(long, conflicts_with = "debootstrap")]
    pub payload: Option<PathBuf>,
    /// Build the base system now with mmdebstrap (or debootstrap).
    #[arg(long)]
    pub debootstrap: bool,
    /// Cache folder for --debootstrap payloads.
    #[arg(long, requires = "debootstrap")]
    pub cache: Option<PathBuf>,
    /// Allow wiping the target disks.
    #[arg(long)]
    pub yes: bool,
    /// Replace filesystems of the planned type too (needs --yes); by default
    /// they are kept and their UUIDs used.
    #[arg(long)]
    pub reformat: bool,
    /// Also write the install report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// One JSON object per phase event on stdout.
    #[arg(long)]
    pub json_progress: bool,
    /// Print the install report (install.json) as JSON on stdout at the end.
    #[arg(long, conflicts_with = "json_progress")]
    pub json: bool,
    /// Where to mount the target while installing.
    #[arg(long, default_value = "/run/opdbus/target")]
    pub mount_at: PathBuf,
    /// The agent binary to install (default: op-dbus-agent next to this binary).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// The op-dbus-agent .deb to install into the target (default: the live
    /// medium's /usr/share/op-dbus/packages/op-dbus-agent.deb, else one built
    /// from --agent).
    #[arg(long, value_name = "DEB")]
    pub agent_package: Option<PathBuf>,
    /// The templates folder (default: /usr/share/op-dbus/templates, else ./templates).
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Folder holding Proxmox's release keys (`proxmox-release-SUITE.gpg`),
    /// where `op-dbus-iso build --proxmox-key` puts them.
    #[arg(long, hide = true, default_value = crate::proxmox::MEDIUM_KEYS)]
    pub proxmox_keys: PathBuf,
    #[command(flatten)]
    pub map: super::plan::DiskMap,
}

impl Args {
    /// The install options these flags describe.
    pub fn options(&self) -> Result<InstallOptions> {
        let source = match (&self.payload, self.debootstrap) {
            (Some(p), _) => Some(BaseSource::Payload(p.clone())),
            (None, true) => Some(BaseSource::Debootstrap {
                cache: self.cache.clone(),
            }),
            (None, false) => None,
        };
        Ok(InstallOptions {
            state_path: self.state.clone(),
            disks: self.map.disks.clone(),
            source,
            consent: self.yes,
            reformat: self.reformat,
            report: self.report.clone(),
            json_progress: self.json_progress,
            mount_at: self.mount_at.clone(),
            agent_binary: match &self.agent {
                Some(a) => a.clone(),
                None => default_agent()?,
            },
            agent_package: self.agent_package.clone(),
            templates: self.templates.clone().unwrap_or_else(default_templates),
            proc_cmdline: std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
            sys: self.map.sys.clone(),
            dev: self.map.dev.clone(),
            uuids: self.map.uuids(),
            proxmox_keys: self.proxmox_keys.clone(),
        })
    }
}

fn default_agent() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding this program's path")?;
    let sibling = exe.with_file_name("op-dbus-agent");
    Ok(if sibling.exists() {
        sibling
    } else {
        PathBuf::from("/usr/local/bin/op-dbus-agent")
    })
}

/// `/usr/share/op-dbus/templates` on the live system, else `./templates`.
pub fn default_templates() -> PathBuf {
    let installed = PathBuf::from("/usr/share/op-dbus/templates");
    if installed.exists() {
        installed
    } else {
        PathBuf::from("templates")
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let opts = args.options()?;
    let report = install(&opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    let total: f64 = report.phases.iter().map(|p| p.seconds).sum();
    eprintln!(
        "installed {} onto {} in {:.1} s",
        report.plan.hostname,
        report
            .plan
            .targets
            .values()
            .map(|t| t.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        total
    );
    Ok(ExitCode::SUCCESS)
}
