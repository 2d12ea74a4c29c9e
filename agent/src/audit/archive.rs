//! Moving old blocks out of the audit database (`audit archive`) and
//! shrinking what stays (`audit compact`) without losing verifiability.
//!
//! - Archive: the blocks up to N go into a JSON file the operator keeps
//!   (raw columns, each record with its RFC 9162 inclusion proof, the
//!   Merkle leaves before it, and a checkpoint signed for block N). The
//!   database keeps the Merkle leaves of the moved records (32 bytes each)
//!   and an *archive base* (block N, its hash, the last record's hash and
//!   that signed checkpoint), so `verify` starts from the base, roots and
//!   consistency proofs still cover the whole history, and the file
//!   verifies on its own ([`verify_archive`]).
//! - Compact: drops the Merkle frontier stored with every block but the
//!   last (it is not hashed and verify recomputes it), merges the
//!   full-text index, checkpoints the WAL and VACUUMs. Nothing hashed is
//!   touched.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use super::checkpoint::Checkpoint;
use super::merkle::{self, Frontier, Hash, Tree};
use super::{
    check_row, hash_from_hex, now_unix, record_leaf, signature_problem, sql_err, AuditError,
    AuditLog, BlockRange, BreakReason, ChainBreak, RawBlock, RawRow,
};

pub(super) const ARCHIVE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS archive_base (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    block INTEGER NOT NULL,
    block_hash TEXT NOT NULL,
    last_record INTEGER NOT NULL,
    record_hash TEXT NOT NULL,
    checkpoint JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS archived_leaves (id INTEGER PRIMARY KEY, leaf BLOB NOT NULL);
";

/// Format tag of an archive file.
pub const ARCHIVE_FORMAT: &str = "op-dbus-audit-archive-v1";

/// Where the archived prefix of the log ends: the last moved block and
/// record, and the checkpoint signed for it when it was moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveBase {
    pub block: i64,
    pub block_hash: String,
    pub last_record: i64,
    /// Hash of the last moved record (the next record links to it; its
    /// Merkle leaf is the last archived leaf).
    pub record_hash: String,
    pub checkpoint: Checkpoint,
}

/// A block as stored, in an archive file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivedBlock {
    pub id: i64,
    pub timestamp: i64,
    pub state_hash: Option<String>,
    pub previous_hash: Option<String>,
    pub first_record: i64,
    pub last_record: i64,
    pub tree_size: i64,
    pub tree_root: String,
    /// The summary column as stored (JSON text, hashed as is).
    pub summary: String,
    /// The desired state column as stored (JSON text or null).
    pub state: Option<String>,
    pub block_hash: String,
    pub records: Vec<ArchivedRecord>,
}

/// A record as stored, with its inclusion proof against the archive's checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchivedRecord {
    pub id: i64,
    pub timestamp: i64,
    pub operation: String,
    pub target: String,
    pub previous_hash: Option<String>,
    pub current_hash: String,
    /// Hex.
    pub embedding: Option<String>,
    /// The metadata column as stored (canonical JSON text, hashed as is).
    pub metadata: Option<String>,
    pub plugin: String,
    pub action: String,
    pub resource: String,
    pub result: String,
    pub state_hash: Option<String>,
    pub block: Option<i64>,
    pub inclusion_proof: Vec<String>,
}

/// An archive file: everything needed to check the moved blocks without the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveFile {
    pub format: String,
    /// How the tree is built (for a reader with another implementation).
    pub merkle: serde_json::Value,
    /// Signed for the last block in the file.
    pub checkpoint: Checkpoint,
    /// The host's public key (hex).
    pub public_key: Option<String>,
    /// The base of an earlier archive, when the file does not start at genesis.
    pub previous: Option<ArchiveBase>,
    /// Merkle leaves (hex) of the records before the first one in the file.
    pub prior_leaves: Vec<String>,
    pub blocks: Vec<ArchivedBlock>,
}

/// What [`AuditLog::archive`] moved.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveOutcome {
    pub first_block: i64,
    pub last_block: i64,
    pub first_record: i64,
    pub last_record: i64,
    pub file: PathBuf,
    pub checkpoint: Checkpoint,
}

/// What [`AuditLog::compact`] did.
#[derive(Debug, Clone, Serialize)]
pub struct CompactOutcome {
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Blocks whose stored frontier was dropped.
    pub frontiers_dropped: u64,
}

