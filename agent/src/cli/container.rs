//! `op-dbus-agent container create|list|start|stop|delete` and
//! `template list|create`: containers as btrfs snapshots of a template, run
//! by LXC (`crate::lxc`). Every change is recorded in the audit chain.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;

use super::query::runtime;
use super::Global;
use crate::audit::{AuditLog, NewEntry};
use crate::engine::ownership::Ownership;
use crate::lxc::{self, container, runner, template, Nic, Paths, Spec};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ContainerCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ContainerCommand {
    /// Snapshot a template into a new container and write its LXC config.
    Create(CreateArgs),
    /// The containers under --lxc-path, with state and whether op-dbus made them.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Start a container.
    Start { name: String },
    /// Stop a container (clean shutdown, killed after 10 s).
    Stop { name: String },
    /// Delete a container op-dbus created (never a template, never another's).
    Delete { name: String },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub name: String,
    /// Template under <layout>/@templates.
    #[arg(long)]
    pub template: String,
    /// `bridge=BR[,ip=CIDR][,gw=IP]`: a veth on the host bridge BR.
    #[arg(long, value_name = "SPEC")]
    pub network: Option<String>,
    /// Memory limit (512M, 2G).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPU limit in whole CPUs.
    #[arg(long, value_name = "N")]
    pub cpus: Option<u32>,
    /// Start the container when the host boots (lxc.start.auto).
    #[arg(long)]
    pub autostart: bool,
    /// Start it right away.
    #[arg(long)]
    pub start: bool,
    /// Container root is host uid/gid 100000 and up (an id map; the rootfs
    /// is idmapped, not chowned; root:100000:65536 reserved in /etc/subuid
    /// and /etc/subgid).
    #[arg(long)]
    pub unprivileged: bool,
}

