//! Tamper-evident audit log of every change the agent makes, in SQLite at
//! `<state_dir>/@timing/blockchain.db`.
//!
//! - Every action is a record; each record's hash covers all its fields and
//!   its predecessor's hash, so edits, deletions and reordering show.
//! - Every apply is one block (`blocks`): the state's hash, the plugins and
//!   actions with their results, the rolled-back ones, the range of its
//!   records, the previous block's hash and the RFC 9162 Merkle root of all
//!   records up to it.
//! - After every block a checkpoint (tree size, root, block, time) is signed
//!   with the host's Ed25519 key and kept outside the database
//!   ([`checkpoint`]), so a database rewritten with recomputed hashes,
//!   replaced by an older copy, emptied or deleted no longer matches.
//! - `operations_fts` (SQLite FTS5) indexes resources, actions and notes for
//!   [`AuditLog::search`].

pub mod archive;
pub mod checkpoint;
pub mod merkle;
pub mod search;
pub mod witness;

use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::state_dir::{create_private_dir, tighten, FILE_MODE};
use checkpoint::{Checkpoint, CheckpointError, Store};
use merkle::{Frontier, Hash, Tree};

/// Directory under the state dir that holds the database (name from the seed layout).
pub const TIMING_DIR: &str = "@timing";
/// File name of the database inside [`TIMING_DIR`].
pub const DB_FILE: &str = "blockchain.db";
/// Domain tag that starts every hashed encoding; bump it if the encoding changes.
const HASH_DOMAIN: &[u8] = b"op-dbus-audit-v1";
/// Domain tag of a block's hash.
const BLOCK_DOMAIN: &[u8] = b"op-dbus-audit-block-v1";
/// Result a rolled-back action is recorded with (see [`NewEntry::result`]).
pub const ROLLED_BACK: &str = "rolled-back";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operations (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    operation TEXT NOT NULL,
    target TEXT NOT NULL,
    previous_hash TEXT,
    current_hash TEXT NOT NULL,
    embedding BLOB,
    metadata JSON,
    plugin TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL DEFAULT '',
    resource TEXT NOT NULL DEFAULT '',
    result TEXT NOT NULL DEFAULT '',
    state_hash TEXT
);
CREATE INDEX IF NOT EXISTS idx_timestamp ON operations(timestamp);
CREATE INDEX IF NOT EXISTS idx_operation ON operations(operation);
CREATE INDEX IF NOT EXISTS idx_target ON operations(target);
CREATE TABLE IF NOT EXISTS blocks (
    id INTEGER PRIMARY KEY,
    timestamp INTEGER NOT NULL,
    state_hash TEXT,
    previous_hash TEXT,
    first_record INTEGER NOT NULL,
    last_record INTEGER NOT NULL,
    tree_size INTEGER NOT NULL,
    tree_root TEXT NOT NULL,
    summary JSON NOT NULL,
    state JSON,
    block_hash TEXT NOT NULL,
    frontier TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_block_time ON blocks(timestamp);
CREATE VIRTUAL TABLE IF NOT EXISTS operations_fts USING fts5(
    plugin, action, resource, result, notes, tokenize = 'porter unicode61'
);
";

const COLUMNS: &str = "id, timestamp, operation, target, previous_hash, current_hash, \
                       embedding, metadata, plugin, action, resource, result, state_hash, block";

const BLOCK_COLUMNS: &str = "id, timestamp, state_hash, previous_hash, first_record, last_record, \
                             tree_size, tree_root, summary, state, block_hash, frontier";

/// Failures of the audit database itself (a broken chain is a [`VerifyReport`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("nothing to append to the audit log")]
    Empty,
    #[error("creating the audit directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {path} or setting its mode to 0600")]
    Private {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no audit database at {0}: the agent has not recorded anything in this state dir (check --state-dir)")]
    Missing(PathBuf),
    #[error("audit database {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("audit record {id} has metadata that is not JSON")]
    Metadata {
        id: i64,
        #[source]
        source: serde_json::Error,
    },
    #[error("audit database {path} is {what} but the signed checkpoint {checkpoint} records {tree_size} records up to block {block}: restore the database from a backup (or move {checkpoint_dir} aside to start a new history on purpose); nothing was recorded")]
    ChainLost {
        path: PathBuf,
        what: &'static str,
        checkpoint: PathBuf,
        checkpoint_dir: PathBuf,
        tree_size: u64,
        block: i64,
    },
    #[error("audit database {path} does not pass verification ({brk}); nothing was recorded: run `op-dbus-agent audit verify` and restore the database from a backup")]
    Broken { path: PathBuf, brk: ChainBreak },
    #[error("audit checkpoint")]
    Checkpoint(#[from] CheckpointError),
    #[error("nothing to archive through block {through}: the database holds blocks {first}..={last} and the last block stays (give a later date, or wait for more applies)")]
    NothingToArchive { through: i64, first: i64, last: i64 },
}

/// What the caller records; the log adds id, time and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    /// Plugin that acted (`network`, `systemd`, ...).
    pub plugin: String,
    /// What it did (`create`, `modify`, `delete`, `apply`, ...).
    pub action: String,
    /// The resource it acted on (`bridge:vmbr0`, `unit:sshd.service`).
    pub resource: String,
    /// Outcome (`ok`, `failed: ...`, `rolled-back`).
    pub result: String,
    /// SHA-256 (hex) of the desired state the change came from, if any.
    pub state_hash: Option<String>,
    /// Free-form context.
    pub metadata: serde_json::Value,
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub id: i64,
    /// The block (apply) the record belongs to.
    pub block: Option<i64>,
    /// Unix seconds.
    pub timestamp: i64,
    /// `plugin.action` (`genesis` for record 0), the seed's `operation` column.
    pub operation: String,
    /// The resource, the seed's `target` column.
    pub target: String,
    pub plugin: String,
    pub action: String,
    pub resource: String,
    pub result: String,
    pub state_hash: Option<String>,
    pub metadata: serde_json::Value,
    pub previous_hash: Option<String>,
    pub current_hash: String,
}

/// One stored block: one apply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Block {
    pub id: i64,
    /// Unix seconds.
    pub timestamp: i64,
    /// SHA-256 of the desired state applied.
    pub state_hash: Option<String>,
    /// Hash of the block before (none for block 0).
    pub previous_hash: Option<String>,
    /// Its records, `first_record..=last_record`.
    pub first_record: i64,
    pub last_record: i64,
    /// Records in the log up to and including this block, and their Merkle root.
    pub tree_size: u64,
    pub tree_root: String,
    /// `{"plugins": {name: [{record, action, resource, result}]}, "rolled_back": [...], "failed": [...]}`.
    pub summary: serde_json::Value,
    /// The desired state (secrets redacted), when the caller gave it.
    pub state: Option<serde_json::Value>,
    pub block_hash: String,
}

