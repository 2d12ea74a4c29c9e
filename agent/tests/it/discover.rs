//! `discover`: the golden discovered state of a fixed fake host (the
//! plugins' pure conversions from what they read to their sections), and
//! round trips on real parts: discover, validate strictly, `diff` of the
//! result on the same host is empty. Network and firewall in a namespace
//! (bridges, veths, addresses, routes, OVS over a real ovsdb-server), users
//! in a fake root, systemd over a private bus, packages with dpkg-query on
//! a fake dpkg database.

use crate::dbus_daemon::PrivateBus;
use crate::fake_systemd::FakeSystemd;
use crate::netns::NetNs;
use crate::ovsdb_server::OvsdbServer;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opdbus_agent::engine::discover::{self, Discovery};
use opdbus_agent::engine::{Context, DesiredState, Engine, RetryPolicy};
use opdbus_agent::plugins::{firewall, network, packages, systemd, users};
use opdbus_common::rootfs::RootDir;
use serde_json::{json, Value};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/discover")
        .join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `got` with the fixture file (`UPDATE_GOLDEN=1` rewrites it).
fn golden(path: &Path, got: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(got, want, "{} differs (UPDATE_GOLDEN=1)", path.display());
}

/// A listing as `nft -j list table inet opdbus` prints it for `t`.
fn listing_of(t: &firewall::Table) -> Vec<Value> {
    let mut out = vec![json!({"table": {"family": "inet", "name": "opdbus", "handle": 1}})];
    let mut handle = 2;
    for c in &t.chains {
        out.push(
            json!({"chain": {"family": "inet", "table": "opdbus", "name": c.name,
            "handle": handle, "type": c.kind, "hook": c.hook, "prio": c.prio, "policy": c.policy}}),
        );
        handle += 1;
    }
    for c in &t.chains {
        for r in &c.rules {
            out.push(
                json!({"rule": {"family": "inet", "table": "opdbus", "chain": c.name,
                "handle": handle, "comment": r.comment, "expr": r.expr}}),
            );
            handle += 1;
        }
    }
    out
}

#[test]
fn golden_discovered_state_of_a_fixed_host() {
    let dir = fixture("host");
    let current: network::Current = serde_json::from_str(&read(&dir.join("network.json"))).unwrap();
    let net = network::discover::section(&current);

    let root = RootDir::open(dir.join("root")).unwrap();
    let db = users::EtcDb::load(&root).unwrap();
    let mut keys = BTreeMap::new();
    for (user, file) in [
        ("alice", "home/alice/.ssh/authorized_keys"),
        ("root", "root/.ssh/authorized_keys"),
    ] {
        let text = read(&dir.join("root").join(file));
        keys.insert(
            user.to_string(),
            text.lines().map(str::to_string).collect::<Vec<_>>(),
        );
    }
    let accounts = users::discover_section(&db, &keys);

    let pkgs = packages::manual_packages(
        &read(&dir.join("root/var/lib/dpkg/status")),
        &read(&dir.join("root/var/lib/apt/extended_states")),
    );

    // The firewall: the table its section renders, listed back, read back.
    let fw_in: opdbus_state::model::Firewall =
        serde_json::from_str(&read(&dir.join("firewall.json"))).unwrap();
    let table = firewall::render::table(&fw_in, &[(2222, "ssh")]).unwrap();
    let (parsed, other) = firewall::render::parse_listing(&listing_of(&table));
    assert!(other.is_empty(), "{other:?}");
    let (fw, floor) = firewall::discover::section(&parsed).unwrap();
    assert_eq!(fw, fw_in, "the firewall section must read back unchanged");
    assert_eq!(floor, [(2222, "ssh")]);

    let units: Vec<(String, String, String)> =
        serde_json::from_str(&read(&dir.join("systemd.json"))).unwrap();
    let files: Vec<(String, String)> = units
        .iter()
        .map(|(p, s, _)| (p.clone(), s.clone()))
        .collect();
    let active: BTreeMap<String, String> = units
        .iter()
        .map(|(p, _, a)| (p.rsplit('/').next().unwrap().to_string(), a.clone()))
        .collect();
    let picked: Vec<(String, String, String)> = systemd::discoverable_units(&files)
        .into_iter()
        .map(|(n, s)| {
            let a = active[&n].clone();
            (n, s, a)
        })
        .collect();
    let sd = systemd::discover_section(&picked);

    // Containers: what the plugin lists, and the pure round trip through
    // the plugin's own desired slice and diff.
    let containers: Vec<opdbus_agent::lxc::Container> =
        serde_json::from_str(&read(&dir.join("lxc.json"))).unwrap();
    let lxc = opdbus_agent::plugins::lxc::discover_section(&containers).unwrap();
    let lxc_state = DesiredState::from_json(
        &json!({"version": 1, "plugins": {"lxc": lxc}}).to_string(),
        "lxc.json",
    )
    .unwrap();
    let want = opdbus_agent::plugins::lxc::desired(&lxc_state.state)
        .unwrap()
        .unwrap();
    let now = opdbus_agent::plugins::lxc::Current {
        containers: containers
            .iter()
            .map(|c| (c.name.clone(), Some(c.clone())))
            .collect(),
    };
    assert!(opdbus_agent::plugins::lxc::diff(&now, &want).is_empty());

    let d = discover::assemble(&[
        (
            "packages".into(),
            json!({ "packagekit": { "packages": pkgs } }),
        ),
        ("users".into(), json!({ "users": accounts })),
        ("network".into(), json!({ "network": net })),
        ("firewall".into(), json!({ "firewall": fw })),
        ("systemd".into(), json!({ "systemd": sd })),
        ("lxc".into(), json!({ "lxc": lxc })),
    ])
    .unwrap();
    discover::check(&d, true).unwrap();
    let text = d.text();
    assert!(!text.contains("$6$"), "a password hash leaked:\n{text}");
    assert!(!text.contains("password_hash"), "{text}");
    golden(&dir.join("expected.json"), &text);
}

