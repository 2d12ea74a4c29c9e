//! Network plugin, privileged tier: each test works in a fresh network
//! namespace (never the host's), applies through the engine, checks the
//! result with `ip -n NS -j`, and checks that failures roll back exactly.

use crate::netns;

use std::path::Path;
use std::time::Duration;

use netns::NetNs;
use opdbus_agent::engine::{
    confirm, ApplyOptions, Context, DesiredState, Engine, RetryPolicy, RunReport,
};
use opdbus_agent::plugins::network::NetworkPlugin;
use serde_json::{json, Value};

/// A context below `dir` that finds no D-Bus (so: resolv.conf, no networkd).
fn context(dir: &Path, options: ApplyOptions) -> Context {
    Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
        .with_options(options)
        .with_retry(RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        })
}

/// Applies `state` with the network plugin inside `ns`.
fn apply(ns: &NetNs, dir: &Path, state: &Value, options: ApplyOptions) -> RunReport {
    let text = state.to_string();
    let dir = dir.to_path_buf();
    ns.run(move |_nl| async move {
        let mut engine = Engine::new();
        engine.register(NetworkPlugin);
        let desired = DesiredState::from_json(&text, "test.json").unwrap();
        engine.apply(&context(&dir, options), &desired).await
    })
}

/// The actions the plugin would take now (empty: the state holds).
fn pending(ns: &NetNs, dir: &Path, state: &Value) -> Vec<String> {
    let text = state.to_string();
    let dir = dir.to_path_buf();
    ns.run(move |_nl| async move {
        let mut engine = Engine::new();
        engine.register(NetworkPlugin);
        let desired = DesiredState::from_json(&text, "test.json").unwrap();
        let diffs = engine
            .diff(&context(&dir, ApplyOptions::default()), &desired)
            .await
            .unwrap();
        diffs
            .into_iter()
            .flat_map(|d| d.actions)
            .map(|a| a.description)
            .collect()
    })
}

/// Links, addresses and routes of the namespace as `ip -j` shows them,
/// without the fields that move by themselves (counters, timers, DAD).
fn snapshot(ns: &NetNs) -> Value {
    let addrs = ns.address_rows(|a| {
        Some(vec![
            a["local"].clone(),
            a["prefixlen"].clone(),
            a["scope"].clone(),
        ])
    });
    json!({"links": ns.link_rows(), "addresses": addrs, "routes": ns.route_rows()})
}

fn base_state() -> Value {
    json!({"version": 1, "plugins": {"network": {
        "interfaces": {
            "vx0": {"type": "veth", "peer": "vx1", "address": "10.78.0.1/24"},
            "br0": {"type": "bridge", "bridge_ports": ["vx1"], "mtu": 1400,
                    "address": ["10.77.0.1/24", "fd77::1/64"],
                    "gateway": "10.77.0.254", "gateway6": "fd77::fe"}
        },
        "dns": {"servers": ["10.77.0.53"], "search": ["lab.test"]}
    }}})
}

fn assert_ok(report: &RunReport) {
    assert!(
        report.ok,
        "apply failed: {}",
        serde_json::to_string_pretty(report).unwrap()
    );
}

