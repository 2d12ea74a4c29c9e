//! Benchmark of the firewall plugin: loading 1,000 rules through the plugin
//! (query, diff, one atomic netlink batch sent by the agent, boot file; and
//! with the optional `nft -c` pass first) and through the whole engine transaction (lock,
//! journal, checkpoint, verify, audit), against one `nft -f` of the same
//! rule set and against a loop of `nft add rule` (the naive way), each in a
//! fresh network namespace, ratios from the same run. Needs root; skips
//! otherwise. `cargo bench --bench firewall`.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::NetNs;
use opdbus_agent::engine::{Context, DesiredState, Engine, Plugin};
use opdbus_agent::plugins::firewall::FirewallPlugin;
use opdbus_common::Task;

const RULES: u16 = 1000;
const ROUNDS: usize = 5;

fn state() -> String {
    let rules: Vec<serde_json::Value> = (0..RULES)
        .map(|i| serde_json::json!({"port": 20000 + i, "proto": "tcp", "action": "accept"}))
        .collect();
    serde_json::json!({"version": 1, "plugins": {"firewall": {
        "management_floor": false,
        "default_policy": {"input": "drop"},
        "rules": rules
    }}})
    .to_string()
}

/// The same chains and rules as nft text (what an operator would write).
fn text_ruleset() -> String {
    let mut s = String::from(
        "table inet bench {\n chain input { type filter hook input priority 0; policy drop; }\n chain forward { type filter hook forward priority 0; policy accept; }\n chain output { type filter hook output priority 0; policy accept; }\n}\n",
    );
    s.push_str("add rule inet bench input iif lo accept\n");
    s.push_str("add rule inet bench input ct state established,related accept\n");
    s.push_str("add rule inet bench input ct state invalid drop\n");
    for i in 0..RULES {
        s.push_str(&format!(
            "add rule inet bench input tcp dport {} accept comment \"opdbus:rule-{i}\"\n",
            20000 + i
        ));
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("firewall bench: skipped (needs root to create network namespaces)");
        return;
    }
    let text = state();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("root")).unwrap();
    // Every namespace is made before the first timing and deleted after the
    // last: the kernel tears a deleted namespace down asynchronously, and a
    // round started meanwhile would wait for it (whichever side came next).
    let pool: Vec<NetNs> = (0..ROUNDS * 4 + 1).map(|_| NetNs::new()).collect();
    let fresh = std::cell::RefCell::new(pool.iter());
    let next = || fresh.borrow_mut().next().unwrap();

    // Through the plugin, each round in a fresh namespace (a full load),
    // as it runs (one load) and with the optional `nft -c` pass first.
    let run_plugin = |check_first: bool| {
        let (mut totals, mut applies, mut noops) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let ns = next();
            let text = text.clone();
            let root = dir.path().join("root");
            let state_dir = dir.path().join("state");
            let (total, apply, noop) = ns.run(move |_nl| async move {
                let ctx = Context::new(state_dir).with_root(root);
                let p = FirewallPlugin {
                    check_first,
                    ..FirewallPlugin::default()
                };
                let desired = DesiredState::from_json(&text, "bench.json").unwrap();
                let start = Instant::now();
                let d = p.desired(&desired.state).unwrap().unwrap();
                let cur = p.query(&ctx, &d).await.unwrap();
                let actions = p.diff(&cur, &d);
                let t_apply = Instant::now();
                for r in p.apply(&ctx, &actions).await {
                    r.unwrap();
                }
                let apply = t_apply.elapsed();
                let total = start.elapsed();
                // A no-op reconcile of the loaded table (query + diff).
                let t = Instant::now();
                let cur = p.query(&ctx, &d).await.unwrap();
                assert!(p.diff(&cur, &d).is_empty(), "not converged");
                (total, apply, t.elapsed())
            });
            totals.push(total);
            applies.push(apply);
            noops.push(noop);
        }
        (median(totals), median(applies), median(noops))
    };
    let (plugin, apply, noop) = run_plugin(false);
    let (plugin_c, apply_c, _) = run_plugin(true);

    // The whole engine transaction, firewall plugin only.
    let mut engine_times = Vec::new();
    for round in 0..ROUNDS {
        let ns = next();
        let text = text.clone();
        let root = dir.path().join("root");
        let state_dir = dir.path().join(format!("engine-state-{round}"));
        engine_times.push(ns.run(move |_nl| async move {
            let ctx = Context::new(state_dir).with_root(root);
            let mut engine = Engine::new();
            engine.register(FirewallPlugin::default());
            let desired = DesiredState::from_json(&text, "bench.json").unwrap();
            let start = Instant::now();
            let report = engine.apply(&ctx, &desired).await;
            let took = start.elapsed();
            assert!(report.ok, "{:?}", report.failures());
            took
        }));
    }
    let engine_apply = median(engine_times);

    // One `nft -f` of the same rule set.
    let file = dir.path().join("rules.nft");
    std::fs::write(&file, text_ruleset()).unwrap();
    let mut file_times = Vec::new();
    for _ in 0..ROUNDS {
        let ns = next();
        let start = Instant::now();
        Task::new("ip")
            .args(["netns", "exec", ns.name(), "nft", "-f"])
            .arg(&file)
            .run()
            .unwrap();
        file_times.push(start.elapsed());
    }

    // A loop of `nft add rule` (one process per rule), once: it is slow.
    let ns = next();
    let start = Instant::now();
    let nft = |args: &[&str]| {
        Task::new("ip")
            .args(["netns", "exec", ns.name(), "nft"])
            .args(args)
            .run()
            .unwrap()
    };
    nft(&["add", "table", "inet", "bench"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "bench",
        "input",
        "{ type filter hook input priority 0; policy drop; }",
    ]);
    for i in 0..RULES {
        let port = (20000 + i).to_string();
        nft(&[
            "add", "rule", "inet", "bench", "input", "tcp", "dport", &port, "accept",
        ]);
    }
    let looped = start.elapsed();

    let once = median(file_times);
    let r = |a: Duration| a.as_secs_f64() / once.as_secs_f64();
    println!("firewall bench: {RULES} rules, median of {ROUNDS} rounds (the loop: 1 round)");
    println!(
        "  one nft -f of the same rule set (baseline):              {:.1} ms",
        ms(once)
    );
    println!(
        "  plugin, query + diff + apply (netlink batch, boot file): {:.1} ms = {:.2}x",
        ms(plugin),
        r(plugin)
    );
    println!(
        "  plugin apply only (netlink batch, boot file):            {:.1} ms = {:.2}x",
        ms(apply),
        r(apply)
    );
    println!(
        "  plugin with the optional nft -c pass, query + diff + apply: {:.1} ms = {:.2}x",
        ms(plugin_c),
        r(plugin_c)
    );
    println!(
        "  plugin with the optional nft -c pass, apply only:        {:.1} ms = {:.2}x",
        ms(apply_c),
        r(apply_c)
    );
    println!(
        "  engine transaction (lock, journal, checkpoint, verify, audit): {:.1} ms = {:.2}x",
        ms(engine_apply),
        r(engine_apply)
    );
    println!(
        "  loop of nft add rule:                                     {:.1} ms = {:.2}x ({:.1}x the plugin)",
        ms(looped),
        r(looped),
        looped.as_secs_f64() / plugin.as_secs_f64()
    );
    println!(
        "  no-op reconcile of the loaded table (query + diff):      {:.1} ms",
        ms(noop)
    );
}