#[test]
fn two_plugins_filling_one_section_is_an_error() {
    let err = discover::assemble(&[
        ("a".into(), json!({"users": {}})),
        ("b".into(), json!({"users": {}})),
    ])
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugins 'a' and 'b' both discovered the section plugins.users (plugin bug)"
    );
}

// ------------------------------------------------------------ round trips

fn context(dir: &Path) -> Context {
    std::fs::create_dir_all(dir.join("root")).unwrap();
    Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
        .with_retry(RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        })
}

/// The action lines `diff` of `state` gives with `engine` and `ctx`.
async fn diff_lines(engine: &Engine, ctx: &Context, state: &str) -> Vec<String> {
    let desired = DesiredState::from_json(state, "discovered.json").unwrap();
    engine
        .diff(ctx, &desired)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|d| d.actions)
        .map(|a| a.description)
        .collect()
}

/// Links, addresses and routes of `ns` as `ip -j` shows them.
fn snapshot(ns: &NetNs) -> Value {
    let addrs = ns.address_rows(|a| Some(vec![a["local"].clone(), a["prefixlen"].clone()]));
    json!({"links": ns.link_rows(), "addresses": addrs, "routes": ns.route_rows()})
}

#[test]
#[ignore = "privileged: network namespace, ovsdb-server"]
fn network_round_trip_in_a_namespace() {
    let srv = OvsdbServer::start();
    let ns = NetNs::new();
    // Built by hand, as on a host op-dbus has never managed.
    for args in [
        &["link", "add", "br0", "type", "bridge"][..],
        &["link", "add", "br1", "type", "bridge"],
        &["link", "add", "va0", "type", "veth", "peer", "name", "vb0"],
        &["link", "add", "va1", "type", "veth", "peer", "name", "vb1"],
        &["link", "add", "lx0", "type", "veth", "peer", "name", "lx1"],
        &["link", "set", "va0", "master", "br0"],
        &["link", "set", "va1", "master", "br1"],
        &["link", "set", "va1", "mtu", "9000"],
        &["link", "set", "br1", "mtu", "9000"],
        &["addr", "add", "10.20.0.1/24", "dev", "br0"],
        &["addr", "add", "10.20.1.1/24", "dev", "br0"],
        &["addr", "add", "fd20::1/64", "dev", "br0", "nodad"],
        &["addr", "add", "10.21.0.1/24", "dev", "br1"],
        &["addr", "add", "192.168.50.1/24", "dev", "lx0"],
    ] {
        ns.ip(args);
    }
    for l in ["br0", "br1", "va0", "vb0", "va1", "lx0", "lx1"] {
        ns.ip(&["link", "set", l, "up"]);
    }
    // vb1 stays down; routes by hand (protocol boot).
    ns.ip(&["route", "add", "10.30.0.0/16", "via", "10.20.0.254"]);
    ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.21.0.254",
        "dev",
        "br1",
    ]);
    ns.ip(&["route", "add", "fd30::/48", "via", "fd20::fe", "dev", "br0"]);
    // OVS in the database (no ovs-vswitchd: no kernel devices).
    srv.vsctl(&["add-br", "ovsd0"]);
    srv.vsctl(&[
        "add-port",
        "ovsd0",
        "int5",
        "--",
        "set",
        "Interface",
        "int5",
        "type=internal",
    ]);
    srv.vsctl(&[
        "add-port", "ovsd0", "eth5", "--", "set", "Port", "eth5", "tag=10",
    ]);
    srv.vsctl(&[
        "add-port",
        "ovsd0",
        "eth6",
        "--",
        "set",
        "Port",
        "eth6",
        "trunks=20,30",
    ]);
    let before = snapshot(&ns);

    let dir = tempfile::tempdir().unwrap();
    let (path, ovsdb) = (dir.path().to_path_buf(), srv.addr());
    let (text, first, second, third) = ns.run(move |_| async move {
        let mut engine = Engine::new();
        engine.register(network::NetworkPlugin);
        let mut ctx = context(&path);
        ctx.ovsdb = ovsdb;
        let d: Discovery = engine.discover(&ctx, &[]).await.unwrap();
        let text = d.text();
        let first = diff_lines(&engine, &ctx, &text).await;
        // Adopting it writes the agent's networkd drop-ins and nothing else.
        let desired = DesiredState::from_json(&text, "discovered.json").unwrap();
        let report = engine.apply(&ctx, &desired).await;
        assert!(
            report.ok,
            "{}",
            serde_json::to_string_pretty(&report).unwrap()
        );
        let second = diff_lines(&engine, &ctx, &text).await;
        let again = engine.discover(&ctx, &[]).await.unwrap().text();
        (text, first, second, again)
    });
    let state: Value = serde_json::from_str(&text).unwrap();
    let ifs = &state["plugins"]["network"]["interfaces"];
    assert_eq!(ifs["br0"]["type"], "bridge", "{text}");
    assert_eq!(ifs["br0"]["bridge_ports"], "va0", "{text}");
    assert_eq!(
        ifs["br0"]["address"],
        json!(["10.20.0.1/24", "10.20.1.1/24", "fd20::1/64"]),
        "{text}"
    );
    assert_eq!(ifs["br1"]["mtu"], 9000, "{text}");
    assert_eq!(ifs["vb1"]["state"], "down", "{text}");
    assert_eq!(ifs["lx0"]["peer"], "lx1", "{text}");
    assert_eq!(ifs["ovsd0"]["type"], "ovs-bridge", "{text}");
    assert_eq!(
        ifs["ovsd0"]["ports"],
        json!([
            {"name": "eth5", "type": "system", "tag": 10},
            {"name": "eth6", "type": "system", "trunks": [20, 30]},
            {"name": "int5", "type": "internal"}
        ]),
        "{text}"
    );
    assert!(!ifs.as_object().unwrap().contains_key("lo"), "{text}");
    let routes = &state["plugins"]["network"]["routes"];
    assert_eq!(routes.as_array().unwrap().len(), 3, "{text}");
    // The only difference on a host op-dbus never managed: its own drop-ins.
    assert_eq!(first.len(), 1, "{first:?}\n{text}");
    assert!(
        first[0].starts_with("networkd drop-ins: write br0,br1,") && first[0].ends_with("remove -"),
        "{first:?}"
    );
    assert_eq!(second, Vec::<String>::new(), "diff after adopting\n{text}");
    assert_eq!(snapshot(&ns), before, "adopting changed the namespace");
    assert_eq!(third, text, "discover is stable");
}