#[test]
#[ignore = "privileged: network namespace"]
fn applies_veth_bridge_addresses_routes_and_reapply_is_noop() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let state = base_state();
    let report = apply(&ns, dir.path(), &state, ApplyOptions::default());
    assert_ok(&report);

    // Read back independently with iproute2.
    let br = ns.link("br0").expect("br0 exists");
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    assert_eq!(br["mtu"], 1400);
    assert!(br["flags"].as_array().unwrap().contains(&json!("UP")));
    let vx1 = ns.link("vx1").expect("vx1 exists");
    assert_eq!(vx1["master"], "br0");
    assert_eq!(vx1["linkinfo"]["info_kind"], "veth");
    let vx0 = ns.link("vx0").expect("vx0 exists");
    assert!(vx0["flags"].as_array().unwrap().contains(&json!("UP")));
    let addrs = ns.addrs("br0");
    assert!(addrs.contains(&"10.77.0.1/24".to_string()), "{addrs:?}");
    assert!(addrs.contains(&"fd77::1/64".to_string()), "{addrs:?}");
    assert!(ns.addrs("vx0").contains(&"10.78.0.1/24".to_string()));
    let v4 = ns.routes("-4");
    assert!(
        v4.iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "10.77.0.254" && r["dev"] == "br0"),
        "{v4:?}"
    );
    let v6 = ns.routes("-6");
    assert!(
        v6.iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "fd77::fe" && r["dev"] == "br0"),
        "{v6:?}"
    );
    let resolv = std::fs::read_to_string(dir.path().join("root/etc/resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver 10.77.0.53\n") && resolv.contains("search lab.test\n"),
        "{resolv}"
    );
    let dropin = std::fs::read_to_string(
        dir.path()
            .join("root/run/systemd/network/10-opdbus-br0.network"),
    )
    .unwrap();
    assert!(
        dropin.contains("[Match]\nName=br0\n") && dropin.contains("Unmanaged=yes"),
        "{dropin}"
    );

    // Re-applying changes nothing.
    let before = snapshot(&ns);
    assert_eq!(pending(&ns, dir.path(), &state), Vec::<String>::new());
    let again = apply(&ns, dir.path(), &state, ApplyOptions::default());
    assert_ok(&again);
    assert!(
        again.plugins[0].actions.is_empty(),
        "{:?}",
        again.plugins[0].actions
    );
    assert_eq!(snapshot(&ns), before);
}

/// A state whose last route cannot be added: everything before it is undone.
fn failing_state() -> Value {
    let mut s = base_state();
    let net = &mut s["plugins"]["network"];
    net["interfaces"]["br0"]["mtu"] = json!(1300);
    net["interfaces"]["br0"]["address"] = json!(["10.77.0.2/24", "fd77::1/64"]);
    net["interfaces"]["dm0"] = json!({"type": "veth", "peer": "dm1", "address": "10.90.0.1/24"});
    net["dns"] = json!({"servers": ["192.0.2.53"]});
    // 192.0.2.1 is on no connected subnet: the kernel refuses (ENETUNREACH).
    net["routes"] = json!([{"to": "10.200.0.0/16", "via": "192.0.2.1"}]);
    s
}

#[test]
#[ignore = "privileged: network namespace"]
fn failing_apply_rolls_back_to_the_exact_previous_state() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&apply(
        &ns,
        dir.path(),
        &base_state(),
        ApplyOptions::default(),
    ));
    let before = snapshot(&ns);
    let resolv_before = std::fs::read_to_string(dir.path().join("root/etc/resolv.conf")).unwrap();

    let report = apply(&ns, dir.path(), &failing_state(), ApplyOptions::default());
    assert!(!report.ok, "the failing state applied");
    let p = &report.plugins[0];
    let failed = p
        .actions
        .iter()
        .find(|a| a.action == "set-route")
        .expect("the route was tried");
    let detail = failed.detail.clone().unwrap();
    assert!(detail.contains("10.200.0.0/16"), "{detail}");
    let rollback = p.rollback.clone().unwrap();
    assert!(rollback.starts_with("rolled back: "), "{rollback}");
    assert_eq!(report.rolled_back(), ["network"]);
    // The earlier actions report that they were undone.
    assert!(p
        .actions
        .iter()
        .any(|a| a.action == "create-link" && a.result == "rolled-back"));

    assert_eq!(
        snapshot(&ns),
        before,
        "rollback did not restore links/addresses/routes exactly"
    );
    assert!(ns.link("dm0").is_none());
    let resolv_after = std::fs::read_to_string(dir.path().join("root/etc/resolv.conf")).unwrap();
    assert_eq!(resolv_after, resolv_before);
}

