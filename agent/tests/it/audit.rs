//! Audit log: append blocks and verify, then tamper with the SQLite file and
//! the files next to it directly (edit, delete, swap, truncate, replace,
//! empty, rewrite with recomputed hashes) and check that verify names the
//! first bad block; the Merkle tree against an independent implementation.

use std::path::{Path, PathBuf};
use std::process::Command;

use opdbus_agent::audit::{db_path, AuditLog, BlockRange, BreakReason, NewEntry};
use rusqlite::Connection;

fn entry(i: usize) -> NewEntry {
    NewEntry {
        plugin: "network".into(),
        action: "create".into(),
        resource: format!("bridge:vmbr{i}"),
        result: "ok".into(),
        state_hash: Some(opdbus_agent::audit::state_hash(
            &serde_json::json!({"i": i}),
        )),
        metadata: serde_json::json!({"ports": ["eth0"], "n": i}),
    }
}

/// A log with genesis (id 0) and records 1..=n.
fn log_with(dir: &Path, n: usize) -> AuditLog {
    let mut log = AuditLog::open(dir).unwrap();
    for i in 1..=n {
        let rec = log.append(entry(i)).unwrap();
        assert_eq!(rec.id, i as i64);
    }
    log
}

fn sql(dir: &Path, stmt: &str) {
    let conn = Connection::open(db_path(dir)).unwrap();
    conn.execute_batch(stmt).unwrap();
}

#[test]
fn append_and_verify_ok() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 5);
    assert!(db_path(dir.path()).ends_with("@timing/blockchain.db"));
    let records = log.list().unwrap();
    assert_eq!(records.len(), 6);
    assert_eq!(records[0].operation, "genesis");
    assert_eq!(records[0].previous_hash, None);
    for w in records.windows(2) {
        assert_eq!(
            w[1].previous_hash.as_deref(),
            Some(w[0].current_hash.as_str())
        );
    }
    assert_eq!(records[3].resource, "bridge:vmbr3");
    assert_eq!(records[3].operation, "network.create");
    assert_eq!(records[3].metadata["n"], 3);
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 6);
    assert_eq!(report.blocks, 6, "one block per append");
    assert_eq!(
        report.head_hash.as_deref(),
        Some(records[5].current_hash.as_str())
    );
    // Every block's checkpoint is in the journal, plus the latest.
    assert_eq!(report.checkpoints_checked, 7);
    let export = log.export(BlockRange::all()).unwrap();
    assert_eq!(export["blocks"].as_array().unwrap().len(), 6);
    assert_eq!(export["verify"]["broken"], serde_json::Value::Null);
}

#[test]
fn reopen_keeps_chain() {
    let dir = tempfile::tempdir().unwrap();
    let head = {
        let log = log_with(dir.path(), 2);
        log.list().unwrap().last().unwrap().current_hash.clone()
    };
    let mut log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(
        log.list().unwrap().len(),
        3,
        "reopen must not add a second genesis"
    );
    let rec = log.append(entry(3)).unwrap();
    assert_eq!(rec.id, 3);
    assert_eq!(rec.previous_hash.as_deref(), Some(head.as_str()));
    assert!(log.verify().unwrap().is_ok());
}

#[test]
fn edited_field_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 8);
    // one byte: vmbr4 -> vmbr5
    sql(
        dir.path(),
        "UPDATE operations SET resource = 'bridge:vmbr5' WHERE id = 4",
    );
    let report = log.verify().unwrap();
    let brk = report.broken.expect("edit must break the chain");
    assert_eq!((brk.block, brk.record), (4, Some(4)));
    assert_eq!(brk.reason, BreakReason::HashMismatch);
    assert_eq!(
        brk.to_string(),
        "audit chain broken at block 4 (record 4): stored hash does not match its contents (edited?)"
    );
}

