//! Real packets through what the agent configures: OpenFlow tables on a
//! user-space Open vSwitch bridge and a WireGuard tunnel (wireguard-go)
//! between two network namespaces. Privileged; every namespace, link and
//! daemon a test starts is removed when it ends, also on failure.

use crate::netns;

use std::path::Path;
use std::time::Duration;

use netns::NetNs;
use opdbus_agent::engine::{
    ActionView, ApplyOptions, Context, DesiredState, Engine, RetryPolicy, RunReport,
};
use opdbus_agent::plugins::wireguard::WireGuardPlugin;
use opdbus_common::Task;
use serde_json::{json, Value};

pub(crate) fn context(dir: &Path) -> Context {
    Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
        .with_options(ApplyOptions::default())
        // ovs-vswitchd makes a bridge's device a moment after OVSDB has it.
        .with_retry(RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(200),
        })
}

pub(crate) fn apply_with(
    ns: &NetNs,
    dir: &Path,
    state: &Value,
    make: fn() -> Engine,
) -> (RunReport, Vec<String>) {
    let (text, dir) = (state.to_string(), dir.to_path_buf());
    ns.run(move |_| async move {
        let desired = DesiredState::from_json(&text, "test.json").unwrap();
        let ctx = context(&dir);
        let diff: Vec<String> = planned(&make(), &ctx, &desired)
            .await
            .iter()
            .map(|a| serde_json::to_string(a).unwrap())
            .collect();
        (make().apply(&ctx, &desired).await, diff)
    })
}

/// Every action `engine` plans for `desired`, all plugins.
pub(crate) async fn planned(
    engine: &Engine,
    ctx: &Context,
    desired: &DesiredState,
) -> Vec<ActionView> {
    engine
        .diff(ctx, desired)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|d| d.actions)
        .collect()
}

pub(crate) fn actions(r: &RunReport) -> Vec<String> {
    r.plugins
        .iter()
        .flat_map(|p| p.actions.iter().map(|a| a.description.clone()))
        .collect()
}

/// `ip netns exec NS cmd...`, its stdout, or the error.
pub(crate) fn exec(ns: &NetNs, args: &[&str]) -> Result<String, String> {
    Task::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .read()
        .map_err(|e| e.to_string())
}

/// Every file below `dir`, read as bytes and lossily as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out += &String::from_utf8_lossy(&b);
            }
        }
    }
    out
}

/// One TCP exchange `from` -> `to_ip:port` with a one-shot server in `to`.
fn tcp_works(from: &NetNs, to: &NetNs, to_ip: &str, port: u16) -> bool {
    let server = format!(
        "import socket\ns=socket.socket(socket.AF_INET6 if ':' in '{to_ip}' else socket.AF_INET)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('{to_ip}',{port}))\n\
         s.listen(1)\ns.settimeout(6)\nc,_=s.accept()\nc.sendall(b'hello-'+c.recv(16))\nc.close()\n"
    );
    let mut child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            to.name(),
            "/usr/bin/python3",
            "-c",
            &server,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let client = format!(
        "import socket\ns=socket.create_connection(('{to_ip}',{port}),timeout=3)\n\
         s.sendall(b'x')\nprint(s.recv(16).decode())\n"
    );
    let got = exec(from, &["/usr/bin/python3", "-c", &client]);
    let _ = child.kill();
    let _ = child.wait();
    got.map(|s| s.trim() == "hello-x").unwrap_or(false)
}

pub(crate) fn ping(from: &NetNs, ip: &str) -> bool {
    exec(from, &["ping", "-c", "1", "-W", "2", ip]).is_ok()
}

// ---- WireGuard ------------------------------------------------------------

fn wg_engine() -> Engine {
    let mut e = Engine::new();
    e.register(WireGuardPlugin);
    e
}

fn wg_and_net_engine() -> Engine {
    let mut e = Engine::new();
    e.register(opdbus_agent::plugins::network::NetworkPlugin);
    e.register(WireGuardPlugin);
    e
}

/// Deletes the tunnel links (wireguard-go exits when its link goes) before
/// the namespaces go.
struct WgLinks(Vec<(String, String)>);

