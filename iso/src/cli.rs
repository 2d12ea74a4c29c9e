//! The `op-dbus-iso` command line (CLI.md): `build`, `customize` and `package`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::{build, customize};

#[derive(Debug, Parser)]
#[command(
    name = "op-dbus-iso",
    version,
    about = "Builds and customizes the op-dbus live installer ISO"
)]
pub struct Cli {
    /// Log at debug level (RUST_LOG overrides).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a hybrid UEFI+BIOS live ISO.
    Build(BuildArgs),
    /// Replace the embedded state and kernel arguments of a built ISO.
    Customize(CustomizeArgs),
    /// Build the op-dbus-agent and op-dbus-install .deb packages.
    Package(PackageArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// State embedded at /opdbus/state.json (its bootstrap section also
    /// describes the payload).
    #[arg(
        long,
        value_name = "STATE",
        default_value = "state-examples/default.json"
    )]
    pub state: PathBuf,
    /// ISO file to write.
    #[arg(long, short, value_name = "ISO")]
    pub output: PathBuf,
    /// Make "Automated install" the default entry, with a 3 s timeout.
    #[arg(long)]
    pub auto: bool,
    /// Cache directory for the live system and the payload.
    #[arg(long, value_name = "DIR", env = "OPDBUS_ISO_CACHE")]
    pub cache: Option<PathBuf>,
    /// The installer binary to put on the medium.
    #[arg(
        long,
        value_name = "BIN",
        default_value = "target/release/op-dbus-install"
    )]
    pub installer: PathBuf,
    /// The agent binary to put on the medium.
    #[arg(
        long,
        value_name = "BIN",
        default_value = "target/release/op-dbus-agent"
    )]
    pub agent: PathBuf,
    /// The templates directory (copied to /usr/share/op-dbus/templates;
    /// its live/rootfs/ goes to / of the live system).
    #[arg(long, value_name = "DIR", default_value = "templates")]
    pub templates: PathBuf,
    /// Reuse this payload (tar.zst with FILE.sha256) instead of building one.
    #[arg(long, value_name = "FILE")]
    pub payload: Option<PathBuf>,
    /// Extra kernel arguments for every boot entry.
    #[arg(long, value_name = "ARGS", default_value = "")]
    pub kargs: String,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// A Proxmox repository key for the live medium (repeatable): FILE, one
    /// of the release keys Proxmox publishes (recognised by its digest), or
    /// SUITE=FILE for the key of another Proxmox repository. Needed when the
    /// state installs Proxmox VE.
    #[arg(long, value_name = "[SUITE=]FILE")]
    pub proxmox_key: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct CustomizeArgs {
    /// ISO built by `op-dbus-iso build`.
    pub iso: PathBuf,
    /// New state for /opdbus/state.json.
    #[arg(long, value_name = "STATE")]
    pub state: PathBuf,
    /// Extra kernel arguments for every entry (replace the earlier ones).
    #[arg(long, value_name = "ARGS")]
    pub kargs: Option<String>,
    /// ISO file to write.
    #[arg(long, short, value_name = "ISO2")]
    pub output: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// The agent binary to package.
    #[arg(
        long,
        value_name = "BIN",
        default_value = "target/release/op-dbus-agent"
    )]
    pub agent: PathBuf,
    /// The installer binary to package.
    #[arg(
        long,
        value_name = "BIN",
        default_value = "target/release/op-dbus-install"
    )]
    pub installer: PathBuf,
    /// The templates directory (units, D-Bus policy, host layout).
    #[arg(long, value_name = "DIR", default_value = "templates")]
    pub templates: PathBuf,
    /// Generated man pages and completions (`cargo run -p opdbus-docgen`).
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub dist: PathBuf,
    /// Directory the packages are written to (NAME_VERSION_ARCH.deb).
    #[arg(long, short, value_name = "DIR", default_value = "target/debian")]
    pub output_dir: PathBuf,
    /// Print the built packages as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Build(a) => {
            let summary = build::build(&build::BuildOptions {
                state: a.state,
                output: a.output,
                auto: a.auto,
                cache: a.cache,
                installer: a.installer,
                agent: a.agent,
                templates: a.templates,
                payload: a.payload,
                kargs: a.kargs,
                proxmox_keys: a
                    .proxmox_key
                    .iter()
                    .map(|k| crate::layer::ProxmoxKey::parse(k))
                    .collect::<anyhow::Result<_>>()?,
            })?;
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).context("serializing the summary")?
                );
            } else {
                print!("{}", build::summary_text(&summary));
            }
        }
        Command::Customize(a) => {
            customize::customize(&a.iso, &a.state, a.kargs.as_deref(), &a.output)?;
            let (sha, size) = build::hash_file(&a.output)?;
            if a.json {
                let out = serde_json::json!({"iso": a.output, "iso_size": size, "iso_sha256": sha});
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                println!(
                    "{} ({:.1} MiB), sha256 {sha}",
                    a.output.display(),
                    size as f64 / 1048576.0
                );
            }
        }
        Command::Package(a) => {
            let built = package(&a)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&built)?);
            } else {
                for p in &built {
                    println!(
                        "{} {} ({} bytes, sha256 {})",
                        p.package,
                        p.path.display(),
                        p.size,
                        p.sha256
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One package `op-dbus-iso package` wrote.
#[derive(Debug, serde::Serialize)]
pub struct BuiltPackage {
    pub package: String,
    pub version: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

fn package(a: &PackageArgs) -> anyhow::Result<Vec<BuiltPackage>> {
    use opdbus_common::deb;
    for bin in [&a.agent, &a.installer] {
        if !bin.is_file() {
            anyhow::bail!(
                "{} not found: build it first (`cargo build --release`, or pass --agent/--installer)",
                bin.display()
            );
        }
    }
    let inputs = deb::Inputs {
        agent: a.agent.clone(),
        installer: Some(a.installer.clone()),
        templates: a.templates.clone(),
        dist: Some(a.dist.clone()),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut out = Vec::new();
    for p in [
        deb::agent_package(&inputs)?,
        deb::installer_package(&inputs)?,
    ] {
        let path = deb::build_into(&p, &a.output_dir)?;
        let (sha256, size) = build::hash_file(&path)?;
        out.push(BuiltPackage {
            package: p.name,
            version: p.version,
            path,
            size,
            sha256,
        });
    }
    Ok(out)
}