#[test]
#[ignore = "privileged: network namespace"]
fn no_rollback_leaves_the_partial_change() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&apply(
        &ns,
        dir.path(),
        &base_state(),
        ApplyOptions::default(),
    ));
    let options = ApplyOptions {
        no_rollback: true,
        ..ApplyOptions::default()
    };
    let report = apply(&ns, dir.path(), &failing_state(), options);
    assert!(!report.ok);
    let note = report.plugins[0].rollback.clone().unwrap();
    assert!(note.contains("not rolled back (--no-rollback)"), "{note}");
    assert!(
        ns.link("dm0").is_some(),
        "--no-rollback must keep the partial change"
    );
    assert_eq!(ns.link("br0").unwrap()["mtu"], 1300);
}

#[test]
#[ignore = "privileged: network namespace"]
fn missing_bridge_port_is_reported_by_name() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let state = json!({"version": 1, "plugins": {"network": {"interfaces": {
        "br0": {"type": "bridge", "bridge_ports": ["ens18"]}}}}});
    let report = apply(&ns, dir.path(), &state, ApplyOptions::default());
    assert!(!report.ok);
    let err = report.plugins[0].error.clone().unwrap();
    assert!(err.contains("'ens18' (port of br0)"), "{err}");
    assert!(
        ns.link("br0").is_none(),
        "nothing is applied when a referenced link is missing"
    );
}

