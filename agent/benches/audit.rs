//! The audit log's cost: one apply's block (5 actions: records, block,
//! Merkle frontier, full-text index, signed checkpoint in the journal and
//! latest.json, all synced) against a baseline of the same 5 rows inserted
//! into a plain table in one synced transaction; and `verify` of a log of
//! 100,000 records in 1,000 blocks against a baseline of reading the rows.
//! Targets: at most 5 ms per apply, at most 2 s for the verify.
//! `cargo bench --bench audit`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use opdbus_agent::audit::{AuditLog, BlockRange, NewEntry};

fn entry(i: usize) -> NewEntry {
    NewEntry {
        plugin: "network".into(),
        action: "create".into(),
        resource: format!("bridge:vmbr{i}"),
        result: "ok".into(),
        state_hash: Some("ab".repeat(32)),
        metadata: serde_json::json!({"description": format!("create bridge vmbr{i}"), "detail": {"ports": ["eth0", "eth1"], "mtu": 1500}}),
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();

    // Baseline: the same rows, same pragmas, one transaction, no hashing.
    let base = rusqlite::Connection::open(dir.path().join("baseline.db")).unwrap();
    base.pragma_update(None, "journal_mode", "WAL").unwrap();
    base.pragma_update(None, "synchronous", "FULL").unwrap();
    base.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, plugin TEXT, action TEXT, resource TEXT, result TEXT, metadata TEXT)")
        .unwrap();

    let applies = 200;
    let per_apply = 5;
    let started = Instant::now();
    for a in 0..applies {
        let tx = base.unchecked_transaction().unwrap();
        for i in 0..per_apply {
            let e = entry(a * per_apply + i);
            tx.execute(
                "INSERT INTO t (plugin, action, resource, result, metadata) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![e.plugin, e.action, e.resource, e.result, e.metadata.to_string()],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let baseline = started.elapsed().as_secs_f64() / applies as f64;

    let started = Instant::now();
    for a in 0..applies {
        let entries = (0..per_apply).map(|i| entry(a * per_apply + i)).collect();
        log.append_all(entries).unwrap();
    }
    let audited = started.elapsed().as_secs_f64() / applies as f64;
    println!(
        "audit apply ({per_apply} actions): {:.2} ms per apply (block + Merkle + FTS + signed checkpoint, synced), baseline plain insert {:.2} ms, ratio {:.2}, overhead {:.2} ms (target <= 5 ms per apply)",
        audited * 1e3,
        baseline * 1e3,
        audited / baseline,
        (audited - baseline) * 1e3
    );

    // 100,000 records: 1,000 blocks of 100 (plus what is there).
    let have = log.list().unwrap().len();
    let target = 100_000usize;
    let started = Instant::now();
    let mut n = have;
    while n < target {
        let k = (target - n).min(100);
        log.append_all((0..k).map(|i| entry(n + i)).collect())
            .unwrap();
        n += k;
    }
    let build = started.elapsed();
    let started = Instant::now();
    let rows = log.list_range(BlockRange::all()).unwrap();
    let read = started.elapsed();
    assert_eq!(rows.len(), target);
    drop(rows);
    let started = Instant::now();
    let report = log.verify().unwrap();
    let verify = started.elapsed();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, target as u64);
    println!(
        "audit verify of {} records in {} blocks ({} checkpoints): {:.3} s, baseline reading the rows {:.3} s, ratio {:.2} (target <= 2 s); building them took {:.1} s",
        report.records,
        report.blocks,
        report.checkpoints_checked,
        verify.as_secs_f64(),
        read.as_secs_f64(),
        verify.as_secs_f64() / read.as_secs_f64(),
        build.as_secs_f64()
    );
}
