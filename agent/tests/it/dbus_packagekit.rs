//! Tests of the PackageKit adapter against a fake PackageKit on a private
//! dbus-daemon: availability, Resolve collecting Package signals until
//! Finished, install/remove and ErrorCode turning into errors, progress
//! (Percentage, Status, ItemProgress) reaching an observer, and the packages
//! plugin through the engine with that progress in the status file.

use crate::dbus_daemon;
use crate::fake_packagekit;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbus_daemon::PrivateBus;
use fake_packagekit::{
    FakePackageKit, ERROR_PACKAGE_NOT_FOUND, ERROR_PACKAGE_NOT_INSTALLED, STATUS_DOWNLOAD,
    STATUS_INSTALL,
};
use opdbus_agent::dbus::packagekit::{filter, info, transaction_flag, Progress};
use opdbus_agent::dbus::{Error, PackageKit};
use opdbus_agent::engine::{Context, DesiredState, Engine, Phase, Status};
use opdbus_agent::plugins::packages::PackagesPlugin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_follows_owner_or_activation() {
    let empty = PrivateBus::start().unwrap();
    let conn = empty.connect().await.unwrap();
    assert!(!PackageKit::is_available(&conn).await.unwrap());

    let _fake = FakePackageKit::serve(empty.address()).await.unwrap();
    assert!(PackageKit::is_available(&conn).await.unwrap());

    let activatable = PrivateBus::start_with_activatable(&["org.freedesktop.PackageKit"]).unwrap();
    let conn = activatable.connect().await.unwrap();
    assert!(PackageKit::is_available(&conn).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_collects_packages_until_finished() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("curl", "7.88.1-10", true);
    fake.add_package("htop", "3.2.2-2", false);
    let conn = bus.connect().await.unwrap();
    let pk = PackageKit::new(&conn).await.unwrap();

    let found = pk
        .resolve(filter::NONE, &["curl", "htop", "nope"])
        .await
        .unwrap();
    let summary: Vec<_> = found
        .iter()
        .map(|p| (p.name(), p.version(), p.info, p.is_installed()))
        .collect();
    assert_eq!(
        summary,
        [
            ("curl", "7.88.1-10", info::INSTALLED, true),
            ("htop", "3.2.2-2", info::AVAILABLE, false)
        ]
    );
    assert_eq!(found[1].package_id, "htop;3.2.2-2;amd64;fake-main");

    let installed = pk
        .resolve(filter::INSTALLED, &["curl", "htop"])
        .await
        .unwrap();
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].name(), "curl");

    assert_eq!(
        fake.calls(),
        [
            "CreateTransaction()",
            r#"Resolve(2, ["curl", "htop", "nope"])"#,
            "CreateTransaction()",
            r#"Resolve(4, ["curl", "htop"])"#,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_remove_change_the_fake_repository() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("htop", "3.2.2-2", false);
    let conn = bus.connect().await.unwrap();
    let pk = PackageKit::new(&conn).await.unwrap();

    let id = "htop;3.2.2-2;amd64;fake-main";
    let progress = pk
        .install(transaction_flag::ONLY_TRUSTED, &[id])
        .await
        .unwrap();
    assert_eq!(progress[0].info, info::INSTALLING);
    assert!(fake.package("htop").unwrap().installed);

    pk.remove(transaction_flag::NONE, &[id], false, true)
        .await
        .unwrap();
    assert!(!fake.package("htop").unwrap().installed);

    assert_eq!(
        fake.calls(),
        [
            "CreateTransaction()",
            r#"InstallPackages(2, ["htop;3.2.2-2;amd64;fake-main"])"#,
            "CreateTransaction()",
            r#"RemovePackages(0, ["htop;3.2.2-2;amd64;fake-main"], false, true)"#,
        ]
    );
    assert_eq!(fake.log().last().unwrap(), "signal Finished(1)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_code_becomes_an_error() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("htop", "3.2.2-2", false);
    let conn = bus.connect().await.unwrap();
    let pk = PackageKit::new(&conn).await.unwrap();

    let err = pk
        .install(transaction_flag::NONE, &["ghost;1;amd64;x"])
        .await
        .unwrap_err();
    match &err {
        Error::PackageKit { op, code, details } => {
            assert_eq!(*op, "install");
            assert_eq!(*code, ERROR_PACKAGE_NOT_FOUND);
            assert_eq!(details, "ghost;1;amd64;x not found");
        }
        other => panic!("expected a PackageKit error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "PackageKit install failed with error code 8: ghost;1;amd64;x not found"
    );

    let err = pk
        .remove(
            transaction_flag::NONE,
            &["htop;3.2.2-2;amd64;fake-main"],
            false,
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PackageKit { code, .. } if code == ERROR_PACKAGE_NOT_INSTALLED),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reaches_the_observer_in_order() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("htop", "3.2.2-2", false);
    fake.add_package("tmux", "3.3a-3", false);
    let conn = bus.connect().await.unwrap();
    let seen: Arc<Mutex<Vec<Progress>>> = Arc::default();
    let sink = seen.clone();
    let pk = PackageKit::new(&conn)
        .await
        .unwrap()
        .with_progress(Arc::new(move |p: &Progress| {
            sink.lock().unwrap().push(p.clone())
        }));

    let ids = [
        "htop;3.2.2-2;amd64;fake-main",
        "tmux;3.3a-3;amd64;fake-main",
    ];
    pk.install(transaction_flag::ONLY_TRUSTED, &ids)
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    type Item = Option<(String, u32, Option<u32>)>;
    let summary: Vec<(Option<u32>, Option<u32>, Item)> = seen
        .iter()
        .inspect(|p| assert_eq!(p.op, "install"))
        .map(|p| (p.percentage, p.status, p.item.clone()))
        .collect();
    let item = |id: &str, st: u32, pct: u32| Some((id.to_string(), st, Some(pct)));
    let i = Some(STATUS_INSTALL);
    assert_eq!(
        summary,
        [
            (Some(0), i, None),
            (Some(0), i, item(ids[0], STATUS_DOWNLOAD, 100)),
            (Some(0), i, item(ids[0], STATUS_INSTALL, 50)),
            (Some(25), i, item(ids[0], STATUS_INSTALL, 50)),
            (Some(25), i, item(ids[1], STATUS_DOWNLOAD, 100)),
            (Some(25), i, item(ids[1], STATUS_INSTALL, 50)),
            (Some(50), i, item(ids[1], STATUS_INSTALL, 50)),
            (Some(100), i, item(ids[1], STATUS_INSTALL, 50)),
        ]
    );
}

fn packages_state(packages: &[&str], remove: &[&str]) -> DesiredState {
    let json = serde_json::json!({
        "version": 1,
        "plugins": {"packagekit": {"packages": packages, "remove": remove}}
    });
    DesiredState::from_json(&json.to_string(), "test state").unwrap()
}

/// The packages plugin on the running system (root `/`) with the fake on
/// the context's bus: the calls it makes, "via PackageKit" in the report,
/// the progress of a held install in the status file (cleared after), a
/// no-op re-apply, a removal, and an unknown package failing with the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_plugin_installs_via_packagekit_with_progress_in_status() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("htop", "3.2.2-2", false);
    fake.add_package("nano", "7.2-1", true);
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let ctx = Arc::new(Context::new(&state_dir).with_bus(bus.connect().await.unwrap()));
    let mut engine = Engine::new();
    engine.register(PackagesPlugin);
    let engine = Arc::new(engine);
    // What `run` writes before the first reconcile: progress goes there.
    Status::running(None).write(&state_dir).unwrap();

    fake.hold();
    let desired = packages_state(&["htop"], &[]);
    let run = {
        let (engine, ctx) = (engine.clone(), ctx.clone());
        tokio::spawn(async move { engine.apply(&ctx, &desired).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let progress = loop {
        let st = Status::read(&state_dir).unwrap().unwrap();
        if let Some(p) = st
            .progress
            .clone()
            .filter(|p| p.operation == "install" && p.percentage == Some(50))
        {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no progress in the status: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(progress.plugin, "packages");
    assert_eq!(progress.operation, "install");
    assert_eq!(progress.stage.as_deref(), Some("install"));
    assert_eq!(progress.item.as_deref(), Some("htop install 50%"));
    assert_eq!(
        progress.to_string(),
        "packages install 50%, install, htop install 50%"
    );
    fake.release();
    let report = run.await.unwrap();
    assert!(report.ok, "{report:#?}");
    let action = &report.plugins[0].actions[0];
    assert_eq!(action.description, "install package htop");
    assert_eq!(action.detail.as_deref(), Some("via PackageKit"));
    let st = Status::read(&state_dir).unwrap().unwrap();
    assert_eq!(st.status, Phase::Running);
    assert_eq!(
        st.progress, None,
        "progress is cleared after the transaction"
    );
    assert!(fake.package("htop").unwrap().installed);
    let calls = fake.calls();
    let at = |c: &str| calls.iter().position(|x| x.starts_with(c)).unwrap();
    assert!(
        at("RefreshCache(false)") < at("InstallPackages(2,"),
        "{calls:?}"
    );

    // Re-apply: nothing to do, no transaction but the queries.
    let before = fake.calls().len();
    let again = engine.apply(&ctx, &packages_state(&["htop"], &[])).await;
    assert!(
        again.ok && again.plugins[0].actions.is_empty(),
        "{again:#?}"
    );
    assert!(
        fake.calls()[before..]
            .iter()
            .all(|c| c.starts_with("CreateTransaction") || c.starts_with("Resolve(4,")),
        "{:?}",
        &fake.calls()[before..]
    );

    // Removal.
    let removed = engine
        .apply(&ctx, &packages_state(&["htop"], &["nano"]))
        .await;
    assert!(removed.ok, "{removed:#?}");
    assert!(!fake.package("nano").unwrap().installed);

    // An unknown package fails with its name; the installed ones stay.
    let bad = engine
        .apply(&ctx, &packages_state(&["htop", "no-such-pkg"], &[]))
        .await;
    assert!(!bad.ok);
    let err = bad.plugins[0].error.clone().unwrap_or_default()
        + &bad.plugins[0]
            .actions
            .iter()
            .filter_map(|a| a.detail.clone())
            .collect::<Vec<_>>()
            .join("\n");
    assert!(
        err.contains("PackageKit does not know package 'no-such-pkg'")
            && err.contains("via PackageKit"),
        "{err}"
    );
    assert!(fake.package("htop").unwrap().installed);
    assert!(!fake.package("nano").unwrap().installed);
}

/// `--root` other than `/`: PackageKit on the bus manages the host, so the
/// plugin never asks it, even when it is there; the root's own dpkg database
/// is read and its own apt-get run (here there is neither: refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_another_root_the_buses_packagekit_is_never_asked() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("htop", "3.2.2-2", false);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let ctx = Context::new(dir.path().join("state"))
        .with_root(&root)
        .with_bus(bus.connect().await.unwrap());
    let mut engine = Engine::new();
    engine.register(PackagesPlugin);
    let report = engine.apply(&ctx, &packages_state(&["htop"], &[])).await;
    assert!(!report.ok);
    let err = report.plugins[0].error.clone().unwrap_or_default();
    assert!(err.contains("has no dpkg database"), "{err}");
    // With a dpkg database but no apt of its own: refused before anything
    // is mounted or run.
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let report = engine.apply(&ctx, &packages_state(&["htop"], &[])).await;
    let err = report.plugins[0].error.clone().unwrap_or_default();
    assert!(
        err.contains("has no apt-get of its own") && err.contains("never the host's"),
        "{err}"
    );
    assert!(!root.join("proc").exists(), "nothing was mounted");
    assert_eq!(fake.calls(), Vec::<String>::new());
    assert!(!fake.package("htop").unwrap().installed);
}