#[test]
#[ignore = "privileged: network namespace"]
fn unconfirmed_change_is_rolled_back_and_confirmed_change_stays() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let before = snapshot(&ns);
    let options = ApplyOptions {
        confirm_timeout: Some(Duration::from_secs(1)),
        ..ApplyOptions::default()
    };
    let report = apply(&ns, dir.path(), &base_state(), options.clone());
    assert!(!report.ok, "an unconfirmed change must fail");
    let err = report.failures().join("\n");
    assert!(
        err.contains("not confirmed") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(snapshot(&ns), before);
    assert!(!dir.path().join("state/transaction.json").exists());

    // Now someone confirms while the apply waits.
    let state_dir = dir.path().join("state");
    let confirmer = std::thread::spawn(move || {
        for _ in 0..200 {
            if let Ok(confirm::Confirmation::Confirmed(t)) = confirm::confirm(&state_dir, None) {
                return t.description;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no change waited for confirmation");
    });
    let options = ApplyOptions {
        confirm_timeout: Some(Duration::from_secs(10)),
        ..ApplyOptions::default()
    };
    let report = apply(&ns, dir.path(), &base_state(), options);
    let what = confirmer.join().unwrap();
    assert!(what.starts_with("network:"), "{what}");
    assert_ok(&report);
    assert_eq!(ns.link("br0").unwrap()["mtu"], 1400);
}

use crate::dbus_daemon;

/// Fakes of systemd-resolved's Manager/Link and systemd-networkd's Manager.
mod fake_resolved {
    use std::sync::{Arc, Mutex};

    use zbus::interface;
    use zbus::zvariant::OwnedObjectPath;

    pub const LINK_PATH: &str = "/org/freedesktop/resolve1/link/fake";

    #[derive(Default)]
    pub struct Log {
        pub calls: Vec<String>,
        pub dns: Vec<(i32, Vec<u8>)>,
        pub domains: Vec<(String, bool)>,
    }

    pub type Shared = Arc<Mutex<Log>>;

    pub struct Manager(pub Shared);

    #[interface(name = "org.freedesktop.resolve1.Manager")]
    impl Manager {
        fn get_link(&self, ifindex: i32) -> OwnedObjectPath {
            self.0
                .lock()
                .unwrap()
                .calls
                .push(format!("GetLink({ifindex})"));
            OwnedObjectPath::try_from(LINK_PATH).unwrap()
        }
        #[zbus(name = "SetLinkDNS")]
        fn set_link_dns(&self, ifindex: i32, servers: Vec<(i32, Vec<u8>)>) {
            let mut l = self.0.lock().unwrap();
            l.calls
                .push(format!("SetLinkDNS({ifindex}, {} servers)", servers.len()));
            l.dns = servers;
        }
        fn set_link_domains(&self, ifindex: i32, domains: Vec<(String, bool)>) {
            let mut l = self.0.lock().unwrap();
            l.calls
                .push(format!("SetLinkDomains({ifindex}, {domains:?})"));
            l.domains = domains;
        }
    }

    pub struct Link(pub Shared);

    #[interface(name = "org.freedesktop.resolve1.Link")]
    impl Link {
        #[zbus(property, name = "DNS")]
        fn dns(&self) -> Vec<(i32, Vec<u8>)> {
            self.0.lock().unwrap().dns.clone()
        }
        #[zbus(property)]
        fn domains(&self) -> Vec<(String, bool)> {
            self.0.lock().unwrap().domains.clone()
        }
    }

    pub struct Networkd(pub Shared);

    #[interface(name = "org.freedesktop.network1.Manager")]
    impl Networkd {
        fn reload(&self) {
            self.0.lock().unwrap().calls.push("networkd.Reload".into());
        }
    }
}

#[test]
#[ignore = "privileged: network namespace"]
fn dns_goes_to_resolved_over_dbus_when_it_runs() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let bus = dbus_daemon::PrivateBus::start().unwrap();
    let address = bus.address().to_string();
    let state = json!({"version": 1, "plugins": {"network": {"interfaces": {
        "vx0": {"type": "veth", "peer": "vx1", "address": "10.66.0.2/24", "gateway": "10.66.0.1",
                "dns": ["10.66.0.53", "fd66::53"]}},
        "dns": {"search": ["corp.test"]}}}});
    let text = state.to_string();
    let root = dir.path().to_path_buf();
    let (calls, index) = ns.run(move |nl| async move {
        let log = fake_resolved::Shared::default();
        let server = zbus::connection::Builder::address(address.as_str())
            .unwrap()
            .name("org.freedesktop.resolve1")
            .unwrap()
            .name("org.freedesktop.network1")
            .unwrap()
            .serve_at(
                "/org/freedesktop/resolve1",
                fake_resolved::Manager(log.clone()),
            )
            .unwrap()
            .serve_at(fake_resolved::LINK_PATH, fake_resolved::Link(log.clone()))
            .unwrap()
            .serve_at(
                "/org/freedesktop/network1",
                fake_resolved::Networkd(log.clone()),
            )
            .unwrap()
            .build()
            .await
            .unwrap();
        let mut engine = Engine::new();
        engine.register(NetworkPlugin);
        let desired = DesiredState::from_json(&text, "test.json").unwrap();
        let ctx = Context::new(root.join("state"))
            .with_root(root.join("root"))
            .with_bus_address(Some(address.clone()));
        let report = engine.apply(&ctx, &desired).await;
        assert_ok(&report);
        // Re-apply reads the link's DNS back from resolved: nothing to do.
        let again = engine.diff(&ctx, &desired).await.unwrap();
        assert!(again.iter().all(|d| d.actions.is_empty()), "{again:?}");
        let index = nl.index_of("test", "vx0").await.unwrap();
        drop(server);
        let calls = log.lock().unwrap().calls.clone();
        (calls, index)
    });
    assert!(
        calls.contains(&format!("SetLinkDNS({index}, 2 servers)")),
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!(
            "SetLinkDomains({index}, [(\"corp.test\", false)])"
        )),
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| *c == "networkd.Reload").count(),
        1,
        "{calls:?}"
    );
    assert!(
        !dir.path().join("root/etc/resolv.conf").exists(),
        "resolv.conf must not be written"
    );
}