/// Result of [`verify_archive`].
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    pub blocks: u64,
    pub records: u64,
    pub first_block: Option<i64>,
    pub last_block: Option<i64>,
    pub tree_size: u64,
    pub root_hash: String,
    pub broken: Option<ChainBreak>,
}

impl ArchiveReport {
    pub fn is_ok(&self) -> bool {
        self.broken.is_none()
    }
}

/// The archive base and the archived leaves, if blocks were moved out.
pub(super) fn load_base(conn: &Connection) -> rusqlite::Result<Option<(ArchiveBase, Vec<Hash>)>> {
    let row: Option<(i64, String, i64, String, String)> = conn
        .query_row(
            "SELECT block, block_hash, last_record, record_hash, checkpoint FROM archive_base WHERE id = 0",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((block, block_hash, last_record, record_hash, cp)) = row else {
        return Ok(None);
    };
    let checkpoint: Checkpoint = serde_json::from_str(&cp).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let leaves = conn
        .prepare("SELECT leaf FROM archived_leaves ORDER BY id")?
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .map(|l| l.map(|b| <Hash>::try_from(b.as_slice()).unwrap_or_default()))
        .collect::<rusqlite::Result<Vec<Hash>>>()?;
    Ok(Some((
        ArchiveBase {
            block,
            block_hash,
            last_record,
            record_hash,
            checkpoint,
        },
        leaves,
    )))
}

/// Checks an archive base against its leaves: the signature (and key),
/// the block it names, the leaf count and root, the last record's leaf.
pub(super) fn base_problem(
    base: &ArchiveBase,
    leaves: &[Hash],
    host_key: Option<&str>,
    label: &str,
) -> Option<BreakReason> {
    let cp = &base.checkpoint;
    if let Some(reason) = signature_problem(label, cp, host_key) {
        return Some(reason);
    }
    let detail = if cp.block != base.block || cp.block_hash != base.block_hash {
        "names another block than its signed checkpoint"
    } else if leaves.len() as u64 != cp.tree_size || base.last_record + 1 != cp.tree_size as i64 {
        "keeps another number of Merkle leaves than its signed checkpoint covers"
    } else if hash_from_hex(&cp.root_hash) != Some(frontier_of(leaves).root()) {
        "keeps Merkle leaves whose root is not the one its checkpoint signs (edited?)"
    } else if leaves.last() != Some(&record_leaf(&base.record_hash)) {
        "names a last record hash that is not its last Merkle leaf (edited?)"
    } else {
        return None;
    };
    Some(BreakReason::Archive {
        detail: format!("{label} {detail}"),
    })
}

fn frontier_of(leaves: &[Hash]) -> Frontier {
    let mut f = Frontier::new();
    for l in leaves {
        f.push(*l);
    }
    f
}

fn broken_at(block: i64, record: Option<i64>, reason: BreakReason) -> ChainBreak {
    ChainBreak {
        block,
        record,
        reason,
    }
}

impl AuditLog {
    /// The last block stamped before `time` (Unix seconds), if any.
    pub fn last_block_before(&self, time: i64) -> Result<Option<i64>, AuditError> {
        self.conn
            .query_row(
                "SELECT MAX(id) FROM blocks WHERE timestamp < ?1",
                [time],
                |r| r.get(0),
            )
            .map_err(self.sql_err())
    }

    /// Moves blocks up to `through` (never the last block) into a new
    /// file `output` (0600, synced, refused if it exists), then removes
    /// them from the database keeping their Merkle leaves and a signed
    /// archive base. Refuses a log that does not verify.
    pub fn archive(&mut self, through: i64, output: &Path) -> Result<ArchiveOutcome, AuditError> {
        let _lock = self.store.lock()?;
        let (report, leaves) = self.walk(None)?;
        if let Some(brk) = report.broken {
            return Err(AuditError::Broken {
                path: self.path.clone(),
                brk,
            });
        }
        let last: i64 = self
            .conn
            .query_row("SELECT MAX(id) FROM blocks", [], |r| r.get(0))
            .map_err(self.sql_err())?;
        let previous = load_base(&self.conn)
            .map_err(self.sql_err())?
            .map(|(b, _)| b);
        let first_left = previous.as_ref().map_or(0, |b| b.block + 1);
        if through >= last || through < first_left {
            return Err(AuditError::NothingToArchive {
                through,
                first: first_left,
                last,
            });
        }
        let range = BlockRange {
            from: None,
            to: Some(through),
        };
        let blocks = self.raw_blocks(range)?;
        let rows = self
            .raw_rows(range)?
            .into_iter()
            .collect::<rusqlite::Result<Vec<RawRow>>>()
            .map_err(self.sql_err())?;
        let (Some(first_block), Some(end), Some(last_row)) =
            (blocks.first(), blocks.last(), rows.last())
        else {
            return Err(AuditError::NothingToArchive {
                through,
                first: first_left,
                last,
            });
        };
        let size = end.tree_size as u64;
        let checkpoint = self.store.sign(
            size,
            end.tree_root.clone(),
            end.id,
            end.block_hash.clone(),
            now_unix(),
        )?;
        let tree = Tree::new(leaves[..size as usize].to_vec());
        let first_record = first_block.first_record;
        let mut by_block: std::collections::BTreeMap<i64, Vec<ArchivedRecord>> = Default::default();
        for r in &rows {
            let proof = tree
                .inclusion_proof(r.id as u64, size)
                .iter()
                .map(hex::encode)
                .collect();
            by_block
                .entry(r.block.unwrap_or(-1))
                .or_default()
                .push(archived_record(r, proof));
        }
        let file = ArchiveFile {
            format: ARCHIVE_FORMAT.to_string(),
            merkle: serde_json::json!({
                "spec": "RFC 9162 section 2.1 (SHA-256)",
                "leaf": "SHA-256(0x00 || record current_hash as 32 bytes)",
                "record_hash": "see op-dbus-agent audit.rs RawRow::compute_hash",
            }),
            checkpoint: checkpoint.clone(),
            public_key: self.store.public_key()?,
            previous,
            prior_leaves: leaves[..first_record as usize]
                .iter()
                .map(hex::encode)
                .collect(),
            blocks: blocks
                .iter()
                .map(|b| archived_block(b, by_block.remove(&b.id).unwrap_or_default()))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).unwrap_or_default() + "\n";
        super::checkpoint::write_new(output, text.as_bytes())?;
        let base = ArchiveBase {
            block: end.id,
            block_hash: end.block_hash.clone(),
            last_record: last_row.id,
            record_hash: last_row.current_hash.clone(),
            checkpoint: checkpoint.clone(),
        };
        let path = self.path.clone();
        let err = sql_err(&path);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        {
            let mut ins = tx
                .prepare("INSERT OR REPLACE INTO archived_leaves (id, leaf) VALUES (?1, ?2)")
                .map_err(&err)?;
            for r in &rows {
                ins.execute(params![r.id, record_leaf(&r.current_hash).to_vec()])
                    .map_err(&err)?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO archive_base (id, block, block_hash, last_record, record_hash, checkpoint) \
             VALUES (0, ?1, ?2, ?3, ?4, ?5)",
            params![
                base.block,
                base.block_hash,
                base.last_record,
                base.record_hash,
                serde_json::to_string(&base.checkpoint).unwrap_or_default()
            ],
        )
        .map_err(&err)?;
        tx.execute("DELETE FROM operations WHERE id <= ?1", [last_row.id])
            .map_err(&err)?;
        tx.execute(
            "DELETE FROM operations_fts WHERE rowid <= ?1",
            [last_row.id],
        )
        .map_err(&err)?;
        tx.execute("DELETE FROM blocks WHERE id <= ?1", [end.id])
            .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(ArchiveOutcome {
            first_block: first_block.id,
            last_block: end.id,
            first_record,
            last_record: last_row.id,
            file: output.to_path_buf(),
            checkpoint,
        })
    }

    /// Shrinks the database: drops the stored Merkle frontier of every
    /// block but the last, merges the full-text index, truncates the WAL
    /// and VACUUMs. Refuses a log that does not verify.
    pub fn compact(&mut self) -> Result<CompactOutcome, AuditError> {
        let _lock = self.store.lock()?;
        let report = self.verify()?;
        if let Some(brk) = report.broken {
            return Err(AuditError::Broken {
                path: self.path.clone(),
                brk,
            });
        }
        let size = |p: &Path| -> u64 {
            let mut total = std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = p.as_os_str().to_owned();
            wal.push("-wal");
            total += std::fs::metadata(Path::new(&wal)).map_or(0, |m| m.len());
            total
        };
        let bytes_before = size(&self.path);
        let err = sql_err(&self.path);
        let dropped = self
            .conn
            .execute(
                "UPDATE blocks SET frontier = '' WHERE frontier != '' \
                 AND id < (SELECT MAX(id) FROM blocks)",
                [],
            )
            .map_err(&err)?;
        self.conn
            .execute_batch(
                "INSERT INTO operations_fts(operations_fts) VALUES ('optimize');
                 VACUUM;
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .map_err(&err)?;
        Ok(CompactOutcome {
            bytes_before,
            bytes_after: size(&self.path),
            frontiers_dropped: dropped as u64,
        })
    }
}

fn archived_record(r: &RawRow, inclusion_proof: Vec<String>) -> ArchivedRecord {
    ArchivedRecord {
        id: r.id,
        timestamp: r.timestamp,
        operation: r.operation.clone(),
        target: r.target.clone(),
        previous_hash: r.previous_hash.clone(),
        current_hash: r.current_hash.clone(),
        embedding: r.embedding.as_deref().map(hex::encode),
        metadata: r.metadata.clone(),
        plugin: r.plugin.clone(),
        action: r.action.clone(),
        resource: r.resource.clone(),
        result: r.result.clone(),
        state_hash: r.state_hash.clone(),
        block: r.block,
        inclusion_proof,
    }
}

fn archived_block(b: &RawBlock, records: Vec<ArchivedRecord>) -> ArchivedBlock {
    ArchivedBlock {
        id: b.id,
        timestamp: b.timestamp,
        state_hash: b.state_hash.clone(),
        previous_hash: b.previous_hash.clone(),
        first_record: b.first_record,
        last_record: b.last_record,
        tree_size: b.tree_size,
        tree_root: b.tree_root.clone(),
        summary: b.summary.clone(),
        state: b.state.clone(),
        block_hash: b.block_hash.clone(),
        records,
    }
}

fn raw_row(r: &ArchivedRecord) -> RawRow {
    RawRow {
        id: r.id,
        timestamp: r.timestamp,
        operation: r.operation.clone(),
        target: r.target.clone(),
        previous_hash: r.previous_hash.clone(),
        current_hash: r.current_hash.clone(),
        embedding: r.embedding.as_deref().and_then(|e| hex::decode(e).ok()),
        metadata: r.metadata.clone(),
        plugin: r.plugin.clone(),
        action: r.action.clone(),
        resource: r.resource.clone(),
        result: r.result.clone(),
        state_hash: r.state_hash.clone(),
        block: r.block,
    }
}

fn raw_block(b: &ArchivedBlock) -> RawBlock {
    RawBlock {
        id: b.id,
        timestamp: b.timestamp,
        state_hash: b.state_hash.clone(),
        previous_hash: b.previous_hash.clone(),
        first_record: b.first_record,
        last_record: b.last_record,
        tree_size: b.tree_size,
        tree_root: b.tree_root.clone(),
        summary: b.summary.clone(),
        state: b.state.clone(),
        block_hash: b.block_hash.clone(),
        frontier: String::new(),
    }
}

/// Checks an archive file on its own: the checkpoint's signature (and, when
/// `host_key` is given, that the host signed it), the earlier base it
/// continues, every block's and record's hash and link, every Merkle root,
/// every inclusion proof, and that the last block is the one the checkpoint
/// signs. Names the first bad block.
pub fn verify_archive(file: &ArchiveFile, host_key: Option<&str>) -> ArchiveReport {
    let cp = &file.checkpoint;
    let mut report = ArchiveReport {
        blocks: 0,
        records: 0,
        first_block: file.blocks.first().map(|b| b.id),
        last_block: file.blocks.last().map(|b| b.id),
        tree_size: cp.tree_size,
        root_hash: cp.root_hash.clone(),
        broken: None,
    };
    report.broken = (|| -> Option<ChainBreak> {
        let label = "the archive's checkpoint";
        if file.format != ARCHIVE_FORMAT {
            return Some(broken_at(
                cp.block,
                None,
                BreakReason::Archive {
                    detail: format!("the file is not an {ARCHIVE_FORMAT} archive"),
                },
            ));
        }
        let key = host_key.or(file.public_key.as_deref());
        if let Some(reason) = signature_problem(label, cp, key) {
            return Some(broken_at(cp.block, None, reason));
        }
        let prior: Option<Vec<Hash>> = file.prior_leaves.iter().map(|h| hash_from_hex(h)).collect();
        let Some(prior) = prior else {
            return Some(broken_at(
                cp.block,
                None,
                BreakReason::Archive {
                    detail: "its prior_leaves are not SHA-256 hashes".into(),
                },
            ));
        };
        let mut prev_row: Option<(i64, String)> = None;
        let mut prev_block: Option<(i64, String)> = None;
        match &file.previous {
            Some(base) => {
                if let Some(reason) =
                    base_problem(base, &prior, key, "the earlier archive base in the file")
                {
                    return Some(broken_at(base.block, None, reason));
                }
                prev_row = Some((base.last_record, base.record_hash.clone()));
                prev_block = Some((base.block, base.block_hash.clone()));
            }
            None if !prior.is_empty() => {
                return Some(broken_at(
                    0,
                    None,
                    BreakReason::Archive {
                        detail: "it has prior leaves but no earlier base".into(),
                    },
                ))
            }
            None => {}
        }
        let root = hash_from_hex(&cp.root_hash).unwrap_or_default();
        let mut frontier = frontier_of(&prior);
        for b in &file.blocks {
            let expected = prev_block.as_ref().map_or(0, |(id, _)| id + 1);
            if b.id != expected {
                return Some(broken_at(
                    b.id,
                    None,
                    BreakReason::BlockGap {
                        missing_from: expected,
                        missing_to: b.id - 1,
                    },
                ));
            }
            let raw = raw_block(b);
            if raw.compute_hash() != b.block_hash
                || b.first_record != prev_row.as_ref().map_or(0, |(id, _)| id + 1)
            {
                return Some(broken_at(b.id, None, BreakReason::BlockHashMismatch));
            }
            if b.previous_hash.as_deref() != prev_block.as_ref().map(|(_, h)| h.as_str()) {
                return Some(broken_at(b.id, None, BreakReason::BlockLinkMismatch));
            }
            let ids: Vec<i64> = b.records.iter().map(|r| r.id).collect();
            if ids != (b.first_record..=b.last_record).collect::<Vec<_>>() {
                return Some(broken_at(
                    b.id,
                    None,
                    BreakReason::RecordsMissing {
                        from: b.first_record,
                        to: b.last_record,
                    },
                ));
            }
            for r in &b.records {
                let row = raw_row(r);
                if let Some(reason) = check_row(&row, prev_row.as_ref()) {
                    return Some(broken_at(b.id, Some(r.id), reason));
                }
                if row.block != Some(b.id) {
                    return Some(broken_at(
                        b.id,
                        Some(r.id),
                        BreakReason::WrongBlock {
                            record_block: row.block,
                        },
                    ));
                }
                let leaf = record_leaf(&row.current_hash);
                let proof: Option<Vec<Hash>> =
                    r.inclusion_proof.iter().map(|h| hash_from_hex(h)).collect();
                if !proof.is_some_and(|p| {
                    merkle::verify_inclusion(r.id as u64, cp.tree_size, &leaf, &p, &root)
                }) {
                    return Some(broken_at(
                        b.id,
                        Some(r.id),
                        BreakReason::Archive {
                            detail: "the record's inclusion proof does not lead to the checkpoint's root".into(),
                        },
                    ));
                }
                frontier.push(leaf);
                report.records += 1;
                prev_row = Some((r.id, r.current_hash.clone()));
            }
            if b.tree_size as u64 != frontier.size() || b.tree_root != hex::encode(frontier.root())
            {
                return Some(broken_at(b.id, None, BreakReason::RootMismatch));
            }
            report.blocks += 1;
            prev_block = Some((b.id, b.block_hash.clone()));
        }
        let last_ok = prev_block
            .as_ref()
            .is_some_and(|(id, h)| *id == cp.block && *h == cp.block_hash);
        if !last_ok || frontier.size() != cp.tree_size || frontier.root() != root {
            let at = prev_block.map_or(cp.block, |(id, _)| id);
            return Some(broken_at(
                at,
                None,
                BreakReason::CheckpointMismatch {
                    checkpoint: label.into(),
                },
            ));
        }
        None
    })();
    report
}