#[derive(Debug, clap::Args)]
pub struct TemplateArgs {
    #[command(subcommand)]
    pub command: TemplateCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TemplateCommand {
    /// The templates under <layout>/@templates.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a read-only template from a directory or a tarball.
    Create {
        name: String,
        #[arg(long, value_name = "DIR|TARBALL")]
        from: PathBuf,
    },
}

fn paths(g: &Global) -> Paths {
    Paths::new(&g.layout, &g.lxc_path)
}

/// Parses a memory size such as `512M` into bytes.
pub fn parse_memory(text: &str) -> anyhow::Result<u64> {
    match text.parse::<opdbus_state::model::Size>() {
        Ok(opdbus_state::model::Size::Bytes(b)) => Ok(b),
        Ok(_) => anyhow::bail!("--memory {text:?}: give a size such as 512M or 2G"),
        Err(e) => Err(anyhow::anyhow!("--memory: {e}")),
    }
}

fn audit(
    g: &Global,
    action: &str,
    name: &str,
    result: &str,
    meta: serde_json::Value,
) -> anyhow::Result<()> {
    let mut log = AuditLog::open(&g.state_dir)?;
    log.append(NewEntry {
        plugin: lxc::OWNER_PLUGIN.to_string(),
        action: action.to_string(),
        resource: format!("container:{name}"),
        result: result.to_string(),
        state_hash: None,
        metadata: meta,
    })?;
    Ok(())
}

/// Runs `f`, then records its outcome in the audit chain.
fn audited<T>(
    g: &Global,
    action: &str,
    name: &str,
    meta: serde_json::Value,
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    crate::engine::state_dir::secure_existing(&g.state_dir)?;
    let out = f();
    let result = match &out {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("failed: {e:#}"),
    };
    audit(g, action, name, &result, meta)?;
    out
}

pub fn run(g: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let paths = paths(g);
    let owners = Ownership::new(&g.state_dir);
    match args.command {
        ContainerCommand::Create(a) => {
            let spec = Spec {
                name: a.name.clone(),
                template: a.template.clone(),
                network: a.network.as_deref().map(Nic::parse).transpose()?,
                memory: a.memory.as_deref().map(parse_memory).transpose()?,
                cpus: a.cpus,
                autostart: a.autostart,
                unprivileged: a.unprivileged,
            };
            let began = Instant::now();
            let c = audited(g, "create", &a.name, serde_json::to_value(&spec)?, || {
                container::create(&paths, &owners, &spec)
            })?;
            let made = began.elapsed();
            println!(
                "created container {} from template {} in {:.1} ms (rootfs snapshot {})",
                c.name,
                spec.template,
                made.as_secs_f64() * 1e3,
                c.subvolume.as_ref().map_or("?", |s| s.uuid.as_str())
            );
            if a.start {
                let how = audited(g, "start", &a.name, serde_json::Value::Null, || {
                    runtime()?.block_on(runner::start(None, &paths, &a.name))
                })?;
                println!("started container {} ({how})", a.name);
            }
        }
        ContainerCommand::List { json } => {
            let all = container::list(&paths, &owners)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!(
                    "{:<20} {:<8} {:<6} {:<5} {:<16} ADDRESS",
                    "NAME", "STATE", "OWNED", "UNPRV", "TEMPLATE"
                );
                for c in &all {
                    println!(
                        "{:<20} {:<8} {:<6} {:<5} {:<16} {}",
                        c.name,
                        format!("{:?}", c.status).to_lowercase(),
                        if c.owned { "yes" } else { "no" },
                        if c.config.unprivileged { "yes" } else { "no" },
                        c.config.template.as_deref().unwrap_or("-"),
                        c.config
                            .network
                            .as_ref()
                            .and_then(|n| n.ip.as_deref())
                            .unwrap_or("-")
                    );
                }
            }
        }
        ContainerCommand::Start { name } => {
            lxc::validate_name("container", &name)?;
            exists(&paths, &owners, &name)?;
            let how = audited(g, "start", &name, serde_json::Value::Null, || {
                runtime()?.block_on(runner::start(None, &paths, &name))
            })?;
            println!("started container {name} ({how})");
        }
        ContainerCommand::Stop { name } => {
            lxc::validate_name("container", &name)?;
            exists(&paths, &owners, &name)?;
            let how = audited(g, "stop", &name, serde_json::Value::Null, || {
                runtime()?.block_on(runner::stop(None, &paths, &name))
            })?;
            println!("stopped container {name} ({how})");
        }
        ContainerCommand::Delete { name } => {
            audited(g, "delete", &name, serde_json::Value::Null, || {
                container::delete(&paths, &owners, &name)
            })?;
            println!("deleted container {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exists(paths: &Paths, owners: &Ownership, name: &str) -> anyhow::Result<()> {
    container::read(paths, owners, name)?
        .map(|_| ())
        .with_context(|| format!("no container {name:?} in {}", paths.lxc_path.display()))
}

pub fn run_template(g: &Global, args: TemplateArgs) -> anyhow::Result<ExitCode> {
    let paths = paths(g);
    match args.command {
        TemplateCommand::List { json } => {
            let all = template::list(&paths)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else {
                println!("{:<20} {:<10} {:<38} SOURCE", "NAME", "STATE", "UUID");
                for t in &all {
                    let (state, uuid) = match &t.rootfs {
                        Some(sv) if sv.read_only => ("ready", sv.uuid.as_str()),
                        Some(sv) => ("writable", sv.uuid.as_str()),
                        None => ("empty", "-"),
                    };
                    println!(
                        "{:<20} {:<10} {:<38} {}",
                        t.name,
                        state,
                        uuid,
                        t.source.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        TemplateCommand::Create { name, from } => {
            let t = audited(
                g,
                "create-template",
                &name,
                serde_json::json!({ "from": from.display().to_string() }),
                || template::create(&paths, &name, &from),
            )?;
            println!(
                "created template {} at {} (rootfs {})",
                t.name,
                t.path.display(),
                t.rootfs.as_ref().map_or("?", |s| s.uuid.as_str())
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