#[test]
#[ignore = "privileged: network namespace, nftables"]
fn firewall_round_trip_in_a_namespace() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let state = json!({"version": 1, "plugins": {"firewall": {
        "default_policy": {"input": "drop", "forward": "drop", "output": "accept"},
        "ssh_port": 2222,
        "rules": [
            {"port": 8096, "proto": "tcp", "action": "accept", "comment": "web"},
            {"port": "6000-6010", "proto": "udp", "action": "drop", "source": ["10.0.0.0/8", "192.168.1.7"]},
            {"proto": "icmp", "action": "accept", "iface": "br0"},
            {"port": 53, "action": "reject"}
        ],
        "masquerade": [{"source": "10.10.0.0/24", "out_iface": "vmbr0", "comment": "guests"}]
    }}})
    .to_string();
    let path = dir.path().to_path_buf();
    let (text, lines) = ns.run(move |_| async move {
        let mut engine = Engine::new();
        engine.register(firewall::FirewallPlugin::default());
        let ctx = context(&path);
        let desired = DesiredState::from_json(&state, "fw.json").unwrap();
        let report = engine.apply(&ctx, &desired).await;
        assert!(
            report.ok,
            "{}",
            serde_json::to_string_pretty(&report).unwrap()
        );
        let text = engine.discover(&ctx, &[]).await.unwrap().text();
        let lines = diff_lines(&engine, &ctx, &text).await;
        (text, lines)
    });
    assert_eq!(lines, Vec::<String>::new(), "{text}");
    let fw: Value = serde_json::from_str::<Value>(&text).unwrap()["plugins"]["firewall"].clone();
    assert_eq!(fw["ssh_port"], 2222, "{text}");
    assert_eq!(fw["rules"].as_array().unwrap().len(), 4, "{text}");
    assert_eq!(fw["masquerade"][0]["out_iface"], "vmbr0", "{text}");
}

