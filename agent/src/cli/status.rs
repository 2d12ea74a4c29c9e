//! `op-dbus-agent status [--wait]`: exit 0 done, 1 failed, 2 still running (or
//! not started), 3 done but parts of the state were not applied by this
//! version (without `--allow-unapplied`), like `cloud-init status --wait`;
//! 1 also when the resident agent refused the state file's latest version.
//! `--result-line` prints the `OPDBUS-RESULT {json}` line the serial-console
//! unit shows. Degraded arrays (a raid1 btrfs with a disk missing) are read
//! from the kernel at print time, shown as `degraded:` lines and in the JSON,
//! and change no exit code.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::Global;
use crate::engine::{Phase, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Poll until the first reconcile is no longer running.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after N seconds (exit 2).
    #[arg(long, value_name = "N")]
    pub timeout: Option<u64>,
    /// Print the status file as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Print `OPDBUS-RESULT {json}` (one line).
    #[arg(long)]
    pub result_line: bool,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let status = loop {
        let status = Status::read(&global.state_dir)?;
        let running = status.as_ref().is_none_or(|s| s.status == Phase::Running);
        let timed_out = args
            .timeout
            .is_some_and(|t| start.elapsed() >= Duration::from_secs(t));
        if !args.wait || !running || timed_out {
            break status;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Without a status file the arrays are still the operator's concern.
    let not_started_degraded = match &status {
        Some(_) => Vec::new(),
        None => crate::health::degraded().unwrap_or_default(),
    };
    let json = match &status {
        Some(s) => serde_json::to_string(s)?,
        None if not_started_degraded.is_empty() => r#"{"status":"not-started"}"#.to_string(),
        None => serde_json::json!({"status": "not-started", "degraded": not_started_degraded})
            .to_string(),
    };
    if args.result_line {
        // One write(2) for the whole line, newline included: the console is
        // shared with journald's forwarding, and `println!` issues the JSON
        // and the newline as separate writes once the line outgrows stdout's
        // buffer, letting another unit's line land in between.
        let line = format!("OPDBUS-RESULT {json}\n");
        let mut out = std::io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.flush()?;
    } else if args.json {
        println!("{json}");
    } else {
        match &status {
            None => {
                println!("status: not started");
                for d in &not_started_degraded {
                    println!("degraded: {d}");
                }
            }
            Some(s) => {
                println!(
                    "status: {}",
                    serde_json::to_value(s.status)?.as_str().unwrap_or("?")
                );
                for d in &s.degraded {
                    println!("degraded: {d}");
                }
                if let Some(p) = s.progress.as_ref().filter(|_| s.status == Phase::Running) {
                    println!("progress: {p}");
                }
                for e in &s.errors {
                    println!("  {e}");
                }
                if !s.not_applied.is_empty() {
                    println!("not applied:");
                    for u in &s.not_applied {
                        println!("  {u}");
                    }
                }
                if let Some(w) = crate::audit::witness::summary(&global.state_dir) {
                    println!("{w}");
                }
                if let Some(r) = &s.refused {
                    println!(
                        "refused: the current {} does not validate; the state {} stays in force:",
                        r.file, r.in_force
                    );
                    for e in &r.errors {
                        println!("  {e}");
                    }
                }
            }
        }
    }
    let unapplied = status
        .as_ref()
        .and_then(|s| s.report.as_ref())
        .is_some_and(|r| !r.ok);
    let refused = status.as_ref().is_some_and(|s| s.refused.is_some());
    Ok(match status.map(|s| s.status) {
        Some(Phase::Done) if refused => ExitCode::from(1),
        Some(Phase::Done) if unapplied => ExitCode::from(crate::engine::EXIT_NOT_APPLIED),
        Some(Phase::Done) => ExitCode::SUCCESS,
        Some(Phase::Failed) => ExitCode::from(1),
        Some(Phase::Running) | None => ExitCode::from(2),
    })
}
