//! The history over time: `audit archive` moves old blocks into a file that
//! verifies on its own while the database still verifies (and still
//! catches tampering); `audit compact` shrinks it without touching anything
//! hashed.

use std::path::Path;
use std::process::Command;

use opdbus_agent::audit::archive::{verify_archive, ArchiveFile};
use opdbus_agent::audit::checkpoint::Checkpoint;
use opdbus_agent::audit::{
    db_path, verify_state_dir, AuditLog, BlockRange, BreakReason, ChainBreak, NewEntry,
};
use rusqlite::Connection;

fn entry(i: usize) -> NewEntry {
    NewEntry {
        plugin: "network".into(),
        action: "create".into(),
        resource: format!("bridge:vmbr{i}"),
        result: "ok".into(),
        state_hash: None,
        metadata: serde_json::json!({"ports": ["eth0"], "n": i}),
    }
}

/// Genesis plus `n` blocks of two records each.
fn log_with(dir: &Path, n: usize) -> AuditLog {
    let mut log = AuditLog::open(dir).unwrap();
    for i in 1..=n {
        log.append_all(vec![entry(i), entry(100 + i)]).unwrap();
    }
    log
}

fn sql(dir: &Path, stmt: &str) {
    Connection::open(db_path(dir))
        .unwrap()
        .execute_batch(stmt)
        .unwrap();
}

fn broken(dir: &Path) -> ChainBreak {
    verify_state_dir(dir, None)
        .unwrap()
        .broken
        .expect("verify must fail")
}

fn read_archive(path: &Path) -> ArchiveFile {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
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
fn archive_keeps_the_rest_verifiable_and_the_file_verifies_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 8);
    let cp_before: Checkpoint = log.checkpoints().latest().unwrap().unwrap();
    let root_before = log.verify().unwrap().root_hash;
    let out = dir.path().join("archive-0-5.json");
    let done = log.archive(5, &out).unwrap();
    assert_eq!((done.first_block, done.last_block), (0, 5));
    assert_eq!((done.first_record, done.last_record), (0, 10));
    // Only blocks 6.. stay in the database.
    assert_eq!(log.blocks(BlockRange::all()).unwrap()[0].id, 6);
    assert_eq!(log.list().unwrap()[0].id, 11);

    let report = log.verify().unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.archived_through, Some(5));
    assert_eq!(report.archived_records, 11);
    assert_eq!(report.records, 6);
    assert_eq!(
        report.root_hash, root_before,
        "the tree still covers all records"
    );
    // A checkpoint taken before the archive is still consistent with the log.
    let c = log.verify_against("before", &cp_before).unwrap();
    assert!(c.is_ok(), "{c:?}");

    // The log grows on after the archive and keeps verifying.
    log.append_all(vec![entry(50)]).unwrap();
    assert!(log.verify().unwrap().is_ok());
    let export = log.export(BlockRange::all()).unwrap();
    assert_eq!(export["verify"]["broken"], serde_json::Value::Null);
    assert!(export["blocks"][0]["records"][0]["inclusion_proof"].is_array());

    // The file alone: 6 blocks, 11 records, every proof, against the host key.
    let file = read_archive(&out);
    let host = log.checkpoints().public_key().unwrap();
    let alone = verify_archive(&file, host.as_deref());
    assert!(alone.is_ok(), "{alone:?}");
    assert_eq!((alone.blocks, alone.records), (6, 11));
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Refused: an existing file, the last block, blocks already gone.
    assert!(log.archive(7, &out).is_err());
    assert!(log.archive(9, &dir.path().join("x.json")).is_err());
    assert!(log.archive(3, &dir.path().join("y.json")).is_err());
}

use std::os::unix::fs::PermissionsExt;

