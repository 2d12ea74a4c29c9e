//! What makes one apply one transaction on disk: the write-ahead journal
//! `transaction.json` (each plugin's checkpoint and planned actions, written
//! before the plugin's first action), the state-directory lock (one apply,
//! run or repair at a time) and the marker of a state rolled back for want
//! of `confirm`. The confirm decision itself is in [`super::confirm`].

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::plugin::ActionView;

/// The journal of the transaction in progress (or left by a dead agent).
pub const JOURNAL_FILE: &str = "transaction.json";
/// Held with `flock` by the process applying; holds its pid.
pub const LOCK_FILE: &str = "lock";
/// The state hash of a change rolled back for want of `confirm`.
pub const UNCONFIRMED_FILE: &str = "unconfirmed.json";

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// "2026-12-01 23:40:00 UTC" for messages.
pub fn format_time(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second] UTC"
            ))
            .ok()
        })
        .unwrap_or_else(|| format!("{secs} s after the epoch"))
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JournalPhase {
    /// Plugins are being applied; a journal found in this phase with its
    /// owner dead is restored.
    Applying,
    /// Everything applied and verified; waiting for `confirm` until `deadline`.
    AwaitingConfirm,
}

/// One plugin's part of the transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalEntry {
    pub plugin: String,
    /// What `restore` needs (may hold secrets: the file is 0600 and is
    /// never printed; reports carry the plugin's redacted view).
    pub checkpoint: Option<serde_json::Value>,
    /// The planned actions, redacted.
    pub actions: Vec<ActionView>,
}

/// The write-ahead journal of one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    /// The process that runs the transaction.
    pub pid: u32,
    pub state_hash: String,
    pub phase: JournalPhase,
    /// Seconds since the epoch.
    pub started: u64,
    /// With `--confirm-timeout`: when the change is rolled back unless confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// In the order applied.
    pub plugins: Vec<JournalEntry>,
}

/// A random transaction id (16 hex digits).
pub fn new_id() -> String {
    let mut b = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = ((n as u64) ^ u64::from(std::process::id()).rotate_left(32)).to_be_bytes();
    }
    hex::encode(b)
}

impl Journal {
    pub fn new(state_hash: &str) -> Self {
        Self {
            id: new_id(),
            pid: std::process::id(),
            state_hash: state_hash.to_string(),
            phase: JournalPhase::Applying,
            started: now(),
            deadline: None,
            plugins: Vec::new(),
        }
    }

    /// Writes the journal (0600, atomically) and syncs it.
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        super::state_dir::write(state_dir, JOURNAL_FILE, &text)
            .context("writing the transaction journal")
    }

    pub fn load(state_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = state_dir.join(JOURNAL_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map(Some).with_context(|| {
                format!(
                    "parsing the transaction journal {} (move it away to go on; \
                     the change it describes is then not rolled back)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Removes the journal: the transaction is over.
    pub fn remove(state_dir: &Path) -> anyhow::Result<()> {
        let path = state_dir.join(JOURNAL_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

/// The exclusive lock on the state directory; released on drop.
pub struct StateLock {
    _file: Flock<File>,
}

fn open_lock(state_dir: &Path) -> anyhow::Result<File> {
    super::state_dir::ensure(state_dir)?;
    let path = state_dir.join(LOCK_FILE);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(super::state_dir::FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))
}

fn holder(state_dir: &Path) -> String {
    std::fs::read_to_string(state_dir.join(LOCK_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

impl StateLock {
    /// Takes the lock, waiting up to `wait` for its holder; the error names
    /// the holder's pid.
    pub async fn acquire(state_dir: &Path, wait: Duration) -> anyhow::Result<Self> {
        let start = Instant::now();
        let mut file = open_lock(state_dir)?;
        let mut logged = false;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut f) => {
                    f.set_len(0)?;
                    f.rewind()?;
                    writeln!(f, "{}", std::process::id())?;
                    return Ok(Self { _file: f });
                }
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => {
                    file = f;
                    if start.elapsed() >= wait {
                        anyhow::bail!(
                            "the state directory {} is locked by op-dbus-agent pid {} \
                             (an apply, run or repair in progress); waited {} s: try again \
                             when it has finished",
                            state_dir.display(),
                            holder(state_dir),
                            wait.as_secs()
                        );
                    }
                    if !logged {
                        tracing::warn!(
                            "waiting for op-dbus-agent pid {} to release {}",
                            holder(state_dir),
                            state_dir.join(LOCK_FILE).display()
                        );
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((_, e)) => {
                    return Err(e).with_context(|| {
                        format!("locking {}", state_dir.join(LOCK_FILE).display())
                    })
                }
            }
        }
    }
}

/// A state rolled back because nobody confirmed it: the resident agent does
/// not apply it again (drift repair, boot re-apply) until the state changes
/// or an operator applies it explicitly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unconfirmed {
    pub state_hash: String,
    pub transaction: String,
    /// Seconds since the epoch.
    pub rolled_back: u64,
}

impl Unconfirmed {
    pub fn write(state_dir: &Path, state_hash: &str, transaction: &str) -> anyhow::Result<()> {
        let u = Unconfirmed {
            state_hash: state_hash.to_string(),
            transaction: transaction.to_string(),
            rolled_back: now(),
        };
        super::state_dir::write(state_dir, UNCONFIRMED_FILE, &serde_json::to_vec(&u)?)
    }

    pub fn read(state_dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(state_dir.join(UNCONFIRMED_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn clear(state_dir: &Path) {
        let _ = std::fs::remove_file(state_dir.join(UNCONFIRMED_FILE));
    }
}