#[test]
fn edited_metadata_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 3);
    sql(
        dir.path(),
        "UPDATE operations SET metadata = replace(metadata, 'eth0', 'eth1') WHERE id = 2",
    );
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!(
        (brk.record, brk.reason),
        (Some(2), BreakReason::HashMismatch)
    );
}

#[test]
fn edited_and_rehashed_record_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 4);
    // A forger who also replaces current_hash still breaks record 3's link.
    // (Always a different hash: one that began with "ab" was left as it
    // was, 1 run in 256, and the test failed.)
    sql(
        dir.path(),
        "UPDATE operations SET current_hash = \
         (CASE WHEN substr(current_hash, 1, 2) = 'ab' THEN 'cd' ELSE 'ab' END) || substr(current_hash, 3) \
         WHERE id = 2",
    );
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!(
        brk.record,
        Some(2),
        "the edited hash no longer matches record 2's contents"
    );
    assert_eq!(brk.reason, BreakReason::HashMismatch);
}

#[test]
fn deleted_middle_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 6);
    sql(dir.path(), "DELETE FROM operations WHERE id = 3");
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!(brk.block, 3);
    assert_eq!(brk.reason, BreakReason::RecordsMissing { from: 3, to: 3 });
    assert!(brk.to_string().contains("deleted"), "{brk}");
}

#[test]
fn deleted_and_renumbered_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 6);
    // Hide the gap: delete 3 and shift the later ids down.
    sql(
        dir.path(),
        "DELETE FROM operations WHERE id = 3;
         UPDATE operations SET id = id - 1 WHERE id > 3;",
    );
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!((brk.block, brk.record), (3, Some(3)));
}

#[test]
fn swapped_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 6);
    // Swap every column but the id between records 2 and 5.
    sql(
        dir.path(),
        "UPDATE operations SET id = -2 WHERE id = 2;
         UPDATE operations SET id = 2 WHERE id = 5;
         UPDATE operations SET id = 5 WHERE id = -2;",
    );
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!((brk.block, brk.record), (2, Some(2)));
}

#[test]
fn deleted_genesis_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2);
    sql(dir.path(), "DELETE FROM operations WHERE id = 0");
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!(
        (brk.block, brk.reason),
        (0, BreakReason::RecordsMissing { from: 0, to: 0 })
    );
}

#[test]
fn durable_settings_are_on() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 1));
    let conn = Connection::open(db_path(dir.path())).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn open_existing_refuses_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let err = AuditLog::open_existing(dir.path())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("no audit database"), "{err}");
    assert!(
        !db_path(dir.path()).exists(),
        "must not create the database"
    );
}

fn agent(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"))
        .args(args)
        .arg("--state-dir")
        .arg(dir)
        .env_remove("OPDBUS_STATE_DIR")
        .output()
        .unwrap()
}

