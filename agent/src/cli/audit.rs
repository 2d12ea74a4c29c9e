//! `op-dbus-agent audit list|verify|export|checkpoint|search|archive|compact`:
//! reads (and, for archive and compact, shrinks) the tamper-evident audit
//! log under `--state-dir`; `verify` exits 1 naming the first bad block.

use std::process::ExitCode;

use anyhow::Context;

use super::query::runtime;
use super::Global;
use crate::audit::checkpoint::{Checkpoint, Store};
use crate::audit::{verify_state_dir, AuditLog, BlockRange, Record};
use crate::engine::{ApplyOptions, DesiredState};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print the records (one line per action, with its block), oldest first.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Only the records of these blocks: `A..B` (inclusive), `A..`, `..B` or `N`.
        #[arg(long, value_name = "A..B")]
        range: Option<BlockRange>,
    },
    /// Check records, blocks, Merkle roots and the signed checkpoints; exit
    /// 1 naming the first bad block.
    Verify {
        /// Print the verification report as JSON.
        #[arg(long)]
        json: bool,
        /// Also check the log against this checkpoint kept elsewhere (the
        /// output of `audit checkpoint`): signature, key, RFC 9162
        /// consistency proof.
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<std::path::PathBuf>,
        /// Also check that the host, as the plugins query it, still equals
        /// the desired state the last block applied (exit 1 with the
        /// differences).
        #[arg(long)]
        current: bool,
        /// With --current: the state file the last block applied (its hash
        /// must be the block's); needed when the block keeps only the hash.
        #[arg(long, value_name = "FILE", requires = "current")]
        state: Option<std::path::PathBuf>,
        /// Check this file written by `audit archive` on its own instead of
        /// the database: hashes, links, roots, inclusion proofs and its
        /// signed checkpoint (against this host's key when it has one).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["checkpoint", "current"])]
        archive: Option<std::path::PathBuf>,
        #[command(flatten)]
        target: super::query::TargetArgs,
    },
    /// Print blocks and records as one JSON document, each record with its
    /// Merkle inclusion proof against the latest signed checkpoint.
    Export {
        /// Only these blocks: `A..B` (inclusive), `A..`, `..B` or `N`.
        #[arg(long, value_name = "A..B")]
        range: Option<BlockRange>,
    },
    /// Print the latest signed checkpoint (tree size, root, block, time, key, signature) as JSON.
    Checkpoint,
    /// Move the blocks stamped before DATE (never the last block) into a
    /// file with their inclusion proofs and a signed checkpoint; the
    /// database keeps their Merkle leaves so it still verifies.
    Archive {
        /// `YYYY-MM-DD` (00:00 UTC) or `@UNIX-SECONDS`.
        #[arg(long, value_name = "DATE")]
        before: String,
        /// Where to write the archive (must not exist; default
        /// `<state-dir>/audit-archives/blocks-A-B.json`).
        #[arg(long, value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// Shrink the database without touching anything hashed: drop the
    /// stored Merkle frontiers of all blocks but the last, merge the
    /// full-text index, truncate the WAL, VACUUM.
    Compact,
    /// Full-text search over resources, actions, results and notes, with
    /// time phrases: today, yesterday, this|last week, this|last month,
    /// last N days, since|before|on YYYY-MM-DD.
    Search {
        /// Words and time phrases, e.g. "bridge vmbr0 last week".
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn open(global: &Global) -> anyhow::Result<AuditLog> {
    AuditLog::open_existing(&global.state_dir)
        .with_context(|| format!("opening the audit log in {}", global.state_dir.display()))
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::List { json, range } => {
            let log = open(global)?;
            let mut records = log
                .list_range(range.unwrap_or_default())
                .context("reading the audit log")?;
            redact(&mut records);
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_table(&records);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            json,
            checkpoint,
            current,
            state,
            target,
            archive,
        } => {
            if let Some(path) = archive {
                return verify_archive_file(global, &path, json);
            }
            let external = match &checkpoint {
                None => None,
                Some(path) => {
                    let text = std::fs::read(path)
                        .with_context(|| format!("reading the checkpoint {}", path.display()))?;
                    let cp: Checkpoint = serde_json::from_slice(&text).with_context(|| {
                        format!(
                            "{} is not a checkpoint (expected the JSON of `audit checkpoint`)",
                            path.display()
                        )
                    })?;
                    Some((path.display().to_string(), cp))
                }
            };
            let report = verify_state_dir(
                &global.state_dir,
                external.as_ref().map(|(l, cp)| (l.as_str(), cp)),
            )
            .with_context(|| {
                format!("verifying the audit log in {}", global.state_dir.display())
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            match &report.broken {
                None => {
                    if !json {
                        println!(
                            "audit chain ok: {} records in {} blocks, root {}, head {}, {} signed checkpoints match",
                            report.records,
                            report.blocks,
                            report.root_hash,
                            report.head_hash.as_deref().unwrap_or("-"),
                            report.checkpoints_checked,
                        );
                        if let Some(w) = crate::audit::witness::summary(&global.state_dir) {
                            println!("{w}");
                        }
                        if let Some(b) = report.archived_through {
                            println!(
                                "blocks 0..={b} ({} records) are archived: their Merkle leaves and the signed archive base match",
                                report.archived_records
                            );
                        }
                        if let Some(c) = &report.consistency {
                            println!(
                                "consistent with {}: tree {} -> {} ({} proof hashes)",
                                checkpoint
                                    .as_ref()
                                    .map(|p| p.display().to_string())
                                    .unwrap_or_default(),
                                c.from_size,
                                c.to_size,
                                c.proof.len()
                            );
                        }
                    }
                    if current {
                        return verify_current(global, &target, state.as_deref(), json);
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Some(brk) => {
                    if !json {
                        println!("{brk}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Export { range } => {
            let log = open(global)?;
            let mut doc = log
                .export(range.unwrap_or_default())
                .context("exporting the audit log")?;
            let engine = crate::plugins::standard();
            if let Some(blocks) = doc.get_mut("blocks").and_then(|r| r.as_array_mut()) {
                for b in blocks {
                    if let Some(records) = b.get_mut("records").and_then(|r| r.as_array_mut()) {
                        for r in records {
                            let plugin = r["plugin"].as_str().unwrap_or_default().to_string();
                            if let Some(p) = engine.plugin(&plugin) {
                                p.redact_json(&mut r["metadata"]);
                            }
                        }
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Checkpoint => {
            let store = Store::new(&global.state_dir);
            let cp = store
                .latest()
                .context("reading the latest checkpoint")?
                .with_context(|| {
                    format!(
                        "no checkpoint at {}: the agent has not recorded anything in this state dir (check --state-dir)",
                        store.latest_path().display()
                    )
                })?;
            println!("{}", serde_json::to_string_pretty(&cp)?);
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Archive { before, output } => archive(global, &before, output),
        AuditCommand::Compact => {
            let mut log = open(global)?;
            let out = log.compact().context("compacting the audit log")?;
            println!(
                "compacted {}: {} -> {} bytes, {} stored frontiers dropped",
                log.path().display(),
                out.bytes_before,
                out.bytes_after,
                out.frontiers_dropped
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Search { query, json } => {
            let log = open(global)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let (q, mut records) = log
                .search(&query.join(" "), now)
                .context("searching the audit log")?;
            redact(&mut records);
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                if !q.phrases.is_empty() {
                    println!(
                        "# {} from {} to {}",
                        q.phrases.join(", "),
                        q.since.map_or("-".into(), format_time),
                        q.until.map_or("now".into(), format_time)
                    );
                }
                print_table(&records);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `audit archive --before DATE [--output FILE]`.
fn archive(
    global: &Global,
    before: &str,
    output: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let time = match before.strip_prefix('@') {
        Some(secs) => secs.parse::<i64>().ok(),
        None => crate::audit::search::parse_date(before),
    }
    .with_context(|| format!("--before '{before}': give YYYY-MM-DD or @UNIX-SECONDS"))?;
    let mut log = open(global)?;
    let blocks = log.blocks(crate::audit::BlockRange::all())?;
    let (Some(first), Some(last)) = (blocks.first().map(|b| b.id), blocks.last().map(|b| b.id))
    else {
        anyhow::bail!(
            "the audit log in {} has no blocks",
            global.state_dir.display()
        );
    };
    // The last block stays: the next apply links to it.
    let through = log.last_block_before(time)?.map(|b| b.min(last - 1));
    let Some(through) = through.filter(|b| *b >= first) else {
        println!("no block but the last is older than {before}: nothing archived");
        return Ok(ExitCode::SUCCESS);
    };
    let output = match output {
        Some(p) => p,
        None => {
            let dir = global.state_dir.join("audit-archives");
            crate::engine::state_dir::create_private_dir(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            dir.join(format!("blocks-{first}-{through}.json"))
        }
    };
    let out = log
        .archive(through, &output)
        .with_context(|| format!("archiving audit blocks through {through}"))?;
    println!(
        "archived blocks {}..={} (records {}..={}) to {}; the database keeps their Merkle leaves and a checkpoint signed for block {} (tree {}, root {})",
        out.first_block,
        out.last_block,
        out.first_record,
        out.last_record,
        out.file.display(),
        out.checkpoint.block,
        out.checkpoint.tree_size,
        out.checkpoint.root_hash
    );
    Ok(ExitCode::SUCCESS)
}

/// `audit verify --archive FILE`: the archive alone.
fn verify_archive_file(
    global: &Global,
    path: &std::path::Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let file: crate::audit::archive::ArchiveFile =
        serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is not an archive written by `audit archive`",
                path.display()
            )
        })?;
    let host_key = Store::new(&global.state_dir).public_key().ok().flatten();
    let report = crate::audit::archive::verify_archive(&file, host_key.as_deref());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    match &report.broken {
        None => {
            if !json {
                println!(
                    "archive ok: {} records in blocks {}..={}, tree {} root {} signed by {}",
                    report.records,
                    report.first_block.unwrap_or(0),
                    report.last_block.unwrap_or(0),
                    report.tree_size,
                    report.root_hash,
                    file.checkpoint.public_key
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(brk) => {
            if !json {
                println!("{}: {brk}", path.display());
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// `audit verify --current`: the engine's diff of the last block's desired
/// state against the host; exit 0 when it is empty, 1 with the differences.
fn verify_current(
    global: &Global,
    target: &super::query::TargetArgs,
    state: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let log = open(global)?;
    let block = log
        .blocks(BlockRange::all())
        .context("reading the audit blocks")?
        .into_iter()
        .rev()
        .find(|b| b.state_hash.is_some())
        .context("no block records a desired state yet: apply a state first")?;
    let block_hash = block.state_hash.clone().unwrap_or_default();
    let desired = match (state, &block.state) {
        (Some(path), _) => {
            let desired = DesiredState::load(path)?;
            if desired.hash != block_hash {
                println!(
                    "{} is not the state block {} applied: its hash is {}, the block's {block_hash}",
                    path.display(),
                    block.id,
                    desired.hash
                );
                return Ok(ExitCode::from(1));
            }
            desired
        }
        (None, Some(v)) => DesiredState::from_json(&v.to_string(), &format!("block {}", block.id))?,
        (None, None) => anyhow::bail!(
            "block {} keeps only the hash of the state it applied ({block_hash}): give that state file with --state FILE",
            block.id
        ),
    };
    let ctx = target.context(global, ApplyOptions::default());
    let engine = crate::plugins::standard();
    let diffs = runtime()?
        .block_on(engine.diff(&ctx, &desired))
        .context("querying the host")?;
    let lines: Vec<String> = diffs
        .iter()
        .flat_map(|d| {
            d.actions
                .iter()
                .map(move |a| format!("{:<9} {a}", d.plugin))
        })
        .collect();
    if json {
        let out = serde_json::json!({
            "block": block.id,
            "state_hash": block_hash,
            "matches": lines.is_empty(),
            "differences": diffs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if lines.is_empty() {
        println!("host matches block {} (state {block_hash})", block.id);
    } else {
        println!(
            "host differs from block {} (state {block_hash}): {} difference(s)",
            block.id,
            lines.len()
        );
        for l in &lines {
            println!("  {l}");
        }
    }
    Ok(if lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Fingerprints secrets in records written before the engine redacted them
/// (each record's plugin names its secrets; the chain is verified on the
/// stored bytes, not on this output).
fn redact(records: &mut [Record]) {
    let engine = crate::plugins::standard();
    for r in records {
        if let Some(p) = engine.plugin(&r.plugin) {
            p.redact_json(&mut r.metadata);
        }
    }
}

fn print_table(records: &[Record]) {
    println!(
        "{:>6}  {:>6}  {:<20}  {:<12}  {:<10}  {:<30}  {:<10}  HASH",
        "BLOCK", "ID", "TIME (UTC)", "PLUGIN", "ACTION", "RESOURCE", "RESULT"
    );
    for r in records {
        println!(
            "{:>6}  {:>6}  {:<20}  {:<12}  {:<10}  {:<30}  {:<10}  {}",
            r.block.map_or("-".into(), |b| b.to_string()),
            r.id,
            format_time(r.timestamp),
            r.plugin,
            r.action,
            r.resource,
            r.result,
            r.current_hash.get(..12).unwrap_or(&r.current_hash)
        );
    }
}

fn format_time(unix: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(fmt).ok())
        .unwrap_or_else(|| unix.to_string())
}
