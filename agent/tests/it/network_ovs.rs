//! Network plugin and Open vSwitch: a real ovsdb-server per test (no
//! ovs-vswitchd, so only the database), the plugin run inside a fresh network
//! namespace; results read back with `ovs-vsctl --db=unix:…`; drift made by
//! an outside ovs-vsctl shows on an OVSDB monitor and in the plugin's diff.

use crate::netns;

use crate::ovsdb_server;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use netns::NetNs;
use opdbus_agent::engine::{ApplyOptions, Context, DesiredState, Engine, RetryPolicy, RunReport};
use opdbus_agent::ovsdb::{Client, MonitorRequest, VSWITCH_DB};
use opdbus_agent::plugins::network::NetworkPlugin;
use opdbus_common::Task;
use ovsdb_server::OvsdbServer;
use serde_json::{json, Value};

fn context(dir: &Path) -> Context {
    Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
        .with_options(ApplyOptions::default())
        .with_retry(RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        })
}

fn engine() -> Engine {
    let mut e = Engine::new();
    e.register(NetworkPlugin);
    e
}

fn apply(ns: &NetNs, dir: &Path, state: &Value) -> RunReport {
    let (text, dir) = (state.to_string(), dir.to_path_buf());
    ns.run(move |_| async move {
        let desired = DesiredState::from_json(&text, "test.json").unwrap();
        engine().apply(&context(&dir), &desired).await
    })
}

fn pending(ns: &NetNs, dir: &Path, state: &Value) -> Vec<String> {
    let (text, dir) = (state.to_string(), dir.to_path_buf());
    ns.run(move |_| async move {
        let desired = DesiredState::from_json(&text, "test.json").unwrap();
        let diffs = engine().diff(&context(&dir), &desired).await.unwrap();
        diffs
            .into_iter()
            .flat_map(|d| d.actions)
            .map(|a| a.description)
            .collect()
    })
}

/// Port and interface names are unique across bridges: `n` keeps them apart.
fn ovs_state(ovsdb: &str, bridge: &str, prune: bool) -> Value {
    let n = &bridge[bridge.len() - 1..];
    let ports = if n == "7" {
        json!(["eth9", {"name": "int0", "type": "internal"}, {"name": "patch-a", "type": "patch", "peer": "patch-b"}])
    } else {
        json!([format!("eth{n}"), {"name": format!("int{n}"), "type": "internal"}])
    };
    json!({"version": 1, "plugins": {"net": {
        "ovsdb": ovsdb,
        "prune": prune,
        "interfaces": [{"name": bridge, "type": "ovs-bridge", "ports": ports}]
    }}})
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "privileged: network namespace"]
fn creates_ovs_bridge_detects_drift_and_prunes() {
    let srv = OvsdbServer::start();
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let state = ovs_state(&srv.addr(), "ovsbr7", false);

    let report = apply(&ns, dir.path(), &state);
    assert!(
        report.ok,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert_eq!(srv.vsctl(&["list-br"]), "ovsbr7");
    assert_eq!(
        sorted_lines(&srv.vsctl(&["list-ports", "ovsbr7"])),
        ["eth9", "int0", "patch-a"]
    );
    assert_eq!(srv.vsctl(&["get", "Interface", "int0", "type"]), "internal");
    assert_eq!(
        srv.vsctl(&["get", "Interface", "patch-a", "options:peer"]),
        "patch-b"
    );
    assert_eq!(
        pending(&ns, dir.path(), &state),
        Vec::<String>::new(),
        "re-apply must be a no-op"
    );

    // Drift from outside: an OVSDB monitor sees it, and so does the diff.
    let addr = srv.addr();
    let sock_db = srv.addr();
    let saw = ns.run(move |_| async move {
        let c = Client::connect(&addr).await.unwrap();
        let reqs = BTreeMap::from([("Port".to_string(), MonitorRequest::columns(["name"]))]);
        let mut mon = c.monitor(VSWITCH_DB, &reqs).await.unwrap();
        tokio::task::spawn_blocking(move || {
            Task::new("ovs-vsctl")
                .arg(format!("--db={sock_db}"))
                .args(["--no-wait", "del-port", "ovsbr7", "int0"])
                .run()
                .expect("ovs-vsctl del-port");
        })
        .await
        .unwrap();
        let upd = mon
            .next_timeout(Duration::from_secs(10))
            .await
            .expect("a monitor update");
        upd.get("Port")
            .into_iter()
            .flat_map(|t| t.values())
            .any(|r| {
                r.new.is_none()
                    && r.old
                        .as_ref()
                        .and_then(|o| o.get("name")?.as_str().map(str::to_string))
                        == Some("int0".into())
            })
    });
    assert!(saw, "the monitor did not report int0's deletion");
    let drift = pending(&ns, dir.path(), &state);
    assert_eq!(
        drift,
        ["ensure OVS bridge ovsbr7 with ports eth9,int0,patch-a"]
    );
    assert!(apply(&ns, dir.path(), &state).ok);
    assert_eq!(
        sorted_lines(&srv.vsctl(&["list-ports", "ovsbr7"])),
        ["eth9", "int0", "patch-a"]
    );

    // prune=false leaves an unnamed bridge alone; prune=true deletes it.
    let other = ovs_state(&srv.addr(), "ovsbr8", false);
    assert!(apply(&ns, dir.path(), &other).ok);
    assert_eq!(sorted_lines(&srv.vsctl(&["list-br"])), ["ovsbr7", "ovsbr8"]);
    // ... but only one op-dbus created: a bridge made by hand stays.
    srv.vsctl(&["add-br", "handbr"]);
    let pruned = ovs_state(&srv.addr(), "ovsbr8", true);
    assert!(apply(&ns, dir.path(), &pruned).ok);
    assert_eq!(sorted_lines(&srv.vsctl(&["list-br"])), ["handbr", "ovsbr8"]);
}

#[test]
#[ignore = "privileged: network namespace"]
fn unreachable_ovsdb_is_a_clear_error() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}/absent.sock", dir.path().display());
    let report = apply(&ns, dir.path(), &ovs_state(&sock, "ovsbr7", false));
    assert!(!report.ok);
    let err = report.plugins[0].error.clone().unwrap();
    assert!(
        err.contains("connecting to OVSDB at unix:") && err.contains("openvswitch-switch"),
        "{err}"
    );
}