/// Result of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// Blocks read.
    pub blocks: u64,
    /// Hash of the last record (the chain head), if any.
    pub head_hash: Option<String>,
    /// Hash of the last block, if any.
    pub block_hash: Option<String>,
    /// Merkle root (hex) over all records read.
    pub root_hash: String,
    /// Signed checkpoints checked (journal lines and the latest).
    pub checkpoints_checked: u64,
    /// The consistency proof from a checkpoint given with `--checkpoint`.
    pub consistency: Option<Consistency>,
    /// The last block moved out by `audit archive` (verification starts after it).
    pub archived_through: Option<i64>,
    /// Records moved out (their Merkle leaves stay in the database).
    pub archived_records: u64,
    /// The first bad block, or `None` if the log is intact.
    pub broken: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// RFC 9162 consistency proof between a checkpoint and the log now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consistency {
    pub from_size: u64,
    pub from_root: String,
    pub to_size: u64,
    pub to_root: String,
    pub proof: Vec<String>,
    pub ok: bool,
}

/// Where and why the log breaks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainBreak {
    /// The first block that fails a check.
    pub block: i64,
    /// The first bad record in it, when a record is to blame.
    pub record: Option<i64>,
    pub reason: BreakReason,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.record {
            Some(r) => write!(
                f,
                "audit chain broken at block {} (record {r}): {}",
                self.block, self.reason
            ),
            None => write!(
                f,
                "audit chain broken at block {}: {}",
                self.block, self.reason
            ),
        }
    }
}

/// Why a block or record fails verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakReason {
    /// A record's stored hash does not match its fields: the record was edited.
    HashMismatch,
    /// A record's `previous_hash` is not the hash of the record before it.
    PreviousHashMismatch { previous_id: i64 },
    /// Record ids jump: the records in between are gone.
    Gap { missing_from: i64, missing_to: i64 },
    /// The first record is not a genesis record (id 0, no previous hash).
    BadGenesis,
    /// The metadata column is not JSON, or a column has the wrong type.
    Unreadable { detail: String },
    /// A block's stored hash does not match its fields.
    BlockHashMismatch,
    /// A block's `previous_hash` is not the hash of the block before it.
    BlockLinkMismatch,
    /// Block numbers jump: the blocks in between are gone.
    BlockGap { missing_from: i64, missing_to: i64 },
    /// The block's records end early: the tail was deleted.
    RecordsMissing { from: i64, to: i64 },
    /// A record's `block` column names another block.
    WrongBlock { record_block: Option<i64> },
    /// Records after the last block belong to no block (inserted).
    Unblocked { from: i64 },
    /// The Merkle root or size stored in the block is not the one its records give.
    RootMismatch,
    /// A signed checkpoint for this block names another root, size or block hash:
    /// the log was rewritten (hashes recomputed).
    CheckpointMismatch { checkpoint: String },
    /// A signed checkpoint names a block the database does not have: its
    /// tail was deleted, or it was replaced by an older copy.
    MissingBlocks { checkpoint: String, tree_size: u64 },
    /// The database is missing or empty while a signed checkpoint exists.
    DatabaseLost { checkpoint: String, tree_size: u64 },
    /// A checkpoint's signature does not verify, or it was signed by
    /// another key than the host's.
    BadSignature { checkpoint: String, detail: String },
    /// The consistency proof from the given checkpoint to the log fails.
    Inconsistent { checkpoint: String },
    /// The archive base (or an archive file) does not match what its
    /// signed checkpoint covers.
    Archive { detail: String },
}

impl std::fmt::Display for BreakReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HashMismatch => f.write_str("stored hash does not match its contents (edited?)"),
            Self::PreviousHashMismatch { previous_id } => write!(
                f,
                "previous_hash does not match record {previous_id}'s hash (deleted or reordered?)"
            ),
            Self::Gap {
                missing_from,
                missing_to,
            } if missing_from == missing_to => {
                write!(f, "record {missing_from} before it is missing (deleted?)")
            }
            Self::Gap {
                missing_from,
                missing_to,
            } => write!(
                f,
                "records {missing_from}..={missing_to} before it are missing (deleted?)"
            ),
            Self::BadGenesis => f.write_str(
                "the chain does not start with a genesis record (id 0, no previous hash)",
            ),
            Self::Unreadable { detail } => write!(f, "record is unreadable: {detail}"),
            Self::BlockHashMismatch => {
                f.write_str("the block's stored hash does not match its contents (edited?)")
            }
            Self::BlockLinkMismatch => f.write_str(
                "previous_hash does not match the hash of the block before (deleted or reordered?)",
            ),
            Self::BlockGap {
                missing_from,
                missing_to,
            } => write!(
                f,
                "blocks {missing_from}..={missing_to} before it are missing (deleted?)"
            ),
            Self::RecordsMissing { from, to } => {
                write!(f, "its records {from}..={to} are missing (deleted?)")
            }
            Self::WrongBlock { record_block } => match record_block {
                Some(b) => write!(f, "the record says it belongs to block {b} (moved?)"),
                None => f.write_str("the record names no block (inserted?)"),
            },
            Self::Unblocked { from } => write!(
                f,
                "records from {from} on belong to no block (inserted after the last apply?)"
            ),
            Self::RootMismatch => f.write_str(
                "the Merkle root stored in the block is not the root of the records (edited?)",
            ),
            Self::CheckpointMismatch { checkpoint } => write!(
                f,
                "the signed checkpoint in {checkpoint} names another Merkle root or block hash (history rewritten with recomputed hashes?)"
            ),
            Self::MissingBlocks {
                checkpoint,
                tree_size,
            } => write!(
                f,
                "the signed checkpoint in {checkpoint} covers {tree_size} records up to this block but the database ends before it (tail deleted, or the database replaced by an older copy?)"
            ),
            Self::DatabaseLost {
                checkpoint,
                tree_size,
            } => write!(
                f,
                "the database is missing or empty but the signed checkpoint in {checkpoint} covers {tree_size} records (deleted or emptied?)"
            ),
            Self::BadSignature { checkpoint, detail } => {
                write!(f, "the checkpoint in {checkpoint} {detail}")
            }
            Self::Archive { detail } => f.write_str(detail),
            Self::Inconsistent { checkpoint } => write!(
                f,
                "the log is not an extension of the checkpoint in {checkpoint}: the consistency proof fails (history rewritten or truncated?)"
            ),
        }
    }
}
/// Raw column values exactly as stored; hashing works on these bytes.
struct RawRow {
    id: i64,
    timestamp: i64,
    operation: String,
    target: String,
    previous_hash: Option<String>,
    current_hash: String,
    embedding: Option<Vec<u8>>,
    metadata: Option<String>,
    plugin: String,
    action: String,
    resource: String,
    result: String,
    state_hash: Option<String>,
    /// Not hashed: which block holds a record follows from the blocks' ranges.
    block: Option<i64>,
}