impl Drop for WgLinks {
    fn drop(&mut self) {
        for (ns, link) in &self.0 {
            let _ = Task::new("ip").args(["-n", ns, "link", "del", link]).run();
        }
    }
}

fn wg_state(name: &str, addr: &str, port: u16, peer: Option<(String, String, String)>) -> Value {
    let peers = match peer {
        Some((key, endpoint, allowed)) => json!([{
            "public_key": key, "endpoint": endpoint, "allowed_ips": [allowed],
            "persistent_keepalive": 5
        }]),
        None => json!([]),
    };
    json!({"version": 1, "plugins": {"wireguard": {"interfaces": {name: {
        "address": addr, "listen_port": port, "peers": peers
    }}}}})
}

fn public_key(root: &Path, name: &str) -> (String, String) {
    let private = std::fs::read_to_string(root.join(format!("root/etc/wireguard/{name}.key")))
        .unwrap()
        .trim()
        .to_string();
    let public = Task::new("wg")
        .arg("pubkey")
        .stdin(format!("{private}\n"))
        .read()
        .unwrap()
        .trim()
        .to_string();
    (private, public)
}

/// `wg show NAME dump` without the handshake time and byte counters.
fn wg_dump(ns: &NetNs, name: &str) -> Vec<String> {
    exec(ns, &["wg", "show", name, "dump"])
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() == 8 {
                [f[0], f[1], f[2], f[3], f[7]].join("\t")
            } else {
                l.to_string()
            }
        })
        .collect()
}

