//! Benchmark of the netlink adapter and of the network plugin's whole apply
//! against `ip`, each in a fresh network namespace. Needs root; skips otherwise.
//!
//! 1. The adapter: 1 bridge + 100 addresses + 10 more bridges vs a loop of
//!    `ip` commands, and a full no-op query (links + addresses + routes).
//! 2. The whole apply through the engine (query, diff, checkpoint, apply,
//!    verify, audit) of 10 bridges with 10 addresses each (120 requests) vs
//!    `ip -batch` of the same 120 requests and vs a loop of 120 `ip`
//!    commands; the plugin's read-only query vs `ip -j addr show`; the no-op
//!    reconcile. Targets (issue 13): apply within 3x of `ip -batch`, 10x
//!    faster than the loop; query no slower than `ip -j`.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/netns.rs"]
mod netns;

use std::path::Path;
use std::time::{Duration, Instant};

use netns::NetNs;
use opdbus_agent::engine::{Context, DesiredState, Engine, RetryPolicy};
use opdbus_agent::plugins::network::NetworkPlugin;
use opdbus_common::Task;

const ADDRESSES: u32 = 100;
const BRIDGES: u32 = 10;
const QUERY_ROUNDS: u32 = 100;

fn address(i: u32) -> String {
    format!("10.200.{}.{}/16", i / 200, i % 200 + 1)
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("netlink bench: skipped (needs root to create network namespaces)");
        return;
    }

    // Through the adapter.
    let ns_nl = NetNs::new();
    let adapter = ns_nl.run(|nl| async move {
        let start = Instant::now();
        nl.create_bridge("bench0").await.unwrap();
        nl.set_up("bench0").await.unwrap();
        for i in 0..ADDRESSES {
            nl.add_address("bench0", address(i).parse().unwrap())
                .await
                .unwrap();
        }
        for b in 1..=BRIDGES {
            nl.create_bridge(&format!("br{b}")).await.unwrap();
        }
        start.elapsed()
    });

    // Through `ip`, one process per change.
    let ns_ip = NetNs::new();
    let ip = |args: &[&str]| {
        Task::new("ip")
            .args(["-n", ns_ip.name()])
            .args(args)
            .run()
            .unwrap()
    };
    let start = Instant::now();
    ip(&["link", "add", "bench0", "type", "bridge"]);
    ip(&["link", "set", "bench0", "up"]);
    for i in 0..ADDRESSES {
        ip(&["addr", "add", &address(i), "dev", "bench0"]);
    }
    for b in 1..=BRIDGES {
        ip(&["link", "add", &format!("br{b}"), "type", "bridge"]);
    }
    let ip_time = start.elapsed();

    // Both namespaces must hold the same result, or the timing means nothing.
    for ns in [&ns_nl, &ns_ip] {
        let (links, addrs) =
            ns.run(|nl| async move { (nl.links().await.unwrap(), nl.addresses().await.unwrap()) });
        assert_eq!(links.len() as u32, BRIDGES + 2, "lo + bench0 + bridges");
        let on_bench = addrs.iter().filter(|a| a.ifname == "bench0").count();
        assert_eq!(on_bench as u32, ADDRESSES);
    }

    // A no-op query of everything, in the populated namespace.
    let (query, snapshot, counts) = ns_nl.run(|nl| async move {
        let start = Instant::now();
        let mut counts = (0, 0, 0);
        for _ in 0..QUERY_ROUNDS {
            counts = (
                nl.links().await.unwrap().len(),
                nl.addresses().await.unwrap().len(),
                nl.routes().await.unwrap().len(),
            );
        }
        let query = start.elapsed() / QUERY_ROUNDS;
        let start = Instant::now();
        for _ in 0..QUERY_ROUNDS {
            nl.snapshot().await.unwrap();
        }
        (query, start.elapsed() / QUERY_ROUNDS, counts)
    });
    let start = Instant::now();
    for _ in 0..QUERY_ROUNDS / 10 {
        for what in ["link", "addr", "route"] {
            Task::new("ip")
                .args(["-n", ns_nl.name(), "-j", what, "show"])
                .read()
                .unwrap();
        }
    }
    let ip_query = start.elapsed() / (QUERY_ROUNDS / 10);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    whole_apply();
    println!(
        "netlink bench: {ADDRESSES} addresses + {} bridges",
        BRIDGES + 1
    );
    println!("  adapter: {:8.2} ms", ms(adapter));
    println!(
        "  ip loop: {:8.2} ms ({} commands)",
        ms(ip_time),
        ADDRESSES + BRIDGES + 2
    );
    println!(
        "  ratio:   {:8.1}x faster through the adapter",
        ip_time.as_secs_f64() / adapter.as_secs_f64()
    );
    println!(
        "no-op query (links + addresses + routes: {} / {} / {}):",
        counts.0, counts.1, counts.2
    );
    println!(
        "  adapter: {:8.3} ms per query (mean of {QUERY_ROUNDS})",
        ms(query)
    );
    println!(
        "  adapter snapshot(): {:8.3} ms per query (mean of {QUERY_ROUNDS})",
        ms(snapshot)
    );
    println!(
        "  ip -j link/addr/route: {:8.3} ms (mean of {})",
        ms(ip_query),
        QUERY_ROUNDS / 10
    );
}