impl RawRow {
    fn from_sql(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            timestamp: row.get(1)?,
            operation: row.get(2)?,
            target: row.get(3)?,
            previous_hash: row.get(4)?,
            current_hash: row.get(5)?,
            embedding: row.get(6)?,
            metadata: row.get(7)?,
            plugin: row.get(8)?,
            action: row.get(9)?,
            resource: row.get(10)?,
            result: row.get(11)?,
            state_hash: row.get(12)?,
            block: row.get(13)?,
        })
    }

    /// SHA-256 (hex) over the domain tag and every field but `current_hash`, each
    /// length-prefixed and marked present/absent, in a fixed order.
    fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN);
        field(&mut h, Some(&self.id.to_be_bytes()));
        field(&mut h, Some(&self.timestamp.to_be_bytes()));
        field(&mut h, Some(self.operation.as_bytes()));
        field(&mut h, Some(self.target.as_bytes()));
        field(&mut h, self.previous_hash.as_deref().map(str::as_bytes));
        field(&mut h, self.embedding.as_deref());
        field(&mut h, self.metadata.as_deref().map(str::as_bytes));
        field(&mut h, Some(self.plugin.as_bytes()));
        field(&mut h, Some(self.action.as_bytes()));
        field(&mut h, Some(self.resource.as_bytes()));
        field(&mut h, Some(self.result.as_bytes()));
        field(&mut h, self.state_hash.as_deref().map(str::as_bytes));
        hex::encode(h.finalize())
    }

    fn into_record(self) -> Result<Record, AuditError> {
        let metadata = match &self.metadata {
            None => serde_json::Value::Null,
            Some(text) => serde_json::from_str(text).map_err(|source| AuditError::Metadata {
                id: self.id,
                source,
            })?,
        };
        Ok(Record {
            id: self.id,
            block: self.block,
            timestamp: self.timestamp,
            operation: self.operation,
            target: self.target,
            plugin: self.plugin,
            action: self.action,
            resource: self.resource,
            result: self.result,
            state_hash: self.state_hash,
            metadata,
            previous_hash: self.previous_hash,
            current_hash: self.current_hash,
        })
    }
}

/// Path of the audit database for a state dir.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TIMING_DIR).join(DB_FILE)
}

/// SHA-256 (hex) of a desired state, for [`NewEntry::state_hash`]. Keys are
/// sorted first so the same state always gives the same hash.
pub fn state_hash(state: &serde_json::Value) -> String {
    hex::encode(Sha256::digest(canonical_json(state).as_bytes()))
}

/// JSON text with object keys sorted recursively and no whitespace.
pub fn canonical_json(v: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// Whether the state asks for an audit log (`plugins.opdbus.audit.enabled`,
/// default true). With `false` the agent records nothing (the seeds'
/// agent-only mode).
pub fn enabled(state: &serde_json::Value) -> bool {
    state
        .pointer("/plugins/opdbus/audit/enabled")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(true)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Length-prefixed, presence-marked field of a hashed encoding.
fn field(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        None => h.update([0u8]),
        Some(b) => {
            h.update([1u8]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
    }
}

/// A block's columns exactly as stored.
struct RawBlock {
    id: i64,
    timestamp: i64,
    state_hash: Option<String>,
    previous_hash: Option<String>,
    first_record: i64,
    last_record: i64,
    tree_size: i64,
    tree_root: String,
    summary: String,
    state: Option<String>,
    block_hash: String,
    /// Not hashed: the Merkle frontier after the block, so the next append
    /// need not read every record (verify recomputes it).
    frontier: String,
}

impl RawBlock {
    fn from_sql(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            timestamp: row.get(1)?,
            state_hash: row.get(2)?,
            previous_hash: row.get(3)?,
            first_record: row.get(4)?,
            last_record: row.get(5)?,
            tree_size: row.get(6)?,
            tree_root: row.get(7)?,
            summary: row.get(8)?,
            state: row.get(9)?,
            block_hash: row.get(10)?,
            frontier: row.get(11)?,
        })
    }

    fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(BLOCK_DOMAIN);
        field(&mut h, Some(&self.id.to_be_bytes()));
        field(&mut h, Some(&self.timestamp.to_be_bytes()));
        field(&mut h, self.state_hash.as_deref().map(str::as_bytes));
        field(&mut h, self.previous_hash.as_deref().map(str::as_bytes));
        field(&mut h, Some(&self.first_record.to_be_bytes()));
        field(&mut h, Some(&self.last_record.to_be_bytes()));
        field(&mut h, Some(&self.tree_size.to_be_bytes()));
        field(&mut h, Some(self.tree_root.as_bytes()));
        field(&mut h, Some(self.summary.as_bytes()));
        field(&mut h, self.state.as_deref().map(str::as_bytes));
        hex::encode(h.finalize())
    }

    fn into_block(self) -> Block {
        Block {
            id: self.id,
            timestamp: self.timestamp,
            state_hash: self.state_hash,
            previous_hash: self.previous_hash,
            first_record: self.first_record,
            last_record: self.last_record,
            tree_size: self.tree_size as u64,
            tree_root: self.tree_root,
            summary: serde_json::from_str(&self.summary).unwrap_or(serde_json::Value::Null),
            state: self.state.and_then(|s| serde_json::from_str(&s).ok()),
            block_hash: self.block_hash,
        }
    }

    fn frontier(&self) -> Option<Frontier> {
        let nodes: Option<Vec<Hash>> = self
            .frontier
            .split(',')
            .filter(|s| !s.is_empty())
            .map(hash_from_hex)
            .collect();
        Frontier::from_parts(self.tree_size as u64, nodes?)
    }
}

fn hash_from_hex(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

fn frontier_text(f: &Frontier) -> String {
    f.nodes()
        .iter()
        .map(hex::encode)
        .collect::<Vec<_>>()
        .join(",")
}

/// The Merkle leaf of a record: `SHA-256(0x00 || record hash)` over the 32
/// bytes of its (recomputed) hash.
fn record_leaf(record_hash_hex: &str) -> Hash {
    merkle::leaf_hash(&hex::decode(record_hash_hex).unwrap_or_default())
}

/// An inclusive range of block numbers (`A..B`, `A..`, `..B`, `N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockRange {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl BlockRange {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn contains(&self, block: i64) -> bool {
        self.from.is_none_or(|f| block >= f) && self.to.is_none_or(|t| block <= t)
    }
}

impl std::str::FromStr for BlockRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| -> Result<Option<i64>, String> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse::<i64>()
                .map(Some)
                .map_err(|_| format!("'{t}' is not a block number"))
        };
        match s.split_once("..") {
            Some((a, b)) => {
                let b = b.strip_prefix('=').unwrap_or(b);
                Ok(Self {
                    from: num(a)?,
                    to: num(b)?,
                })
            }
            None => {
                let n = num(s)?.ok_or("empty block range: give A..B, A.., ..B or N")?;
                Ok(Self {
                    from: Some(n),
                    to: Some(n),
                })
            }
        }
    }
}

/// The block summary of a list of records: actions per plugin, the
/// rolled-back and the failed ones.
fn summarize(rows: &[RawRow]) -> serde_json::Value {
    let mut plugins: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    let mut rolled_back = Vec::new();
    let mut failed = Vec::new();
    for r in rows {
        let item = serde_json::json!({
            "record": r.id,
            "action": r.action,
            "resource": r.resource,
            "result": r.result,
        });
        if r.result == ROLLED_BACK {
            rolled_back.push(
                serde_json::json!({"plugin": r.plugin, "record": r.id, "resource": r.resource}),
            );
        } else if r.result.starts_with("failed") {
            failed.push(
                serde_json::json!({"plugin": r.plugin, "record": r.id, "resource": r.resource}),
            );
        }
        plugins.entry(r.plugin.as_str()).or_default().push(item);
    }
    serde_json::json!({
        "actions": rows.len(),
        "plugins": plugins,
        "rolled_back": rolled_back,
        "failed": failed,
    })
}