#[test]
fn cli_verify_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 8));

    let ok = agent(dir.path(), &["audit", "verify"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("audit chain ok: 9 records in 9 blocks"),
        "{ok:?}"
    );

    let list = agent(dir.path(), &["audit", "list", "--json"]);
    assert_eq!(list.status.code(), Some(0));
    let records: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(records.as_array().unwrap().len(), 9);

    sql(
        dir.path(),
        "UPDATE operations SET result = 'failed' WHERE id = 7",
    );
    let bad = agent(dir.path(), &["audit", "verify"]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert_eq!(
        String::from_utf8_lossy(&bad.stdout).trim(),
        "audit chain broken at block 7 (record 7): stored hash does not match its contents (edited?)"
    );

    let export = agent(dir.path(), &["audit", "export"]);
    assert_eq!(export.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(doc["verify"]["broken"]["block"], 7);
    assert_eq!(doc["blocks"].as_array().unwrap().len(), 9);

    let empty = tempfile::tempdir().unwrap();
    let missing = agent(empty.path(), &["audit", "verify"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no audit database"));
}

#[test]
fn concurrent_writers_keep_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    drop(AuditLog::open(dir.path()).unwrap());
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let path = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut log = AuditLog::open(&path).unwrap();
                for i in 0..15 {
                    log.append(entry(w * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let log = AuditLog::open(dir.path()).unwrap();
    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 46);
    assert_eq!(report.blocks, 46);
}

// ---- blocks, Merkle tree, signed checkpoints ----

use opdbus_agent::audit::checkpoint::{Checkpoint, CHECKPOINT_DIR};
use opdbus_agent::audit::merkle::{self, Tree};
use opdbus_agent::audit::{verify_state_dir, AuditError, ChainBreak, ROLLED_BACK};

fn broken(dir: &Path) -> ChainBreak {
    verify_state_dir(dir, None)
        .unwrap()
        .broken
        .expect("verify must fail")
}

/// Closes nothing itself: copies the database and its WAL (callers drop
/// their log first; the WAL is not folded into the file on close), without
/// the -shm index (rebuilt from the WAL on open).
fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("@timing")).unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", db_path(to).display()));
    }
    std::fs::copy(db_path(from), db_path(to)).unwrap();
    let wal = |d: &Path| PathBuf::from(format!("{}-wal", db_path(d).display()));
    if wal(from).exists() {
        std::fs::copy(wal(from), wal(to)).unwrap();
    }
}

#[test]
fn one_block_per_apply_with_its_actions_and_rollbacks() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let state = serde_json::json!({"plugins": {"net": {"bridge": "vmbr0"}}});
    let hash = opdbus_agent::audit::state_hash(&state);
    let mut entries: Vec<NewEntry> = (1..=3)
        .map(|i| NewEntry {
            state_hash: Some(hash.clone()),
            ..entry(i)
        })
        .collect();
    entries[1].plugin = "systemd".into();
    entries[1].resource = "unit:nginx.service".into();
    entries[2].result = ROLLED_BACK.into();
    let recs = log.append_block(entries, Some(&state)).unwrap();
    assert_eq!(recs.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(recs.iter().all(|r| r.block == Some(1)));
    log.append_all(vec![entry(9)]).unwrap();
    assert!(
        log.append_all(Vec::new()).unwrap().is_empty(),
        "no actions, no block"
    );

    let blocks = log.blocks(BlockRange::all()).unwrap();
    assert_eq!(blocks.len(), 3, "genesis + two applies");
    let b = &blocks[1];
    assert_eq!((b.first_record, b.last_record, b.tree_size), (1, 3, 4));
    assert_eq!(b.state_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(b.state.as_ref(), Some(&state));
    assert_eq!(
        b.previous_hash.as_deref(),
        Some(blocks[0].block_hash.as_str())
    );
    assert_eq!(
        blocks[2].previous_hash.as_deref(),
        Some(b.block_hash.as_str())
    );
    assert_eq!(b.summary["actions"], 3);
    assert_eq!(
        b.summary["plugins"]["systemd"][0]["resource"],
        "unit:nginx.service"
    );
    assert_eq!(b.summary["plugins"]["network"].as_array().unwrap().len(), 2);
    assert_eq!(b.summary["rolled_back"][0]["resource"], "bridge:vmbr3");
    // Actions stay individually queryable, by block too.
    let only = log.list_range("1".parse().unwrap()).unwrap();
    assert_eq!(only.len(), 3);
    assert_eq!(only[1].resource, "unit:nginx.service");
    assert_eq!(log.list_range("2..".parse().unwrap()).unwrap()[0].id, 4);
    assert!(log.verify().unwrap().is_ok());
}

#[test]
fn deleted_tail_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 5));
    // The issue's case: the last records deleted used to pass verify.
    sql(dir.path(), "DELETE FROM operations WHERE id = 5");
    let brk = broken(dir.path());
    assert_eq!(
        (brk.block, brk.reason.clone()),
        (5, BreakReason::RecordsMissing { from: 5, to: 5 })
    );
    assert!(
        brk.to_string()
            .starts_with("audit chain broken at block 5: its records 5..=5 are missing"),
        "{brk}"
    );
}