#[test]
fn tampering_after_an_archive_is_still_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 8);
    log.archive(4, &dir.path().join("a.json")).unwrap();
    drop(log);
    let clean = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        Command::new("cp")
            .arg("-a")
            .arg(dir.path())
            .arg(to)
            .status()
            .unwrap();
    };

    // An edited record in the remaining log.
    let d = clean.path().join("edit");
    copy(&d);
    sql(&d, "UPDATE operations SET result = 'failed' WHERE id = 11");
    let b = broken(&d);
    assert_eq!((b.block, b.record), (6, Some(11)), "{b}");
    assert_eq!(b.reason, BreakReason::HashMismatch);

    // The first remaining block deleted.
    let d = clean.path().join("first");
    copy(&d);
    sql(
        &d,
        "DELETE FROM blocks WHERE id = 5; DELETE FROM operations WHERE block = 5",
    );
    let b = broken(&d);
    assert_eq!(b.block, 6, "{b}");
    assert_eq!(
        b.reason,
        BreakReason::BlockGap {
            missing_from: 5,
            missing_to: 5
        }
    );

    // An archived leaf edited.
    let d = clean.path().join("leaf");
    copy(&d);
    sql(
        &d,
        "UPDATE archived_leaves SET leaf = zeroblob(32) WHERE id = 3",
    );
    let b = broken(&d);
    assert_eq!(b.block, 4, "{b}");
    assert!(
        b.to_string()
            .contains("root is not the one its checkpoint signs"),
        "{b}"
    );

    // The base removed: the log no longer starts at genesis.
    let d = clean.path().join("base");
    copy(&d);
    sql(&d, "DELETE FROM archive_base");
    let b = broken(&d);
    assert_eq!(
        b.reason,
        BreakReason::BlockGap {
            missing_from: 0,
            missing_to: 4
        },
        "{b}"
    );

    // The base moved forward (its signed checkpoint names block 4).
    let d = clean.path().join("forward");
    copy(&d);
    sql(&d, "UPDATE archive_base SET block = 5");
    let b = broken(&d);
    assert!(matches!(b.reason, BreakReason::Archive { .. }), "{b}");
}

#[test]
fn a_tampered_archive_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 6);
    let out = dir.path().join("a.json");
    log.archive(4, &out).unwrap();
    let host = log.checkpoints().public_key().unwrap();
    let good = read_archive(&out);

    let mut f = good.clone();
    f.blocks[2].records[1].metadata = Some(r#"{"n":999,"ports":["eth0"]}"#.into());
    let b = verify_archive(&f, host.as_deref()).broken.unwrap();
    assert_eq!((b.block, b.record), (2, Some(4)), "{b}");
    assert_eq!(b.reason, BreakReason::HashMismatch);

    let mut f = good.clone();
    f.blocks.pop();
    let b = verify_archive(&f, host.as_deref()).broken.unwrap();
    assert!(
        matches!(b.reason, BreakReason::CheckpointMismatch { .. }),
        "{b}"
    );

    let mut f = good.clone();
    f.checkpoint.tree_size += 1;
    let b = verify_archive(&f, host.as_deref()).broken.unwrap();
    assert!(matches!(b.reason, BreakReason::BadSignature { .. }), "{b}");

    // Signed by another key than the host's.
    let other = tempfile::tempdir().unwrap();
    let other_key = {
        let l = AuditLog::open(other.path()).unwrap();
        l.checkpoints().public_key().unwrap()
    };
    let b = verify_archive(&good, other_key.as_deref()).broken.unwrap();
    assert!(b.to_string().contains("not by this host's key"), "{b}");
}

#[test]
fn a_second_archive_continues_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 9);
    log.archive(3, &dir.path().join("a.json")).unwrap();
    let second = dir.path().join("b.json");
    let done = log.archive(6, &second).unwrap();
    assert_eq!((done.first_block, done.last_block), (4, 6));
    let file = read_archive(&second);
    assert_eq!(file.prior_leaves.len(), 7);
    assert_eq!(file.previous.as_ref().unwrap().block, 3);
    let host = log.checkpoints().public_key().unwrap();
    assert!(verify_archive(&file, host.as_deref()).is_ok());
    let r = log.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.archived_through, Some(6));
    assert_eq!(r.archived_records, 13);
}

