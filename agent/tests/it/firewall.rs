//! Firewall plugin. Tier 1: golden diffs from state.json (pure). Tier 2
//! (root): two network namespaces joined by a veth pair; the plugin loads
//! `inet opdbus` in the server namespace and real TCP and ICMP from the
//! peer prove what it lets through. Nothing touches the host's namespace.

use crate::netns;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use netns::NetNs;
use opdbus_agent::engine::{Context, DesiredState, Engine, Plugin, RetryPolicy};
use opdbus_agent::plugins::firewall::{self, Current, FirewallPlugin};
use opdbus_common::Task;
use serde_json::{json, Value};

const SERVER: &str = "10.9.0.1";
const CLIENT: &str = "10.9.0.2";

// ---------------------------------------------------------------- tier 1

fn state_of(v: &Value) -> opdbus_state::State {
    DesiredState::from_json(&v.to_string(), "test.json")
        .unwrap()
        .state
}

/// The diff lines against an empty host (no table, no boot file).
fn lines_from_nothing(v: &Value) -> Vec<String> {
    let p = FirewallPlugin::default();
    let d = p.desired(&state_of(v)).unwrap().unwrap();
    let cur = Current {
        table: None,
        listing: None,
        other: Vec::new(),
        foreign: vec!["ip filter".to_string()],
        boot_file: None,
    };
    p.diff(&cur, &d).iter().map(|a| a.to_string()).collect()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/firewall")
        .join(name)
}

/// Compares `got` with the fixture file (`UPDATE_GOLDEN=1` rewrites it).
fn golden(name: &str, got: &str) {
    let path = fixture(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        got,
        want,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn golden_diff_and_batch_of_the_seed_server() {
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("server.json")).unwrap()).unwrap();
    let lines = lines_from_nothing(&state);
    golden("server.diff.txt", &(lines.join("\n") + "\n"));
    let p = FirewallPlugin::default();
    let d = p.desired(&state_of(&state)).unwrap().unwrap();
    golden("server.batch.json", &firewall::boot_file_text(&d.table));
}

#[test]
fn a_matching_table_diffs_to_nothing_and_a_changed_rule_is_one_line() {
    let state = json!({"version": 1, "plugins": {"firewall": {
        "default_policy": {"input": "drop"},
        "rules": [{"port": 22, "proto": "tcp", "action": "accept", "source": ["10.0.0.0/8", "192.168.1.7"]}]
    }}});
    let p = FirewallPlugin::default();
    let d = p.desired(&state_of(&state)).unwrap().unwrap();
    let mut table = d.table.clone();
    let boot = firewall::boot_file_text(&table);
    // The kernel may list set elements in another order: still the same rule.
    let rule = table.chains[0].rules.last_mut().unwrap();
    let set = rule.expr[0].pointer_mut("/match/right/set").unwrap();
    set.as_array_mut().unwrap().reverse();
    let cur = Current {
        table: Some(table.clone()),
        listing: Some(Vec::new()),
        other: Vec::new(),
        foreign: Vec::new(),
        boot_file: Some(boot.clone()),
    };
    assert!(p.diff(&cur, &d).is_empty(), "{:?}", p.diff(&cur, &d));
    // Only the boot file missing: one write, no table replace.
    let no_boot = Current {
        boot_file: None,
        ..cur.clone()
    };
    let kinds: Vec<String> = p.diff(&no_boot, &d).iter().map(|a| a.to_string()).collect();
    assert_eq!(
        kinds,
        ["write /etc/op-dbus/firewall.json (the table the boot unit loads)"]
    );
    // A rule deleted by hand: one add line, then the replace.
    let mut gone = cur.clone();
    gone.table.as_mut().unwrap().chains[0].rules.remove(1);
    let lines: Vec<String> = p.diff(&gone, &d).iter().map(|a| a.to_string()).collect();
    assert_eq!(
        lines,
        [
            "add rule to input: ct state established,related accept (comment \"opdbus:established\")",
            "replace table inet opdbus in one nftables transaction (9 rules) and write /etc/op-dbus/firewall.json; no other table exists",
        ]
    );
}

// ---------------------------------------------------------------- tier 2