#[test]
fn deleted_tail_block_is_named_by_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 5));
    sql(
        dir.path(),
        "DELETE FROM operations WHERE id >= 4; DELETE FROM blocks WHERE id >= 4;",
    );
    let brk = broken(dir.path());
    assert_eq!(brk.block, 4, "{brk}");
    assert!(
        matches!(brk.reason, BreakReason::MissingBlocks { tree_size: 6, .. }),
        "{brk}"
    );
    // The next apply refuses to build on the truncated log.
    let mut log = AuditLog::open(dir.path()).unwrap();
    let err = log.append(entry(9)).unwrap_err();
    assert!(matches!(err, AuditError::Broken { .. }), "{err}");
    assert!(err.to_string().contains("nothing was recorded"), "{err}");
}

#[test]
fn database_replaced_by_an_older_copy_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let old = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 3));
    copy_db(dir.path(), old.path());
    {
        let mut log = AuditLog::open(dir.path()).unwrap();
        for i in 4..=6 {
            log.append(entry(i)).unwrap();
        }
    }
    assert!(verify_state_dir(dir.path(), None).unwrap().is_ok());
    copy_db(old.path(), dir.path());
    let brk = broken(dir.path());
    assert_eq!(brk.block, 4, "{brk}");
    assert!(
        matches!(brk.reason, BreakReason::MissingBlocks { .. }),
        "{brk}"
    );
}

#[test]
fn database_emptied_or_deleted_is_named_and_not_restarted() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 3));
    sql(dir.path(), "DELETE FROM operations; DELETE FROM blocks;");
    let brk = broken(dir.path());
    assert_eq!(brk.block, 0);
    assert!(
        matches!(brk.reason, BreakReason::DatabaseLost { tree_size: 4, .. }),
        "{brk}"
    );
    let err = AuditLog::open(dir.path())
        .err()
        .expect("must refuse an emptied log");
    assert!(
        matches!(err, AuditError::ChainLost { what: "empty", .. }),
        "{err}"
    );
    assert_eq!(
        AuditLog::open_existing(dir.path())
            .unwrap()
            .list()
            .unwrap()
            .len(),
        0,
        "no fresh genesis written"
    );

    for side in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", db_path(dir.path()).display()));
    }
    let brk = broken(dir.path());
    assert!(
        matches!(brk.reason, BreakReason::DatabaseLost { .. }),
        "{brk}"
    );
    let err = AuditLog::open(dir.path())
        .err()
        .expect("must refuse a deleted log");
    assert!(
        matches!(
            err,
            AuditError::ChainLost {
                what: "missing",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("restore the database from a backup"),
        "{err}"
    );
    assert!(!db_path(dir.path()).exists(), "no new database created");
    let out = agent(dir.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .starts_with("audit chain broken at block 0: the database is missing or empty"),
        "{out:?}"
    );
}

/// Two logs sharing blocks 0..=2, then diverging: B is a complete, valid
/// chain with recomputed hashes, as a forger with the code would write it.
fn forked(n: usize) -> (tempfile::TempDir, tempfile::TempDir) {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    drop(log_with(a.path(), 2));
    copy_db(a.path(), b.path());
    let mut la = AuditLog::open(a.path()).unwrap();
    let mut lb = AuditLog::open(b.path()).unwrap();
    for i in 3..=n {
        la.append(entry(i)).unwrap();
        let mut forged = entry(i);
        if i == 3 {
            forged.resource = "bridge:evil".into();
        }
        lb.append(forged).unwrap();
    }
    assert!(
        lb.verify().unwrap().is_ok(),
        "the forged copy is internally valid"
    );
    (a, b)
}

#[test]
fn chain_rewritten_with_recomputed_hashes_is_named() {
    let (a, b) = forked(5);
    copy_db(b.path(), a.path());
    let brk = broken(a.path());
    assert_eq!(brk.block, 3, "{brk}");
    assert!(
        matches!(brk.reason, BreakReason::CheckpointMismatch { .. }),
        "{brk}"
    );
    assert!(brk.to_string().contains("recomputed hashes"), "{brk}");
}

#[test]
fn edited_checkpoint_and_foreign_key_are_named() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 3));
    let latest = dir.path().join(CHECKPOINT_DIR).join("latest.json");
    let mut cp: Checkpoint = serde_json::from_slice(&std::fs::read(&latest).unwrap()).unwrap();
    assert!(cp.signature_ok());
    assert_eq!((cp.tree_size, cp.block), (4, 3));
    cp.timestamp += 1;
    std::fs::write(&latest, serde_json::to_vec(&cp).unwrap()).unwrap();
    let brk = broken(dir.path());
    assert_eq!(brk.block, 3);
    assert!(
        matches!(brk.reason, BreakReason::BadSignature { .. }),
        "{brk}"
    );
    assert!(brk.to_string().contains("does not verify"), "{brk}");

    // Files are 0600 in a 0700 dir; the key is not in the database.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let cpdir = dir.path().join(CHECKPOINT_DIR);
    assert_eq!(mode(&cpdir), 0o700);
    for f in ["signing.key", "journal.jsonl", "latest.json"] {
        assert_eq!(mode(&cpdir.join(f)), 0o600, "{f}");
    }
    // A lost key is not silently regenerated.
    std::fs::remove_file(cpdir.join("signing.key")).unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let err = log.append(entry(8)).unwrap_err();
    assert!(err.to_string().contains("checkpoint"), "{err}");
    assert!(format!("{:#}", anyhow::Error::from(err)).contains("restore the key from a backup"));
}