/// Timing, printed (run with `--nocapture`): 10 bridges with 100 addresses
/// through the plugin vs. an `ip` command loop, and a no-op reconcile.
#[test]
#[ignore = "privileged: network namespace"]
fn timing_apply_100_addresses_10_bridges_and_noop() {
    let mut interfaces = serde_json::Map::new();
    for b in 0..10 {
        let addrs: Vec<String> = (1..=10).map(|h| format!("10.{b}.0.{h}/24")).collect();
        interfaces.insert(
            format!("tb{b}"),
            json!({"type": "bridge", "address": addrs}),
        );
    }
    let state = json!({"version": 1, "plugins": {"network": {"interfaces": interfaces}}});
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    assert_ok(&apply(&ns, dir.path(), &state, ApplyOptions::default()));
    let agent = t.elapsed();
    assert_eq!(
        ns.addrs("tb9")
            .iter()
            .filter(|a| a.starts_with("10."))
            .count(),
        10
    );

    let t = std::time::Instant::now();
    let report = apply(&ns, dir.path(), &state, ApplyOptions::default());
    let noop = t.elapsed();
    assert!(report.ok && report.plugins[0].actions.is_empty());

    let ns2 = NetNs::new();
    let t = std::time::Instant::now();
    for b in 0..10 {
        let name = format!("tb{b}");
        ns2.ip(&["link", "add", &name, "type", "bridge"]);
        ns2.ip(&["link", "set", &name, "up"]);
        for h in 1..=10 {
            ns2.ip(&["addr", "add", &format!("10.{b}.0.{h}/24"), "dev", &name]);
        }
    }
    let ip_loop = t.elapsed();
    println!(
        "network timing: agent apply (checkpoint+apply+verify, 120 actions) {:.1} ms; \
         ip command loop (120 commands) {:.1} ms; no-op reconcile {:.1} ms",
        agent.as_secs_f64() * 1e3,
        ip_loop.as_secs_f64() * 1e3,
        noop.as_secs_f64() * 1e3
    );
}

/// `prune` deletes only links the agent created: a bridge with an address
/// and a veth pair made by hand (docker0 and friends) stay, with their
/// address; a bridge and a veth pair the state created and then dropped go.
#[test]
#[ignore = "privileged: network namespace"]
fn prune_deletes_only_links_the_agent_created() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    ns.ip(&["link", "add", "docker0", "type", "bridge"]);
    ns.ip(&["addr", "add", "172.17.0.1/16", "dev", "docker0"]);
    ns.ip(&["link", "set", "docker0", "up"]);
    ns.ip(&[
        "link", "add", "vethhost", "type", "veth", "peer", "name", "vethcont",
    ]);
    let made = json!({"version": 1, "plugins": {"network": {"interfaces": {
        "tmpbr": {"type": "bridge"},
        "tv0": {"type": "veth", "peer": "tv1"}
    }}}});
    assert_ok(&apply(&ns, dir.path(), &made, ApplyOptions::default()));
    assert!(ns.link("tmpbr").is_some() && ns.link("tv1").is_some());
    let reg = opdbus_agent::engine::ownership::Ownership::new(dir.path().join("state"));
    assert_eq!(reg.owned("network", "link").unwrap().len(), 3);

    let pruned = json!({"version": 1, "plugins": {"network": {
        "prune": true,
        "interfaces": {"keepbr": {"type": "bridge"}}
    }}});
    let report = apply(&ns, dir.path(), &pruned, ApplyOptions::default());
    assert_ok(&report);
    let names = ns.link_names();
    for gone in ["tmpbr", "tv0", "tv1"] {
        assert!(
            !names.iter().any(|n| n == gone),
            "{gone} was not pruned: {names:?}"
        );
    }
    for kept in ["docker0", "vethhost", "vethcont"] {
        assert!(
            names.iter().any(|n| n == kept),
            "{kept} was pruned: {names:?}"
        );
    }
    assert!(ns.addrs("docker0").contains(&"172.17.0.1/16".to_string()));
    let owned = reg.owned("network", "link").unwrap();
    assert_eq!(owned.len(), 1, "{owned:?}");
    assert_eq!(owned[0].id, "keepbr");
    assert!(pending(&ns, dir.path(), &pruned).is_empty());
}