/// Server and client namespaces joined by a veth pair, 10.9.0.1/24 and .2.
struct Pair {
    server: NetNs,
    client: NetNs,
    dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Pair {
        let server = NetNs::new();
        let client = NetNs::new();
        server.ip(&["link", "add", "vs", "type", "veth", "peer", "name", "vc"]);
        server.ip(&["link", "set", "vc", "netns", client.name()]);
        server.ip(&["addr", "add", &format!("{SERVER}/24"), "dev", "vs"]);
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "vc"]);
        server.ip(&["link", "set", "vs", "up"]);
        client.ip(&["link", "set", "vc", "up"]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        Pair {
            server,
            client,
            dir,
        }
    }

    fn ctx(&self) -> Context {
        Context::new(self.dir.path().join("state"))
            .with_root(self.dir.path().join("root"))
            .with_bus_address(Some(format!(
                "unix:path={}/no-bus",
                self.dir.path().display()
            )))
            .with_retry(RetryPolicy {
                attempts: 1,
                backoff: Duration::ZERO,
            })
    }

    /// Applies `state` through the engine (firewall plugin only) in the server namespace.
    fn apply(&self, state: &Value) -> opdbus_agent::engine::RunReport {
        let text = state.to_string();
        let ctx = self.ctx();
        self.server.run(move |_nl| async move {
            let mut engine = Engine::new();
            engine.register(FirewallPlugin::default());
            let desired = DesiredState::from_json(&text, "test.json").unwrap();
            engine.apply(&ctx, &desired).await
        })
    }

    /// The diff lines an apply of `state` would act on now.
    fn pending(&self, state: &Value) -> Vec<String> {
        let text = state.to_string();
        let ctx = self.ctx();
        self.server.run(move |_nl| async move {
            let mut engine = Engine::new();
            engine.register(FirewallPlugin::default());
            let desired = DesiredState::from_json(&text, "test.json").unwrap();
            engine
                .diff(&ctx, &desired)
                .await
                .unwrap()
                .into_iter()
                .flat_map(|d| d.actions)
                .map(|a| a.description)
                .collect()
        })
    }

    /// A TCP echo server on `port` in the server namespace.
    fn listen(&self, port: u16) {
        let l = self
            .server
            .run(move |_nl| async move { TcpListener::bind(("0.0.0.0", port)).unwrap() });
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    /// A TCP connection from the client namespace to the server's `port`.
    fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        self.client.run(move |_nl| async move {
            let addr: SocketAddr = format!("{SERVER}:{port}").parse().unwrap();
            let s = TcpStream::connect_timeout(&addr, Duration::from_millis(700))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok(s)
        })
    }

    fn reachable(&self, port: u16) -> bool {
        self.connect(port).is_ok()
    }

    fn ping(&self) -> bool {
        Task::new("ip")
            .args([
                "netns",
                "exec",
                self.client.name(),
                "ping",
                "-c1",
                "-W1",
                SERVER,
            ])
            .read()
            .is_ok()
    }

    /// `nft ARGS` in the server namespace.
    fn nft(&self, args: &[&str]) -> String {
        Task::new("ip")
            .args(["netns", "exec", self.server.name(), "nft"])
            .args(args)
            .read()
            .unwrap_or_else(|e| panic!("nft {}: {e}", args.join(" ")))
    }

    fn boot_file(&self) -> PathBuf {
        self.dir.path().join("root/etc/op-dbus/firewall.json")
    }
}