#[test]
#[ignore = "privileged: network namespaces, wireguard-go"]
fn wireguard_tunnel_carries_tcp_and_reapply_is_a_noop() {
    let (a, b) = (NetNs::new(), NetNs::new());
    let tag = std::process::id() % 100_000;
    let (wa, wb) = (format!("wgt{tag}a"), format!("wgt{tag}b"));
    let _links = WgLinks(vec![
        (a.name().to_string(), wa.clone()),
        (b.name().to_string(), wb.clone()),
    ]);
    // The underlay: a veth pair between the namespaces.
    a.ip(&[
        "link",
        "add",
        "ua",
        "type",
        "veth",
        "peer",
        "name",
        "ub",
        "netns",
        b.name(),
    ]);
    a.ip(&["addr", "add", "192.168.77.1/24", "dev", "ua"]);
    b.ip(&["addr", "add", "192.168.77.2/24", "dev", "ub"]);
    a.ip(&["link", "set", "ua", "up"]);
    b.ip(&["link", "set", "ub", "up"]);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for d in [&da, &db] {
        std::fs::create_dir(d.path().join("root")).unwrap();
    }

    // First apply without peers: the keys are generated, 0600.
    let (ra, _) = apply_with(
        &a,
        da.path(),
        &wg_state(&wa, "10.77.0.1/24", 51901, None),
        wg_engine,
    );
    assert!(ra.ok, "{ra:#?}");
    let (rb, _) = apply_with(
        &b,
        db.path(),
        &wg_state(&wb, "10.77.0.2/24", 51902, None),
        wg_engine,
    );
    assert!(rb.ok, "{rb:#?}");
    use std::os::unix::fs::PermissionsExt;
    let key_path = da.path().join(format!("root/etc/wireguard/{wa}.key"));
    assert_eq!(
        std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (priv_a, pub_a) = public_key(da.path(), &wa);
    let (priv_b, pub_b) = public_key(db.path(), &wb);
    // Only the public key is printed.
    let notes: Vec<String> = ra.plugins[0]
        .actions
        .iter()
        .filter_map(|x| x.detail.clone())
        .collect();
    assert!(notes.iter().any(|n| n.contains(&pub_a)), "{notes:?}");

    // Then with each other as peers: the tunnel carries ICMP and TCP.
    let sa = wg_state(
        &wa,
        "10.77.0.1/24",
        51901,
        Some((
            pub_b.clone(),
            "192.168.77.2:51902".into(),
            "10.77.0.2/32".into(),
        )),
    );
    let sb = wg_state(
        &wb,
        "10.77.0.2/24",
        51902,
        Some((
            pub_a.clone(),
            "192.168.77.1:51901".into(),
            "10.77.0.1/32".into(),
        )),
    );
    let (ra2, diff_a) = apply_with(&a, da.path(), &sa, wg_engine);
    assert!(ra2.ok, "{ra2:#?}");
    let (rb2, diff_b) = apply_with(&b, db.path(), &sb, wg_engine);
    assert!(rb2.ok, "{rb2:#?}");
    assert!(ping(&a, "10.77.0.2"), "no ping through the tunnel");
    assert!(
        tcp_works(&a, &b, "10.77.0.2", 7001),
        "no TCP through the tunnel"
    );

    // Re-apply: nothing to do, the device unchanged.
    let before = wg_dump(&a, &wa);
    let (ra3, _) = apply_with(&a, da.path(), &sa, wg_engine);
    assert!(ra3.ok, "{ra3:#?}");
    assert_eq!(actions(&ra3), Vec::<String>::new());
    assert_eq!(wg_dump(&a, &wa), before);

    // Discover with the network plugin beside: the tunnel is described by
    // the wireguard plugin alone (default key file, the running peer), the
    // network section leaves it out, and the discovered state is a no-op.
    let discovered = {
        let dir = da.path().to_path_buf();
        a.run(move |_| async move {
            let ctx = context(&dir);
            let d = wg_and_net_engine().discover(&ctx, &[]).await.unwrap();
            let desired = DesiredState::from_json(&d.text(), "discovered.json").unwrap();
            let diff: Vec<String> = planned(&wg_and_net_engine(), &ctx, &desired)
                .await
                .into_iter()
                .map(|a| a.description)
                .collect();
            (d.state, diff)
        })
    };
    let (state, diff) = discovered;
    assert_eq!(
        state["plugins"]["wireguard"]["interfaces"][&wa],
        json!({"address": "10.77.0.1/24", "listen_port": 51901, "peers": [{
            "public_key": pub_b, "endpoint": "192.168.77.2:51902",
            "allowed_ips": ["10.77.0.2/32"], "persistent_keepalive": 5
        }]}),
        "{state:#}"
    );
    assert!(
        !state["plugins"]["network"].to_string().contains(&wa),
        "the network section describes the tunnel too: {state:#}"
    );
    assert_eq!(diff, Vec::<String>::new(), "{state:#}");
    let discovered_text = state.to_string();

    // Drift: a peer removed by hand comes back.
    exec(&a, &["wg", "set", &wa, "peer", &pub_b, "remove"]).unwrap();
    let (ra4, _) = apply_with(&a, da.path(), &sa, wg_engine);
    assert!(ra4.ok, "{ra4:#?}");
    assert_eq!(actions(&ra4).len(), 1, "{:?}", actions(&ra4));
    assert_eq!(wg_dump(&a, &wa), before);

    // The private keys appear in no report, diff, audit record or state file.
    let mut seen = format!("{ra:?}{rb:?}{ra2:?}{rb2:?}{ra3:?}{ra4:?}");
    seen += &diff_a.join("\n");
    seen += &diff_b.join("\n");
    seen += &discovered_text;
    seen += &all_text(&da.path().join("state"));
    seen += &all_text(&db.path().join("state"));
    for k in [&priv_a, &priv_b] {
        assert!(!seen.contains(k.as_str()), "a private key leaked");
        let hex = hex_of(k);
        assert!(!seen.contains(&hex), "a private key leaked in hex");
    }
}

fn hex_of(b64: &str) -> String {
    let out = Task::new("python3")
        .args([
            "-c",
            "import base64,sys;print(base64.b64decode(sys.argv[1]).hex())",
            b64,
        ])
        .read()
        .unwrap();
    out.trim().to_string()
}

// ---- OpenFlow tables ------------------------------------------------------

/// ovsdb-server (host namespace, unprivileged paths) and ovs-vswitchd inside
/// a namespace with the user-space datapath; run, db and log files in one
/// scratch directory. Both are stopped on drop.
pub(crate) struct Switch {
    dir: tempfile::TempDir,
    ns: String,
}

fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn stop(pidfile: &Path) {
    if let Some(pid) = pid_in(pidfile) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(pidfile);
    }
}