const APPLY_ROUNDS: usize = 5;

/// 10 bridges `tb0`..`tb9`, each up with 10 addresses.
fn bridges_state() -> String {
    let mut interfaces = serde_json::Map::new();
    for b in 0..BRIDGES {
        let addrs: Vec<String> = (1..=10).map(|h| format!("10.{b}.0.{h}/24")).collect();
        interfaces.insert(
            format!("tb{b}"),
            serde_json::json!({"type": "bridge", "address": addrs}),
        );
    }
    serde_json::json!({"version": 1, "plugins": {"network": {"interfaces": interfaces}}})
        .to_string()
}

/// The same 120 requests as `ip` command lines (without the leading `ip`).
fn ip_lines() -> Vec<String> {
    let mut out = Vec::new();
    for b in 0..BRIDGES {
        out.push(format!("link add tb{b} type bridge"));
        out.push(format!("link set tb{b} up"));
        for h in 1..=10 {
            out.push(format!("addr add 10.{b}.0.{h}/24 dev tb{b}"));
        }
    }
    out
}

/// A context below `dir` with no D-Bus (DNS is not in the state anyway).
fn context(dir: &Path) -> Context {
    Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
        .with_retry(RetryPolicy {
            attempts: 1,
            backoff: Duration::ZERO,
        })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn check_applied(ns: &NetNs) {
    let addrs = ns.ip_json(&["addr", "show"]);
    let n: usize = addrs
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("tb")))
        .map(|l| {
            l["addr_info"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["family"] == "inet")
                .count()
        })
        .sum();
    assert_eq!(n as u32, BRIDGES * 10, "every address applied");
}

