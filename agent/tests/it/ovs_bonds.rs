//! OVS bonds, trunks and the bridge's MAC through OVSDB on a user-space
//! Open vSwitch (ovsdb-server and ovs-vswitchd started by the test, veth
//! members in namespaces): a kernel-style bond named as an OVS port and a
//! bond port declared on the bridge become OVS bonds, read back with
//! `ovs-vsctl` and `ovs-appctl bond/show`; packets cross the active-backup
//! bond; re-apply is a no-op; a member removed and a mode changed by hand
//! are repaired; prune deletes only the ports op-dbus created.
//! Privileged; everything is removed when a test ends, also on failure.

use std::time::Duration;

use crate::netns::NetNs;
use crate::ovs_flows_wg::{actions, apply_with, exec, net_engine, ping, Switch};
use serde_json::{json, Value};

/// A veth pair: `h` in `host`, `p` in `sw_ns`, both up.
fn pair(host: &NetNs, sw_ns: &NetNs, h: &str, p: &str) {
    host.ip(&[
        "link",
        "add",
        h,
        "type",
        "veth",
        "peer",
        "name",
        p,
        "netns",
        sw_ns.name(),
    ]);
    host.ip(&["link", "set", h, "up"]);
    sw_ns.ip(&["link", "set", p, "up"]);
}

fn state(ovsdb: &str, with_extra: bool, prune: bool) -> Value {
    let mut ports = vec![json!("bond0"), json!("v3")];
    if with_extra {
        ports.push(
            json!({"name": "bond1", "type": "bond", "interfaces": ["vc2", "vc1"],
                          "bond_mode": "balance-tcp", "miimon": 100}),
        );
        ports.push(json!({"name": "v4", "trunks": [20, 10]}));
    }
    json!({"version": 1, "plugins": {"network": {
        "ovsdb": ovsdb,
        "prune": prune,
        "interfaces": {
            "bbr": {"type": "ovs-bridge", "datapath_type": "netdev", "ports": ports,
                    "mac": "02:00:00:00:90:AA"}
        },
        "bonds": {"bond0": {"slaves": ["vb1", "vb2"], "mode": "active-backup"}}
    }}})
}