impl Switch {
    pub(crate) fn start(ns: &NetNs) -> Self {
        let dir = tempfile::Builder::new().prefix("ovs").tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let sw = Switch {
            dir,
            ns: ns.name().to_string(),
        };
        Task::new("ovsdb-tool")
            .arg("create")
            .arg(d.join("conf.db"))
            .arg("/usr/share/openvswitch/vswitch.ovsschema")
            .run()
            .unwrap();
        Task::new("ovsdb-server")
            .arg(d.join("conf.db"))
            .arg(format!("--remote=punix:{}", d.join("db.sock").display()))
            .arg(format!("--unixctl={}", d.join("ovsdb.ctl").display()))
            .arg(format!("--pidfile={}", d.join("ovsdb.pid").display()))
            .arg(format!("--log-file={}", d.join("ovsdb.log").display()))
            .arg("--detach")
            .run()
            .unwrap();
        sw.vsctl(&["--no-wait", "init"]);
        sw.start_vswitchd();
        sw
    }

    fn start_vswitchd(&self) {
        let d = self.dir.path();
        Task::new("ip")
            .args(["netns", "exec", &self.ns, "ovs-vswitchd"])
            .arg(format!("unix:{}", d.join("db.sock").display()))
            .arg(format!("--pidfile={}", d.join("vswitchd.pid").display()))
            .arg(format!("--unixctl={}", d.join("vswitchd.ctl").display()))
            .arg(format!("--log-file={}", d.join("vswitchd.log").display()))
            .arg("--detach")
            .env("OVS_RUNDIR", d)
            .env("OVS_DBDIR", d)
            .env("OVS_LOGDIR", d)
            .run()
            .unwrap();
    }

    fn restart_vswitchd(&self) {
        stop(&self.dir.path().join("vswitchd.pid"));
        self.start_vswitchd();
    }

    pub(crate) fn addr(&self) -> String {
        format!("unix:{}", self.dir.path().join("db.sock").display())
    }

    fn mgmt(&self, bridge: &str) -> String {
        format!("unix:{}/{bridge}.mgmt", self.dir.path().display())
    }

    /// `ovs-appctl` to this switch's ovs-vswitchd.
    pub(crate) fn appctl(&self, args: &[&str]) -> String {
        Task::new("ovs-appctl")
            .arg("-t")
            .arg(self.dir.path().join("vswitchd.ctl"))
            .args(args)
            .read()
            .unwrap()
    }

    pub(crate) fn vsctl(&self, args: &[&str]) -> String {
        Task::new("ovs-vsctl")
            .arg(format!("--db={}", self.addr()))
            .arg("--timeout=20")
            .args(args)
            .read()
            .unwrap()
    }

    /// Every flow of the bridge, stats left out, sorted.
    fn flows(&self, bridge: &str) -> Vec<String> {
        let out = Task::new("ovs-ofctl")
            .args(["dump-flows", "--no-stats", &self.mgmt(bridge)])
            .read()
            .unwrap();
        let mut v: Vec<String> = out
            .lines()
            .map(|l| l.trim().replace("reset_counts ", ""))
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        stop(&self.dir.path().join("vswitchd.pid"));
        stop(&self.dir.path().join("ovsdb.pid"));
    }
}

fn flows_engine() -> Engine {
    let mut e = Engine::new();
    e.register(opdbus_agent::plugins::network::flows::FlowsPlugin);
    e
}

fn flows_state(ovsdb: &str, bridge: &str, flows: &[&str]) -> Value {
    json!({"version": 1, "plugins": {"net": {
        "ovsdb": ovsdb,
        "interfaces": [{"name": bridge, "type": "ovs-bridge", "ports": ["p1", "p2"], "flows": flows}]
    }}})
}

/// Host `h` (a namespace) wired to switch port `p` of `sw_ns` by a veth.
pub(crate) fn wire(host: &NetNs, sw_ns: &NetNs, h: &str, p: &str, addr: &str) {
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
    host.ip(&["addr", "add", addr, "dev", h]);
    host.ip(&["link", "set", h, "up"]);
    sw_ns.ip(&["link", "set", p, "up"]);
    // TCP through the user-space datapath needs checksums made in software.
    exec(host, &["ethtool", "-K", h, "tx", "off"]).unwrap();
}