fn echo(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

/// Drop input, accept 22 (and ICMP) from `net` only.
fn policy(net: &str, extra: &[Value]) -> Value {
    let mut rules = vec![
        json!({"port": 22, "proto": "tcp", "action": "accept", "source": net, "comment": "SSH"}),
        json!({"proto": "icmp", "action": "accept", "source": net}),
    ];
    rules.extend(extra.iter().cloned());
    json!({"version": 1, "plugins": {"firewall": {
        "management_floor": false,
        "default_policy": {"input": "drop", "forward": "drop", "output": "accept"},
        "rules": rules
    }}})
}

fn assert_ok(r: &opdbus_agent::engine::RunReport) {
    assert!(
        r.ok,
        "apply failed: {}",
        serde_json::to_string_pretty(r).unwrap()
    );
}

#[test]
#[ignore = "privileged: network namespaces and nftables"]
fn traffic_follows_the_rules_drift_is_repaired_and_foreign_tables_stay() {
    let pair = Pair::new();
    for port in [22, 8006, 9000] {
        pair.listen(port);
    }
    // Someone else's table, made before the apply.
    pair.nft(&["add", "table", "ip", "foreign"]);
    pair.nft(&[
        "add",
        "chain",
        "ip",
        "foreign",
        "c",
        "{ type filter hook input priority 10; policy accept; }",
    ]);
    pair.nft(&[
        "add", "rule", "ip", "foreign", "c", "tcp", "dport", "7777", "accept",
    ]);
    let foreign_before = pair.nft(&["-j", "list", "table", "ip", "foreign"]);
    assert!(
        pair.reachable(9000) && pair.ping(),
        "open before the firewall"
    );

    let state = policy("10.9.0.0/24", &[]);
    assert_ok(&pair.apply(&state));
    assert!(pair.reachable(22), "22 is accepted from 10.9.0.0/24");
    assert!(!pair.reachable(8006), "8006 is not listed");
    assert!(!pair.reachable(9000), "9000 is not listed");
    assert!(pair.ping(), "ICMP is accepted from 10.9.0.0/24");
    assert_eq!(
        pair.pending(&state),
        Vec::<String>::new(),
        "re-apply is a no-op"
    );

    // Another source network only: the client is now outside it.
    let elsewhere = policy("10.99.0.0/24", &[]);
    assert_ok(&pair.apply(&elsewhere));
    assert!(
        !pair.reachable(22) && !pair.ping(),
        "22 and ICMP only from 10.99.0.0/24"
    );

    // 8006 allowed.
    let with_pve = policy(
        "10.9.0.0/24",
        &[json!({"port": 8006, "proto": "tcp", "action": "accept", "comment": "Proxmox Web UI"})],
    );
    assert_ok(&pair.apply(&with_pve));
    assert!(pair.reachable(22) && pair.reachable(8006) && !pair.reachable(9000));

    // A rule deleted by hand is drift; apply repairs it.
    let listing: Value =
        serde_json::from_str(&pair.nft(&["-j", "list", "chain", "inet", "opdbus", "input"]))
            .unwrap();
    let handle = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .find(|r| r["comment"] == "opdbus:rule-0 SSH")
        .map(|r| r["handle"].as_u64().unwrap())
        .expect("the SSH rule carries its tag");
    pair.nft(&[
        "delete",
        "rule",
        "inet",
        "opdbus",
        "input",
        "handle",
        &handle.to_string(),
    ]);
    assert!(!pair.reachable(22), "the hand deletion took effect");
    let drift = pair.pending(&with_pve);
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert_eq!(
        drift[0],
        "add rule to input: ip saddr 10.9.0.0/24 tcp dport 22 accept (comment \"opdbus:rule-0 SSH\")"
    );
    assert!(
        drift[1].starts_with("replace table inet opdbus"),
        "{drift:?}"
    );
    assert!(
        drift[1].contains("other tables left alone: ip foreign"),
        "{drift:?}"
    );
    assert_ok(&pair.apply(&with_pve));
    assert!(pair.reachable(22), "repaired");
    assert_eq!(pair.pending(&with_pve), Vec::<String>::new());

    // The foreign table is byte-identical.
    assert_eq!(
        pair.nft(&["-j", "list", "table", "ip", "foreign"]),
        foreign_before
    );

    // The boot file loads the same table into a fresh namespace.
    let fresh = NetNs::new();
    Task::new("ip")
        .args(["netns", "exec", fresh.name(), "nft", "-j", "-f"])
        .arg(pair.boot_file())
        .read()
        .unwrap();
    let fresh_table = Task::new("ip")
        .args([
            "netns",
            "exec",
            fresh.name(),
            "nft",
            "list",
            "table",
            "inet",
            "opdbus",
        ])
        .read()
        .unwrap();
    assert_eq!(fresh_table, pair.nft(&["list", "table", "inet", "opdbus"]));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(pair.boot_file()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
#[ignore = "privileged: network namespaces and nftables"]
fn a_rule_set_with_a_bad_rule_leaves_the_previous_rules_in_force() {
    let pair = Pair::new();
    pair.listen(22);
    pair.listen(9000);
    let state = policy("10.9.0.0/24", &[]);
    assert_ok(&pair.apply(&state));
    let before = pair.nft(&["list", "table", "inet", "opdbus"]);
    let boot_before = std::fs::read_to_string(pair.boot_file()).unwrap();

    // A new rule set: 9000 opened, and one rule nftables refuses: port
    // 99999 (libnftables refuses it before the kernel; it cannot come from
    // a valid state.json) or masquerade in a filter chain (only the kernel
    // refuses it, midway through the batch). The plugin must fail whole and
    // the kernel's one transaction must leave everything as it was.
    let open = policy(
        "10.9.0.0/24",
        &[json!({"port": 9000, "proto": "tcp", "action": "accept"})],
    );
    let bad_port = |bad: &mut firewall::Rule| {
        *bad.expr[0].pointer_mut("/match/right").unwrap() = json!(99999);
    };
    let bad_masq = |bad: &mut firewall::Rule| {
        bad.expr = vec![json!({"masquerade": null})];
    };
    type Spoil<'a> = &'a dyn Fn(&mut firewall::Rule);
    // The port goes through nft (no native encoding of a port that is not
    // one), the masquerade through the agent's own netlink batch.
    let cases: [(&str, &str, Spoil); 2] = [
        (
            "nftables refused the rule set; the transaction was not committed",
            "Service out of range",
            &bad_port,
        ),
        (
            "nftables refused the rule set at rule \"opdbus:bad\" in chain input: Operation not supported; the transaction was not committed",
            "the previous rules stay",
            &bad_masq,
        ),
    ];
    for (says, also, spoil) in cases {
        let ctx = pair.ctx();
        let st = state_of(&open);
        let p = FirewallPlugin::default();
        let mut d = p.desired(&st).unwrap().unwrap();
        let mut bad = d.table.chains[0].rules.last().unwrap().clone();
        bad.comment = "opdbus:bad".to_string();
        spoil(&mut bad);
        d.table.chains[0].rules.push(bad);
        let results = pair.server.run(move |_nl| async move {
            let cur = p.query(&ctx, &d).await.unwrap();
            let actions = p.diff(&cur, &d);
            let results = p.apply(&ctx, &actions).await;
            results
                .into_iter()
                .map(|r| r.map_err(|e| format!("{e}")))
                .collect::<Vec<_>>()
        });
        let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(
            errors.len(),
            results.len(),
            "every line fails with the transaction: {results:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains(says) && e.contains(also)),
            "{errors:?}"
        );
        assert_eq!(pair.nft(&["list", "table", "inet", "opdbus"]), before);
        assert_eq!(
            std::fs::read_to_string(pair.boot_file()).unwrap(),
            boot_before
        );
    }
    assert!(
        pair.reachable(22) && !pair.reachable(9000),
        "the previous rules are in force"
    );
}

/// Every rule form of the model, the management floor and a masquerade.
fn every_rule_form() -> Value {
    json!({"version": 1, "plugins": {"firewall": {
        "default_policy": {"input": "drop", "forward": "drop", "output": "accept"},
        "rules": [
            {"port": 22, "proto": "tcp", "action": "accept", "comment": "ssh"},
            {"port": "1000-2000", "proto": "udp", "action": "reject", "source": "10.0.16.0/20"},
            {"port": 8006, "action": "accept", "source": ["10.0.0.0/24", "10.9.0.7"], "iface": "veth-s"},
            {"proto": "icmp", "action": "accept", "source": "fd00::/64"},
            {"proto": "tcp", "action": "drop", "source": "10.1.0.0/16"},
            {"proto": "udp", "port": 53, "action": "accept", "source": "fd00:1::/48"},
            {"action": "drop", "source": ["fd00:2::/48", "fd02::1", "fd03::/127"]},
            {"port": "60000-60010", "action": "accept"}
        ],
        "masquerade": [{"source": "10.0.0.0/24", "out_iface": "eth0"}]
    }}})
}

/// `nft -j list table inet opdbus` in `ns`, without handles.
fn listing_without_handles(ns: &NetNs) -> Value {
    let out = Task::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "nft",
            "-j",
            "list",
            "table",
            "inet",
            "opdbus",
        ])
        .read()
        .unwrap();
    let mut v: Value = serde_json::from_str(&out).unwrap();
    let items = v["nftables"].as_array_mut().unwrap();
    items.retain(|o| o.get("metainfo").is_none());
    for o in items.iter_mut() {
        for (_, inner) in o.as_object_mut().unwrap().iter_mut() {
            inner.as_object_mut().unwrap().remove("handle");
        }
    }
    v
}

#[test]
#[ignore = "privileged: network namespaces and nftables"]
fn the_native_batch_lists_back_as_the_table_nft_loads_for_every_rule_form() {
    let st = state_of(&every_rule_form());
    let d = FirewallPlugin::default().desired(&st).unwrap().unwrap();
    let batch = firewall::netlink::encode(&d.table, 1).expect("every rule form is encoded");
    let (native, via_nft) = (NetNs::new(), NetNs::new());
    native
        .run(move |_nl| async move { firewall::netlink::load(&batch) })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("batch.json");
    std::fs::write(&file, firewall::boot_file_text(&d.table)).unwrap();
    Task::new("ip")
        .args(["netns", "exec", via_nft.name(), "nft", "-j", "-f"])
        .arg(&file)
        .run()
        .unwrap();
    let listed = listing_without_handles(&native);
    assert_eq!(listed, listing_without_handles(&via_nft));
    let rules = listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.get("rule").is_some())
        .count();
    assert_eq!(rules, d.table.rule_count());

    // The plugin reads the natively loaded table back as what it wants,
    // and a second load replaces it whole (the same table, once).
    let again = firewall::netlink::encode(&d.table, 1).unwrap();
    let pending = native.run(move |_nl| async move {
        firewall::netlink::load(&again).unwrap();
        let p = FirewallPlugin::default();
        let ctx = Context::new(std::env::temp_dir());
        let cur = p.query(&ctx, &d).await.unwrap();
        p.diff(&cur, &d)
            .iter()
            .filter(|a| !matches!(a, firewall::Action::WriteBootFile { .. }))
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
    });
    assert_eq!(pending, Vec::<String>::new());
    assert_eq!(listing_without_handles(&native), listed);
}

