//! The audit log's cost: one apply's block (5 actions: records, block,
//! Merkle frontier, full-text index, signed checkpoint in the journal and
//! latest.json, all synced) against a baseline of the same 5 rows inserted
//! into a plain table in one synced transaction; the same as the engine
//! does it (opening the log, the block keeping a desired state); the parts
//! alone (one fsync, the signature, the open); and `verify` of a log of
//! 100,000 records in 1,000 blocks against a baseline of reading the rows.
//! Targets: at most 5 ms per apply, at most 2 s for the verify.
//! `cargo bench --bench audit`.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
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

/// A desired state of a small host (redacted, as blocks keep it).
fn desired_state() -> serde_json::Value {
    let interfaces: serde_json::Map<String, serde_json::Value> = (0..10)
        .map(|i| {
            (
                format!("vmbr{i}"),
                serde_json::json!({"type": "bridge", "bridge_ports": [format!("eth{i}")],
                    "address": [format!("10.{i}.0.1/24")], "mtu": 1500}),
            )
        })
        .collect();
    serde_json::json!({"version": 1, "plugins": {
        "network": {"interfaces": interfaces},
        "users": {"accounts": {"admin": {"uid": 1000, "password_hash": "sha256:0123456789ab",
            "ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx admin@host"]}}},
        "systemd": {"units": {"sshd.service": {"enabled": true, "active_state": "active"}}}
    }})
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

    // As the engine does it: open the log, append the block with the
    // (redacted) desired state it applied.
    let state = desired_state();
    let started = Instant::now();
    for a in 0..applies {
        let mut log = AuditLog::open(dir.path()).unwrap();
        let entries = (0..per_apply).map(|i| entry(a * per_apply + i)).collect();
        log.append_block(entries, Some(&state)).unwrap();
    }
    let engine_path = started.elapsed().as_secs_f64() / applies as f64;
    println!(
        "audit apply as the engine does it (open + block with a {} byte desired state): {:.2} ms per apply, ratio {:.2} to the baseline, overhead {:.2} ms (target <= 5 ms per apply)",
        state.to_string().len(),
        engine_path * 1e3,
        engine_path / baseline,
        (engine_path - baseline) * 1e3
    );

    // Where the time goes, each part measured alone in the same run.
    let fsync = {
        let path = dir.path().join("fsync-probe");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let line = [b'x'; 400];
        let started = Instant::now();
        for _ in 0..applies {
            f.write_all(&line).unwrap();
            f.write_all(b"\n").unwrap();
            f.sync_data().unwrap();
        }
        started.elapsed().as_secs_f64() / applies as f64
    };
    let store = opdbus_agent::audit::checkpoint::Store::new(dir.path());
    let sign = {
        let started = Instant::now();
        for i in 0..applies {
            store
                .sign(i as u64, "ab".repeat(32), i as i64, "cd".repeat(32), 0)
                .unwrap();
        }
        started.elapsed().as_secs_f64() / applies as f64
    };
    let open = {
        let started = Instant::now();
        for _ in 0..applies {
            drop(AuditLog::open(dir.path()).unwrap());
        }
        started.elapsed().as_secs_f64() / applies as f64
    };
    println!(
        "audit apply parts: one fsync of a small append {:.2} ms (the apply does one, the WAL commit, as the baseline does; the checkpoint journal is not synced), key load + Ed25519 signature {:.3} ms, opening the log {:.2} ms; the rest (SQLite rows, FTS5, block, latest.json) {:.2} ms",
        fsync * 1e3,
        sign * 1e3,
        open * 1e3,
        (audited - baseline - sign) * 1e3
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

    // The engine's path again, now with 100,000 records in the log: the
    // per-apply cost must not grow with the history.
    drop(log);
    let rounds = 50;
    let started = Instant::now();
    for a in 0..rounds {
        let mut log = AuditLog::open(dir.path()).unwrap();
        let entries = (0..per_apply).map(|i| entry(a * per_apply + i)).collect();
        log.append_block(entries, Some(&state)).unwrap();
    }
    let big = started.elapsed().as_secs_f64() / rounds as f64;
    println!(
        "audit apply as the engine does it with {target} records in the log: {:.2} ms per apply, ratio {:.2} to the baseline, overhead {:.2} ms (target <= 5 ms per apply)",
        big * 1e3,
        big / baseline,
        (big - baseline) * 1e3
    );
}
