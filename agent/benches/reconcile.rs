//! No-op reconcile of state-examples/complete-server.json: the fake
//! systemd, settings and PackageKit services on a private dbus-daemon, a
//! temp root, and (as root) the network and firewall plugins in a fresh
//! network namespace. Prints the whole no-op apply (lock, recovery, query
//! and diff of every plugin; nothing to journal or audit) against the bare
//! query of the same plugins in the same run; the target (issue 13) is at
//! most 20 ms. Not run: lxc (its container needs a downloaded template) and
//! proxmox (no section in the example). The packages plugin is timed apart:
//! the fake PackageKit waits 50 ms before its signals, a delay of the fake.
//! `cargo bench --bench reconcile`.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/dbus_daemon.rs"]
mod dbus_daemon;
#[path = "../tests/support/fake_packagekit.rs"]
mod fake_packagekit;
#[path = "../tests/support/fake_settings.rs"]
mod fake_settings;
#[path = "../tests/support/fake_systemd.rs"]
mod fake_systemd;
#[path = "../tests/support/netns.rs"]
mod netns;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use opdbus_agent::engine::{Context, DesiredState, Engine};
use opdbus_agent::plugins;

/// Seed 000's complete example, used when state-examples/ lacks it.
const SEED_000: &str = r#"{"version":1,"bootstrap":{"device":"/dev/sda","hostname":"pve-node1","domain":"example.com","timezone":"America/New_York","locale":"en_US.UTF-8"},
"plugins":{"packagekit":{"additional_packages":["vim","tmux","htop"]},
"systemd":{"services":{"pve-cluster":{"state":"enabled"},"pvedaemon":{"state":"enabled"},"pveproxy":{"state":"enabled"},"pvestatd":{"state":"enabled"},"op-dbus":{"state":"enabled"}}},
"users":{"accounts":{"admin":{"uid":1000,"groups":["sudo"],"shell":"/bin/bash","ssh_authorized_keys":["ssh-ed25519 AAAA..."]}}}}}"#;

const RUNS: usize = 50;

/// The plugins measured: every one of the example's that runs here.
fn measured_engine(with_packages: bool, netns: bool) -> Engine {
    let mut e = Engine::new();
    e.register(plugins::storage::StoragePlugin)
        .register(plugins::host::HostPlugin)
        .register(plugins::users::UsersPlugin)
        .register(plugins::systemd::SystemdPlugin);
    if with_packages {
        e.register(plugins::packages::PackagesPlugin);
    }
    if netns {
        e.register(plugins::network::NetworkPlugin)
            .register(plugins::firewall::FirewallPlugin::default());
    }
    e
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one measuring run gives.
struct Figures {
    plugins: Vec<String>,
    apply: Duration,
    diff: Duration,
    query: Duration,
    per_plugin: Vec<(String, Duration)>,
    with_packages: Duration,
}

/// Converges once, then times no-op applies, diffs and bare queries.
async fn measure(state: DesiredState, dir: PathBuf, bus: String, netns: bool) -> Figures {
    let ctx = Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(bus));
    let engine = measured_engine(false, netns);
    let report = engine.apply(&ctx, &state).await;
    if !report.failures().is_empty() {
        eprintln!("converging failed: {:?}", report.failures());
    }
    let diffs = engine.diff(&ctx, &state).await.unwrap();
    let pending: usize = diffs.iter().map(|d| d.actions.len()).sum();
    assert_eq!(pending, 0, "not a no-op after converging: {diffs:?}");
    let plugins: Vec<String> = diffs.iter().map(|d| d.plugin.clone()).collect();

    let (mut apply, mut diff, mut query) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        let report = engine.apply(&ctx, &state).await;
        apply.push(t.elapsed());
        assert!(
            report.plugins.iter().all(|p| p.actions.is_empty()),
            "{report:?}"
        );
        let t = Instant::now();
        let diffs = engine.diff(&ctx, &state).await.unwrap();
        diff.push(t.elapsed());
        assert!(diffs.iter().all(|d| d.actions.is_empty()));
        let t = Instant::now();
        engine.query(&ctx, &state, None).await.unwrap();
        query.push(t.elapsed());
    }
    let mut per_plugin = Vec::new();
    for name in &plugins {
        let p = engine.plugin(name).unwrap();
        let desired = p.desired_typed(&state.state).unwrap().unwrap();
        let mut t = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = Instant::now();
            let cur = p.query_typed(&ctx, &desired).await.unwrap();
            assert!(p.diff_typed(&cur, &desired).unwrap().is_empty());
            t.push(start.elapsed());
        }
        per_plugin.push((name.clone(), median(t)));
    }
    let with = measured_engine(true, netns);
    let _ = with.apply(&ctx, &state).await;
    let mut t = Vec::new();
    for _ in 0..RUNS / 5 {
        let start = Instant::now();
        let _ = with.apply(&ctx, &state).await;
        t.push(start.elapsed());
    }
    Figures {
        plugins,
        apply: median(apply),
        diff: median(diff),
        query: median(query),
        per_plugin,
        with_packages: median(t),
    }
}

fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../state-examples/complete-server.json");
    let (text, origin) = match std::fs::read_to_string(&path) {
        Ok(text) => (text, "state-examples/complete-server.json"),
        Err(_) => (SEED_000.to_string(), "seed 000 example"),
    };
    let state = DesiredState::from_json(&text, "complete-server.json").unwrap();
    let root_user = nix::unistd::geteuid().is_root();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = dbus_daemon::PrivateBus::start().unwrap();
        let systemd = fake_systemd::FakeSystemd::serve(bus.address()).await.unwrap();
        systemd.set_job_delay(Duration::from_millis(1));
        if let Some(sd) = &state.state.plugins.systemd {
            for unit in opdbus_agent::plugins::systemd::desired_from(sd).units.keys() {
                systemd.add_unit(unit, "inactive", "dead", "disabled").await.unwrap();
            }
        }
        let _settings = fake_settings::FakeSettings::serve(bus.address(), Default::default()).await.unwrap();
        let pk = fake_packagekit::FakePackageKit::serve(bus.address()).await.unwrap();
        if let Some(p) = &state.state.plugins.packagekit {
            for name in p.packages.iter().chain(&p.additional_packages) {
                pk.add_package(name, "1.0", false);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nsudo:x:27:\nshadow:x:42:\n").unwrap();
        let address = bus.address().to_string();
        let path = dir.path().to_path_buf();
        // The engine runs on a thread of its own (in the namespace when
        // root); the fakes go on serving on this runtime's workers.
        let (f, where_) = if root_user {
            let ns = netns::NetNs::new();
            // The example bridges ens18 into vmbr0: a veth stands in for the NIC.
            ns.ip(&["link", "add", "ens18", "type", "veth", "peer", "name", "ens18p"]);
            let f = ns.run(move |_nl| measure(state, path, address, true));
            (f, "in a fresh network namespace")
        } else {
            let f = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(measure(state, path, address, false))
            })
            .join()
            .unwrap();
            (f, "not root: without network and firewall")
        };
        println!(
            "no-op reconcile of {origin} ({where_}), plugins {}: medians of {RUNS}",
            f.plugins.join(",")
        );
        println!(
            "  apply with nothing to do (lock, recovery, query + diff): {:7.2} ms (target <= 20 ms)",
            ms(f.apply)
        );
        println!("  diff (query + diff):                                    {:7.2} ms", ms(f.diff));
        println!("  bare query (baseline):                                  {:7.2} ms", ms(f.query));
        println!(
            "  ratio: apply / bare query {:.2}x; diff / bare query {:.2}x",
            f.apply.as_secs_f64() / f.query.as_secs_f64(),
            f.diff.as_secs_f64() / f.query.as_secs_f64()
        );
        for (name, d) in &f.per_plugin {
            println!("    {name:<9} query + diff median {:.2} ms", ms(*d));
        }
        println!(
            "  with packages too (the fake PackageKit waits 50 ms before its signals): {:.2} ms",
            ms(f.with_packages)
        );
    });
}
