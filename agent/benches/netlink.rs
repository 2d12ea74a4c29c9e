//! Benchmark of the netlink adapter against a loop of `ip` commands, each in
//! a fresh network namespace: 1 bridge + 100 addresses + 10 more bridges, and
//! a full no-op query (links + addresses + routes). Needs root; skips otherwise.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::NetNs;
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
