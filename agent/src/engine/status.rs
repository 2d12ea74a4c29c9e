//! `<state-dir>/status.json`: whether the first reconcile is running, done or
//! failed, with the per-plugin report and the host's degraded arrays; what
//! `status [--wait]` reads.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::RunReport;
use crate::health::Degraded;
use opdbus_common::logging::Chain;
use opdbus_state::coverage::Unapplied;

pub const STATUS_FILE: &str = "status.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub status: Phase,
    /// Unix seconds of the last update.
    pub updated: i64,
    /// Process that wrote `running`; a dead pid means the run crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
    /// Failure lines (plugin and resource) or a fatal error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Parts of the state this version does not apply, by JSON pointer
    /// (also in `report`); `status` exits 3 for them unless they were allowed.
    #[serde(default)]
    pub not_applied: Vec<Unapplied>,
    /// The last version of the state file the resident agent refused; the
    /// state it held before stays in force. Cleared by the next valid version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// What a long action of the running reconcile is doing now (package
    /// transactions); only while `status` is `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RunProgress>,
    /// Storage arrays running with members missing (a raid1 btrfs mounted
    /// degraded): a warning, not a failure, so no exit code changes. Taken
    /// when the status is written, and again by [`Status::read`]: a disk
    /// can go missing long after the reconcile wrote its status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<Degraded>,
}

/// The host's degraded arrays now; when they cannot be read (logged at
/// debug), `previous`.
fn degraded_now(previous: Vec<Degraded>) -> Vec<Degraded> {
    match crate::health::degraded() {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!("checking for degraded arrays: {}", Chain(&e));
            previous
        }
    }
}

/// Progress of the action the running reconcile is in (see
/// [`set_progress`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunProgress {
    pub plugin: String,
    /// `install`, `remove`, `refresh-cache`.
    pub operation: String,
    /// 0..=100, absent while the backend cannot tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<u32>,
    /// What the backend says it is doing (`download`, `install`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The package the last per-item report was about, with its stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// Unix seconds of this report.
    pub updated: i64,
}

impl std::fmt::Display for RunProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.plugin, self.operation)?;
        match self.percentage {
            Some(p) => write!(f, " {p}%")?,
            None => write!(f, " (percentage unknown)")?,
        }
        if let Some(s) = &self.stage {
            write!(f, ", {s}")?;
        }
        if let Some(i) = &self.item {
            write!(f, ", {i}")?;
        }
        Ok(())
    }
}

/// Sets (or with `None` clears) the progress of the status file when it says
/// this process is running a reconcile; leaves any other status alone (an
/// `apply` from the command line writes none). True when it wrote.
pub fn set_progress(state_dir: &Path, progress: Option<RunProgress>) -> anyhow::Result<bool> {
    let file = path(state_dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    let mut status: Status =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
    if status.status != Phase::Running || status.pid != Some(std::process::id()) {
        return Ok(false);
    }
    if status.progress == progress {
        return Ok(false);
    }
    status.progress = progress;
    status.write(state_dir)?;
    Ok(true)
}

/// A state file version that did not validate (or could not be read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refused {
    /// The state file.
    pub file: String,
    /// Unix seconds when it was refused.
    pub at: i64,
    /// What `validate` says about it, one line per error.
    pub errors: Vec<String>,
    /// Hash of the state still in force.
    pub in_force: String,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATUS_FILE)
}

/// Unix seconds now.
pub fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl Status {
    pub fn running(state_hash: Option<String>) -> Self {
        Self {
            status: Phase::Running,
            updated: now(),
            pid: Some(std::process::id()),
            state_hash,
            report: None,
            errors: Vec::new(),
            not_applied: Vec::new(),
            refused: None,
            progress: None,
            degraded: degraded_now(Vec::new()),
        }
    }

    /// `done` or `failed` from a finished run.
    pub fn finished(report: RunReport) -> Self {
        Self {
            status: if report.any_failed() {
                Phase::Failed
            } else {
                Phase::Done
            },
            updated: now(),
            pid: None,
            state_hash: Some(report.state_hash.clone()),
            errors: {
                let mut e = report.failures();
                e.extend(report.rollback_summary().filter(|s| !e.contains(s)));
                e
            },
            not_applied: report.not_applied.clone(),
            report: Some(report),
            refused: None,
            progress: None,
            degraded: degraded_now(Vec::new()),
        }
    }

    /// `failed` with a fatal error (the state did not load, ...).
    pub fn fatal(error: String) -> Self {
        Self {
            status: Phase::Failed,
            updated: now(),
            pid: None,
            state_hash: None,
            report: None,
            errors: vec![error],
            not_applied: Vec::new(),
            refused: None,
            progress: None,
            degraded: degraded_now(Vec::new()),
        }
    }

    /// Writes `<state-dir>/status.json` atomically, 0600 (see [`super::state_dir`]).
    pub fn write(&self, state_dir: &Path) -> anyhow::Result<()> {
        super::state_dir::write(state_dir, STATUS_FILE, &serde_json::to_vec_pretty(self)?)
    }

    /// Reads the status file; `None` when the agent has not written one yet.
    /// A `running` status whose process is gone reads as `failed`; `degraded`
    /// is what the kernel says now (the file's when that cannot be read).
    pub fn read(state_dir: &Path) -> anyhow::Result<Option<Self>> {
        let file = path(state_dir);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let mut status: Status =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        if status.status == Phase::Running {
            if let Some(pid) = status.pid {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    status.status = Phase::Failed;
                    status.errors.push(format!(
                        "the agent (pid {pid}) exited while the reconcile was running"
                    ));
                }
            }
        }
        status.degraded = degraded_now(std::mem::take(&mut status.degraded));
        Ok(Some(status))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn no_degraded_array_leaves_the_file_as_before() {
        let mut s = Status::fatal("boom".into());
        s.degraded.clear();
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("degraded"), "{json}");
        let old: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(old, s);
    }
}