#[test]
fn compact_shrinks_and_keeps_the_log_verifiable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with(dir.path(), 300);
    let root = log.verify().unwrap().root_hash;
    let out = log.compact().unwrap();
    assert_eq!(out.frontiers_dropped, 300, "all blocks but the last");
    assert!(
        out.bytes_after < out.bytes_before,
        "{} -> {}",
        out.bytes_before,
        out.bytes_after
    );
    let r = log.verify().unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.root_hash, root);
    log.append_all(vec![entry(1)]).unwrap();
    assert!(log.verify().unwrap().is_ok());
    // Tampering still shows after compacting.
    drop(log);
    sql(
        dir.path(),
        "UPDATE operations SET resource = 'x' WHERE id = 40",
    );
    assert_eq!(broken(dir.path()).record, Some(40));
}

#[test]
fn cli_archive_compact_and_verify_archive() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 4));
    let none = agent(dir.path(), &["audit", "archive", "--before", "1970-01-02"]);
    assert_eq!(none.status.code(), Some(0), "{none:?}");
    assert!(String::from_utf8_lossy(&none.stdout).contains("nothing archived"));

    let out = agent(dir.path(), &["audit", "archive", "--before", "2999-01-01"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let file = dir.path().join("audit-archives/blocks-0-3.json");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&file.display().to_string()),
        "{out:?}"
    );

    let v = agent(dir.path(), &["audit", "verify"]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("blocks 0..=3 (7 records) are archived"),
        "{v:?}"
    );
    let a = agent(
        dir.path(),
        &["audit", "verify", "--archive", file.to_str().unwrap()],
    );
    assert_eq!(a.status.code(), Some(0), "{a:?}");
    assert!(String::from_utf8_lossy(&a.stdout).starts_with("archive ok: 7 records in blocks 0..=3"));

    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    doc["blocks"][1]["records"][0]["result"] = "failed".into();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&doc).unwrap()).unwrap();
    let a = agent(
        dir.path(),
        &["audit", "verify", "--archive", bad.to_str().unwrap()],
    );
    assert_eq!(a.status.code(), Some(1), "{a:?}");
    assert!(
        String::from_utf8_lossy(&a.stdout)
            .contains("audit chain broken at block 1 (record 1): stored hash does not match"),
        "{a:?}"
    );

    let c = agent(dir.path(), &["audit", "compact"]);
    assert_eq!(c.status.code(), Some(0), "{c:?}");
    assert!(String::from_utf8_lossy(&c.stdout).contains("compacted"));
    let v = agent(dir.path(), &["audit", "verify"]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
}

// ---- the remote witness ----

use crate::netns::NetNs;
use crate::witness_server::WitnessServer;
use opdbus_agent::audit::witness;
use opdbus_agent::engine::{
    ActionResult, ApplyOptions, Context, DesiredState, Engine, Plugin, PluginAction, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Writes one file below the plugin's root (a change the engine records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Write {
    name: String,
    content: String,
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "write {}", self.name)
    }
}

impl PluginAction for Write {
    fn kind(&self) -> &'static str {
        "write"
    }
    fn resource(&self) -> String {
        format!("file:{}", self.name)
    }
}

/// A test plugin: one file below `root` with `content`.
struct FilePlugin {
    root: std::path::PathBuf,
    content: String,
}

impl Plugin for FilePlugin {
    type Desired = String;
    type Current = Option<String>;
    type Action = Write;
    type Checkpoint = Option<String>;