#[test]
#[ignore = "privileged: network namespaces and nftables"]
fn restore_puts_back_the_old_table_and_an_open_connection_survives() {
    let pair = Pair::new();
    pair.listen(22);
    pair.listen(8006);
    let old = policy("10.9.0.0/24", &[]);
    assert_ok(&pair.apply(&old));
    let before = pair.nft(&["list", "table", "inet", "opdbus"]);
    let boot_before = std::fs::read_to_string(pair.boot_file()).unwrap();
    let mut held = pair.connect(22).expect("22 is open under the old rules");
    assert!(echo(&mut held));

    // New rules: 22 no longer accepted, 8006 is. Checkpoint, apply, restore.
    let new = json!({"version": 1, "plugins": {"firewall": {"management_floor": false,
        "default_policy": {"input": "drop"},
        "rules": [{"port": 8006, "proto": "tcp", "action": "accept"}]}}});
    let ctx = pair.ctx();
    let st = state_of(&new);
    let cp = pair.server.run(move |_nl| async move {
        let p = FirewallPlugin::default();
        let d = p.desired(&st).unwrap().unwrap();
        let cur = p.query(&ctx, &d).await.unwrap();
        let actions = p.diff(&cur, &d);
        let cp = p.checkpoint(&ctx, &cur, &actions).await.unwrap().unwrap();
        for r in p.apply(&ctx, &actions).await {
            r.unwrap();
        }
        cp
    });
    assert!(
        !pair.reachable(22) && pair.reachable(8006),
        "the new rules are loaded"
    );
    assert!(echo(&mut held), "established traffic passes the new rules");

    let ctx = pair.ctx();
    let line = pair
        .server
        .run(move |_nl| async move { FirewallPlugin::default().restore(&ctx, &cp).await.unwrap() });
    assert_eq!(line, "table inet opdbus restored (9 rules)");
    assert_eq!(
        pair.nft(&["list", "table", "inet", "opdbus"]),
        before,
        "old rules byte-identical"
    );
    assert_eq!(
        std::fs::read_to_string(pair.boot_file()).unwrap(),
        boot_before
    );
    assert!(
        echo(&mut held),
        "the connection held across both changes still works"
    );
    assert!(pair.reachable(22) && !pair.reachable(8006));

    // A checkpoint of "no table": restore removes it and the boot file.
    let ctx = pair.ctx();
    let gone = firewall::Checkpoint {
        listing: None,
        boot_file: None,
    };
    let line = pair.server.run(move |_nl| async move {
        FirewallPlugin::default()
            .restore(&ctx, &gone)
            .await
            .unwrap()
    });
    assert_eq!(line, "table inet opdbus removed (it did not exist before)");
    assert!(!pair.boot_file().exists());
    assert!(pair.reachable(8006), "no firewall: open");
}