/// The audit database. One writer at a time (appends take the checkpoint
/// lock and SQLite's write lock).
pub struct AuditLog {
    conn: Connection,
    path: PathBuf,
    store: Store,
}

impl AuditLog {
    /// Opens the log under `state_dir`, creating the directory, schema,
    /// genesis block and its signed checkpoint when they do not exist yet.
    /// A database that is missing or empty while a checkpoint exists is an
    /// error ([`AuditError::ChainLost`]): the history is never restarted
    /// silently.
    /// The state dir and `@timing` are 0700, the database and its -wal,
    /// -shm and -journal files 0600 whatever the umask (it records what the
    /// agent changed on the host); wider modes found are tightened.
    pub fn open(state_dir: &Path) -> Result<AuditLog, AuditError> {
        let dir = state_dir.join(TIMING_DIR);
        for d in [state_dir, dir.as_path()] {
            create_private_dir(d).map_err(|source| AuditError::CreateDir {
                path: d.to_path_buf(),
                source,
            })?;
        }
        let path = dir.join(DB_FILE);
        let store = Store::new(state_dir);
        if !path.exists() {
            let _lock = store.lock()?;
            if let Some(cp) = store.latest()? {
                return Err(chain_lost(&path, &store, "missing", &cp));
            }
            if !path.exists() {
                build_new(&dir, &path)?;
            }
        }
        // Created 0600 before SQLite opens it; SQLite gives its -wal and -shm
        // files the database's mode.
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(FILE_MODE)
            .open(&path)
            .and_then(|_| tighten_db_files(&path))
            .map_err(|source| AuditError::Private {
                path: path.clone(),
                source,
            })?;
        let conn = Connection::open(&path).map_err(|source| AuditError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut log = AuditLog { conn, path, store };
        log.init()?;
        tighten_db_files(&log.path).map_err(|source| AuditError::Private {
            path: log.path.clone(),
            source,
        })?;
        Ok(log)
    }

    /// Opens an existing log without creating records (for `audit
    /// list|verify|export|search`); an older database gains the block
    /// tables on the way.
    pub fn open_existing(state_dir: &Path) -> Result<AuditLog, AuditError> {
        let path = db_path(state_dir);
        if !path.is_file() {
            return Err(AuditError::Missing(path));
        }
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(|source| AuditError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let mut log = AuditLog {
            conn,
            path,
            store: Store::new(state_dir),
        };
        log.pragmas()?;
        let path = log.path.clone();
        let tx = log
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err(&path))?;
        migrate(&tx).map_err(sql_err(&path))?;
        tx.commit().map_err(sql_err(&path))?;
        Ok(log)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checkpoint files next to it.
    pub fn checkpoints(&self) -> &Store {
        &self.store
    }

    fn sql_err(&self) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
        |source| AuditError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn pragmas(&self) -> Result<(), AuditError> {
        self.conn
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(self.sql_err())?;
        // WAL + FULL: a commit is on disk when append returns; a crash loses at
        // most the record being written. NORMAL would let a power loss take
        // back committed blocks whose signed checkpoint survived: a false
        // tamper alarm, or a committed transaction's record gone.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(self.sql_err())?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(self.sql_err())?;
        // No checkpoint when the connection closes: the WAL (synced at every
        // commit) stays next to the database and the next open reads it;
        // SQLite still folds it in every 1000 pages. A close costs no fsync
        // then, and the next apply appends to the WAL file that exists (no
        // new WAL header to sync). Copy `blockchain.db-wal` with the
        // database (`audit export` reads both through SQLite).
        self.conn
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )
            .map_err(self.sql_err())?;
        Ok(())
    }

    fn init(&mut self) -> Result<(), AuditError> {
        self.pragmas()?;
        let _lock = self.store.lock()?;
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        migrate(&tx).map_err(&err)?;
        let count: i64 = tx
            .query_row("SELECT EXISTS (SELECT 1 FROM operations)", [], |r| r.get(0))
            .map_err(&err)?;
        if count > 0 {
            tx.commit().map_err(&err)?;
            // A log just built ([`build_new`]) or from before checkpoints
            // (migrated): sign its head now, so losing it from here on shows.
            if !self.store.any() {
                if let Some(b) = self.raw_blocks(BlockRange::all())?.pop() {
                    self.store.write(
                        b.tree_size as u64,
                        b.tree_root,
                        b.id,
                        b.block_hash,
                        now_unix(),
                    )?;
                }
            }
            return Ok(());
        }
        if let Some(cp) = self.store.latest()? {
            return Err(chain_lost(&path, &self.store, "empty", &cp));
        }
        let timestamp = now_unix();
        let (_, block) = append_rows(&tx, &path, vec![genesis(timestamp)], None, None, timestamp)?;
        tx.commit().map_err(&err)?;
        self.store.write(
            block.tree_size as u64,
            block.tree_root,
            block.id,
            block.block_hash,
            timestamp,
        )?;
        Ok(())
    }

    /// Appends one record as a block of its own and returns it as stored.
    pub fn append(&mut self, entry: NewEntry) -> Result<Record, AuditError> {
        let mut out = self.append_all(vec![entry])?;
        out.pop().ok_or(AuditError::Empty)
    }

    /// Appends the records of one apply as one block, in one database
    /// transaction (all or none), in order, signs the new checkpoint and
    /// returns the records as stored. Nothing to append appends nothing.
    pub fn append_all(&mut self, entries: Vec<NewEntry>) -> Result<Vec<Record>, AuditError> {
        self.append_block(entries, None)
    }

    /// [`AuditLog::append_all`] keeping the desired state (secrets already
    /// redacted) in the block, for `rollback --to-block`.
    pub fn append_block(
        &mut self,
        entries: Vec<NewEntry>,
        desired: Option<&serde_json::Value>,
    ) -> Result<Vec<Record>, AuditError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _lock = self.store.lock()?;
        let latest = self.store.latest()?;
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let timestamp = now_unix();
        let rows = entries
            .into_iter()
            .map(|entry| RawRow {
                id: 0,
                timestamp,
                operation: format!("{}.{}", entry.plugin, entry.action),
                target: entry.resource.clone(),
                previous_hash: None,
                current_hash: String::new(),
                embedding: None,
                metadata: Some(canonical_json(&entry.metadata)),
                plugin: entry.plugin,
                action: entry.action,
                resource: entry.resource,
                result: entry.result,
                state_hash: entry.state_hash,
                block: None,
            })
            .collect();
        let desired = desired.map(canonical_json);
        let (rows, block) = append_rows(&tx, &path, rows, desired, latest.as_ref(), timestamp)?;
        tx.commit().map_err(&err)?;
        self.store.write(
            block.tree_size as u64,
            block.tree_root,
            block.id,
            block.block_hash,
            timestamp,
        )?;
        tracing::debug!(
            records = rows.len(),
            block = block.id,
            "audit block appended"
        );
        rows.into_iter().map(RawRow::into_record).collect()
    }

