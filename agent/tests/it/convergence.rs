//! The resident agent converges continuously, privileged tier: `run` inside a
//! fresh network namespace, on a private bus, with its state file in a temp
//! dir. A valid edit (written to a temp file and renamed over, as editors
//! do) is applied; an invalid one is refused, `status` says why and the old
//! state stays in force; an address deleted by hand is repaired by the
//! periodic drift check and audited as `drift-repair`.

use crate::dbus_daemon;
use crate::netns;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use netns::NetNs;
use serde_json::{json, Value};

const AGENT: &str = env!("CARGO_BIN_EXE_op-dbus-agent");
/// The drift check interval the test runs the agent with.
const DRIFT_SECS: u64 = 2;

/// The agent process; killed (and reaped) on drop, so a failing test
/// leaves nothing running.
struct Resident(Child);

impl Drop for Resident {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn state(addresses: &[&str]) -> Value {
    json!({"version": 1, "plugins": {"network": {"interfaces": {
        "cv0": {"type": "bridge", "address": addresses}
    }}}})
}

/// Writes `text` to a temp file beside `file` and renames it over `file`.
fn save_like_an_editor(file: &Path, text: &str) {
    let tmp = file.with_extension("json.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

fn agent(state_dir: &Path, args: &[&str]) -> Output {
    Command::new(AGENT)
        .arg("--state-dir")
        .arg(state_dir)
        .args(args)
        .output()
        .unwrap()
}

/// Polls `cond` every 100 ms for up to `within`; panics with `what` and the
/// agent's log otherwise.
fn wait_for(
    what: &str,
    within: Duration,
    log: &dyn Fn() -> String,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}\nagent log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

fn has_addr(ns: &NetNs, addr: &str) -> bool {
    ns.link("cv0").is_some() && ns.addrs("cv0").iter().any(|a| a == addr)
}

fn status_json(state_dir: &Path) -> Value {
    let out = agent(state_dir, &["status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

#[test]
#[ignore = "privileged: network namespace"]
fn resident_agent_applies_edits_refuses_invalid_ones_and_repairs_drift() {
    let ns = NetNs::new();
    let bus = dbus_daemon::PrivateBus::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let file = etc.join("state.json");
    std::fs::write(&file, state(&["10.81.0.1/24"]).to_string()).unwrap();

    let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns.name(), AGENT, "--state-dir"])
        .arg(&state_dir)
        .args(["run", "--state"])
        .arg(&file)
        .arg("--root")
        .arg(&root)
        .args(["--bus", bus.address()])
        .args(["--drift-interval", &DRIFT_SECS.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _agent = Resident(child);
    let log_text = || std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();

    // The first reconcile.
    wait_for(
        "the first reconcile",
        Duration::from_secs(30),
        &log_text,
        || has_addr(&ns, "10.81.0.1/24") && status_json(&state_dir)["status"] == "done",
    );

    // A valid edit: the new address appears.
    save_like_an_editor(&file, &state(&["10.81.0.1/24", "10.81.0.2/24"]).to_string());
    let took = wait_for(
        "the edited state applied",
        Duration::from_secs(10),
        &log_text,
        || has_addr(&ns, "10.81.0.2/24"),
    );
    println!("valid edit applied after {took:?}");
    let applied_hash = status_json(&state_dir)["state_hash"].clone();

    // An invalid edit: refused, `status` says why, the old state is kept.
    save_like_an_editor(
        &file,
        &json!({"version": 1, "plugins": {"network": {"interfaces": {
            "cv0": {"type": "bridge", "address": ["10.81.0.300/24"]}
        }}}})
        .to_string(),
    );
    wait_for(
        "the invalid edit refused",
        Duration::from_secs(10),
        &log_text,
        || status_json(&state_dir)["refused"].is_object(),
    );
    let status = status_json(&state_dir);
    let errors = status["refused"]["errors"].to_string();
    assert!(
        errors.contains("/plugins/network/interfaces/cv0/address"),
        "the refusal names the bad field by pointer: {status:#}"
    );
    assert_eq!(status["refused"]["in_force"], applied_hash, "{status:#}");
    assert_eq!(status["status"], "done", "{status:#}");
    let human = agent(&state_dir, &["status"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("refused") && text.contains("/plugins/network/interfaces/cv0/address"),
        "status prints why: {text}"
    );
    assert_eq!(
        human.status.code(),
        Some(1),
        "status exits 1 on a refused edit"
    );

    // Drift: an address deleted by hand comes back with the old (held)
    // state's addresses, within the interval.
    ns.ip(&["addr", "del", "10.81.0.2/24", "dev", "cv0"]);
    let took = wait_for(
        "the deleted address repaired",
        Duration::from_secs(DRIFT_SECS * 3 + 5),
        &log_text,
        || has_addr(&ns, "10.81.0.2/24"),
    );
    println!("drift repaired after {took:?}");
    assert!(has_addr(&ns, "10.81.0.1/24"));

    let audit = agent(&state_dir, &["audit", "list", "--json"]);
    let records: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let repair = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "drift-repair")
        .unwrap_or_else(|| {
            panic!(
                "no drift-repair record: {records:#}\nagent log:\n{}",
                log_text()
            )
        });
    let reason = repair["metadata"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("periodic drift check") && reason.contains("10.81.0.2/24"),
        "{repair:#}"
    );

    // Reverting the file to a valid version clears the refusal.
    save_like_an_editor(&file, &state(&["10.81.0.1/24", "10.81.0.3/24"]).to_string());
    wait_for(
        "the reverted state applied",
        Duration::from_secs(10),
        &log_text,
        || has_addr(&ns, "10.81.0.3/24") && status_json(&state_dir)["refused"].is_null(),
    );
}