fn whole_apply() {
    let text = bridges_state();
    // Every namespace of this part is made before the first timing and
    // deleted after the last: the kernel tears a deleted namespace down
    // asynchronously under the RTNL lock, and a round started meanwhile
    // waits up to ~200 ms for it on its first netlink request (whichever
    // side, agent or `ip`, happened to come next).
    let pool: Vec<NetNs> = (0..APPLY_ROUNDS * 3 + 2).map(|_| NetNs::new()).collect();
    let mut fresh = pool.iter();
    let (mut apply, mut noop, mut query) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..APPLY_ROUNDS {
        let ns = fresh.next().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let text = text.clone();
        let (a, n, q) = ns.run(move |_nl| async move {
            let mut engine = Engine::new();
            engine.register(NetworkPlugin);
            let ctx = context(&path);
            let desired = DesiredState::from_json(&text, "bench.json").unwrap();
            let t = Instant::now();
            let report = engine.apply(&ctx, &desired).await;
            let a = t.elapsed();
            assert!(report.ok, "{:?}", report.failures());
            let t = Instant::now();
            let report = engine.apply(&ctx, &desired).await;
            let n = t.elapsed();
            assert!(report.ok && report.plugins[0].actions.is_empty());
            let t = Instant::now();
            for _ in 0..QUERY_ROUNDS {
                engine.query(&ctx, &desired, Some("network")).await.unwrap();
            }
            (a, n, t.elapsed() / QUERY_ROUNDS)
        });
        check_applied(ns);
        apply.push(a);
        noop.push(n);
        query.push(q);
    }

    let lines = ip_lines();
    let mut batch = Vec::new();
    let mut ip_loop = Vec::new();
    let mut ip_query = Vec::new();
    for _ in 0..APPLY_ROUNDS {
        let ns = fresh.next().unwrap();
        let script = lines.join("\n") + "\n";
        let t = Instant::now();
        Task::new("ip")
            .args(["-n", ns.name(), "-batch", "-"])
            .stdin(script)
            .run()
            .unwrap();
        batch.push(t.elapsed());
        check_applied(ns);
        let t = Instant::now();
        for _ in 0..10 {
            Task::new("ip")
                .args(["-n", ns.name(), "-j", "addr", "show"])
                .read()
                .unwrap();
        }
        ip_query.push(t.elapsed() / 10);
    }
    for _ in 0..2 {
        let ns = fresh.next().unwrap();
        let t = Instant::now();
        for l in &lines {
            Task::new("ip")
                .args(["-n", ns.name()])
                .args(l.split(' '))
                .run()
                .unwrap();
        }
        ip_loop.push(t.elapsed());
        check_applied(ns);
    }

    // Where the apply's time goes: the plugin alone (query, diff, its
    // checkpoint, the actions, its verify), and the audit records the
    // engine writes, one transaction each vs one for all.
    let mut plugin_only = Vec::new();
    for _ in 0..APPLY_ROUNDS {
        let ns = fresh.next().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let text = bridges_state();
        plugin_only.push(ns.run(move |_nl| async move {
            use opdbus_agent::engine::DynPlugin;
            let p = NetworkPlugin;
            let ctx = context(&path);
            let desired = DesiredState::from_json(&text, "bench.json").unwrap();
            let t = Instant::now();
            let d = p.desired_typed(&desired.state).unwrap().unwrap();
            let cur = p.query_typed(&ctx, &d).await.unwrap();
            let actions = p.diff_typed(&cur, &d).unwrap();
            let results = p.apply_typed(&ctx, &actions).await.unwrap();
            assert!(results.iter().all(Result::is_ok));
            t.elapsed()
        }));
        check_applied(ns);
    }
    let (per_record, one_tx) = audit_cost(120);

    let (apply, noop, query) = (median(apply), median(noop), median(query));
    let (batch, ip_loop, ip_query) = (median(batch), median(ip_loop), median(ip_query));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "whole apply: {BRIDGES} bridges + {} addresses (120 requests), medians of {APPLY_ROUNDS} fresh namespaces",
        BRIDGES * 10
    );
    println!(
        "  agent apply (query, checkpoint, apply, verify, audit): {:8.2} ms",
        ms(apply)
    );
    println!(
        "  ip -batch:                                             {:8.2} ms",
        ms(batch)
    );
    println!(
        "  ip loop (120 processes):                               {:8.2} ms",
        ms(ip_loop)
    );
    println!(
        "  ratio: apply / ip -batch {:.1}x (target <= 3x); ip loop / apply {:.1}x (target >= 10x)",
        ratio(apply, batch),
        ratio(ip_loop, apply)
    );
    println!(
        "  of which: the network plugin alone (query, diff, checkpoint, actions, verify) {:.2} ms; \
         120 audit records one transaction each {:.2} ms, all in one transaction {:.2} ms",
        ms(median(plugin_only)),
        ms(per_record),
        ms(one_tx)
    );
    println!(
        "  no-op reconcile (apply with nothing to do): {:8.2} ms",
        ms(noop)
    );
    println!(
        "  read-only query (plugin, mean of {QUERY_ROUNDS}): {:8.3} ms; ip -j addr show {:8.3} ms; ratio {:.2}x (target <= 1x)",
        ms(query),
        ms(ip_query),
        ratio(query, ip_query)
    );
}

/// `n` audit records appended one transaction each, and `n` in one
/// transaction (`AuditLog::append_all`), each in a fresh state dir.
fn audit_cost(n: usize) -> (Duration, Duration) {
    use opdbus_agent::audit::{AuditLog, NewEntry};
    let entry = |i: usize| NewEntry {
        plugin: "network".into(),
        action: "add-address".into(),
        resource: format!("address:tb0/10.0.0.{i}/24"),
        result: "ok".into(),
        state_hash: Some("0".repeat(64)),
        metadata: serde_json::json!({"description": format!("add 10.0.0.{i}/24 to tb0")}),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let t = Instant::now();
    for i in 0..n {
        log.append(entry(i)).unwrap();
    }
    let each = t.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let mut log = AuditLog::open(dir.path()).unwrap();
    let t = Instant::now();
    log.append_all((0..n).map(entry).collect()).unwrap();
    (each, t.elapsed())
}
