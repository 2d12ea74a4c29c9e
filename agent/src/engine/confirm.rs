//! The `--confirm-timeout` handshake between an apply and `op-dbus-agent
//! confirm`: the apply leaves `<state-dir>/confirm.pending`, `confirm` answers
//! with `confirm.ok`, and the apply keeps its change only if that arrives in time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

pub const PENDING_FILE: &str = "confirm.pending";
pub const OK_FILE: &str = "confirm.ok";

fn pending(state_dir: &Path) -> PathBuf {
    state_dir.join(PENDING_FILE)
}

fn ok(state_dir: &Path) -> PathBuf {
    state_dir.join(OK_FILE)
}

/// Starts waiting for a confirmation; `what` is shown by `confirm`.
pub fn begin(state_dir: &Path, what: &str) -> anyhow::Result<()> {
    super::state_dir::ensure(state_dir)?;
    let _ = std::fs::remove_file(ok(state_dir));
    super::state_dir::write(state_dir, PENDING_FILE, what.as_bytes())
}

/// Waits up to `timeout` for `confirm`; clears the handshake files either way.
pub async fn wait(state_dir: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    let confirmed = loop {
        if ok(state_dir).exists() {
            break true;
        }
        if start.elapsed() >= timeout {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = std::fs::remove_file(ok(state_dir));
    let _ = std::fs::remove_file(pending(state_dir));
    confirmed
}

/// Confirms the pending change; returns its description, or `None` when no
/// change waits for confirmation.
pub fn confirm(state_dir: &Path) -> anyhow::Result<Option<String>> {
    let what = match std::fs::read_to_string(pending(state_dir)) {
        Ok(w) => w,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", pending(state_dir).display()))
        }
    };
    super::state_dir::write(state_dir, OK_FILE, b"ok\n")?;
    Ok(Some(what))
}
