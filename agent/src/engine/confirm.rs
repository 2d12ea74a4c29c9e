//! The `--confirm-timeout` decision between an apply and `op-dbus-agent
//! confirm` (a new process). While it waits, the apply leaves the token
//! `confirm-wait.<id>.json`; the decision is one rename(2) of that token:
//! `confirm` renames it to `confirm-ok.<id>.json`, the apply at its deadline
//! (or a later agent recovering it) to `confirm-expired.<id>.json`. Whoever
//! renames first wins, so `confirm` never says "confirmed" for a change that
//! is then rolled back. The id in the name keeps one transaction from taking
//! another's confirmation.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::transaction::{format_time, now};

const WAIT: &str = "confirm-wait.";
const OK: &str = "confirm-ok.";
const EXPIRED: &str = "confirm-expired.";
const SUFFIX: &str = ".json";

/// What `confirm` shows and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitToken {
    pub id: String,
    pub pid: u32,
    /// "network: 4 change(s), users: 1 change(s)".
    pub description: String,
    /// Seconds since the epoch.
    pub deadline: u64,
}

fn path(state_dir: &Path, prefix: &str, id: &str) -> PathBuf {
    state_dir.join(format!("{prefix}{id}{SUFFIX}"))
}

/// Starts waiting: writes the token `confirm` renames.
pub fn begin(state_dir: &Path, token: &WaitToken) -> anyhow::Result<()> {
    super::state_dir::write(
        state_dir,
        &format!("{WAIT}{}{SUFFIX}", token.id),
        &serde_json::to_vec(token)?,
    )
    .context("writing the confirm token")
}

/// How the decision on transaction `id` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Confirmed,
    /// Not confirmed in time (or the wait was cut short): roll back.
    Expired,
}

/// `confirm` has taken transaction `id` (non-blocking check).
pub fn is_confirmed(state_dir: &Path, id: &str) -> bool {
    path(state_dir, OK, id).exists()
}

/// The apply's side of the decision: claims "expired" unless `confirm`
/// renamed the token first.
pub fn expire(state_dir: &Path, id: &str) -> anyhow::Result<Decision> {
    let wait = path(state_dir, WAIT, id);
    match std::fs::rename(&wait, path(state_dir, EXPIRED, id)) {
        Ok(()) => Ok(Decision::Expired),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(if is_confirmed(state_dir, id) {
            Decision::Confirmed
        } else {
            // No token at all (the agent died before writing it): nobody
            // could confirm.
            Decision::Expired
        }),
        Err(e) => Err(e).with_context(|| format!("renaming {}", wait.display())),
    }
}

/// Removes transaction `id`'s decision files.
pub fn clear(state_dir: &Path, id: &str) {
    for prefix in [WAIT, OK, EXPIRED] {
        let _ = std::fs::remove_file(path(state_dir, prefix, id));
    }
}

/// What `op-dbus-agent confirm` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// The change stays.
    Confirmed(WaitToken),
    /// The deadline passed: the change is being (or will be) rolled back.
    TooLate(WaitToken),
    /// No change waits for confirmation.
    Nothing,
}

fn waiting(state_dir: &Path) -> anyhow::Result<Vec<(PathBuf, WaitToken)>> {
    let entries = match std::fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("listing {}", state_dir.display())),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.with_context(|| format!("listing {}", state_dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(WAIT) && name.ends_with(SUFFIX)) {
            continue;
        }
        let p = e.path();
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue; // decided meanwhile
        };
        let token: WaitToken =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        out.push((p, token));
    }
    Ok(out)
}

/// Confirms the change waiting in `state_dir` (only transaction `id` if given).
pub fn confirm(state_dir: &Path, id: Option<&str>) -> anyhow::Result<Confirmation> {
    let mut found = waiting(state_dir)?;
    found.retain(|(_, t)| id.is_none_or(|i| i == t.id));
    let Some((wait, token)) = found.pop() else {
        return Ok(Confirmation::Nothing);
    };
    if now() > token.deadline {
        return Ok(Confirmation::TooLate(token));
    }
    match std::fs::rename(&wait, path(state_dir, OK, &token.id)) {
        Ok(()) => Ok(Confirmation::Confirmed(token)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Confirmation::TooLate(token)),
        Err(e) => Err(e).with_context(|| format!("renaming {}", wait.display())),
    }
}

impl WaitToken {
    /// "by 2026-12-01 23:40:00 UTC (in 25 s)".
    pub fn by(&self) -> String {
        format!(
            "by {} (in {} s)",
            format_time(self.deadline),
            self.deadline.saturating_sub(now())
        )
    }
}