/// `bond/show PORT` as `key: value` lines, trimmed.
fn bond_show(sw: &Switch, port: &str) -> Vec<String> {
    sw.appctl(&["bond/show", port])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

/// Members `bond/show` lists (`member NAME: ...`), sorted.
fn members(lines: &[String]) -> Vec<String> {
    let mut v: Vec<String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("member ")?.split(':').next())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn ports(sw: &Switch) -> Vec<String> {
    sw.vsctl(&["list-ports", "bbr"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Applies until nothing is left to do (ovs-vswitchd makes the bridge's
/// device after the first apply's verify may look); returns the reports'
/// actions, the last one empty.
fn converge(s: &NetNs, dir: &std::path::Path, st: &Value) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for _ in 0..4 {
        let (r, _) = apply_with(s, dir, st, net_engine);
        assert!(r.ok, "{r:#?}");
        let a = actions(&r);
        let done = a.is_empty();
        all.push(a);
        if done {
            return all;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("no converged apply: {all:#?}");
}

#[test]
#[ignore = "privileged: network namespaces, ovs-vswitchd"]
fn ovs_bonds_are_ovs_bonds_with_drift_repair_and_prune() {
    let (s, h1, h2, h3) = (NetNs::new(), NetNs::new(), NetNs::new(), NetNs::new());
    let sw = Switch::start(&s);
    // h1 reaches the switch over two links, bridged on its side (a dumb
    // switch as the bond's partner); h2 sits on a plain port.
    pair(&h1, &s, "hb1", "vb1");
    pair(&h1, &s, "hb2", "vb2");
    h1.ip(&["link", "add", "brh", "type", "bridge"]);
    h1.ip(&["link", "set", "hb1", "master", "brh"]);
    h1.ip(&["link", "set", "hb2", "master", "brh"]);
    h1.ip(&["addr", "add", "10.90.0.1/24", "dev", "brh"]);
    h1.ip(&["link", "set", "brh", "up"]);
    pair(&h2, &s, "h2", "v3");
    h2.ip(&["addr", "add", "10.90.0.2/24", "dev", "h2"]);
    pair(&h3, &s, "hc1", "vc1");
    pair(&h3, &s, "hc2", "vc2");
    pair(&h3, &s, "h4", "v4");

    let dir = tempfile::tempdir().unwrap();
    let full = state(&sw.addr(), true, false);
    let (r, _) = apply_with(&s, dir.path(), &full, net_engine);
    assert!(r.ok, "{r:#?}");
    let first = actions(&r);
    assert!(
        first
            .iter()
            .any(|a| a.contains("bond0 (bond vb1+vb2 active-backup)")
                && a.contains("bond1 (bond vc1+vc2 balance-tcp lacp active miimon 100)")
                && a.contains("v4 (trunks 10,20)")
                && a.contains("MAC address 02:00:00:00:90:aa")),
        "{first:?}"
    );
    // No kernel bond: bond0 is an OVS port only.
    assert!(s.link("bond0").is_none());

    // Read back through OVS's own tools.
    let b0 = bond_show(&sw, "bond0");
    assert!(has(&b0, "bond_mode: active-backup"), "{b0:?}");
    assert_eq!(members(&b0), ["vb1", "vb2"], "{b0:?}");
    let b1 = bond_show(&sw, "bond1");
    assert!(has(&b1, "bond_mode: balance-tcp"), "{b1:?}");
    assert_eq!(
        sw.vsctl(&["get", "Port", "bond1", "other_config:bond-detect-mode"])
            .trim(),
        "miimon"
    );
    assert_eq!(members(&b1), ["vc1", "vc2"], "{b1:?}");
    assert_eq!(sw.vsctl(&["get", "Port", "bond1", "lacp"]).trim(), "active");
    assert_eq!(
        sw.vsctl(&["get", "Port", "bond1", "other_config:bond-miimon-interval"])
            .trim(),
        "\"100\""
    );
    assert_eq!(
        sw.vsctl(&["get", "Port", "v4", "trunks"]).trim(),
        "[10, 20]"
    );
    assert_eq!(
        sw.vsctl(&["get", "Bridge", "bbr", "other_config:hwaddr"])
            .trim(),
        "\"02:00:00:00:90:aa\""
    );

    // Re-apply converges to nothing; the bridge's device has the MAC.
    let rounds = converge(&s, dir.path(), &full);
    assert!(rounds.len() <= 3, "{rounds:#?}");
    let mut mac = String::new();
    for _ in 0..50 {
        mac = s
            .link("bbr")
            .map(|l| l["address"].as_str().unwrap_or("").to_string())
            .unwrap_or_default();
        if mac == "02:00:00:00:90:aa" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(mac, "02:00:00:00:90:aa");

    // Packets cross the active-backup bond.
    assert!(ping(&h1, "10.90.0.2"), "h1 -> h2 over bond0");

    // Drift: a member removed and a mode changed by hand.
    let vb2 = sw.vsctl(&["get", "Interface", "vb2", "_uuid"]);
    sw.vsctl(&["remove", "Port", "bond0", "interfaces", vb2.trim()]);
    sw.vsctl(&["set", "Port", "bond1", "bond_mode=balance-slb"]);
    // One interface left: OVS no longer runs bond0 as a bond.
    assert!(!sw
        .vsctl(&["get", "Port", "bond0", "interfaces"])
        .contains(','));
    let (r, diff) = apply_with(&s, dir.path(), &full, net_engine);
    assert!(r.ok, "{r:#?}");
    let a = actions(&r);
    assert_eq!(diff.len(), 1, "one ensure repairs both: {diff:?}");
    assert!(a[0].starts_with("ensure OVS bridge bbr"), "{a:?}");
    let notes: Vec<String> = r
        .plugins
        .iter()
        .flat_map(|p| p.actions.iter().filter_map(|x| x.detail.clone()))
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("updated bonds bond0,bond1")),
        "{notes:?}"
    );
    assert_eq!(members(&bond_show(&sw, "bond0")), ["vb1", "vb2"]);
    assert!(has(&bond_show(&sw, "bond1"), "bond_mode: balance-tcp"));
    let (r, _) = apply_with(&s, dir.path(), &full, net_engine);
    assert_eq!(actions(&r), Vec::<String>::new(), "{r:#?}");
    assert!(ping(&h1, "10.90.0.2"), "bond0 carries packets after repair");

    // Ownership: prune deletes the bond and the port op-dbus created, never
    // a port someone else added.
    sw.vsctl(&[
        "add-port",
        "bbr",
        "vx",
        "--",
        "set",
        "Interface",
        "vx",
        "type=internal",
    ]);
    let pruned = state(&sw.addr(), false, true);
    let (r, _) = apply_with(&s, dir.path(), &pruned, net_engine);
    assert!(r.ok, "{r:#?}");
    let a = actions(&r);
    assert!(
        a.contains(&"delete OVS port bond1 from bbr".to_string())
            && a.contains(&"delete OVS port v4 from bbr".to_string()),
        "{a:?}"
    );
    assert_eq!(ports(&sw), ["bond0", "v3", "vx"]);
    let rounds = converge(&s, dir.path(), &pruned);
    assert_eq!(rounds.len(), 1, "{rounds:#?}");
    exec(&s, &["true"]).unwrap();
}