    fn name(&self) -> &'static str {
        "files"
    }

    fn desired(&self, _state: &opdbus_state::State) -> anyhow::Result<Option<String>> {
        Ok(Some(self.content.clone()))
    }

    async fn query(&self, _ctx: &Context, _d: &String) -> anyhow::Result<Option<String>> {
        Ok(std::fs::read_to_string(self.root.join("f")).ok())
    }

    fn diff(&self, current: &Option<String>, desired: &String) -> Vec<Write> {
        if current.as_ref() == Some(desired) {
            return Vec::new();
        }
        vec![Write {
            name: "f".into(),
            content: desired.clone(),
        }]
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Option<String>,
        _actions: &[Write],
    ) -> anyhow::Result<Option<Option<String>>> {
        Ok(Some(current.clone()))
    }

    async fn restore(&self, _ctx: &Context, cp: &Option<String>) -> anyhow::Result<String> {
        match cp {
            Some(t) => std::fs::write(self.root.join("f"), t)?,
            None => {
                let _ = std::fs::remove_file(self.root.join("f"));
            }
        }
        Ok("put back".into())
    }

    async fn apply(&self, _ctx: &Context, actions: &[Write]) -> Vec<ActionResult> {
        std::fs::create_dir_all(&self.root).unwrap();
        actions
            .iter()
            .map(|a| {
                std::fs::write(self.root.join(&a.name), &a.content)
                    .map(|_| None)
                    .map_err(Into::into)
            })
            .collect()
    }
}

fn witness_state(url: &str, fingerprint: &str) -> Value {
    json!({"version": 1, "plugins": {"opdbus": {"audit": {
        "witness": {"url": url, "fingerprint": fingerprint}
    }}}})
}

/// Applies `state` with the file plugin writing `content` (one block).
fn apply_file(dir: &Path, state: &Value, content: &str) -> opdbus_agent::engine::RunReport {
    let mut engine = Engine::new();
    engine.register(FilePlugin {
        root: dir.join("root"),
        content: content.to_string(),
    });
    let ctx = Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
        .with_options(ApplyOptions::default())
        .with_retry(RetryPolicy {
            attempts: 1,
            backoff: std::time::Duration::ZERO,
        });
    let desired = DesiredState::from_json(&state.to_string(), "test.json").unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(engine.apply(&ctx, &desired))
}

#[test]
fn witness_gets_every_checkpoint_and_a_down_witness_does_not_fail_the_apply() {
    let server = WitnessServer::start();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let up = witness_state(&server.url, &server.fingerprint);

    let r = apply_file(dir.path(), &up, "one");
    assert!(!r.any_failed(), "{r:?}");
    let got = server.received();
    assert_eq!(got.len(), 1);
    let latest = AuditLog::open_existing(&state_dir)
        .unwrap()
        .checkpoints()
        .latest()
        .unwrap()
        .unwrap();
    assert_eq!(got[0], serde_json::to_value(&latest).unwrap());
    let receipt = witness::last(&state_dir).unwrap();
    assert!(receipt.ok, "{receipt:?}");
    assert_eq!(receipt.block, latest.block);
    assert_eq!(receipt.answer.as_ref().unwrap()["accepted"], true);

    // Another certificate than the pinned one: refused, the apply goes on.
    let wrong = witness_state(&server.url, &"ab".repeat(32));
    let r = apply_file(dir.path(), &wrong, "two");
    assert!(!r.any_failed(), "{r:?}");
    assert_eq!(server.received().len(), 1, "nothing reached the witness");
    let receipt = witness::last(&state_dir).unwrap();
    assert!(!receipt.ok);
    let err = receipt.error.clone().unwrap();
    assert!(
        err.contains("plugins.opdbus.audit.witness.fingerprint pins abab"),
        "{err}"
    );

    // A witness that is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = witness_state(
        &format!("https://127.0.0.1:{port}/checkpoints"),
        &server.fingerprint,
    );
    let started = std::time::Instant::now();
    let r = apply_file(dir.path(), &down, "three");
    assert!(!r.any_failed(), "{r:?}");
    assert!(started.elapsed() < witness::TIMEOUT * 2);
    let receipt = witness::last(&state_dir).unwrap();
    assert!(!receipt.ok && receipt.http_status.is_none(), "{receipt:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("root/f")).unwrap(),
        "three"
    );
    let v = agent(&state_dir, &["audit", "verify"]);
    assert_eq!(v.status.code(), Some(0), "{v:?}");
    let text = String::from_utf8_lossy(&v.stdout).into_owned();
    assert!(
        text.contains(&format!(
            "witness https://127.0.0.1:{port}/checkpoints: block"
        )) && text.contains("NOT acknowledged"),
        "{text}"
    );

    // Back up: the next checkpoint covers everything before it.
    let r = apply_file(dir.path(), &up, "four");
    assert!(!r.any_failed(), "{r:?}");
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert!(got[1]["tree_size"].as_u64() > got[0]["tree_size"].as_u64());
    let lines = std::fs::read_to_string(state_dir.join("audit-checkpoints/witness.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    let v = agent(&state_dir, &["audit", "verify"]);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("acknowledged block"),
        "{v:?}"
    );
}

