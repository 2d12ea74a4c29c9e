//! Tests of the systemd1 adapter against a fake systemd on a private
//! dbus-daemon: the exact Manager calls, waiting for JobRemoved, job
//! failures, unit-file operations and the ActiveState change stream.

use crate::dbus_daemon;
use crate::fake_systemd;

use std::time::{Duration, Instant};

use dbus_daemon::PrivateBus;
use fake_systemd::FakeSystemd;
use futures::stream::{BoxStream, StreamExt};
use opdbus_agent::dbus::{Error, Systemd, UnitChange, UnitFileChange, UnitStatus};

async fn next_change(changes: &mut BoxStream<'static, UnitChange>) -> UnitChange {
    tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("a unit change within 5 s")
        .expect("change stream still open")
}

async fn setup() -> (PrivateBus, FakeSystemd, Systemd) {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSystemd::serve(bus.address()).await.unwrap();
    let conn = bus.connect().await.unwrap();
    let systemd = Systemd::new(&conn).await.unwrap();
    (bus, fake, systemd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_loads_then_starts_and_waits_for_job_removed() {
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("x.service", "inactive", "dead", "enabled")
        .await
        .unwrap();

    let began = Instant::now();
    systemd.start("x.service").await.unwrap();
    let elapsed = began.elapsed();

    assert_eq!(
        fake.calls(),
        [
            "Subscribe()",
            "LoadUnit(x.service)",
            "StartUnit(x.service, replace)"
        ]
    );
    // The fake records JobRemoved just before emitting it, 200 ms after the
    // StartUnit reply: it is in the log only if start() waited for it.
    assert_eq!(
        fake.log().last().unwrap(),
        "signal JobRemoved(1, /org/freedesktop/systemd1/job/1, x.service, done)"
    );
    assert!(
        elapsed >= Duration::from_millis(200),
        "returned after {elapsed:?}"
    );
    assert_eq!(
        systemd.unit("x.service").await.unwrap(),
        UnitStatus {
            name: "x.service".into(),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
            unit_file_state: "enabled".into(),
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_ignores_job_removed_of_other_jobs() {
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("x.service", "inactive", "dead", "enabled")
        .await
        .unwrap();
    fake.set_job_delay(Duration::from_millis(600));

    let began = Instant::now();
    let (started, injected) = tokio::join!(systemd.start("x.service"), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        fake.emit_job_removed(99, "x.service", "failed").await
    });
    injected.unwrap();
    started.unwrap();
    assert!(
        began.elapsed() >= Duration::from_millis(600),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(
        &fake.log()[3..],
        [
            "signal JobRemoved(99, /org/freedesktop/systemd1/job/99, x.service, failed)",
            "signal JobRemoved(1, /org/freedesktop/systemd1/job/1, x.service, done)",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instant_jobs_are_not_missed() {
    // JobRemoved may reach the client before the StartUnit reply: the adapter
    // must already be listening when it queues the job.
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("fast.service", "inactive", "dead", "enabled")
        .await
        .unwrap();
    fake.set_job_delay(Duration::ZERO);
    let systemd = systemd.with_job_timeout(Duration::from_secs(2));
    for _ in 0..20 {
        systemd.start("fast.service").await.unwrap();
        systemd.stop("fast.service").await.unwrap();
    }
    assert_eq!(fake.unit("fast.service").unwrap().active_state, "inactive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_is_an_error_naming_the_unit() {
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("bad.service", "inactive", "dead", "enabled")
        .await
        .unwrap();
    fake.set_job_result("bad.service", "failed");

    let err = systemd.start("bad.service").await.unwrap_err();
    match &err {
        Error::JobFailed { op, unit, result } => {
            assert_eq!(
                (*op, unit.as_str(), result.as_str()),
                ("start", "bad.service", "failed")
            );
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "start job for unit 'bad.service' finished with result 'failed': see `journalctl -u bad.service`"
    );
    assert_eq!(fake.unit("bad.service").unwrap().active_state, "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_restart_use_their_own_methods() {
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("web.service", "active", "running", "enabled")
        .await
        .unwrap();

    systemd.stop("web.service").await.unwrap();
    assert_eq!(fake.unit("web.service").unwrap().active_state, "inactive");
    systemd.restart("web.service").await.unwrap();
    assert_eq!(fake.unit("web.service").unwrap().active_state, "active");

    assert_eq!(
        fake.log(),
        [
            "Subscribe()",
            "LoadUnit(web.service)",
            "StopUnit(web.service, replace)",
            "signal JobRemoved(1, /org/freedesktop/systemd1/job/1, web.service, done)",
            "LoadUnit(web.service)",
            "RestartUnit(web.service, replace)",
            "signal JobRemoved(2, /org/freedesktop/systemd1/job/2, web.service, done)",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_unit_reports_not_found_and_is_never_started() {
    let (_bus, fake, systemd) = setup().await;

    let status = systemd.unit("nope.service").await.unwrap();
    assert_eq!(status.load_state, "not-found");
    assert_eq!(status.active_state, "inactive");

    let err = systemd.start("nope.service").await.unwrap_err();
    assert!(
        matches!(&err, Error::UnitNotFound { unit } if unit == "nope.service"),
        "{err:?}"
    );
    assert!(
        !fake.calls().iter().any(|c| c.starts_with("StartUnit")),
        "{:?}",
        fake.calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_that_never_finishes_times_out() {
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("slow.service", "inactive", "dead", "enabled")
        .await
        .unwrap();
    fake.set_job_delay(Duration::from_secs(5));
    let systemd = systemd.with_job_timeout(Duration::from_millis(300));

    let err = systemd.start("slow.service").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("slow.service"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_adapters_on_one_connection_tolerate_already_subscribed() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSystemd::serve(bus.address()).await.unwrap();
    fake.add_unit("a.service", "inactive", "dead", "enabled")
        .await
        .unwrap();
    let conn = bus.connect().await.unwrap();
    let first = Systemd::new(&conn).await.unwrap();
    let second = Systemd::new(&conn).await.unwrap();

    first.subscribe().await.unwrap();
    second.start("a.service").await.unwrap();
    assert_eq!(
        fake.calls(),
        [
            "Subscribe()",
            "Subscribe()",
            "LoadUnit(a.service)",
            "StartUnit(a.service, replace)"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_file_operations_pass_runtime_false_and_force() {
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("a.service", "inactive", "dead", "disabled")
        .await
        .unwrap();
    fake.add_unit("b.service", "inactive", "dead", "disabled")
        .await
        .unwrap();

    let changes = systemd.enable(&["a.service", "b.service"]).await.unwrap();
    assert_eq!(
        changes[0],
        UnitFileChange {
            kind: "symlink".into(),
            file: "/etc/systemd/system/multi-user.target.wants/a.service".into(),
            destination: "/lib/systemd/system/a.service".into(),
        }
    );
    assert_eq!(
        systemd.unit_file_state("b.service").await.unwrap(),
        "enabled"
    );
    systemd.disable(&["a.service"]).await.unwrap();
    systemd.mask(&["b.service"]).await.unwrap();
    assert_eq!(
        systemd.unit("b.service").await.unwrap().unit_file_state,
        "masked"
    );
    systemd.unmask(&["b.service"]).await.unwrap();
    systemd.reload().await.unwrap();

    assert_eq!(
        fake.calls(),
        [
            r#"EnableUnitFiles(["a.service", "b.service"], false, true)"#,
            "GetUnitFileState(b.service)",
            r#"DisableUnitFiles(["a.service"], false)"#,
            r#"MaskUnitFiles(["b.service"], false, true)"#,
            "LoadUnit(b.service)",
            r#"UnmaskUnitFiles(["b.service"], false)"#,
            "Reload()",
        ]
    );
    assert_eq!(fake.unit("a.service").unwrap().unit_file_state, "disabled");
    assert_eq!(fake.unit("b.service").unwrap().unit_file_state, "disabled");

    let err = systemd.enable(&["ghost.service"]).await.unwrap_err();
    assert!(err.to_string().contains("EnableUnitFiles"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_stream_reports_drift_of_active_state() {
    let (_bus, fake, systemd) = setup().await;
    fake.add_unit("getty@tty1.service", "active", "running", "enabled")
        .await
        .unwrap();
    fake.add_unit("web.service", "active", "running", "enabled")
        .await
        .unwrap();

    let mut changes = systemd.changes().await.unwrap();
    assert_eq!(fake.calls(), ["Subscribe()"]);

    fake.set_active_state("getty@tty1.service", "failed", "failed")
        .await
        .unwrap();
    fake.set_active_state("web.service", "inactive", "dead")
        .await
        .unwrap();

    assert_eq!(
        next_change(&mut changes).await,
        UnitChange {
            unit: "getty@tty1.service".into(),
            active_state: "failed".into(),
            sub_state: Some("failed".into()),
        }
    );
    let second = next_change(&mut changes).await;
    assert_eq!(second.unit, "web.service");
    assert_eq!(second.active_state, "inactive");
}
