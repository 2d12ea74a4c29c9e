//! The hand-off writes the state's firewall into the target as the boot
//! file `op-dbus-firewall.service` loads at first boot (before
//! `network-pre.target` and the agent): 0600 in a 0700 directory, the
//! agent's rendering of the QEMU end-to-end state's rules; privileged, it
//! loads with `nft -j -f` exactly as the unit runs it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use opdbus_common::Task;
use opdbus_installer::install::write_firewall_boot_file;
use opdbus_installer::target::Root;
use serde_json::Value;

fn e2e_state() -> opdbus_state::State {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/ci-e2e.json");
    opdbus_state::load(&path).unwrap().state
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Writes the boot file into a fresh fake target; returns it and its path.
fn written(state: &opdbus_state::State) -> (tempfile::TempDir, PathBuf) {
    let tree = tempfile::tempdir().unwrap();
    let root = Root::open(tree.path()).unwrap();
    assert!(write_firewall_boot_file(&root, state).unwrap());
    let file = tree.path().join("etc/op-dbus/firewall.json");
    (tree, file)
}

#[test]
fn the_handoff_writes_the_states_rules_as_the_boot_file_0600() {
    let (tree, file) = written(&e2e_state());
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&tree.path().join("etc/op-dbus")), 0o700);
    let batch: Value = serde_json::from_str(&fs::read_to_string(&file).unwrap()).unwrap();
    let cmds = batch["nftables"].as_array().unwrap();
    // The table is replaced whole: made sure to exist, deleted, added.
    let table = serde_json::json!({"table": {"family": "inet", "name": "opdbus"}});
    assert_eq!(cmds[0]["add"], table);
    assert_eq!(cmds[1]["delete"], table);
    let input = cmds
        .iter()
        .find_map(|c| {
            c["add"]["chain"]
                .as_object()
                .filter(|c| c["name"] == "input")
        })
        .unwrap();
    assert_eq!(input["hook"], "input");
    assert_eq!(input["policy"], "drop");
    let rules: Vec<(String, String)> = cmds
        .iter()
        .filter_map(|c| c["add"]["rule"].as_object())
        .filter(|r| r["chain"] == "input")
        .map(|r| {
            (
                r["comment"].as_str().unwrap().to_string(),
                r["expr"].to_string(),
            )
        })
        .collect();
    let comments: Vec<&str> = rules.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        comments,
        [
            "opdbus:loopback",
            "opdbus:established",
            "opdbus:invalid",
            "opdbus:floor-ssh",
            "opdbus:rule-0 e2e web"
        ]
    );
    assert!(rules[3].1.contains(r#""right":22"#), "{}", rules[3].1);
    assert!(rules[4].1.contains(r#""right":8096"#), "{}", rules[4].1);

    // Written again (an install re-run): the same bytes, still 0600.
    let before = fs::read(&file).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let root = Root::open(tree.path()).unwrap();
    assert!(write_firewall_boot_file(&root, &e2e_state()).unwrap());
    assert_eq!(fs::read(&file).unwrap(), before);
    assert_eq!(mode(&file), 0o600);
}

#[test]
fn without_a_firewall_section_no_boot_file_is_written() {
    let mut state = e2e_state();
    state.plugins.firewall = None;
    let tree = tempfile::tempdir().unwrap();
    let root = Root::open(tree.path()).unwrap();
    assert!(!write_firewall_boot_file(&root, &state).unwrap());
    assert!(!tree.path().join("etc/op-dbus/firewall.json").exists());
}

/// `ip netns add`, deleted on drop.
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Task::new("ip").args(["netns", "del", &self.0]).run();
    }
}

#[test]
#[ignore = "privileged: network namespace, nftables"]
fn the_boot_file_loads_with_nft_as_the_unit_runs_it() {
    let (_tree, file) = written(&e2e_state());
    let ns = Ns(format!("opdbus-fwboot-{}", std::process::id()));
    Task::new("ip").args(["netns", "add", &ns.0]).run().unwrap();
    let nft = |args: &[&str]| {
        Task::new("ip")
            .args(["netns", "exec", &ns.0, "nft"])
            .args(args)
            .read()
            .unwrap()
    };
    // The unit's ExecStart, twice (a reload replaces, never duplicates).
    let path = file.to_str().unwrap();
    nft(&["-j", "-f", path]);
    nft(&["-j", "-f", path]);
    let listing = nft(&["list", "table", "inet", "opdbus"]);
    assert!(listing.contains("policy drop;"), "{listing}");
    assert!(
        listing.contains("tcp dport 22 accept comment \"opdbus:floor-ssh\""),
        "{listing}"
    );
    assert!(
        listing.contains("tcp dport 8096 accept comment \"opdbus:rule-0 e2e web\""),
        "{listing}"
    );
    assert_eq!(listing.matches("dport 8096").count(), 1, "{listing}");
}

/// LXC's own bridge is turned off in the target unless the state names it;
/// the rest of `/etc/default/lxc-net` is kept, and a second run changes nothing.
#[test]
fn the_handoff_turns_lxcs_own_bridge_off_unless_the_state_names_it() {
    use opdbus_installer::install::lxc_default_bridge_off;
    let tree = tempfile::tempdir().unwrap();
    fs::create_dir_all(tree.path().join("etc/default")).unwrap();
    let file = tree.path().join("etc/default/lxc-net");
    fs::write(
        &file,
        "USE_LXC_BRIDGE=\"true\"\n\n#LXC_DHCP_CONFILE=/etc/dnsmasq.conf\n",
    )
    .unwrap();
    let root = Root::open(tree.path()).unwrap();
    let mut state = e2e_state();
    assert!(lxc_default_bridge_off(&root, &state).unwrap());
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("USE_LXC_BRIDGE=\"false\""), "{text}");
    assert!(text.contains("#LXC_DHCP_CONFILE=/etc/dnsmasq.conf"));
    assert!(!lxc_default_bridge_off(&root, &state).unwrap());
    // Named by the state: left alone.
    fs::write(&file, "USE_LXC_BRIDGE=\"true\"\n").unwrap();
    let net = state.plugins.network.as_mut().unwrap();
    let br: opdbus_state::model::Interface =
        serde_json::from_value(serde_json::json!({"type": "bridge"})).unwrap();
    net.interfaces.insert("lxcbr0".into(), br);
    assert!(!lxc_default_bridge_off(&root, &state).unwrap());
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "USE_LXC_BRIDGE=\"true\"\n"
    );
}