/// `op-dbus-agent apply STATE --plugin firewall` in the server namespace,
/// as if run from an SSH login from the client (`SSH_CONNECTION`), in the
/// background (`ip netns exec` execs the agent: the child's pid is its).
fn spawn_over_ssh(pair: &Pair, state: &Value, extra: &[&str]) -> std::process::Child {
    let path = pair.dir.path().join("ssh-state.json");
    std::fs::write(&path, state.to_string()).unwrap();
    std::process::Command::new("ip")
        .args(["netns", "exec", pair.server.name()])
        .arg(env!("CARGO_BIN_EXE_op-dbus-agent"))
        .arg("--state-dir")
        .arg(pair.dir.path().join("state"))
        .arg("apply")
        .arg(&path)
        .args(["--plugin", "firewall", "--root"])
        .arg(pair.dir.path().join("root"))
        .args(extra)
        .env("SSH_CONNECTION", format!("{CLIENT} 50022 {SERVER} 22"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Exit code and stdout + stderr.
fn finish(child: std::process::Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The confirm token of the apply waiting in `pair`'s state directory.
fn wait_for_window(pair: &Pair) -> Value {
    let sd = pair.dir.path().join("state");
    for _ in 0..400 {
        let token = std::fs::read_dir(&sd)
            .ok()
            .into_iter()
            .flatten()
            .find_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().to_string();
                name.starts_with("confirm-wait.")
                    .then(|| std::fs::read_to_string(e.path()).ok())
                    .flatten()
            });
        if let Some(t) = token.and_then(|t| serde_json::from_str(&t).ok()) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the apply never waited for confirm");
}

fn confirm(pair: &Pair) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"))
        .arg("--state-dir")
        .arg(pair.dir.path().join("state"))
        .arg("confirm")
        .output()
        .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
#[ignore = "privileged: network namespaces and nftables"]
fn over_ssh_a_lockout_risk_needs_confirm_and_rolls_back_without_it() {
    let pair = Pair::new();
    pair.listen(22);
    let drop_input = json!({"version": 1, "plugins": {"firewall": {
        "default_policy": {"input": "drop"}
    }}});

    // The input policy turns to drop over SSH: an implied 120 s window;
    // the session hangs up before anyone confirms: no table, no boot file.
    let child = spawn_over_ssh(&pair, &drop_input, &[]);
    let token = wait_for_window(&pair);
    let deadline = token["deadline"].as_u64().unwrap();
    assert!(
        (now() + 100..=now() + 121).contains(&deadline),
        "implied window: {token}"
    );
    assert!(pair
        .nft(&["list", "table", "inet", "opdbus"])
        .contains("policy drop;"));
    Task::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .run()
        .unwrap();
    let (code, out) = finish(child);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("may lock you out"), "{out}");
    assert!(
        out.contains("the input policy changes from accept to drop"),
        "{out}"
    );
    assert!(out.contains("SIGHUP arrived"), "{out}");
    assert!(pair.nft(&["list", "tables"]).trim().is_empty());
    assert!(!pair.boot_file().exists());

    // Waived: applied at once.
    let (code, out) = finish(spawn_over_ssh(&pair, &drop_input, &["--skip-ssh-confirm"]));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("may lock you out"), "{out}");
    assert!(pair.reachable(22), "the floor accepts sshd's port");

    // The same state again over SSH: nothing to fear, no wait.
    let (code, out) = finish(spawn_over_ssh(&pair, &drop_input, &[]));
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("may lock you out"), "{out}");

    // The floor goes and nothing else accepts 22: confirmed from a new
    // process (what a new SSH login would run), kept.
    let no_floor = json!({"version": 1, "plugins": {"firewall": {
        "management_floor": false,
        "default_policy": {"input": "drop"},
        "rules": [{"port": 8006, "proto": "tcp", "action": "accept"}]
    }}});
    let child = spawn_over_ssh(&pair, &no_floor, &[]);
    wait_for_window(&pair);
    let c = confirm(&pair);
    assert_eq!(c.status.code(), Some(0), "{c:?}");
    let (code, out) = finish(child);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "a new connection from {CLIENT} to port 22/tcp (sshd) is accepted now and would be refused"
        )),
        "{out}"
    );
    assert!(!pair.reachable(22));
}