#[test]
fn external_checkpoint_consistency() {
    let (a, b) = forked(4);
    // A checkpoint the auditor kept at block 3 (the CLI prints it).
    let cp_file = tempfile::NamedTempFile::new().unwrap();
    {
        let out = agent(a.path(), &["audit", "checkpoint"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        std::fs::write(cp_file.path(), &out.stdout).unwrap();
        let cp: Checkpoint = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cp.block, 4);
    }
    let mut la = AuditLog::open(a.path()).unwrap();
    for i in 5..=9 {
        la.append(entry(i)).unwrap();
    }
    drop(la);
    let cp_arg = cp_file.path().to_str().unwrap();
    let ok = agent(
        a.path(),
        &["audit", "verify", "--json", "--checkpoint", cp_arg],
    );
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let report: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(report["consistency"]["ok"], true);
    assert_eq!(report["consistency"]["from_size"], 5);
    assert_eq!(report["consistency"]["to_size"], 10);
    assert!(!report["consistency"]["proof"]
        .as_array()
        .unwrap()
        .is_empty());

    // The forger replaces database, key and checkpoints with B's (valid,
    // self-signed): only the checkpoint kept elsewhere notices.
    let _ = std::fs::remove_dir_all(a.path().join(CHECKPOINT_DIR));
    copy_db(b.path(), a.path());
    let cpa = a.path().join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&cpa).unwrap();
    for f in ["signing.key", "signing.pub", "journal.jsonl", "latest.json"] {
        std::fs::copy(b.path().join(CHECKPOINT_DIR).join(f), cpa.join(f)).unwrap();
    }
    assert!(
        verify_state_dir(a.path(), None).unwrap().is_ok(),
        "locally consistent"
    );
    let bad = agent(a.path(), &["audit", "verify", "--checkpoint", cp_arg]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.starts_with("audit chain broken at block 4: the checkpoint in"),
        "{text}"
    );
    assert!(text.contains("not by this host's key"), "{text}");
}

