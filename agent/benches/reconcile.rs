//! No-op reconcile (query + diff of every plugin) of
//! state-examples/complete-server.json against the fake systemd, settings and
//! PackageKit services on a private dbus-daemon and a temp root. Prints the
//! time per reconcile; the target (issue 13) is at most 20 ms.
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

use std::time::{Duration, Instant};

use opdbus_agent::engine::{Context, DesiredState, Engine};
use opdbus_agent::plugins;

/// Seed 000's complete example, used when state-examples/ lacks it.
const SEED_000: &str = r#"{"version":1,"bootstrap":{"device":"/dev/sda","hostname":"pve-node1","domain":"example.com","timezone":"America/New_York","locale":"en_US.UTF-8"},
"plugins":{"packagekit":{"additional_packages":["vim","tmux","htop"]},
"systemd":{"services":{"pve-cluster":{"state":"enabled"},"pvedaemon":{"state":"enabled"},"pveproxy":{"state":"enabled"},"pvestatd":{"state":"enabled"},"op-dbus":{"state":"enabled"}}},
"users":{"accounts":{"admin":{"uid":1000,"groups":["sudo"],"shell":"/bin/bash","ssh_authorized_keys":["ssh-ed25519 AAAA..."]}}}}}"#;

fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../state-examples/complete-server.json");
    let (state, origin) = match std::fs::read_to_string(&path) {
        Ok(text) => (
            DesiredState::from_json(&text, "complete-server.json").unwrap(),
            "state-examples/complete-server.json",
        ),
        Err(_) => (
            DesiredState::from_json(SEED_000, "seed 000").unwrap(),
            "seed 000 example",
        ),
    };
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
        let ctx = Context::new(dir.path().join("state"))
            .with_root(&root)
            .with_bus(bus.connect().await.unwrap());
        // The non-network plugins (the network plugin has its own bench, in a netns).
        let mut engine = Engine::new();
        engine
            .register(plugins::storage::StoragePlugin)
            .register(plugins::host::HostPlugin)
            .register(plugins::packages::PackagesPlugin)
            .register(plugins::users::UsersPlugin)
            .register(plugins::systemd::SystemdPlugin);

        // Converge once, so the measured reconciles are no-ops.
        let report = engine.apply(&ctx, &state).await;
        if !report.ok {
            eprintln!("converging failed: {:?}", report.failures());
        }
        let diffs = engine.diff(&ctx, &state).await.unwrap();
        let pending: usize = diffs.iter().map(|d| d.actions.len()).sum();
        assert_eq!(pending, 0, "not a no-op after converging: {diffs:?}");

        let runs = 50;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let diffs = engine.diff(&ctx, &state).await.unwrap();
            times.push(t.elapsed());
            assert!(diffs.iter().all(|d| d.actions.is_empty()));
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / runs as u32;
        let plugins: Vec<&str> = diffs.iter().map(|d| d.plugin.as_str()).collect();
        println!(
            "no-op reconcile (query + diff) of {origin}, plugins {}: median {:.2} ms, mean {:.2} ms, max {:.2} ms over {runs} runs (target <= 20 ms)",
            plugins.join(","),
            times[runs / 2].as_secs_f64() * 1e3,
            mean.as_secs_f64() * 1e3,
            times[runs - 1].as_secs_f64() * 1e3,
        );
        // Per plugin: the fake PackageKit waits 50 ms before its signals, so
        // the packages figure is mostly the fake's own delay.
        for name in &plugins {
            let p = engine.plugin(name).unwrap();
            let desired = p.desired_json(&state.state).unwrap().unwrap();
            let mut t = Vec::with_capacity(runs);
            for _ in 0..runs {
                let start = Instant::now();
                let cur = p.query_json(&ctx, &desired).await.unwrap();
                assert!(p.diff_json(&cur, &desired).unwrap().is_empty());
                t.push(start.elapsed());
            }
            t.sort();
            println!("  {name:<9} median {:.2} ms", t[runs / 2].as_secs_f64() * 1e3);
        }
    });
}
