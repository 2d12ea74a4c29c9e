//! Hash-chained audit log of every change the agent makes, in SQLite at
//! `<state_dir>/@timing/blockchain.db`. Each record's hash covers all its
//! fields and its predecessor's hash, so edits, deletions and reordering show.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::state_dir::{create_private_dir, tighten, FILE_MODE};

/// Directory under the state dir that holds the database (name from the seed layout).
pub const TIMING_DIR: &str = "@timing";
/// File name of the database inside [`TIMING_DIR`].
pub const DB_FILE: &str = "blockchain.db";
/// Domain tag that starts every hashed encoding; bump it if the encoding changes.
const HASH_DOMAIN: &[u8] = b"op-dbus-audit-v1";

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
";

const COLUMNS: &str = "id, timestamp, operation, target, previous_hash, current_hash, \
                       embedding, metadata, plugin, action, resource, result, state_hash";

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

/// Result of [`AuditLog::verify`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Records read.
    pub records: u64,
    /// Hash of the last record (the chain head), if any.
    pub head_hash: Option<String>,
    /// The first bad record, or `None` if the chain is intact.
    pub broken: Option<ChainBreak>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainBreak {
    /// Id of the first record that fails a check.
    pub id: i64,
    pub reason: BreakReason,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit chain broken at record {}: {}",
            self.id, self.reason
        )
    }
}

/// Why a record fails verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakReason {
    /// Its stored hash does not match its fields: the record was edited.
    HashMismatch,
    /// Its `previous_hash` is not the hash of the record before it.
    PreviousHashMismatch { previous_id: i64 },
    /// Ids jump: the records in between are gone.
    Gap { missing_from: i64, missing_to: i64 },
    /// The first record is not a genesis record (id 0, no previous hash).
    BadGenesis,
    /// The metadata column is not JSON, or a column has the wrong type.
    Unreadable { detail: String },
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
        }
    }
}