#[test]
fn consistency_proof_catches_a_rewrite_signed_with_the_same_key() {
    let (a, b) = forked(4);
    // The forger also has the host key: B's history re-signed with A's key.
    let cpb = b.path().join(CHECKPOINT_DIR);
    let cpa = a.path().join(CHECKPOINT_DIR);
    let kept: Checkpoint =
        serde_json::from_slice(&std::fs::read(cpa.join("latest.json")).unwrap()).unwrap();
    // Rebuild B from a copy of A's state at block 2 with A's key.
    let c = tempfile::tempdir().unwrap();
    drop(log_with(c.path(), 0));
    let _ = std::fs::remove_dir_all(c.path().join(CHECKPOINT_DIR));
    std::fs::create_dir_all(c.path().join(CHECKPOINT_DIR)).unwrap();
    for f in ["signing.key", "signing.pub"] {
        std::fs::copy(cpa.join(f), c.path().join(CHECKPOINT_DIR).join(f)).unwrap();
    }
    copy_db(b.path(), c.path());
    let _ = cpb;
    {
        let mut lc = AuditLog::open(c.path()).unwrap();
        lc.append(entry(5)).unwrap();
        lc.append(entry(6)).unwrap();
    }
    let log = AuditLog::open_existing(c.path()).unwrap();
    assert!(
        log.verify().unwrap().is_ok(),
        "the forgery is self-consistent and signed with the host key"
    );
    let report = log.verify_against("kept.json", &kept).unwrap();
    let brk = report.broken.expect("a rewritten history must fail");
    assert_eq!(brk.block, 4);
    assert!(
        matches!(brk.reason, BreakReason::Inconsistent { .. }),
        "{brk}"
    );
    assert_eq!(report.consistency.as_ref().map(|c| c.ok), Some(false));
}