#[test]
#[ignore = "privileged: network namespaces, ovs-vswitchd"]
fn flows_filter_real_packets_in_one_bundle_and_survive_restarts() {
    let (s, h1, h2) = (NetNs::new(), NetNs::new(), NetNs::new());
    let sw = Switch::start(&s);
    sw.vsctl(&[
        "add-br",
        "fbr",
        "--",
        "set",
        "bridge",
        "fbr",
        "datapath_type=netdev",
    ]);
    wire(&h1, &s, "h1", "p1", "10.88.0.1/24");
    wire(&h2, &s, "h2", "p2", "10.88.0.2/24");
    sw.vsctl(&["add-port", "fbr", "p1", "--", "add-port", "fbr", "p2"]);
    // Someone else's flow: never touched.
    Task::new("ovs-ofctl")
        .args([
            "add-flow",
            &sw.mgmt("fbr"),
            "cookie=0x99,priority=5,udp,actions=drop",
        ])
        .run()
        .unwrap();
    let foreign = "cookie=0x99, priority=5,udp actions=drop";
    assert!(
        sw.flows("fbr").iter().any(|f| f == foreign),
        "{:?}",
        sw.flows("fbr")
    );

    let flows = [
        "table=0,priority=100,icmp,actions=normal",
        "table=0,priority=100,arp,actions=normal",
        "table=0,priority=90,tcp,tp_dst=7002,actions=drop",
        "table=0, priority=10, actions=normal",
    ];
    let state = flows_state(&sw.addr(), "fbr", &flows);
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = apply_with(&s, dir.path(), &state, flows_engine);
    assert!(r.ok, "{r:#?}");
    assert_eq!(actions(&r).len(), 1, "{:?}", actions(&r));
    let table = sw.flows("fbr");
    assert!(table.iter().any(|f| f == foreign), "{table:?}");
    assert_eq!(
        table
            .iter()
            .filter(|f| f.starts_with("cookie=0x6f70"))
            .count(),
        4
    );

    assert!(ping(&h1, "10.88.0.2"), "ICMP is allowed");
    assert!(
        !tcp_works(&h1, &h2, "10.88.0.2", 7002),
        "TCP to 7002 is dropped"
    );
    assert!(tcp_works(&h1, &h2, "10.88.0.2", 7003), "TCP to 7003 passes");

    // Re-apply: nothing to do.
    let (r2, _) = apply_with(&s, dir.path(), &state, flows_engine);
    assert!(r2.ok, "{r2:#?}");
    assert_eq!(actions(&r2), Vec::<String>::new());
    assert_eq!(sw.flows("fbr"), table);

    // One flow the switch rejects: the whole bundle is refused, the table
    // stays as it was, and the error names the flow by pointer.
    let mut bad = flows.to_vec();
    bad.push("table=5,priority=10,actions=goto_table:1");
    let (r3, _) = apply_with(
        &s,
        dir.path(),
        &flows_state(&sw.addr(), "fbr", &bad),
        flows_engine,
    );
    assert!(!r3.ok);
    let err = format!("{r3:?}");
    assert!(err.contains("/plugins/net/interfaces/0/flows/4"), "{err}");
    assert_eq!(sw.flows("fbr"), table);

    // A flow deleted by hand is drift.
    Task::new("ovs-ofctl")
        .args(["del-flows", &sw.mgmt("fbr"), "tcp,tp_dst=7002"])
        .run()
        .unwrap();
    let (r4, _) = apply_with(&s, dir.path(), &state, flows_engine);
    assert!(r4.ok, "{r4:#?}");
    assert!(
        actions(&r4)[0].contains("1 of 4 missing"),
        "{:?}",
        actions(&r4)
    );
    assert_eq!(sw.flows("fbr"), table);

    // ovs-vswitchd restarted: flows gone (drift), the apply puts them back.
    sw.restart_vswitchd();
    let mut tries = 0;
    while !Path::new(&sw.mgmt("fbr")["unix:".len()..]).exists() && tries < 100 {
        std::thread::sleep(Duration::from_millis(50));
        tries += 1;
    }
    let (r5, _) = apply_with(&s, dir.path(), &state, flows_engine);
    assert!(r5.ok, "{r5:#?}");
    assert!(
        actions(&r5)[0].contains("4 of 4 missing"),
        "{:?}",
        actions(&r5)
    );
    assert!(
        !tcp_works(&h1, &h2, "10.88.0.2", 7002),
        "TCP to 7002 is dropped again"
    );
    assert!(tcp_works(&h1, &h2, "10.88.0.2", 7003));
}

