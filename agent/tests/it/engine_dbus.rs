//! The engine with the D-Bus plugins (systemd, host) against a private
//! dbus-daemon and the fakes in `support/`: the exact calls made, a failing
//! verification, the audit records, drift repair and the org.opdbus service.

use crate::dbus_daemon;
use crate::fake_settings;
use crate::fake_systemd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbus_daemon::PrivateBus;
use fake_settings::{FakeSettings, Settings};
use fake_systemd::FakeSystemd;
use opdbus_agent::audit::AuditLog;
use opdbus_agent::engine::{Context, DesiredState, Engine, PluginOutcome, RetryPolicy};
use opdbus_agent::plugins::{host::HostPlugin, systemd::SystemdPlugin};
use opdbus_agent::service::Agent;

fn state(json: serde_json::Value) -> DesiredState {
    DesiredState::from_json(&json.to_string(), "test state").unwrap()
}

/// Calls that change something (not LoadUnit/Subscribe/GetUnitFileState).
fn changes(fake: &FakeSystemd) -> Vec<String> {
    fake.calls()
        .into_iter()
        .filter(|c| {
            !c.starts_with("LoadUnit")
                && !c.starts_with("Subscribe")
                && !c.starts_with("GetUnitFileState")
        })
        .collect()
}

struct Setup {
    _bus: PrivateBus,
    fake: FakeSystemd,
    dir: tempfile::TempDir,
    ctx: Arc<Context>,
}

async fn setup() -> Setup {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSystemd::serve(bus.address()).await.unwrap();
    fake.set_job_delay(Duration::from_millis(20));
    fake.add_unit("ssh.service", "inactive", "dead", "disabled")
        .await
        .unwrap();
    fake.add_unit("cron.service", "active", "running", "enabled")
        .await
        .unwrap();
    fake.add_unit("apache2.service", "active", "running", "enabled")
        .await
        .unwrap();
    fake.add_unit("my-app.service", "inactive", "dead", "disabled")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new(dir.path().join("state"))
        .with_root(dir.path().join("root"))
        .with_bus(bus.connect().await.unwrap())
        .with_retry(RetryPolicy {
            attempts: 2,
            backoff: Duration::from_millis(10),
        });
    Setup {
        _bus: bus,
        fake,
        dir,
        ctx: Arc::new(ctx),
    }
}

fn systemd_state() -> DesiredState {
    state(serde_json::json!({
        "version": 1,
        "plugins": {"systemd": {
            "services": {"ssh": {"state": "enabled"}, "cron": {"state": "stopped"}},
            "units": {"apache2.service": {"masked": true}},
            "custom_units": {"my-app.service": {
                "content": "[Unit]\nDescription=My App\n[Service]\nExecStart=/bin/true\n",
                "enabled": true, "active_state": "active"
            }}
        }}
    }))
}