    fn raw_rows(&self, range: BlockRange) -> Result<Vec<rusqlite::Result<RawRow>>, AuditError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM operations \
                 WHERE (?1 IS NULL OR block >= ?1) AND (?2 IS NULL OR block <= ?2) ORDER BY id"
            ))
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map(params![range.from, range.to], RawRow::from_sql)
            .map_err(self.sql_err())?
            .collect();
        Ok(rows)
    }

    fn raw_blocks(&self, range: BlockRange) -> Result<Vec<RawBlock>, AuditError> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {BLOCK_COLUMNS} FROM blocks \
                 WHERE (?1 IS NULL OR id >= ?1) AND (?2 IS NULL OR id <= ?2) ORDER BY id"
            ))
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map(params![range.from, range.to], RawBlock::from_sql)
            .map_err(self.sql_err())?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.sql_err())?;
        Ok(rows)
    }

    /// All records, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, AuditError> {
        self.list_range(BlockRange::all())
    }

    /// The records of the blocks in `range`, oldest first.
    pub fn list_range(&self, range: BlockRange) -> Result<Vec<Record>, AuditError> {
        self.raw_rows(range)?
            .into_iter()
            .map(|r| r.map_err(self.sql_err())?.into_record())
            .collect()
    }

    /// The blocks in `range`, oldest first.
    pub fn blocks(&self, range: BlockRange) -> Result<Vec<Block>, AuditError> {
        Ok(self
            .raw_blocks(range)?
            .into_iter()
            .map(RawBlock::into_block)
            .collect())
    }

    /// Walks blocks and records from genesis and reports the first block
    /// that fails: a record's hash, its link, a gap in ids, the block's
    /// hash, its link, its record range, its Merkle root, or a signed
    /// checkpoint (journal and latest) that names another root or a block
    /// the database lacks.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        Ok(self.walk(None)?.0)
    }

    /// [`AuditLog::verify`], then checks the log against a checkpoint kept
    /// elsewhere (`label` names it in the report): its signature, its key,
    /// and the RFC 9162 consistency proof from its tree to the log now.
    pub fn verify_against(&self, label: &str, cp: &Checkpoint) -> Result<VerifyReport, AuditError> {
        Ok(self.walk(Some((label, cp)))?.0)
    }

    fn walk(
        &self,
        external: Option<(&str, &Checkpoint)>,
    ) -> Result<(VerifyReport, Vec<Hash>), AuditError> {
        let blocks = self.raw_blocks(BlockRange::all())?;
        let rows = self.raw_rows(BlockRange::all())?;
        let host_key = self.store.public_key()?;
        let base = archive::load_base(&self.conn).map_err(self.sql_err())?;
        let mut checkpoints: BTreeMap<i64, Vec<(String, Checkpoint)>> = BTreeMap::new();
        let journal_label = self.store.journal_path().display().to_string();
        for cp in self.store.journal()? {
            checkpoints
                .entry(cp.block)
                .or_default()
                .push((journal_label.clone(), cp));
        }
        if let Some(cp) = self.store.latest()? {
            let label = self.store.latest_path().display().to_string();
            checkpoints.entry(cp.block).or_default().push((label, cp));
        }
        let mut report = VerifyReport {
            records: 0,
            blocks: 0,
            head_hash: None,
            block_hash: None,
            root_hash: hex::encode(merkle::empty_root()),
            checkpoints_checked: 0,
            consistency: None,
            archived_through: None,
            archived_records: 0,
            broken: None,
        };
        let mut leaves: Vec<Hash> = Vec::with_capacity(rows.len());
        let mut frontier = Frontier::new();
        // Where the walk starts: after the archive base, if blocks were moved out.
        let mut start_row: Option<(i64, String)> = None;
        let mut start_block: Option<(i64, String)> = None;
        let mut base_break = None;
        if let Some((b, archived)) = base {
            let label = "the archive base (blocks moved out by `audit archive`)";
            base_break =
                archive::base_problem(&b, &archived, host_key.as_deref(), label).map(|reason| {
                    ChainBreak {
                        block: b.block,
                        record: None,
                        reason,
                    }
                });
            report.archived_through = Some(b.block);
            report.archived_records = archived.len() as u64;
            for l in &archived {
                frontier.push(*l);
            }
            leaves = archived;
            report.root_hash = hex::encode(frontier.root());
            start_row = Some((b.last_record, b.record_hash));
            start_block = Some((b.block, b.block_hash));
        }
        let brk = |block: i64, record: Option<i64>, reason: BreakReason| ChainBreak {
            block,
            record,
            reason,
        };
        let result = (|| -> Option<ChainBreak> {
            if base_break.is_some() {
                return base_break;
            }
            let mut rows = rows.into_iter().peekable();
            let (mut prev_row, mut prev_block) = (start_row, start_block);
            for b in &blocks {
                let expected = prev_block.as_ref().map_or(0, |(id, _)| id + 1);
                if b.id != expected {
                    return Some(brk(
                        b.id,
                        None,
                        BreakReason::BlockGap {
                            missing_from: expected,
                            missing_to: b.id - 1,
                        },
                    ));
                }
                let first = prev_row.as_ref().map_or(0, |(id, _)| id + 1);
                if b.first_record != first || b.last_record < b.first_record {
                    return Some(brk(b.id, Some(first), BreakReason::BlockHashMismatch));
                }
                if b.compute_hash() != b.block_hash {
                    return Some(brk(b.id, None, BreakReason::BlockHashMismatch));
                }
                if b.previous_hash.as_deref() != prev_block.as_ref().map(|(_, h)| h.as_str()) {
                    return Some(brk(b.id, None, BreakReason::BlockLinkMismatch));
                }
                for expected_id in b.first_record..=b.last_record {
                    let row = match rows.peek() {
                        None => {
                            return Some(brk(
                                b.id,
                                None,
                                BreakReason::RecordsMissing {
                                    from: expected_id,
                                    to: b.last_record,
                                },
                            ))
                        }
                        Some(Err(e)) => {
                            return Some(brk(
                                b.id,
                                Some(expected_id),
                                BreakReason::Unreadable {
                                    detail: e.to_string(),
                                },
                            ))
                        }
                        Some(Ok(row)) if row.id > b.last_record => {
                            return Some(brk(
                                b.id,
                                None,
                                BreakReason::RecordsMissing {
                                    from: expected_id,
                                    to: b.last_record,
                                },
                            ))
                        }
                        Some(Ok(_)) => match rows.next() {
                            Some(Ok(row)) => row,
                            _ => return None,
                        },
                    };
                    report.records += 1;
                    if row.id != expected_id {
                        return Some(brk(
                            b.id,
                            Some(row.id),
                            BreakReason::Gap {
                                missing_from: expected_id,
                                missing_to: row.id - 1,
                            },
                        ));
                    }
                    if let Some(reason) = check_row(&row, prev_row.as_ref()) {
                        return Some(brk(b.id, Some(row.id), reason));
                    }
                    if row.block != Some(b.id) {
                        return Some(brk(
                            b.id,
                            Some(row.id),
                            BreakReason::WrongBlock {
                                record_block: row.block,
                            },
                        ));
                    }
                    let leaf = record_leaf(&row.current_hash);
                    leaves.push(leaf);
                    frontier.push(leaf);
                    report.head_hash = Some(row.current_hash.clone());
                    prev_row = Some((row.id, row.current_hash));
                }
                let root = hex::encode(frontier.root());
                if b.tree_size as u64 != frontier.size()
                    || b.tree_root != root
                    || (!b.frontier.is_empty() && b.frontier().as_ref() != Some(&frontier))
                {
                    return Some(brk(b.id, None, BreakReason::RootMismatch));
                }
                for (label, cp) in checkpoints.get(&b.id).into_iter().flatten() {
                    report.checkpoints_checked += 1;
                    if let Some(reason) = signature_problem(label, cp, host_key.as_deref()) {
                        return Some(brk(b.id, None, reason));
                    }
                    if cp.tree_size != frontier.size()
                        || cp.root_hash != root
                        || cp.block_hash != b.block_hash
                    {
                        return Some(brk(
                            b.id,
                            None,
                            BreakReason::CheckpointMismatch {
                                checkpoint: label.clone(),
                            },
                        ));
                    }
                }
                report.blocks += 1;
                report.block_hash = Some(b.block_hash.clone());
                report.root_hash = root;
                prev_block = Some((b.id, b.block_hash.clone()));
            }
            let next_block = prev_block.as_ref().map_or(0, |(id, _)| id + 1);
            if let Some(row) = rows.next() {
                let from = row.map_or(prev_row.as_ref().map_or(0, |(id, _)| id + 1), |r| r.id);
                return Some(brk(next_block, Some(from), BreakReason::Unblocked { from }));
            }
            if let Some((_, list)) = checkpoints.range(next_block..).next_back() {
                let (label, cp) = list.last()?;
                let reason = match signature_problem(label, cp, host_key.as_deref()) {
                    Some(reason) => reason,
                    None if next_block == 0 => BreakReason::DatabaseLost {
                        checkpoint: label.clone(),
                        tree_size: cp.tree_size,
                    },
                    None => BreakReason::MissingBlocks {
                        checkpoint: label.clone(),
                        tree_size: cp.tree_size,
                    },
                };
                return Some(brk(next_block, None, reason));
            }
            if next_block == 0 {
                return Some(brk(0, None, BreakReason::BadGenesis));
            }
            if let Some((label, cp)) = external {
                return external_problem(
                    label,
                    cp,
                    host_key.as_deref(),
                    &leaves,
                    next_block,
                    &mut report,
                );
            }
            None
        })();
        report.broken = result;
        Ok((report, leaves))
    }

    /// The blocks of `range` with their records as JSON, each record with
    /// its RFC 9162 inclusion proof against the latest signed checkpoint,
    /// the checkpoint itself and the verification result: what a third
    /// party needs to check the records without the database.
    pub fn export(&self, range: BlockRange) -> Result<serde_json::Value, AuditError> {
        let (report, leaves) = self.walk(None)?;
        let latest = self.store.latest()?;
        let tree = Tree::new(leaves);
        let proof_size = latest
            .as_ref()
            .map_or(tree.size(), |cp| cp.tree_size.min(tree.size()));
        let records = self.list_range(range)?;
        let mut by_block: BTreeMap<i64, Vec<serde_json::Value>> = BTreeMap::new();
        for r in records {
            let index = r.id as u64;
            let proof: Option<Vec<String>> = (r.id >= 0 && index < proof_size).then(|| {
                tree.inclusion_proof(index, proof_size)
                    .iter()
                    .map(hex::encode)
                    .collect()
            });
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["leaf_index"] = serde_json::json!(index);
            v["inclusion_proof"] = serde_json::json!(proof);
            by_block.entry(r.block.unwrap_or(-1)).or_default().push(v);
        }
        let blocks: Vec<serde_json::Value> = self
            .blocks(range)?
            .into_iter()
            .map(|b| {
                let mut v = serde_json::to_value(&b).unwrap_or_default();
                v["records"] = serde_json::json!(by_block.remove(&b.id).unwrap_or_default());
                v
            })
            .collect();
        Ok(serde_json::json!({
            "format": "op-dbus-audit-v2",
            "database": self.path,
            "merkle": {
                "spec": "RFC 9162 section 2.1 (SHA-256)",
                "leaf": "SHA-256(0x00 || record current_hash as 32 bytes)",
                "proof_tree_size": proof_size,
                "proof_root": hex::encode(tree.root(proof_size)),
            },
            "checkpoint": latest,
            "public_key": self.store.public_key()?,
            "verify": report,
            "blocks": blocks,
        }))
    }

    /// Records matching a full-text query with optional time phrases
    /// ("bridge vmbr0", "containers created last week", "failed today"),
    /// oldest first; see [`search::Query`].
    pub fn search(
        &self,
        query: &str,
        now: i64,
    ) -> Result<(search::Query, Vec<Record>), AuditError> {
        let q = search::Query::parse(query, now);
        let fts = q.fts_expression();
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM operations WHERE \
                 (?1 IS NULL OR id IN (SELECT rowid FROM operations_fts WHERE operations_fts MATCH ?1)) \
                 AND (?2 IS NULL OR timestamp >= ?2) AND (?3 IS NULL OR timestamp < ?3) ORDER BY id"
            ))
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map(params![fts, q.since, q.until], RawRow::from_sql)
            .map_err(self.sql_err())?
            .map(|r| r.map_err(self.sql_err())?.into_record())
            .collect::<Result<Vec<_>, _>>()?;
        Ok((q, rows))
    }
}