/// The audit database. One writer at a time (appends take SQLite's write lock).
pub struct AuditLog {
    conn: Connection,
    path: PathBuf,
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
        })
    }

    /// SHA-256 (hex) over the domain tag and every field but `current_hash`, each
    /// length-prefixed and marked present/absent, in a fixed order.
    fn compute_hash(&self) -> String {
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

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl AuditLog {
    /// Opens the log under `state_dir`, creating the directory, schema and
    /// genesis record when they do not exist yet.
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
        let mut log = AuditLog { conn, path };
        log.init()?;
        tighten_db_files(&log.path).map_err(|source| AuditError::Private {
            path: log.path.clone(),
            source,
        })?;
        Ok(log)
    }

    /// Opens an existing log without creating anything (for `audit list|verify|export`).
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
        let log = AuditLog { conn, path };
        log.pragmas()?;
        Ok(log)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
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
        // most the record being written.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(self.sql_err())?;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(self.sql_err())?;
        Ok(())
    }

    fn init(&mut self) -> Result<(), AuditError> {
        self.pragmas()?;
        let path = self.path.clone();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(SCHEMA).map_err(err)?;
        let count: i64 = tx
            .query_row("SELECT COUNT(*) FROM operations", [], |r| r.get(0))
            .map_err(err)?;
        if count == 0 {
            let metadata = serde_json::json!({"version": "1.0", "deployment": "operation-dbus"});
            let mut raw = RawRow {
                id: 0,
                timestamp: now_unix(),
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
            };
            raw.current_hash = raw.compute_hash();
            insert_raw(&tx, &raw).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// Appends one record in its own transaction and returns it as stored.
    pub fn append(&mut self, entry: NewEntry) -> Result<Record, AuditError> {
        let mut out = self.append_all(vec![entry])?;
        out.pop().ok_or(AuditError::Empty)
    }

    /// Appends the records of one apply in one database transaction (all or
    /// none), in order, and returns them as stored.
    pub fn append_all(&mut self, entries: Vec<NewEntry>) -> Result<Vec<Record>, AuditError> {
        let path = self.path.clone();
        let err = |source| AuditError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, current_hash FROM operations ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        let (mut id, mut previous_hash) = match last {
            Some((id, hash)) => (id + 1, Some(hash)),
            None => (0, None),
        };
        let timestamp = now_unix();
        let mut rows = Vec::with_capacity(entries.len());
        for entry in entries {
            let mut raw = RawRow {
                id,
                timestamp,
                operation: format!("{}.{}", entry.plugin, entry.action),
                target: entry.resource.clone(),
                previous_hash: previous_hash.take(),
                current_hash: String::new(),
                embedding: None,
                metadata: Some(canonical_json(&entry.metadata)),
                plugin: entry.plugin,
                action: entry.action,
                resource: entry.resource,
                result: entry.result,
                state_hash: entry.state_hash,
            };
            raw.current_hash = raw.compute_hash();
            insert_raw(&tx, &raw).map_err(err)?;
            previous_hash = Some(raw.current_hash.clone());
            id += 1;
            rows.push(raw);
        }
        tx.commit().map_err(err)?;
        tracing::debug!(records = rows.len(), "audit records appended");
        rows.into_iter().map(RawRow::into_record).collect()
    }

    fn raw_rows(&self) -> Result<Vec<rusqlite::Result<RawRow>>, AuditError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM operations ORDER BY id"))
            .map_err(self.sql_err())?;
        let rows = stmt
            .query_map([], RawRow::from_sql)
            .map_err(self.sql_err())?
            .collect();
        Ok(rows)
    }

    /// All records, oldest first.
    pub fn list(&self) -> Result<Vec<Record>, AuditError> {
        self.raw_rows()?
            .into_iter()
            .map(|r| r.map_err(self.sql_err())?.into_record())
            .collect()
    }

    /// Walks the chain from genesis and reports the first record that fails:
    /// its own hash, its link to the previous record, or a gap in ids.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let rows = self.raw_rows()?;
        let mut report = VerifyReport {
            records: 0,
            head_hash: None,
            broken: None,
        };
        let mut prev: Option<(i64, String)> = None;
        for (pos, row) in rows.into_iter().enumerate() {
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    // The id column is INTEGER PRIMARY KEY, so position+offset
                    // is the best name we have for a row we cannot decode.
                    let id = prev.as_ref().map_or(pos as i64, |(id, _)| id + 1);
                    report.broken = Some(ChainBreak {
                        id,
                        reason: BreakReason::Unreadable {
                            detail: e.to_string(),
                        },
                    });
                    return Ok(report);
                }
            };
            report.records += 1;
            if let Some(reason) = check_row(&row, prev.as_ref()) {
                report.broken = Some(ChainBreak { id: row.id, reason });
                return Ok(report);
            }
            report.head_hash = Some(row.current_hash.clone());
            prev = Some((row.id, row.current_hash));
        }
        if report.records == 0 {
            report.broken = Some(ChainBreak {
                id: 0,
                reason: BreakReason::BadGenesis,
            });
        }
        Ok(report)
    }

    /// The whole log as JSON: format tag, verification result and all records.
    pub fn export(&self) -> Result<serde_json::Value, AuditError> {
        let report = self.verify()?;
        let records = self.list()?;
        Ok(serde_json::json!({
            "format": "op-dbus-audit-v1",
            "database": self.path,
            "verify": report,
            "records": records,
        }))
    }
}

/// Mode 0600 on the database and the files SQLite keeps next to it.
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
        if let Err(e) = serde_json::from_str::<serde_json::Value>(meta) {
            return Some(BreakReason::Unreadable {
                detail: format!("metadata is not JSON: {e}"),
            });
        }
    }
    None
}

fn insert_raw(conn: &Connection, raw: &RawRow) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO operations ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        ),
        params![
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
        ],
    )?;
    Ok(())
}
