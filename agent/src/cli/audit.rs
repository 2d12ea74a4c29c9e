//! `op-dbus-agent audit list|verify|export`: reads the hash-chained audit log
//! under `--state-dir`; `verify` exits 1 naming the first bad record.

use std::process::ExitCode;

use anyhow::Context;

use super::Global;
use crate::audit::{AuditLog, Record};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Print every record, oldest first.
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the whole chain; exit 1 naming the first bad record.
    Verify {
        /// Print the verification report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the log and its verification result as one JSON document.
    Export,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let log = AuditLog::open_existing(&global.state_dir)
        .with_context(|| format!("opening the audit log in {}", global.state_dir.display()))?;
    match args.command {
        AuditCommand::List { json } => {
            let mut records = log.list().context("reading the audit log")?;
            redact(&mut records);
            if json {
                println!("{}", serde_json::to_string_pretty(&records)?);
            } else {
                print_table(&records);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { json } => {
            let report = log.verify().context("verifying the audit chain")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            match &report.broken {
                None => {
                    if !json {
                        println!(
                            "audit chain ok: {} records, head {}",
                            report.records,
                            report.head_hash.as_deref().unwrap_or("-")
                        );
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
        AuditCommand::Export => {
            let mut doc = log.export().context("exporting the audit log")?;
            let engine = crate::plugins::standard();
            if let Some(records) = doc.get_mut("records").and_then(|r| r.as_array_mut()) {
                for r in records {
                    let plugin = r["plugin"].as_str().unwrap_or_default().to_string();
                    if let Some(p) = engine.plugin(&plugin) {
                        p.redact_json(&mut r["metadata"]);
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
    }
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
        "{:>6}  {:<20}  {:<12}  {:<10}  {:<30}  {:<10}  HASH",
        "ID", "TIME (UTC)", "PLUGIN", "ACTION", "RESOURCE", "RESULT"
    );
    for r in records {
        println!(
            "{:>6}  {:<20}  {:<12}  {:<10}  {:<30}  {:<10}  {}",
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
