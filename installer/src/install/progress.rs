//! Phase events of an install: a line per phase for people on stderr, and
//! with `--json-progress` one JSON object per event on stdout for machines.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

/// Duration of one finished phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
    pub ok: bool,
}

/// Reports phases as they start and end and keeps their durations.
#[derive(Debug)]
pub struct Progress {
    json: bool,
    current: Option<(String, Instant)>,
    pub phases: Vec<PhaseTime>,
}

impl Progress {
    pub fn new(json: bool) -> Self {
        Progress {
            json,
            current: None,
            phases: Vec::new(),
        }
    }

    /// Ends the current phase (if any) successfully and starts `name`.
    pub fn phase(&mut self, name: &str, what: &str) {
        self.end(true, None);
        eprintln!("==> {name}: {what}");
        if self.json {
            println!(
                "{}",
                json!({"event": "phase-start", "phase": name, "what": what})
            );
        }
        self.current = Some((name.to_string(), Instant::now()));
    }

    /// Like [`Progress::phase`], at a safe point: after SIGINT/SIGTERM the
    /// next phase does not start and the caller unwinds (and cleans up).
    pub fn step(&mut self, name: &str, what: &str) -> Result<(), crate::interrupt::Interrupted> {
        crate::interrupt::check()?;
        self.phase(name, what);
        Ok(())
    }

    /// A detail inside the current phase.
    pub fn note(&self, message: &str) {
        eprintln!("    {message}");
        if self.json {
            let phase = self.current.as_ref().map(|(n, _)| n.as_str()).unwrap_or("");
            println!(
                "{}",
                json!({"event": "note", "phase": phase, "message": message})
            );
        }
    }

    /// Ends the current phase; `error` marks it failed.
    pub fn end(&mut self, ok: bool, error: Option<&str>) {
        if let Some((name, start)) = self.current.take() {
            let d: Duration = start.elapsed();
            if self.json {
                println!(
                    "{}",
                    json!({"event": "phase-end", "phase": name, "ok": ok, "seconds": d.as_secs_f64(), "error": error})
                );
            }
            self.phases.push(PhaseTime {
                phase: name,
                seconds: d.as_secs_f64(),
                ok,
            });
        }
    }
}