fn systemd_engine() -> Engine {
    let mut e = Engine::new();
    e.register(SystemdPlugin);
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_apply_makes_exact_calls_and_reapply_is_noop() {
    let s = setup().await;
    let engine = systemd_engine();
    let desired = systemd_state();
    let report = engine.apply(&s.ctx, &desired).await;
    assert!(report.ok, "{:#?}", report);
    assert_eq!(report.plugins[0].outcome, PluginOutcome::Changed);
    assert_eq!(
        changes(&s.fake),
        [
            "Reload()",
            "StopUnit(apache2.service, replace)",
            "StopUnit(cron.service, replace)",
            r#"MaskUnitFiles(["apache2.service"], false, true)"#,
            r#"EnableUnitFiles(["my-app.service"], false, true)"#,
            r#"EnableUnitFiles(["ssh.service"], false, true)"#,
            "Reload()",
            "StartUnit(my-app.service, replace)",
            "StartUnit(ssh.service, replace)",
        ]
    );
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("root/etc/systemd/system/my-app.service"))
            .unwrap(),
        "[Unit]\nDescription=My App\n[Service]\nExecStart=/bin/true\n"
    );
    assert_eq!(s.fake.unit("ssh.service").unwrap().active_state, "active");
    assert_eq!(
        s.fake.unit("ssh.service").unwrap().unit_file_state,
        "enabled"
    );
    assert_eq!(
        s.fake.unit("cron.service").unwrap().active_state,
        "inactive"
    );
    assert_eq!(
        s.fake.unit("apache2.service").unwrap().unit_file_state,
        "masked"
    );

    // The audit chain holds one record per action, with the state's hash.
    let log = AuditLog::open_existing(&s.ctx.state_dir).unwrap();
    assert!(log.verify().unwrap().is_ok());
    let recs = log.list().unwrap();
    let start = recs
        .iter()
        .find(|r| r.action == "start" && r.resource == "unit:ssh.service")
        .expect("audit record of starting ssh");
    assert_eq!(start.plugin, "systemd");
    assert_eq!(start.result, "ok");
    assert_eq!(start.state_hash.as_deref(), Some(desired.hash.as_str()));
    assert_eq!(recs.iter().filter(|r| r.plugin == "systemd").count(), 10);

    s.fake.clear_log();
    let again = engine.apply(&s.ctx, &desired).await;
    assert!(again.ok);
    assert_eq!(again.plugins[0].outcome, PluginOutcome::Unchanged);
    assert!(changes(&s.fake).is_empty(), "{:?}", changes(&s.fake));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_verification_fails_the_run_naming_plugin_and_resource() {
    let s = setup().await;
    s.fake.set_job_result("ssh.service", "failed");
    let mut engine = systemd_engine();
    engine.register(HostPlugin); // host runs before systemd and is absent from the state
    let report = engine.apply(&s.ctx, &systemd_state()).await;
    assert!(!report.ok);
    assert_eq!(report.plugins[0].outcome, PluginOutcome::Skipped);
    let sd = &report.plugins[1];
    assert_eq!(sd.outcome, PluginOutcome::Failed);
    // A job that finished 'failed' is a fatal error: not retried.
    assert_eq!(sd.attempts, 1);
    assert_eq!(sd.failed_resources, ["unit:ssh.service"]);
    let failures = report.failures();
    assert!(
        failures[0].starts_with("plugin 'systemd' failed on unit:ssh.service"),
        "{failures:?}"
    );
    assert!(
        failures[0].contains("finished with result 'failed'"),
        "{failures:?}"
    );
    // One attempt, one StartUnit call for ssh, audited as failed.
    let starts = s
        .fake
        .calls()
        .iter()
        .filter(|c| *c == "StartUnit(ssh.service, replace)")
        .count();
    assert_eq!(starts, 1);
    let recs = AuditLog::open_existing(&s.ctx.state_dir)
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(
        recs.iter()
            .filter(|r| r.resource == "unit:ssh.service"
                && r.action == "start"
                && r.result.starts_with("failed"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_settings_exact_calls_and_noop() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSettings::serve(bus.address(), Settings::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = Context::new(dir.path()).with_bus(bus.connect().await.unwrap());
    let mut engine = Engine::new();
    engine.register(HostPlugin);
    let desired = state(serde_json::json!({
        "version": 1,
        "bootstrap": {"hostname": "web1", "timezone": "Europe/Berlin", "locale": "en_US.UTF-8", "keyboard": "de"}
    }));
    let report = engine.apply(&ctx, &desired).await;
    assert!(report.ok, "{:#?}", report);
    assert_eq!(
        fake.calls(),
        [
            "SetStaticHostname(web1, false)",
            "SetTimezone(Europe/Berlin, false)",
            r#"SetLocale(["LANG=en_US.UTF-8"], false)"#,
            "SetVConsoleKeyboard(de, , true, false)",
        ]
    );
    let again = engine.apply(&ctx, &desired).await;
    assert_eq!(again.plugins[0].outcome, PluginOutcome::Unchanged);
    assert_eq!(fake.calls().len(), 4);

    // A time zone timedated rejects fails the plugin with the resource named
    // (a real zone, so the validator passes it; the fake installs only
    // Area/Location zones and UTC).
    let bad = state(
        serde_json::json!({"version": 1, "bootstrap": {"hostname": "web1", "timezone": "Japan", "locale": "en_US.UTF-8", "keyboard": "de"}}),
    );
    let report = engine
        .apply(
            &ctx.with_retry(RetryPolicy {
                attempts: 1,
                backoff: Duration::ZERO,
            }),
            &bad,
        )
        .await;
    assert!(!report.ok);
    assert_eq!(report.plugins[0].failed_resources, ["host:timezone"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_repair_restarts_a_unit_stopped_by_hand() {
    let s = setup().await;
    let engine = Arc::new(systemd_engine());
    let desired = systemd_state();
    assert!(engine.apply(&s.ctx, &desired).await.ok);
    let agent = Agent::new(engine, s.ctx.clone(), desired);
    let watcher = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.watch_drift(Duration::ZERO).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.fake.clear_log();
    // Someone stops ssh by hand.
    s.fake
        .set_active_state("ssh.service", "inactive", "dead")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.fake.unit("ssh.service").unwrap().active_state != "active" {
        assert!(
            Instant::now() < deadline,
            "ssh was not restarted; calls: {:?}",
            s.fake.calls()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(changes(&s.fake).contains(&"StartUnit(ssh.service, replace)".to_string()));
    // cron is wanted stopped: stopping it by hand again must not start it.
    assert!(!changes(&s.fake).iter().any(|c| c.contains("cron")));
    // The repair is recorded when its transaction ends (after verifying).
    let repair = loop {
        let recs = AuditLog::open_existing(&s.ctx.state_dir)
            .unwrap()
            .list()
            .unwrap();
        if let Some(r) = recs.into_iter().find(|r| r.action == "drift-repair") {
            break r;
        }
        assert!(Instant::now() < deadline, "no drift-repair record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(repair.resource, "unit:ssh.service");
    assert_eq!(repair.result, "ok");
    let reason = repair.metadata["reason"].as_str().unwrap();
    assert!(reason.contains("ssh.service became inactive"), "{reason}");
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_answers_query_status_and_apply_on_the_bus() {
    let s = setup().await;
    let engine = Arc::new(systemd_engine());
    let agent = Agent::new(engine, s.ctx.clone(), systemd_state());
    let service_conn = s._bus.connect().await.unwrap();
    agent.serve(&service_conn).await.unwrap();
    let client = s._bus.connect().await.unwrap();
    let call = |method: &'static str, body: Option<String>| {
        let client = client.clone();
        async move {
            let reply = match body {
                Some(b) => {
                    client
                        .call_method(
                            Some("org.opdbus"),
                            "/org/opdbus",
                            Some("org.opdbus"),
                            method,
                            &(b,),
                        )
                        .await
                }
                None => {
                    client
                        .call_method(
                            Some("org.opdbus"),
                            "/org/opdbus",
                            Some("org.opdbus"),
                            method,
                            &(),
                        )
                        .await
                }
            };
            reply.map(|m| m.body().deserialize::<String>().unwrap())
        }
    };
    let root = nix::unistd::Uid::effective().is_root();
    let query = call("QueryState", None).await;
    if !root {
        assert!(
            matches!(query, Err(zbus::Error::MethodError(ref n, _, _)) if n.as_str() == "org.freedesktop.DBus.Error.AccessDenied")
        );
        return;
    }
    let current: serde_json::Value = serde_json::from_str(&query.unwrap()).unwrap();
    assert_eq!(
        current["systemd"]["units"]["ssh.service"]["active_state"],
        "inactive"
    );
    assert_eq!(call("Status", None).await.unwrap(), r#"{"status":"none"}"#);
    let report: serde_json::Value = serde_json::from_str(
        &call("ApplyState", Some(systemd_state().raw.to_string()))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(s.fake.unit("ssh.service").unwrap().active_state, "active");
    let bad = call("ApplyState", Some("{not json".into())).await;
    assert!(
        matches!(bad, Err(zbus::Error::MethodError(ref n, _, _)) if n.as_str() == "org.freedesktop.DBus.Error.InvalidArgs")
    );
}

/// ApplyState runs `validate`'s checks first: a duplicate key and a
/// plaintext password are refused with `validate`'s lines, nothing is called
/// or recorded, and the held state stays the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_state_refuses_what_validate_rejects() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: org.opdbus answers only root");
        return;
    }
    let s = setup().await;
    let mut engine = systemd_engine();
    engine.register(opdbus_agent::plugins::users::UsersPlugin);
    let agent = Agent::new(Arc::new(engine), s.ctx.clone(), systemd_state());
    let service_conn = s._bus.connect().await.unwrap();
    agent.serve(&service_conn).await.unwrap();
    let client = s._bus.connect().await.unwrap();
    let duplicate = r#"{"version": 1, "plugins": {"systemd": {"services": {
        "ssh": {"state": "enabled"}, "ssh": {"state": "stopped"}}}}}"#;
    let plaintext = r#"{"version": 1, "plugins": {"users": {"accounts": {
        "admin": {"uid": 1000, "password_hash": "hunter2"}}}}}"#;
    for (text, expected) in [
        (
            duplicate,
            "ApplyState:2:38: /plugins/systemd/services/ssh: duplicate key \"ssh\"",
        ),
        (
            plaintext,
            "ApplyState:2:49: /plugins/users/accounts/admin/password_hash: plaintext password",
        ),
    ] {
        let reply = client
            .call_method(
                Some("org.opdbus"),
                "/org/opdbus",
                Some("org.opdbus"),
                "ApplyState",
                &(text.to_string(),),
            )
            .await;
        match reply {
            Err(zbus::Error::MethodError(name, Some(msg), _)) => {
                assert_eq!(name.as_str(), "org.freedesktop.DBus.Error.InvalidArgs");
                assert!(msg.contains("nothing was changed"), "{msg}");
                assert!(
                    msg.lines().any(|l| l.starts_with(expected)),
                    "no line starting {expected:?} in\n{msg}"
                );
            }
            other => panic!("ApplyState accepted {text}: {other:?}"),
        }
    }
    assert_eq!(changes(&s.fake), Vec::<String>::new());
    assert!(!opdbus_agent::audit::db_path(&s.ctx.state_dir).exists());
    assert!(!s.dir.path().join("root/etc/shadow").exists());
}