/// RFC 9162 section 2.1 written independently (recursive, from the text)
/// in Python; its roots and proofs must equal ours byte for byte.
#[test]
fn merkle_tree_matches_an_independent_implementation() {
    let script = r#"
import hashlib, json, sys
def h(b): return hashlib.sha256(b).digest()
def mth(d):
    n = len(d)
    if n == 0: return h(b"")
    if n == 1: return h(b"\x00" + d[0])
    k = 1
    while k * 2 < n: k *= 2
    return h(b"\x01" + mth(d[:k]) + mth(d[k:]))
def path(m, d):
    n = len(d)
    if n <= 1: return []
    k = 1
    while k * 2 < n: k *= 2
    if m < k: return path(m, d[:k]) + [mth(d[k:])]
    return path(m - k, d[k:]) + [mth(d[:k])]
def subproof(m, d, b):
    n = len(d)
    if m == n: return [] if b else [mth(d)]
    k = 1
    while k * 2 < n: k *= 2
    if m <= k: return subproof(m, d[:k], b) + [mth(d[k:])]
    return subproof(m - k, d[k:], False) + [mth(d[:k])]
out = {}
N = 33
d = [bytes([i]) * (i % 5 + 1) for i in range(N)]
for n in range(0, N + 1):
    out["root %d" % n] = mth(d[:n]).hex()
    for m in range(n):
        out["path %d %d" % (m, n)] = [x.hex() for x in path(m, d[:n])]
    for m in range(1, n):
        out["proof %d %d" % (m, n)] = [x.hex() for x in subproof(m, d[:n], True)]
json.dump(out, sys.stdout)
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let py: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap();
    let n_max = 33u64;
    let data: Vec<Vec<u8>> = (0..n_max)
        .map(|i| vec![i as u8; (i % 5 + 1) as usize])
        .collect();
    let tree = Tree::new(data.iter().map(|d| merkle::leaf_hash(d)).collect());
    let hexes =
        |v: Vec<merkle::Hash>| serde_json::json!(v.iter().map(hex::encode).collect::<Vec<_>>());
    let mut compared = 0;
    for n in 0..=n_max {
        assert_eq!(
            py[&format!("root {n}")],
            hex::encode(tree.root(n)),
            "root {n}"
        );
        for m in 0..n {
            assert_eq!(
                py[&format!("path {m} {n}")],
                hexes(tree.inclusion_proof(m, n)),
                "path {m} {n}"
            );
            compared += 1;
        }
        for m in 1..n {
            assert_eq!(
                py[&format!("proof {m} {n}")],
                hexes(tree.consistency_proof(m, n)),
                "proof {m} {n}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, py.len() as u64 - (n_max + 1));

    // And the log's own root: leaves are SHA-256(0x00 || record hash).
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 6);
    let leaves: Vec<String> = log
        .list()
        .unwrap()
        .iter()
        .map(|r| r.current_hash.clone())
        .collect();
    let check = format!(
        "{script_head}\nprint(mth([bytes.fromhex(x) for x in {leaves:?}]).hex())",
        script_head = script.split("out = {}").next().unwrap()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(check)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report = log.verify().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        report.root_hash
    );
    // Every exported inclusion proof verifies against the signed root.
    let export = log.export(BlockRange::all()).unwrap();
    let root: merkle::Hash = hex::decode(export["checkpoint"]["root_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let size = export["checkpoint"]["tree_size"].as_u64().unwrap();
    assert_eq!(size, 7);
    for b in export["blocks"].as_array().unwrap() {
        for r in b["records"].as_array().unwrap() {
            let leaf =
                merkle::leaf_hash(&hex::decode(r["current_hash"].as_str().unwrap()).unwrap());
            let proof: Vec<merkle::Hash> = r["inclusion_proof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    hex::decode(h.as_str().unwrap())
                        .unwrap()
                        .try_into()
                        .unwrap()
                })
                .collect();
            let index = r["leaf_index"].as_u64().unwrap();
            assert!(
                merkle::verify_inclusion(index, size, &leaf, &proof, &root),
                "record {index}"
            );
        }
    }
}

#[test]
fn search_finds_resources_and_time_phrases() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 4);
    log.append(NewEntry {
        plugin: "lxc".into(),
        action: "create".into(),
        resource: "container:web1".into(),
        result: "ok".into(),
        state_hash: None,
        metadata: serde_json::json!({"description": "create container web1 from debian-12"}),
    })
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (_, hits) = log.search("bridge vmbr3", now).unwrap();
    assert_eq!(hits.iter().map(|r| r.id).collect::<Vec<_>>(), [3]);
    assert_eq!(hits[0].block, Some(3));
    let (_, hits) = log.search("containers created", now).unwrap();
    assert_eq!(
        hits.iter().map(|r| r.id).collect::<Vec<_>>(),
        [5],
        "stemmed words"
    );
    let (_, hits) = log.search("debian", now).unwrap();
    assert_eq!(hits.len(), 1, "notes are indexed");
    // Forge times: records 1 and 2 ten days ago, 3 thirty days ago.
    let week = 7 * 86_400;
    let this_monday =
        (now.div_euclid(86_400) - (now.div_euclid(86_400) + 3).rem_euclid(7)) * 86_400;
    sql(
        dir.path(),
        &format!(
            "UPDATE operations SET timestamp = {} WHERE id IN (1, 2);
             UPDATE operations SET timestamp = {} WHERE id = 3;",
            this_monday - week + 3600,
            now - 30 * 86_400
        ),
    );
    let (q, hits) = log.search("network last week", now).unwrap();
    assert_eq!(q.phrases, ["last week"]);
    assert_eq!(hits.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
    let (_, hits) = log.search("today", now).unwrap();
    assert!(hits.iter().all(|r| r.id == 0 || r.id >= 4), "{hits:?}");
    let out = agent(
        dir.path(),
        &["audit", "search", "--json", "bridge", "vmbr4"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["resource"], "bridge:vmbr4");
}

#[test]
fn verify_current_compares_the_host_with_the_last_block() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/machine-id"), "aaaa\n").unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"version": 1, "plugins": {"opdbus": {"root": "/var/lib/op-dbus", "subvolumes": {"@cache": {}, "@images": {}}}}}"#,
    )
    .unwrap();
    let state_dir = dir.path().join("sd");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"))
            .arg("--state-dir")
            .arg(&state_dir)
            .args(args)
            .arg("--root")
            .arg(&root)
            .env_remove("OPDBUS_STATE_DIR")
            .output()
            .unwrap()
    };
    let st = state.to_str().unwrap();
    let out = run(&["apply", st]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ok = run(&["audit", "verify", "--current", "--state", st]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("host matches block"),
        "{ok:?}"
    );

    // Drift: a subvolume the last block created is gone.
    std::fs::remove_dir(root.join("var/lib/op-dbus/@images")).unwrap();
    let bad = run(&["audit", "verify", "--current", "--state", st]);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("host differs from block") && text.contains("@images"),
        "{text}"
    );

    // Another state file than the one applied is refused.
    let other = dir.path().join("other.json");
    std::fs::write(&other, r#"{"version": 1, "plugins": {"opdbus": {"root": "/var/lib/op-dbus", "subvolumes": {"@cache": {}}}}}"#).unwrap();
    let wrong = run(&[
        "audit",
        "verify",
        "--current",
        "--state",
        other.to_str().unwrap(),
    ]);
    assert_eq!(wrong.status.code(), Some(1), "{wrong:?}");
    assert!(
        String::from_utf8_lossy(&wrong.stdout).contains("is not the state block"),
        "{wrong:?}"
    );
}

/// A new log is built under a temporary name and renamed into place; the
/// WAL is not folded into the database on close (no fsync at close) and the
/// next open reads it: every record and the signed head are still there.
#[test]
fn new_log_keeps_its_wal_across_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let timing = db_path(dir.path()).parent().unwrap().to_path_buf();
    // What a crash during an earlier build leaves: ignored, not taken for the log.
    std::fs::create_dir_all(&timing).unwrap();
    std::fs::write(timing.join(".blockchain.db.0000000000000000.tmp"), b"torn").unwrap();
    drop(log_with(dir.path(), 3));
    let wal = PathBuf::from(format!("{}-wal", db_path(dir.path()).display()));
    assert!(
        std::fs::metadata(&wal).unwrap().len() > 0,
        "the WAL stays after close"
    );
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&db_path(dir.path())), 0o600);
    assert_eq!(mode(&wal), 0o600);
    let names: Vec<String> = std::fs::read_dir(&timing)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && !n.contains("0000000000000000"))
        .collect();
    assert!(names.is_empty(), "build leftovers: {names:?}");
    let mut log = AuditLog::open(dir.path()).unwrap();
    assert_eq!(log.list().unwrap().len(), 4, "genesis + 3 through the WAL");
    log.append(entry(4)).unwrap();
    drop(log);
    let report = verify_state_dir(dir.path(), None).unwrap();
    assert!(report.broken.is_none(), "{report:?}");
    assert_eq!(report.records, 5);
}

/// `signing.pub` is written without fsync: one lost (or emptied) by a crash
/// is the key's public half again, and written back.
#[test]
fn lost_public_key_file_comes_back_from_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 1);
    let host = log.checkpoints().public_key().unwrap().unwrap();
    assert_eq!(host.len(), 64);
    let pub_file = dir.path().join(CHECKPOINT_DIR).join("signing.pub");
    for lost in [None, Some("")] {
        match lost {
            None => std::fs::remove_file(&pub_file).unwrap(),
            Some(text) => std::fs::write(&pub_file, text).unwrap(),
        }
        assert_eq!(log.checkpoints().public_key().unwrap(), Some(host.clone()));
        assert_eq!(std::fs::read_to_string(&pub_file).unwrap().trim(), host);
    }
    let report = verify_state_dir(dir.path(), None).unwrap();
    assert!(report.broken.is_none(), "{report:?}");
}
