//! Network plugin, pure tier: golden diff fixtures
//! (`fixtures/diff/network/<case>/`), the missing-link error, both seed forms
//! mapping to one model, and the golden /etc/network/interfaces rendering.
//! `UPDATE_GOLDEN=1 cargo test -p opdbus-agent --test network` rewrites the
//! expected files (review the change before committing it).

use std::path::{Path, PathBuf};

use opdbus_agent::engine::PluginAction;
use opdbus_agent::plugins::network::diff::{check_references, diff};
use opdbus_agent::plugins::network::model::{Current, Desired, WantKind};
use opdbus_agent::plugins::network::{desired_of, is_proxmox};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> T {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

#[test]
fn golden_diffs() {
    let root = fixtures().join("diff/network");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 12, "expected at least 12 network cases");
    let mut failures = Vec::new();
    for case in cases {
        let current: Current = read(&case.join("current.json"));
        let desired: Desired = read(&case.join("desired.json"));
        let actions = diff(&current, &desired);
        assert_eq!(
            actions,
            diff(&current, &desired),
            "{}: diff is not deterministic",
            case.display()
        );
        for a in &actions {
            assert!(!a.to_string().is_empty() && !a.resource().is_empty());
        }
        let got = serde_json::to_value(&actions).unwrap();
        let path = case.join("actions.json");
        if update() {
            std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
            continue;
        }
        let expected: serde_json::Value = read(&path);
        if got != expected {
            failures.push(format!(
                "{}:\n  expected {expected}\n  got      {got}",
                case.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn noop_case_is_empty_and_prune_false_touches_nothing_unnamed() {
    // Objects in the prune fixtures' current state that the state does not name.
    const UNNAMED: [&str; 7] = [
        "dummy9",
        "oldbr",
        "vethA",
        "tap100i0",
        "ovsold",
        "stray",
        "10.50.0.0",
    ];
    let root = fixtures().join("diff/network");
    let noop: serde_json::Value = read(&root.join("noop/actions.json"));
    assert_eq!(noop, serde_json::json!([]));
    let kept: serde_json::Value = read(&root.join("prune-false-leaves-unnamed/actions.json"));
    let text = kept.to_string();
    for unnamed in UNNAMED {
        assert!(
            !text.contains(unnamed),
            "prune=false touched {unnamed}: {text}"
        );
    }
    let pruned: serde_json::Value = read(&root.join("prune-true-deletes-unnamed/actions.json"));
    let text = pruned.to_string();
    for unnamed in UNNAMED {
        assert!(text.contains(unnamed), "prune=true left {unnamed}: {text}");
    }
    assert!(
        !text.contains("keep1"),
        "prune=true deleted a named veth's peer: {text}"
    );
}

#[test]
fn missing_referenced_link_is_an_error_naming_it() {
    let root = fixtures().join("diff/network/enslave-bond");
    let mut current: Current = read(&root.join("current.json"));
    let desired: Desired = read(&root.join("desired.json"));
    assert_eq!(check_references(&current, &desired), Ok(()));
    current.links.retain(|l| l.name != "ens19");
    let err = check_references(&current, &desired).unwrap_err();
    assert_eq!(
        err,
        "the state references network links this host does not have: 'ens19' (port of bond0); \
         check the names with `ip link` and fix the state"
    );
}

fn state(text: &str) -> opdbus_state::State {
    opdbus_state::parse_str(text, "test.json")
        .unwrap_or_else(|e| panic!("state does not parse: {e:?}"))
        .state
}

#[test]
fn both_seed_forms_map_onto_one_model() {
    let map = state(
        r#"{"version": 1, "plugins": {"network": {"interfaces": {
            "br0": {"type": "bridge", "bridge_ports": ["ens18"], "address": "10.0.0.2/24", "gateway": "10.0.0.1"},
            "ovs0": {"type": "ovs-bridge", "ports": ["eth1"]}}}}}"#,
    );
    let list = state(
        r#"{"version": 1, "plugins": {"net": {"interfaces": [
            {"name": "br0", "type": "bridge", "ports": ["ens18"],
             "ipv4": {"enabled": true, "address": [{"ip": "10.0.0.2", "prefix": 24}], "gateway": "10.0.0.1"}},
            {"name": "ovs0", "type": "ovs-bridge", "ports": ["eth1"]}]}}}"#,
    );
    let (a, b) = (desired_of(&map).unwrap(), desired_of(&list).unwrap());
    assert_eq!(a.links, b.links);
    assert_eq!(a.routes, b.routes);
    let ens18 = a.link("ens18").unwrap();
    assert_eq!(
        (ens18.declared, ens18.master.as_deref()),
        (false, Some("br0"))
    );
    assert!(matches!(
        a.link("ovs0").unwrap().kind,
        WantKind::OvsBridge { .. }
    ));
    assert!(a.interfaces_file.is_none(), "not a Proxmox state");
    assert!(a.networkd.contains_key("ens18") && !a.networkd.contains_key("ovs0"));
}

/// `fixtures/network-interfaces/<case>.json` (a state) renders to `<case>.interfaces`.
#[test]
fn proxmox_interfaces_rendering_is_golden() {
    let dir = fixtures().join("network-interfaces");
    let mut n = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        n += 1;
        let st = state(&std::fs::read_to_string(path).unwrap());
        assert!(
            is_proxmox(&st),
            "{}: expected a Proxmox state",
            path.display()
        );
        let got = desired_of(&st).unwrap().interfaces_file.unwrap();
        let expected_path = path.with_extension("interfaces");
        if update() {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap();
        assert_eq!(got, expected, "{} differs", expected_path.display());
    }
    assert!(n >= 1);
}