#[test]
fn witness_in_the_state_is_validated_with_pointers() {
    let bad = witness_state("http://w.example/x", "AB:CD");
    let err = DesiredState::from_json(&bad.to_string(), "s.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "/plugins/opdbus/audit/witness/url: witness URL \"http://w.example/x\" is not https"
        ),
        "{err}"
    );
    assert!(
        err.contains("/plugins/opdbus/audit/witness/fingerprint: witness fingerprint \"AB:CD\" is not a SHA-256"),
        "{err}"
    );
    let ok = witness_state(
        "https://w.example:8443/cp",
        &format!("{}CD", "AB:".repeat(31)),
    );
    assert!(DesiredState::from_json(&ok.to_string(), "s.json").is_ok());
}

// ---- rollback --to-block ----

use opdbus_agent::engine::secret::redact_state;
use opdbus_agent::rollback::{plan, Secrets};

const HASH: &str = "$6$opdbusci0000000$70paxHzMXFrzqi1TGSRrb1s0B6NVw0tIg.p5vI7WW4yKnODtcum4SWwzHdAAK4qdtq.PGAW4kkRD0uaXfJtql1";

fn users_state() -> Value {
    json!({"version": 1, "plugins": {"users": {"accounts": {
        "alice": {"uid": 1500, "password_hash": HASH}
    }}}})
}

/// A block as the engine writes it: the records carry the state's hash,
/// the block its redacted state.
fn applied_block(log: &mut AuditLog, state: &Value) -> i64 {
    let mut e = entry(1);
    e.state_hash = Some(opdbus_agent::audit::state_hash(state));
    let recs = log
        .append_block(vec![e], Some(&redact_state(state)))
        .unwrap();
    recs[0].block.unwrap()
}