fn write(root: &Path, path: &str, text: &str, mode: u32, owner: (u32, u32)) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(&p, Some(owner.0), Some(owner.1)).unwrap();
}

fn home(root: &Path, path: &str, owner: (u32, u32)) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.join(".ssh")).unwrap();
    for d in [p.clone(), p.join(".ssh")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&d, Some(owner.0), Some(owner.1)).unwrap();
    }
}

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPYcnlLb3rIHfIzZSRw6Nud1wp3YIuHNQEBHN2d5J9Iu alice@laptop";
const KEY_R: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPYcnlLb3rIHfIzZSRw6Nud1wp3YIuHNQEBHN2d5J9Iu admin@ops";

#[test]
#[ignore = "privileged: root (files owned by other users)"]
fn users_round_trip_in_a_fake_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    write(
        &root,
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        alice:x:1000:1000:Alice Doe,,,:/home/alice:/bin/bash\n\
        bob:x:1001:1001::/home/bob:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        0o644,
        (0, 0),
    );
    write(
        &root,
        "/etc/shadow",
        "root:$6$salt$rootsecrethash:19000:0:99999:7:::\n\
        daemon:*:19000:0:99999:7:::\n\
        alice:$6$salt$alicesecrethash:19000:0:99999:7:::\n\
        bob:!:19000:0:99999:7:::\n\
        nobody:*:19000:0:99999:7:::\n",
        0o640,
        (0, 0),
    );
    write(
        &root,
        "/etc/group",
        "root:x:0:\ndaemon:x:1:\nsudo:x:27:alice\n\
        alice:x:1000:\nbob:x:1001:\ndevs:x:1005:alice,bob\nnogroup:x:65534:\n",
        0o644,
        (0, 0),
    );
    write(
        &root,
        "/etc/gshadow",
        "root:*::\nsudo:*::alice\nalice:!::\nbob:!::\ndevs:!::alice,bob\n",
        0o640,
        (0, 0),
    );
    home(&root, "/home/alice", (1000, 1000));
    write(
        &root,
        "/home/alice/.ssh/authorized_keys",
        &format!("# laptop\n{KEY_A}\n"),
        0o600,
        (1000, 1000),
    );
    home(&root, "/home/bob", (1001, 1001));
    home(&root, "/root", (0, 0));
    write(
        &root,
        "/root/.ssh/authorized_keys",
        &format!("{KEY_R}\n"),
        0o600,
        (0, 0),
    );

    let path = dir.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (text, lines) = rt.block_on(async move {
        let mut engine = Engine::new();
        engine.register(users::UsersPlugin);
        let ctx = context(&path);
        let text = engine.discover(&ctx, &[]).await.unwrap().text();
        let lines = diff_lines(&engine, &ctx, &text).await;
        (text, lines)
    });
    assert_eq!(lines, Vec::<String>::new(), "{text}");
    assert!(
        !text.contains("secrethash") && !text.contains("password_hash"),
        "{text}"
    );
    let u: Value = serde_json::from_str::<Value>(&text).unwrap()["plugins"]["users"].clone();
    let names: Vec<&String> = u["accounts"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["alice", "bob", "root"], "{text}");
    assert_eq!(
        u["accounts"]["alice"]["ssh_authorized_keys"],
        json!([KEY_A]),
        "{text}"
    );
    assert_eq!(
        u["accounts"]["alice"]["groups"],
        json!(["devs", "sudo"]),
        "{text}"
    );
    assert_eq!(
        u["accounts"]["root"]["ssh_authorized_keys"],
        json!([KEY_R]),
        "{text}"
    );
    let groups: Vec<&String> = u["groups"].as_object().unwrap().keys().collect();
    assert_eq!(groups, ["alice", "bob", "devs", "sudo"], "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_round_trip_over_a_private_bus() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSystemd::serve(bus.address()).await.unwrap();
    for (unit, active, sub, file) in [
        ("ssh.service", "active", "running", "enabled"),
        ("cron.service", "active", "running", "enabled"),
        ("backup.timer", "inactive", "dead", "enabled"),
        ("rsync.service", "inactive", "dead", "masked"),
        ("getty@.service", "inactive", "dead", "enabled"),
        ("systemd-journald.service", "active", "running", "static"),
        ("apache2.service", "inactive", "dead", "disabled"),
    ] {
        fake.add_unit(unit, active, sub, file).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new(dir.path().join("state"))
        .with_root(dir.path().join("root"))
        .with_bus(bus.connect().await.unwrap());
    let mut engine = Engine::new();
    engine.register(systemd::SystemdPlugin);
    let text = engine.discover(&ctx, &[]).await.unwrap().text();
    let units: Value =
        serde_json::from_str::<Value>(&text).unwrap()["plugins"]["systemd"]["units"].clone();
    assert_eq!(
        units,
        json!({
            "backup.timer": {"active_state": "inactive", "enabled": true},
            "cron.service": {"active_state": "active", "enabled": true},
            "rsync.service": {"masked": true},
            "ssh.service": {"active_state": "active", "enabled": true}
        })
    );
    assert_eq!(diff_lines(&engine, &ctx, &text).await, Vec::<String>::new());
    // Drift after discovery shows as a difference.
    fake.set_active_state("cron.service", "inactive", "dead")
        .await
        .unwrap();
    assert_eq!(
        diff_lines(&engine, &ctx, &text).await,
        ["start cron.service"]
    );
}

#[test]
fn packages_round_trip_with_dpkg_query() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("host/root/var");
    let dst = dir.path().join("root/var");
    for f in ["lib/dpkg/status", "lib/apt/extended_states"] {
        std::fs::create_dir_all(dst.join(f).parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    std::fs::create_dir_all(dst.join("lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(dst.join("lib/dpkg/updates")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let path = dir.path().to_path_buf();
    let (text, lines) = rt.block_on(async move {
        let mut engine = Engine::new();
        engine.register(packages::PackagesPlugin);
        let ctx = context(&path);
        let text = engine.discover(&ctx, &[]).await.unwrap().text();
        let lines = diff_lines(&engine, &ctx, &text).await;
        (text, lines)
    });
    assert_eq!(lines, Vec::<String>::new(), "{text}");
    let pk: Value = serde_json::from_str::<Value>(&text).unwrap()["plugins"]["packagekit"].clone();
    assert_eq!(
        pk["packages"],
        json!(["htop", "openssh-server", "vim"]),
        "{text}"
    );
}

#[test]
fn unknown_plugin_is_refused_naming_the_plugins() {
    let engine = opdbus_agent::plugins::standard();
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(engine.discover(&ctx, &["nope".to_string()]))
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("no plugin named \"nope\"; the plugins are storage, "),
        "{err}"
    );
}

#[test]
fn the_command_writes_a_private_file_that_validates_and_diffs_empty() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("host/root/var");
    let root = dir.path().join("root");
    for f in ["lib/dpkg/status", "lib/apt/extended_states"] {
        let to = root.join("var").join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), to).unwrap();
    }
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
    let out = dir.path().join("discovered.json");
    let bus = format!("unix:path={}/no-bus", dir.path().display());
    let agent = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"))
            .args(args)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        text
    };
    let (root_s, out_s) = (root.to_str().unwrap(), out.to_str().unwrap());
    agent(&[
        "discover", "--plugin", "packages", "--root", root_s, "--bus", &bus, "--output", out_s,
    ]);
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o600);
    assert!(agent(&["validate", out_s]).contains("valid"));
    let diff = agent(&["diff", out_s, "--root", root_s, "--bus", &bus]);
    assert_eq!(diff.trim(), "0 action(s), 0 part(s) not applied");
    // Standard output when no file is named: the same document.
    let printed = agent(&[
        "discover", "--plugin", "packages", "--root", root_s, "--bus", &bus,
    ]);
    assert_eq!(printed, std::fs::read_to_string(&out).unwrap());
}
