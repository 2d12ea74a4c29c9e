//! Audit chain: append and verify, then tamper with the SQLite file directly
//! (edit, delete, swap) and check that verify names the first bad record.

use std::path::Path;
use std::process::Command;

use opdbus_agent::audit::{db_path, AuditLog, BreakReason, NewEntry};
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
    assert_eq!(
        report.head_hash.as_deref(),
        Some(records[5].current_hash.as_str())
    );
    let export = log.export().unwrap();
    assert_eq!(export["records"].as_array().unwrap().len(), 6);
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
    assert_eq!(brk.id, 4);
    assert_eq!(brk.reason, BreakReason::HashMismatch);
    assert_eq!(
        brk.to_string(),
        "audit chain broken at record 4: stored hash does not match its contents (edited?)"
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
    assert_eq!((brk.id, brk.reason), (2, BreakReason::HashMismatch));
}

#[test]
fn edited_and_rehashed_record_breaks_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 4);
    // A forger who also replaces current_hash still breaks record 3's link.
    sql(
        dir.path(),
        "UPDATE operations SET current_hash = 'ab' || substr(current_hash, 3) WHERE id = 2",
    );
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!(
        brk.id, 2,
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
    assert_eq!(brk.id, 4);
    assert_eq!(
        brk.reason,
        BreakReason::Gap {
            missing_from: 3,
            missing_to: 3
        }
    );
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
    assert_eq!(brk.id, 3);
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
    assert_eq!(brk.id, 2);
}

#[test]
fn deleted_genesis_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with(dir.path(), 2);
    sql(dir.path(), "DELETE FROM operations WHERE id = 0");
    let brk = log.verify().unwrap().broken.expect("broken");
    assert_eq!((brk.id, brk.reason), (1, BreakReason::BadGenesis));
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
    assert!(String::from_utf8_lossy(&ok.stdout).contains("audit chain ok: 9 records"));

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
        "audit chain broken at record 7: stored hash does not match its contents (edited?)"
    );

    let export = agent(dir.path(), &["audit", "export"]);
    assert_eq!(export.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(doc["verify"]["broken"]["id"], 7);
    assert_eq!(doc["records"].as_array().unwrap().len(), 9);

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
}