/// The seed's bridge in short form: `paths` for the socket and the mesh
/// path, on three ports.
fn paths_state(ovsdb: &str, socket: (&str, &str), mesh: (&str, &str)) -> Value {
    json!({"version": 1, "plugins": {"net": {
        "ovsdb": ovsdb,
        "interfaces": [{"name": "pbr", "type": "ovs-bridge", "ports": ["p1", "p2", "p3"],
            "paths": {
                "socket": {"port": socket.0, "networks": [socket.1]},
                "mesh": {"port": mesh.0, "networks": [mesh.1]}
            }}]
    }}})
}

#[test]
#[ignore = "privileged: network namespaces, ovs-vswitchd"]
fn paths_send_each_destination_out_of_its_path_port() {
    let (s, h1, h2, h3) = (NetNs::new(), NetNs::new(), NetNs::new(), NetNs::new());
    let sw = Switch::start(&s);
    sw.vsctl(&[
        "add-br",
        "pbr",
        "--",
        "set",
        "bridge",
        "pbr",
        "datapath_type=netdev",
    ]);
    wire(&h1, &s, "h1", "p1", "10.77.0.1/24");
    wire(&h2, &s, "h2", "p2", "10.77.0.2/24");
    wire(&h3, &s, "h3", "p3", "10.77.0.3/24");
    sw.vsctl(&[
        "add-port", "pbr", "p1", "--", "add-port", "pbr", "p2", "--", "add-port", "pbr", "p3",
    ]);
    let dir = tempfile::tempdir().unwrap();

    // The socket path leaves by p2 (h2), the mesh path by p3 (h3).
    let right = paths_state(&sw.addr(), ("p2", "10.77.0.2"), ("p3", "10.77.0.3/32"));
    let (r, _) = apply_with(&s, dir.path(), &right, flows_engine);
    assert!(r.ok, "{r:#?}");
    let table = sw.flows("pbr");
    let ours: Vec<&String> = table
        .iter()
        .filter(|f| f.starts_with("cookie=0x6f70"))
        .collect();
    assert_eq!(ours.len(), 8, "{table:?}");
    // As OpenFlow 1.0 dumps them: table 0 unnamed, goto_table as
    // resubmit, ports by number.
    let ofport = |p: &str| {
        sw.vsctl(&["get", "Interface", p, "ofport"])
            .trim()
            .to_string()
    };
    for part in [
        " priority=100,ip,nw_dst=10.77.0.2 actions=resubmit(,10)".to_string(),
        " priority=100,arp,arp_tpa=10.77.0.2 actions=resubmit(,10)".to_string(),
        " priority=100,ip,nw_dst=10.77.0.3 actions=resubmit(,20)".to_string(),
        " priority=100,arp,arp_tpa=10.77.0.3 actions=resubmit(,20)".to_string(),
        " priority=50 actions=resubmit(,30)".to_string(),
        format!(" table=10, priority=100 actions=output:{}", ofport("p2")),
        format!(" table=20, priority=100 actions=output:{}", ofport("p3")),
        " table=30, priority=50 actions=NORMAL".to_string(),
    ] {
        assert!(ours.iter().any(|f| f.ends_with(&part)), "{part}: {ours:?}");
    }
    assert!(ping(&h1, "10.77.0.2"), "the socket path reaches h2");
    assert!(ping(&h1, "10.77.0.3"), "the mesh path reaches h3");
    assert!(ping(&h2, "10.77.0.3"), "h2 to h3 over the mesh path");
    let (r2, _) = apply_with(&s, dir.path(), &right, flows_engine);
    assert!(r2.ok, "{r2:#?}");
    assert_eq!(actions(&r2), Vec::<String>::new(), "re-apply is a no-op");

    // The socket path sent out of the wrong port: traffic for h2 (ARP and
    // IP) leaves by p3, where nobody answers, whatever h1 cached.
    let wrong = paths_state(&sw.addr(), ("p3", "10.77.0.2"), ("p3", "10.77.0.3/32"));
    let (r3, _) = apply_with(&s, dir.path(), &wrong, flows_engine);
    assert!(r3.ok, "{r3:#?}");
    h1.ip(&["neigh", "flush", "all"]);
    assert!(!ping(&h1, "10.77.0.2"), "h2 is reached only by its path");
    assert!(ping(&h1, "10.77.0.3"), "the mesh path still reaches h3");

    let (r4, _) = apply_with(&s, dir.path(), &right, flows_engine);
    assert!(r4.ok, "{r4:#?}");
    // h1 gave up on h2's address (a FAILED neighbour answers at once).
    h1.ip(&["neigh", "flush", "all"]);
    assert!(ping(&h1, "10.77.0.2"), "back on its path");
}