/// Verifies the log of a state dir, also when its database is gone: a
/// missing database with a checkpoint is a break at block 0, without one
/// the [`AuditError::Missing`] error.
pub fn verify_state_dir(
    state_dir: &Path,
    external: Option<(&str, &Checkpoint)>,
) -> Result<VerifyReport, AuditError> {
    match AuditLog::open_existing(state_dir) {
        Ok(log) => match external {
            Some((label, cp)) => log.verify_against(label, cp),
            None => log.verify(),
        },
        Err(AuditError::Missing(path)) => {
            let store = Store::new(state_dir);
            let Some(cp) = store.latest()? else {
                return Err(AuditError::Missing(path));
            };
            Ok(VerifyReport {
                records: 0,
                blocks: 0,
                head_hash: None,
                block_hash: None,
                root_hash: hex::encode(merkle::empty_root()),
                checkpoints_checked: 0,
                consistency: None,
                archived_through: None,
                archived_records: 0,
                broken: Some(ChainBreak {
                    block: 0,
                    record: None,
                    reason: BreakReason::DatabaseLost {
                        checkpoint: store.latest_path().display().to_string(),
                        tree_size: cp.tree_size,
                    },
                }),
            })
        }
        Err(e) => Err(e),
    }
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
    move |source| AuditError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

fn chain_lost(path: &Path, store: &Store, what: &'static str, cp: &Checkpoint) -> AuditError {
    AuditError::ChainLost {
        path: path.to_path_buf(),
        what,
        checkpoint: store.latest_path(),
        checkpoint_dir: store.dir().to_path_buf(),
        tree_size: cp.tree_size,
        block: cp.block,
    }
}

/// A checkpoint whose signature fails or whose key is not the host's.
fn signature_problem(label: &str, cp: &Checkpoint, host_key: Option<&str>) -> Option<BreakReason> {
    let detail = if !cp.signature_ok() {
        "has a signature that does not verify (edited?)".to_string()
    } else {
        match host_key {
            Some(k) if k != cp.public_key => format!(
                "was signed by key {}, not by this host's key {k} (key replaced?)",
                cp.public_key
            ),
            _ => return None,
        }
    };
    Some(BreakReason::BadSignature {
        checkpoint: label.to_string(),
        detail,
    })
}

/// Checks a checkpoint kept elsewhere against the (locally intact) log.
fn external_problem(
    label: &str,
    cp: &Checkpoint,
    host_key: Option<&str>,
    leaves: &[Hash],
    next_block: i64,
    report: &mut VerifyReport,
) -> Option<ChainBreak> {
    report.checkpoints_checked += 1;
    if let Some(reason) = signature_problem(label, cp, host_key) {
        return Some(ChainBreak {
            block: cp.block,
            record: None,
            reason,
        });
    }
    let n = leaves.len() as u64;
    if cp.tree_size > n || cp.block >= next_block {
        return Some(ChainBreak {
            block: next_block,
            record: None,
            reason: BreakReason::MissingBlocks {
                checkpoint: label.to_string(),
                tree_size: cp.tree_size,
            },
        });
    }
    let tree = Tree::new(leaves.to_vec());
    let proof = tree.consistency_proof(cp.tree_size, n);
    let now_root = tree.root(n);
    let ok = hash_from_hex(&cp.root_hash)
        .is_some_and(|old| merkle::verify_consistency(cp.tree_size, n, &old, &now_root, &proof));
    report.consistency = Some(Consistency {
        from_size: cp.tree_size,
        from_root: cp.root_hash.clone(),
        to_size: n,
        to_root: hex::encode(now_root),
        proof: proof.iter().map(hex::encode).collect(),
        ok,
    });
    (!ok).then(|| ChainBreak {
        block: cp.block,
        record: None,
        reason: BreakReason::Inconsistent {
            checkpoint: label.to_string(),
        },
    })
}

/// Brings an older database up to the block layout: the `block` column, the
/// full-text index, and one block 0 holding every record found.
fn migrate(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(archive::ARCHIVE_SCHEMA)?;
    let has_block: bool = tx
        .prepare("SELECT 1 FROM pragma_table_info('operations') WHERE name = 'block'")?
        .exists([])?;
    if !has_block {
        tx.execute_batch("ALTER TABLE operations ADD COLUMN block INTEGER")?;
    }
    tx.execute_batch("CREATE INDEX IF NOT EXISTS idx_block ON operations(block)")?;
    // EXISTS, not COUNT(*): every open runs this, and COUNT scans the table.
    let blocks: i64 = tx.query_row("SELECT EXISTS (SELECT 1 FROM blocks)", [], |r| r.get(0))?;
    let records: i64 =
        tx.query_row("SELECT EXISTS (SELECT 1 FROM operations)", [], |r| r.get(0))?;
    if blocks > 0 || records == 0 {
        return Ok(());
    }
    // A log from before blocks: all its records become block 0, as stored
    // (verify still checks every record's hash and link).
    let rows: Vec<RawRow> = tx
        .prepare(&format!("SELECT {COLUMNS} FROM operations ORDER BY id"))?
        .query_map([], RawRow::from_sql)?
        .collect::<rusqlite::Result<_>>()?;
    let mut frontier = Frontier::new();
    for r in &rows {
        frontier.push(record_leaf(&r.current_hash));
        index_row(tx, r)?;
    }
    let mut summary = summarize(&rows);
    summary["migrated"] = serde_json::json!("records written before blocks existed");
    let mut block = RawBlock {
        id: 0,
        timestamp: rows.last().map_or_else(now_unix, |r| r.timestamp),
        state_hash: None,
        previous_hash: None,
        first_record: rows.first().map_or(0, |r| r.id),
        last_record: rows.last().map_or(0, |r| r.id),
        tree_size: frontier.size() as i64,
        tree_root: hex::encode(frontier.root()),
        summary: canonical_json(&summary),
        state: None,
        block_hash: String::new(),
        frontier: frontier_text(&frontier),
    };
    block.block_hash = block.compute_hash();
    insert_block(tx, &block)?;
    tx.execute("UPDATE operations SET block = 0", [])?;
    Ok(())
}

/// Links `rows` onto the log as the next block inside `tx`: assigns ids,
/// previous hashes and hashes, extends the Merkle frontier stored with the
/// last block, and refuses a log whose tail does not match the latest
/// signed checkpoint (older copy, rewritten) or whose last block does not
/// end at the last record.
fn append_rows(
    tx: &Connection,
    path: &Path,
    mut rows: Vec<RawRow>,
    desired: Option<String>,
    latest: Option<&Checkpoint>,
    timestamp: i64,
) -> Result<(Vec<RawRow>, RawBlock), AuditError> {
    let err = sql_err(path);
    let last_block: Option<RawBlock> = tx
        .query_row(
            &format!("SELECT {BLOCK_COLUMNS} FROM blocks ORDER BY id DESC LIMIT 1"),
            [],
            RawBlock::from_sql,
        )
        .optional()
        .map_err(&err)?;
    let last_record: Option<(i64, String)> = tx
        .query_row(
            "SELECT id, current_hash FROM operations ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(&err)?;
    let broken = |block: i64, reason: BreakReason| AuditError::Broken {
        path: path.to_path_buf(),
        brk: ChainBreak {
            block,
            record: None,
            reason,
        },
    };
    let next_block = last_block.as_ref().map_or(0, |b| b.id + 1);
    if let Some(cp) = latest {
        let label = "the latest checkpoint".to_string();
        if cp.block >= next_block {
            return Err(broken(
                next_block,
                BreakReason::MissingBlocks {
                    checkpoint: label,
                    tree_size: cp.tree_size,
                },
            ));
        }
        let hash: Option<String> = tx
            .query_row(
                "SELECT block_hash FROM blocks WHERE id = ?1",
                [cp.block],
                |r| r.get(0),
            )
            .optional()
            .map_err(&err)?;
        if hash.as_deref() != Some(cp.block_hash.as_str()) {
            return Err(broken(
                cp.block,
                BreakReason::CheckpointMismatch { checkpoint: label },
            ));
        }
    }
    let mut frontier = match &last_block {
        None => Frontier::new(),
        Some(b) => b
            .frontier()
            .ok_or_else(|| broken(b.id, BreakReason::RootMismatch))?,
    };
    let next_id = last_record.as_ref().map_or(0, |(id, _)| id + 1);
    match &last_block {
        Some(b) if b.last_record + 1 != next_id => {
            return Err(broken(
                next_block,
                BreakReason::Unblocked {
                    from: b.last_record + 1,
                },
            ))
        }
        None if next_id != 0 => return Err(broken(0, BreakReason::Unblocked { from: 0 })),
        _ => {}
    }
    let mut previous_hash = last_record.map(|(_, h)| h);
    for (i, raw) in rows.iter_mut().enumerate() {
        raw.id = next_id + i as i64;
        raw.block = Some(next_block);
        raw.previous_hash = previous_hash.take();
        raw.current_hash = raw.compute_hash();
        frontier.push(record_leaf(&raw.current_hash));
        previous_hash = Some(raw.current_hash.clone());
    }
    let mut block = RawBlock {
        id: next_block,
        timestamp,
        state_hash: rows.iter().find_map(|r| r.state_hash.clone()),
        previous_hash: last_block.map(|b| b.block_hash),
        first_record: next_id,
        last_record: next_id + rows.len() as i64 - 1,
        tree_size: frontier.size() as i64,
        tree_root: hex::encode(frontier.root()),
        summary: canonical_json(&summarize(&rows)),
        state: desired,
        block_hash: String::new(),
        frontier: frontier_text(&frontier),
    };
    block.block_hash = block.compute_hash();
    for raw in &rows {
        insert_raw(tx, raw).map_err(&err)?;
        index_row(tx, raw).map_err(&err)?;
    }
    insert_block(tx, &block).map_err(&err)?;
    Ok((rows, block))
}

/// Mode 0600 on the database and the files SQLite keeps next to it.
/// The first record of every log.
fn genesis(timestamp: i64) -> RawRow {
    let metadata = serde_json::json!({"version": "1.0", "deployment": "operation-dbus"});
    RawRow {
        id: 0,
        timestamp,
        operation: "genesis".into(),
        target: "system".into(),
        previous_hash: None,
        current_hash: String::new(),
        embedding: None,
        metadata: Some(canonical_json(&metadata)),
        plugin: "audit".into(),
        action: "genesis".into(),
        resource: "system".into(),
        result: "ok".into(),
        state_hash: None,
        block: None,
    }
}

/// Creates the database `path` (in `dir`) with its schema and genesis
/// block: built under a temporary name (0600) without journal or fsync,
/// switched to WAL, synced once and renamed into place, the directory
/// synced. A crash leaves no database or a whole one, never a half-built
/// one that a later open would take for the history; the temporary file
/// it may leave is ignored. Call with the checkpoint lock held (two
/// builders would replace each other's genesis). Costs two fsyncs where
/// SQLite's own switch to WAL and first commit cost seven.
fn build_new(dir: &Path, path: &Path) -> Result<(), AuditError> {
    let io = |source: std::io::Error| AuditError::Private {
        path: path.to_path_buf(),
        source,
    };
    let dfd: std::os::fd::OwnedFd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    let (tmp, file) =
        opdbus_common::rootfs::create_temp(&dfd, DB_FILE.as_ref(), FILE_MODE).map_err(io)?;
    let tmp = dir.join(tmp);
    let built = (|| {
        let err = sql_err(&tmp);
        let mut conn = Connection::open(&tmp).map_err(&err)?;
        conn.pragma_update(None, "journal_mode", "OFF")
            .map_err(&err)?;
        conn.pragma_update(None, "synchronous", "OFF")
            .map_err(&err)?;
        let tx = conn.transaction().map_err(&err)?;
        migrate(&tx).map_err(&err)?;
        let timestamp = now_unix();
        append_rows(&tx, &tmp, vec![genesis(timestamp)], None, None, timestamp)?;
        tx.commit().map_err(&err)?;
        // Header bytes only (file format 2); written without a journal.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(&err)?;
        conn.close().map_err(|(_, e)| err(e))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        nix::unistd::fsync(&dfd).map_err(|e| io(e.into()))
    })();
    if built.is_err() {
        let _ = std::fs::remove_file(&tmp);
        for side in ["-wal", "-shm", "-journal"] {
            let mut p = tmp.as_os_str().to_owned();
            p.push(side);
            let _ = std::fs::remove_file(p);
        }
    }
    built
}

fn tighten_db_files(db: &Path) -> std::io::Result<()> {
    tighten(db, FILE_MODE)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = db.as_os_str().to_owned();
        side.push(suffix);
        tighten(Path::new(&side), FILE_MODE)?;
    }
    Ok(())
}

fn check_row(row: &RawRow, prev: Option<&(i64, String)>) -> Option<BreakReason> {
    match prev {
        None if row.id != 0 || row.previous_hash.is_some() => return Some(BreakReason::BadGenesis),
        Some((prev_id, _)) if row.id != prev_id + 1 => {
            return Some(BreakReason::Gap {
                missing_from: prev_id + 1,
                missing_to: row.id - 1,
            })
        }
        _ => {}
    }
    if row.compute_hash() != row.current_hash {
        return Some(BreakReason::HashMismatch);
    }
    if let Some((prev_id, prev_hash)) = prev {
        if row.previous_hash.as_deref() != Some(prev_hash.as_str()) {
            return Some(BreakReason::PreviousHashMismatch {
                previous_id: *prev_id,
            });
        }
    }
    if let Some(meta) = &row.metadata {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(meta) {
            return Some(BreakReason::Unreadable {
                detail: format!("metadata is not JSON: {e}"),
            });
        }
    }
    None
}

fn insert_raw(conn: &Connection, raw: &RawRow) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO operations ({COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(params![
        raw.id,
        raw.timestamp,
        raw.operation,
        raw.target,
        raw.previous_hash,
        raw.current_hash,
        raw.embedding,
        raw.metadata,
        raw.plugin,
        raw.action,
        raw.resource,
        raw.result,
        raw.state_hash,
        raw.block,
    ])?;
    Ok(())
}

/// Adds a record to the full-text index (rowid = record id); the notes
/// column holds the metadata's string values.
fn index_row(conn: &Connection, raw: &RawRow) -> rusqlite::Result<()> {
    fn strings(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                out.push_str(s);
                out.push(' ');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| {
                out.push_str(k);
                out.push(' ');
                strings(v, out);
            }),
            other => {
                out.push_str(&other.to_string());
                out.push(' ');
            }
        }
    }
    let mut notes = String::new();
    if let Some(meta) = raw
        .metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
    {
        strings(&meta, &mut notes);
    }
    conn.prepare_cached(
        "INSERT INTO operations_fts (rowid, plugin, action, resource, result, notes) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        raw.id,
        raw.plugin,
        raw.action,
        raw.resource,
        raw.result,
        notes
    ])?;
    Ok(())
}

fn insert_block(conn: &Connection, b: &RawBlock) -> rusqlite::Result<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO blocks ({BLOCK_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        b.id,
        b.timestamp,
        b.state_hash,
        b.previous_hash,
        b.first_record,
        b.last_record,
        b.tree_size,
        b.tree_root,
        b.summary,
        b.state,
        b.block_hash,
        b.frontier,
    ])?;
    Ok(())
}