#[test]
fn rollback_restores_secrets_from_the_host_or_refuses_by_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mut log = AuditLog::open(&state_dir).unwrap();
    let state = users_state();
    let n = applied_block(&mut log, &state);
    let plain = log.append_all(vec![entry(2)]).unwrap()[0].block.unwrap();
    let stored = log
        .blocks(BlockRange {
            from: Some(n),
            to: Some(n),
        })
        .unwrap();
    let kept = stored[0].state.as_ref().unwrap();
    assert!(
        !kept.to_string().contains(HASH),
        "the block keeps no secret: {kept}"
    );

    // Nowhere to restore from: refused, naming the pointer and the files.
    let err = plan(&state_dir, n, &Secrets::gather(&root, &[]).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/plugins/users/accounts/alice/password_hash (sha256:")
            && err.contains("etc/shadow")
            && err.contains("--secrets-from FILE"),
        "{err}"
    );
    // Another hash in /etc/shadow: still refused.
    std::fs::write(root.join("etc/shadow"), "alice:$6$x$y:19000:0:99999:7:::\n").unwrap();
    assert!(plan(&state_dir, n, &Secrets::gather(&root, &[]).unwrap()).is_err());
    // The host's own /etc/shadow holds it.
    std::fs::write(
        root.join("etc/shadow"),
        format!("root:*:19000:0:99999:7:::\nalice:{HASH}:19000:0:99999:7:::\n"),
    )
    .unwrap();
    let p = plan(&state_dir, n, &Secrets::gather(&root, &[]).unwrap()).unwrap();
    assert_eq!(p.state.hash, opdbus_agent::audit::state_hash(&state));
    assert_eq!(p.state.raw, state);
    assert_eq!(p.restored.len(), 1);
    assert_eq!(
        p.restored[0].pointer,
        "/plugins/users/accounts/alice/password_hash"
    );
    assert_eq!(p.restored[0].source, root.join("etc/shadow"));
    // Or a state file of then.
    std::fs::remove_file(root.join("etc/shadow")).unwrap();
    let then = dir.path().join("then.json");
    std::fs::write(&then, state.to_string()).unwrap();
    let p = plan(&state_dir, n, &Secrets::gather(&root, &[then]).unwrap()).unwrap();
    assert_eq!(p.state.raw, state);

    // A block that kept no state, a block that is not there.
    let err = plan(&state_dir, plain, &Secrets::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("keeps no desired state"), "{err}");
    let err = plan(&state_dir, 99, &Secrets::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no block 99"), "{err}");
    // A log that does not verify is not trusted.
    drop(log);
    sql(
        &state_dir,
        "UPDATE operations SET result = 'x' WHERE id = 1",
    );
    let err = plan(&state_dir, n, &Secrets::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be trusted"), "{err}");
}

/// Links and addresses as `ip -j` shows them (no counters).
fn links_and_addresses(ns: &NetNs) -> Value {
    let addrs = ns.address_rows(|a| {
        (a["scope"] != "link").then(|| vec![a["local"].clone(), a["prefixlen"].clone()])
    });
    json!({"links": ns.link_rows(), "addresses": addrs})
}

fn net_state(mtu: u32, br0: &[&str], vx0: &str) -> Value {
    json!({"version": 1, "plugins": {"network": {"interfaces": {
        "vx0": {"type": "veth", "peer": "vx1", "address": vx0},
        "br0": {"type": "bridge", "bridge_ports": ["vx1"], "mtu": mtu, "address": br0}
    }}}})
}

/// The agent binary inside `ns`, with a temp root and no D-Bus.
fn agent_in(ns: &NetNs, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(env!("CARGO_BIN_EXE_op-dbus-agent"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--bus")
        .arg(format!("unix:path={}/no-bus", dir.display()))
        .env_remove("OPDBUS_STATE_DIR")
        .env_remove("OPDBUS_ROOT")
        .output()
        .unwrap()
}

#[test]
#[ignore = "privileged: network namespace"]
fn rollback_to_the_first_of_three_applies_restores_links_and_addresses() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("root")).unwrap();
    let states = [
        net_state(1400, &["10.77.0.1/24", "fd77::1/64"], "10.78.0.1/24"),
        net_state(1500, &["10.77.0.2/24"], "10.78.0.2/24"),
        net_state(1450, &["10.77.0.3/24", "10.77.1.3/24"], "10.78.0.3/24"),
    ];
    let mut dumps = Vec::new();
    for (i, s) in states.iter().enumerate() {
        let file = dir.path().join(format!("s{i}.json"));
        std::fs::write(&file, s.to_string()).unwrap();
        let out = agent_in(&ns, dir.path(), &["apply", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "apply {i}: {out:?}");
        dumps.push(links_and_addresses(&ns));
    }
    assert_ne!(dumps[0], dumps[2]);
    let state_dir = dir.path().join("state");
    let blocks = AuditLog::open_existing(&state_dir)
        .unwrap()
        .blocks(BlockRange::all())
        .unwrap();
    let first = blocks
        .iter()
        .find(|b| b.state_hash.as_deref() == Some(&opdbus_agent::audit::state_hash(&states[0])))
        .expect("the first apply's block")
        .clone();
    assert_eq!(first.state.as_ref(), Some(&states[0]));
    let n = first.id.to_string();

    // Dry run: the actions are listed, nothing changes, the history does not grow.
    let dry = agent_in(
        &ns,
        dir.path(),
        &["rollback", "--to-block", &n, "--dry-run"],
    );
    assert_eq!(dry.status.code(), Some(0), "{dry:?}");
    let text = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(
        text.contains("network") && text.contains("nothing was changed"),
        "{text}"
    );
    assert!(!text.starts_with("0 action(s)"), "{text}");
    assert_eq!(links_and_addresses(&ns), dumps[2]);
    let after_dry = AuditLog::open_existing(&state_dir)
        .unwrap()
        .blocks(BlockRange::all())
        .unwrap();
    assert_eq!(after_dry.len(), blocks.len());

    // The rollback: a new block with the first state's hash, the host as after the first apply.
    let out = agent_in(&ns, dir.path(), &["rollback", "--to-block", &n]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(links_and_addresses(&ns), dumps[0]);
    let log = AuditLog::open_existing(&state_dir).unwrap();
    let now = log.blocks(BlockRange::all()).unwrap();
    assert_eq!(now.len(), blocks.len() + 1, "the history only grows");
    assert_eq!(now.last().unwrap().state_hash, first.state_hash);
    assert!(log.verify().unwrap().is_ok());
    let (_, found) = log.search("rollback", i64::MAX).unwrap();
    assert!(
        found.iter().any(|r| r.block == Some(now.last().unwrap().id)
            && r.metadata["note"]
                == format!(
                    "rollback to block {n} (state {})",
                    first.state_hash.clone().unwrap()
                )),
        "{found:?}"
    );
    // Rolling back to the block again changes nothing.
    let dry = agent_in(
        &ns,
        dir.path(),
        &["rollback", "--to-block", &n, "--dry-run"],
    );
    assert!(
        String::from_utf8_lossy(&dry.stdout).starts_with("0 action(s)"),
        "{dry:?}"
    );
}

#[test]
fn a_journal_line_torn_by_a_crash_is_skipped_but_a_bad_line_is_not() {
    let dir = tempfile::tempdir().unwrap();
    drop(log_with(dir.path(), 3));
    let journal = dir.path().join("audit-checkpoints/journal.jsonl");
    let good = std::fs::read_to_string(&journal).unwrap();
    // The checkpoint files are not synced: a crash can cut the last line.
    std::fs::write(&journal, format!("{good}{{\"format\":\"op-dbus-audit-che")).unwrap();
    let r = verify_state_dir(dir.path(), None).unwrap();
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.checkpoints_checked, 5, "4 journal lines and latest.json");
    // The same text with its newline is no torn write: an error.
    std::fs::write(
        &journal,
        format!("{good}{{\"format\":\"op-dbus-audit-che\n"),
    )
    .unwrap();
    let err = verify_state_dir(dir.path(), None).unwrap_err();
    assert!(
        matches!(
            err,
            opdbus_agent::audit::AuditError::Checkpoint(
                opdbus_agent::audit::checkpoint::CheckpointError::Parse { line: 5, .. }
            )
        ),
        "{err:?}"
    );
    // A checkpoint the database does not have still breaks it.
    std::fs::write(&journal, &good).unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    log.append_all(vec![entry(9)]).unwrap();
    drop(log);
    sql(
        dir.path(),
        "DELETE FROM operations WHERE block = 4; DELETE FROM blocks WHERE id = 4",
    );
    assert!(matches!(
        broken(dir.path()).reason,
        BreakReason::MissingBlocks { .. }
    ));
}