// ---- VLAN tags --------------------------------------------------------------

pub(crate) fn net_engine() -> Engine {
    let mut e = Engine::new();
    e.register(opdbus_agent::plugins::network::NetworkPlugin);
    e
}

#[test]
#[ignore = "privileged: network namespaces, ovs-vswitchd"]
fn vlan_tags_isolate_ports_and_drift_is_repaired() {
    let (s, h1, h2, h3) = (NetNs::new(), NetNs::new(), NetNs::new(), NetNs::new());
    let sw = Switch::start(&s);
    wire(&h1, &s, "h1", "v1", "10.89.0.1/24");
    wire(&h2, &s, "h2", "v2", "10.89.0.2/24");
    wire(&h3, &s, "h3", "v3", "10.89.0.3/24");
    exec(
        &h1,
        &["ip", "link", "set", "h1", "address", "02:00:00:00:89:01"],
    )
    .unwrap();
    let state = json!({"version": 1, "plugins": {"net": {
        "ovsdb": sw.addr(),
        "interfaces": [
            {"name": "vbr", "type": "ovs-bridge", "datapath_type": "netdev", "ports": [
                {"name": "v1", "tag": 10}, {"name": "v2", "tag": 10},
                {"name": "v3", "tag": 20, "trunks": []}
            ]},
            {"name": "v1", "mac": "02:00:00:00:89:11"}
        ]
    }}});
    let dir = tempfile::tempdir().unwrap();
    let (r, _) = apply_with(&s, dir.path(), &state, net_engine);
    assert!(r.ok, "{r:#?}");
    assert_eq!(
        sw.vsctl(&["get", "Bridge", "vbr", "datapath_type"]).trim(),
        "netdev"
    );
    assert_eq!(sw.vsctl(&["get", "Port", "v3", "tag"]).trim(), "20");
    assert_eq!(s.link("v1").unwrap()["address"], "02:00:00:00:89:11");
    assert!(ping(&h1, "10.89.0.2"), "same tag: reachable");
    assert!(!ping(&h1, "10.89.0.3"), "another tag: isolated");

    // ovs-vswitchd makes vbr's device after the apply's verify may have
    // looked: once it is there, one more apply brings it up, then nothing.
    for _ in 0..100 {
        if s.link("vbr").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (r1, _) = apply_with(&s, dir.path(), &state, net_engine);
    assert!(r1.ok, "{r1:#?}");
    let (r2, _) = apply_with(&s, dir.path(), &state, net_engine);
    assert!(r2.ok, "{r2:#?}");
    assert_eq!(actions(&r2), Vec::<String>::new());

    // A tag and a MAC changed by hand are drift, repaired in place.
    sw.vsctl(&["set", "Port", "v3", "tag=10"]);
    s.ip(&["link", "set", "v1", "address", "02:00:00:00:89:99"]);
    let (r3, _) = apply_with(&s, dir.path(), &state, net_engine);
    assert!(r3.ok, "{r3:#?}");
    let a = actions(&r3);
    assert!(a.iter().any(|x| x.contains("v3 (tag 20)")), "{a:?}");
    assert!(
        a.iter()
            .any(|x| x.contains("set MAC address 02:00:00:00:89:11 on v1")),
        "{a:?}"
    );
    assert_eq!(sw.vsctl(&["get", "Port", "v3", "tag"]).trim(), "20");
    std::thread::sleep(Duration::from_millis(300));
    exec(&h1, &["ip", "neigh", "flush", "all"]).unwrap();
    assert!(!ping(&h1, "10.89.0.3"), "isolated again");
}
