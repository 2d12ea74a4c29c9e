//! The proxmox plugin against the PVE API simulator (`support/pve_sim.rs`,
//! checked against the real schema). No real PVE runs here.

use crate::pve_sim;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use opdbus_agent::engine::report::PluginOutcome;
use opdbus_agent::engine::{ApplyOptions, Context, DesiredState, Engine, RetryPolicy};
use opdbus_agent::plugins::proxmox::ProxmoxPlugin;
use pve_sim::{Sim, Timing};
use serde_json::{json, Value};

fn fast() -> Timing {
    Timing {
        task: Duration::from_millis(20),
        lock_wait: Duration::from_millis(2000),
    }
}

struct Env {
    sim: Sim,
    dir: tempfile::TempDir,
    engine: Engine,
}

impl Env {
    fn new(timing: Timing) -> Env {
        let sim = Sim::start(timing);
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("pve-token");
        std::fs::write(&token, format!("{}\n", pve_sim::TOKEN)).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let mut engine = Engine::new();
        engine.register(ProxmoxPlugin::default());
        Env { sim, dir, engine }
    }

    fn api(&self) -> Value {
        json!({
            "url": self.sim.url,
            "token_file": self.dir.path().join("pve-token").to_str().unwrap(),
            "fingerprint": self.sim.fingerprint,
            "task_timeout": 20
        })
    }

    /// `proxmox` as the state's section, with `api` pointing at the simulator.
    fn state(&self, mut proxmox: Value) -> DesiredState {
        proxmox["api"] = self.api();
        let text = json!({"version": 1, "plugins": {"proxmox": proxmox}}).to_string();
        DesiredState::from_json(&text, "test.json").unwrap()
    }

    fn ctx(&self) -> Context {
        Context::new(self.dir.path().join("state"))
            .with_options(ApplyOptions {
                allow_unapplied: true,
                ..ApplyOptions::default()
            })
            .with_retry(RetryPolicy {
                attempts: 5,
                backoff: Duration::from_millis(100),
            })
    }

    async fn apply(&self, state: &DesiredState) -> opdbus_agent::engine::report::RunReport {
        self.engine.apply(&self.ctx(), state).await
    }
}

fn seed_example() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/proxmox-plugin.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["plugins"]["proxmox"].clone()
}

fn outcome(r: &opdbus_agent::engine::report::RunReport) -> PluginOutcome {
    r.plugins[0].outcome
}

fn dump(r: &opdbus_agent::engine::report::RunReport) -> String {
    serde_json::to_string_pretty(r).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example_applies_and_a_second_apply_writes_nothing() {
    let env = Env::new(fast());
    env.sim.world.lock().unwrap().cluster = Some("prod-cluster".into());
    let state = env.state(seed_example());
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    assert_eq!(outcome(&r), PluginOutcome::Changed);
    let vm = env.sim.guest(100).expect("VM 100 created");
    assert!(vm.running);
    assert_eq!(vm.config["cores"], "2");
    assert_eq!(vm.config["memory"], "2048");
    assert!(
        vm.config["scsi0"].starts_with("local-lvm:vm-100-disk-0,size=20G"),
        "{:?}",
        vm.config
    );
    assert!(
        vm.config["net0"].starts_with("virtio=BC:24:11:"),
        "{:?}",
        vm.config
    );
    assert_eq!(vm.config["boot"], "order=scsi0;net0");
    let db = env.sim.guest(101).unwrap();
    assert_eq!(
        db.config["description"],
        "Database server - mitigations disabled for performance"
    );
    let ct = env.sim.guest(200).expect("CT 200 created");
    assert_eq!(ct.kind, "lxc");
    assert!(ct.running);
    assert_eq!(ct.config["hostname"], "redis-cache");
    assert!(ct.config["rootfs"].starts_with("local-lvm:vm-200-disk-0,size=8G"));
    {
        let w = env.sim.world.lock().unwrap();
        assert_eq!(w.storage["nfs-backup"]["server"], "192.168.1.100");
        let job = &w.backups["opdbus-1"];
        assert_eq!(job["schedule"], "02:00");
        assert_eq!(job["vmid"], "100,101,200");
        assert_eq!(
            job["prune-backups"],
            "keep-daily=7,keep-monthly=3,keep-weekly=4"
        );
        assert!(w.rejected.is_empty(), "{:?}", w.rejected);
        // plugins.proxmox.network is the network plugin's (one writer of
        // /etc/network/interfaces): nothing went to the PVE network API.
        assert!(!w.log.iter().any(|l| l.contains("/network")), "{:?}", w.log);
        // Every write of a task was polled to its end.
        assert!(w.tasks.values().all(|t| t.done && t.exitstatus == "OK"));
    }
    // The parts PVE's API does not take are reported, not ignored.
    let na: Vec<&str> = r.not_applied.iter().map(|u| u.pointer.as_str()).collect();
    assert!(
        na.contains(&"/plugins/proxmox/vms/1/cpu_mitigations"),
        "{na:?}"
    );

    // The token's secret is in no report and no file of the state directory.
    let secret = pve_sim::TOKEN.split_once('=').unwrap().1;
    assert!(!dump(&r).contains(secret));
    let mut dirs = vec![env.dir.path().join("state")];
    let mut files = 0;
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            files += 1;
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the token",
                path.display()
            );
        }
    }
    assert!(files >= 2, "no audit log or ownership file was written");

    let writes = env.sim.writes();
    let again = env.apply(&state).await;
    assert!(again.ok, "{}", dump(&again));
    assert_eq!(
        outcome(&again),
        PluginOutcome::Unchanged,
        "{}",
        dump(&again)
    );
    assert_eq!(env.sim.writes(), writes, "a re-apply wrote to the API");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_behind_the_agents_back_is_repaired_and_other_keys_kept() {
    let env = Env::new(fast());
    let state = env.state(json!({
        "node": "pve",
        "vms": [{"vmid": 100, "name": "web", "cores": 2, "memory": 2048,
                 "disk": {"storage": "local-lvm", "size": "20G"},
                 "network": {"bridge": "vmbr0"}}]
    }));
    assert!(env.apply(&state).await.ok);
    let mac = env.sim.guest(100).unwrap().config["net0"].clone();
    {
        let mut w = env.sim.world.lock().unwrap();
        let g = w.guests.get_mut(&100).unwrap();
        g.config.insert("cores".into(), "8".into());
        g.config.insert(
            "net0".into(),
            format!("{},firewall=1", mac.replace("vmbr0", "vmbr9")),
        );
        g.config.insert("tags".into(), "by-hand".into());
        g.running = false;
    }
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    let g = env.sim.guest(100).unwrap();
    assert_eq!(g.config["cores"], "2");
    assert!(g.running);
    // The NIC is back on vmbr0 with its MAC and the firewall flag set by hand.
    assert_eq!(g.config["net0"], format!("{},firewall=1", mac));
    assert_eq!(
        g.config["tags"], "by-hand",
        "a key the state does not name was touched"
    );
    // The write carried the digest it was computed from.
    let log = env.sim.world.lock().unwrap().log.clone();
    assert!(
        log.iter()
            .any(|l| l == "PUT /nodes/pve/qemu/100/config cores,digest,net0"),
        "{log:?}"
    );
}

/// Another writer changes the VM between the agent's read and its write:
/// the digest makes PVE refuse the stale write (no lost update), the error
/// is retryable, and the next attempt keeps the other writer's change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_changed_meanwhile_is_not_overwritten() {
    let env = Env::new(fast());
    let state = env.state(json!({"vms": [{"vmid": 100, "cores": 2, "state": "stopped"}]}));
    assert!(env.apply(&state).await.ok);
    {
        let mut w = env.sim.world.lock().unwrap();
        w.guests
            .get_mut(&100)
            .unwrap()
            .config
            .insert("cores".into(), "8".into());
        w.meanwhile = Some((100, "tags".into(), "edited-meanwhile".into()));
    }
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    let g = env.sim.guest(100).unwrap();
    assert_eq!(g.config["cores"], "2");
    assert_eq!(
        g.config["tags"], "edited-meanwhile",
        "the other writer's change was lost"
    );
    // The first write was refused for its stale digest (retryable); the
    // engine re-planned it from a fresh query and the second one took.
    let first = &r.plugins[0].actions[0];
    assert_eq!(first.result, "ok", "{}", dump(&r));
    assert_eq!(first.attempt, 2, "{}", dump(&r));
    assert_eq!(r.plugins[0].attempts, 2, "{}", dump(&r));
}

/// The plugin's checkpoint and restore, as the engine's transaction calls
/// them: a created guest is destroyed, changed keys get their old values,
/// the power state comes back, a created backup job goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_puts_back_what_the_checkpoint_recorded() {
    let env = Env::new(fast());
    let first = env.state(json!({"vms": [{"vmid": 100, "cores": 2, "name": "web"}]}));
    assert!(env.apply(&first).await.ok);
    let before = env.sim.guest(100).unwrap();
    let jobs_before = env.sim.world.lock().unwrap().backups.clone();
    let state = env.state(json!({
        "vms": [{"vmid": 100, "cores": 4, "name": "web", "comment": "new", "state": "stopped"},
                {"vmid": 101, "cores": 1}],
        "backups": [{"schedule": "daily", "storage": "local", "vms": [100]}]
    }));
    let p = env.engine.plugin("proxmox").unwrap();
    let ctx = env.ctx();
    let desired = p.desired_json(&state.state).unwrap().unwrap();
    let current = p.query_json(&ctx, &desired).await.unwrap();
    let actions = p.diff_json(&current, &desired).unwrap();
    let cp = p
        .checkpoint_json(&ctx, &current, &actions)
        .await
        .unwrap()
        .unwrap();
    for r in p.apply_json(&ctx, &actions).await.unwrap() {
        r.unwrap();
    }
    assert_eq!(env.sim.guest(100).unwrap().config["cores"], "4");
    assert!(env.sim.guest(101).is_some());
    let line = p.restore_json(&ctx, &cp).await.unwrap();
    let after = env.sim.guest(100).unwrap();
    assert_eq!(after.config, before.config, "{line}");
    assert!(after.running, "{line}");
    assert!(env.sim.guest(101).is_none(), "{line}");
    assert_eq!(env.sim.world.lock().unwrap().backups, jobs_before, "{line}");
    assert_eq!(line, "5 change(s) undone");
    // What restore destroyed is no longer recorded as op-dbus's.
    let owned = std::fs::read_to_string(env.dir.path().join("state/ownership.json")).unwrap();
    assert!(
        owned.contains("vm/100") && !owned.contains("vm/101") && !owned.contains("opdbus-1"),
        "{owned}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_disk_keeps_the_vm_and_its_other_disks() {
    let env = Env::new(fast());
    let mut vm = json!({"vmid": 100, "state": "stopped", "disks": {"scsi0": {"storage": "local-lvm", "size": "20G"}}});
    let st = env.state(json!({"vms": [vm.clone()]}));
    assert!(env.apply(&st).await.ok);
    let scsi0 = env.sim.guest(100).unwrap().config["scsi0"].clone();
    vm["disks"]["scsi1"] = json!({"storage": "local-lvm", "size": "10G"});
    vm["disks"]["scsi0"]["size"] = json!("30G");
    let r = env.apply(&env.state(json!({"vms": [vm]}))).await;
    assert!(r.ok, "{}", dump(&r));
    let g = env.sim.guest(100).unwrap();
    assert_eq!(g.config["scsi0"], scsi0.replace("20G", "30G"));
    assert!(
        g.config["scsi1"].starts_with("local-lvm:vm-100-disk-1,size=10G"),
        "{:?}",
        g.config
    );
    let log = env.sim.world.lock().unwrap().log.clone();
    assert!(!log.iter().any(|l| l.starts_with("DELETE")), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_at_once_under_lock_contention_both_end_right() {
    // Each task holds the storage lock 400 ms; a writer waits 100 ms for it.
    let env = Env::new(Timing {
        task: Duration::from_millis(400),
        lock_wait: Duration::from_millis(100),
    });
    let vm = |id: u32| json!({"vmid": id, "cores": 2, "memory": 1024, "disk": {"storage": "local-lvm", "size": "8G"}});
    let state = env.state(json!({"vms": [vm(110), vm(111)]}));
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    for id in [110, 111] {
        let g = env.sim.guest(id).unwrap();
        assert!(g.running, "{id}");
        assert_eq!(g.config["cores"], "2");
    }
    let w = env.sim.world.lock().unwrap();
    let timeouts: Vec<&String> = w
        .tasks
        .values()
        .filter(|t| t.exitstatus.contains("got timeout"))
        .map(|t| &t.exitstatus)
        .collect();
    assert!(
        !timeouts.is_empty(),
        "no lock contention happened: the test proves nothing"
    );
    // The attempt that met the lock timeout (a retryable error) was
    // tried again and took.
    assert!(
        r.plugins[0]
            .actions
            .iter()
            .any(|a| a.attempt >= 2 && a.result == "ok"),
        "{}",
        dump(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_destroys_only_what_op_dbus_created() {
    let env = Env::new(fast());
    assert!(
        env.apply(&env.state(json!({"vms": [{"vmid": 120}]})))
            .await
            .ok
    );
    // 121 was made by hand.
    env.sim.world.lock().unwrap().guests.insert(
        121,
        pve_sim::Guest {
            kind: "qemu",
            config: [("name".to_string(), "mine".to_string())].into(),
            running: true,
        },
    );
    let r = env
        .apply(&env.state(
            json!({"vms": [{"vmid": 120, "state": "absent"}, {"vmid": 121, "state": "absent"}]}),
        ))
        .await;
    assert!(env.sim.guest(120).is_none(), "{}", dump(&r));
    assert!(env.sim.guest(121).is_some_and(|g| g.running));
    assert!(!r.ok);
    assert!(
        r.plugins[0]
            .error
            .as_deref()
            .unwrap()
            .contains("op-dbus did not create it"),
        "{}",
        dump(&r)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_pinned_and_the_token_file_must_be_private() {
    let env = Env::new(fast());
    let mut p = json!({"vms": [{"vmid": 130}]});
    p["api"] = env.api();
    p["api"]["fingerprint"] = json!("ab".repeat(32));
    let text = json!({"version": 1, "plugins": {"proxmox": p}}).to_string();
    let wrong = DesiredState::from_json(&text, "t.json").unwrap();
    let err = format!(
        "{:#}",
        env.engine
            .query(&env.ctx(), &wrong, None)
            .await
            .unwrap_err()
    );
    assert!(
        err.contains("plugins.proxmox.api.fingerprint pins"),
        "{err}"
    );
    assert_eq!(env.sim.writes(), 0);

    let token = env.dir.path().join("pve-token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let st = env.state(json!({"vms": [{"vmid": 130}]}));
    let err = format!(
        "{:#}",
        env.engine.query(&env.ctx(), &st, None).await.unwrap_err()
    );
    assert!(
        err.contains("readable by group or others") && err.contains("chmod 600"),
        "{err}"
    );
    assert!(!err.contains("5f2b8c1e"), "the token leaked: {err}");
}

/// A token without the privilege an action needs: the schema's permission
/// check refuses it with 403, the error says which privilege on which path,
/// and nothing else changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_privilege_is_refused_by_name() {
    let env = Env::new(fast());
    env.sim.world.lock().unwrap().token_privs = Some(
        [
            "VM.Audit",
            "VM.Allocate",
            "Datastore.AllocateSpace",
            "Datastore.Audit",
            "Sys.Audit",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    );
    let state = env.state(json!({"vms": [{"vmid": 140, "cores": 1}]}));
    let r = env.apply(&state).await;
    assert!(!r.ok);
    let text = dump(&r);
    assert!(
        text.contains("HTTP 403: Permission check failed (/vms/140, VM.PowerMgmt)"),
        "{text}"
    );
    // The transaction is rolled back: the VM it created is destroyed again.
    assert!(env.sim.guest(140).is_none(), "{text}");
}

/// Requests the schema forbids get PVE's 400 with an `errors` object
/// (read here through the plugin's own client, which shows them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_rejects_what_the_schema_does_not_allow() {
    use opdbus_agent::plugins::proxmox::api::{ApiError, Client, Endpoint};
    let env = Env::new(fast());
    let client = |token: &str| {
        Client::new(&Endpoint {
            url: env.sim.url.clone(),
            token: token.to_string(),
            fingerprint: env.sim.fingerprint.clone(),
            task_timeout: Duration::from_secs(10),
        })
        .unwrap()
    };
    let c = client(pve_sim::TOKEN);
    let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let refused = |r: Result<Value, ApiError>| match r {
        Err(ApiError::Status {
            status, message, ..
        }) => (status, message),
        other => panic!("not refused: {other:?}"),
    };
    let (s, m) = refused(
        c.post(
            "/nodes/pve/qemu",
            &form(&[
                ("vmid", "100"),
                ("colour", "red"),
                ("ostype", "linux"),
                ("cores", "two"),
                ("net0", "virtio,bridge=vmbr0,speed=fast"),
                ("memory", "2048"),
            ]),
        )
        .await,
    );
    assert_eq!(s, 400, "{m}");
    assert!(
        m.contains("colour: property is not defined in schema"),
        "{m}"
    );
    assert!(
        m.contains("ostype: value 'linux' does not have a value in the enumeration"),
        "{m}"
    );
    assert!(m.contains("cores: type check ('integer') failed"), "{m}");
    assert!(
        m.contains("net0: invalid format - unknown property 'speed'"),
        "{m}"
    );
    assert!(!m.contains("memory"), "{m}");
    // A required parameter missing; a digest where the schema has none.
    let (s, m) = refused(
        c.post("/nodes/pve/qemu", &form(&[("name", "x"), ("digest", "00")]))
            .await,
    );
    assert_eq!(s, 400);
    assert!(
        m.contains("vmid: property is missing and it is not optional"),
        "{m}"
    );
    assert!(m.contains("digest: property is not defined"), "{m}");
    // A method the path does not have; a path that does not exist.
    let (s, m) = refused(c.put("/nodes/pve/qemu", &[]).await);
    assert_eq!(s, 501, "{m}");
    let (s, _) = refused(c.get("/nodes/pve/vmware").await);
    assert_eq!(s, 501);
    // A wrong token: refused.
    let (s, _) = refused(client("root@pam!opdbus=wrong").get("/version").await);
    assert_eq!(s, 401);
    assert_eq!(
        env.sim.writes(),
        0,
        "a rejected request changed the simulator"
    );
    // A valid create returns a real UPID whose task is polled to its end.
    let r = c
        .post(
            "/nodes/pve/qemu",
            &form(&[
                ("vmid", "150"),
                ("net0", "virtio,bridge=vmbr0"),
                ("scsi0", "local-lvm:4"),
            ]),
        )
        .await
        .unwrap();
    let upid = r.as_str().unwrap().to_string();
    assert!(
        upid.starts_with("UPID:pve:") && upid.contains(":qmcreate:150:root@pam!opdbus:"),
        "{upid}"
    );
    assert_eq!(c.wait("pve", r).await.unwrap(), Some(upid));
    // A task that fails: its log is in the error.
    let r = c
        .post("/nodes/pve/qemu/150/status/start", &[])
        .await
        .unwrap();
    c.wait("pve", r).await.unwrap();
    let r = c.delete("/nodes/pve/qemu/150", &[]).await.unwrap();
    let err = c.wait("pve", r).await.unwrap_err().to_string();
    assert!(
        err.contains("VM 150 is running - destroy failed") && err.contains("TASK ERROR"),
        "{err}"
    );
}

/// The simulator is checked by an independent client: proxmoxer
/// (`apt-get install python3-proxmoxer`) creates a VM, waits for its task
/// and reads its config back. If they disagree, the simulator is wrong.
#[test]
#[ignore = "privileged tier: needs python3-proxmoxer (ci/apt-packages.txt)"]
fn proxmoxer_agrees_with_the_simulator() {
    let sim = Sim::start(fast());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pve/proxmoxer_check.py");
    let (host, port) = sim
        .url
        .trim_start_matches("https://")
        .split_once(':')
        .unwrap();
    let (user_token, secret) = pve_sim::TOKEN.split_once('=').unwrap();
    let (user, token_name) = user_token.split_once('!').unwrap();
    // Debian's python3-proxmoxer is for the system interpreter.
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(&script)
        .args([host, port, user, token_name, secret])
        .arg(&sim.cert_pem)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK"), "{stdout}");
    let g = sim.guest(160).expect("proxmoxer's VM exists");
    assert_eq!(g.config["name"], "from-proxmoxer");
    // Only the request the script means to be refused was.
    let rejected = sim.world.lock().unwrap().rejected.clone();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(rejected[0].contains("colour"), "{rejected:?}");
}

fn ha_of(env: &Env, sid: &str) -> Option<std::collections::BTreeMap<String, String>> {
    env.sim.world.lock().unwrap().ha.get(sid).cloned()
}

/// HA resources: created after their guest (the HA manager, simulated,
/// starts it), a second apply sends no write, drift is repaired with the
/// digest it was computed from, and a restore removes what was added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_resources_apply_then_reapply_writes_nothing_and_drift_is_repaired() {
    let env = Env::new(fast());
    env.sim.world.lock().unwrap().ha_groups = vec!["web".into()];
    let state = env.state(json!({
        "vms": [{"vmid": 100, "cores": 1, "ha": {"group": "web", "max_relocate": 2}},
                {"vmid": 101, "cores": 1, "state": "stopped", "ha": {"enabled": true, "comment": "db"}}],
        "containers": [{"vmid": 200, "ostemplate": "local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst",
                        "ha": {"state": "started", "max_restart": 3}}]
    }));
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    assert_eq!(
        ha_of(&env, "vm:100").unwrap(),
        [
            ("group", "web"),
            ("max_relocate", "2"),
            ("state", "started")
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    );
    assert_eq!(ha_of(&env, "vm:101").unwrap()["state"], "stopped");
    assert_eq!(ha_of(&env, "ct:200").unwrap()["max_restart"], "3");
    // The HA manager started them: op-dbus sent no start of its own.
    assert!(env.sim.guest(100).unwrap().running && env.sim.guest(200).unwrap().running);
    assert!(!env.sim.guest(101).unwrap().running);
    {
        let w = env.sim.world.lock().unwrap();
        assert!(w.rejected.is_empty(), "{:?}", w.rejected);
        assert!(
            !w.log.iter().any(|l| l.contains("/status/start")),
            "{:?}",
            w.log
        );
    }
    let writes = env.sim.writes();
    let again = env.apply(&state).await;
    assert_eq!(
        outcome(&again),
        PluginOutcome::Unchanged,
        "{}",
        dump(&again)
    );
    assert_eq!(env.sim.writes(), writes, "a re-apply wrote to the API");

    // Drift: someone stops vm:100 through HA and changes its relocations.
    {
        let mut w = env.sim.world.lock().unwrap();
        let h = w.ha.get_mut("vm:100").unwrap();
        h.insert("state".into(), "stopped".into());
        h.insert("max_relocate".into(), "5".into());
        h.insert("comment".into(), "by hand".into());
        w.guests.get_mut(&100).unwrap().running = false;
    }
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    let h = ha_of(&env, "vm:100").unwrap();
    assert_eq!(
        (h["state"].as_str(), h["max_relocate"].as_str()),
        ("started", "2")
    );
    assert_eq!(
        h["comment"], "by hand",
        "a key the state does not name was touched"
    );
    assert!(env.sim.guest(100).unwrap().running);
    let log = env.sim.world.lock().unwrap().log.clone();
    assert!(
        log.iter()
            .any(|l| l == "PUT /cluster/ha/resources/vm%3A100 digest,max_relocate,state"),
        "{log:?}"
    );

    // Checkpoint and restore: an HA resource the transaction added goes.
    let more = env.state(json!({
        "vms": [{"vmid": 100, "cores": 1, "ha": {"group": "web", "max_relocate": 2}},
                {"vmid": 102, "cores": 1, "state": "stopped", "ha": {}}]
    }));
    let p = env.engine.plugin("proxmox").unwrap();
    let ctx = env.ctx();
    let desired = p.desired_json(&more.state).unwrap().unwrap();
    let current = p.query_json(&ctx, &desired).await.unwrap();
    let actions = p.diff_json(&current, &desired).unwrap();
    let cp = p
        .checkpoint_json(&ctx, &current, &actions)
        .await
        .unwrap()
        .unwrap();
    for r in p.apply_json(&ctx, &actions).await.unwrap() {
        r.unwrap();
    }
    assert!(ha_of(&env, "vm:102").is_some());
    let line = p.restore_json(&ctx, &cp).await.unwrap();
    assert!(ha_of(&env, "vm:102").is_none(), "{line}");
    assert!(env.sim.guest(102).is_none(), "{line}");
    assert_eq!(line, "2 change(s) undone");
}

/// `ha.enabled: false` removes an HA resource op-dbus added and refuses
/// one added by hand; a guest marked absent loses its HA resource first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_off_removes_only_what_op_dbus_added() {
    let env = Env::new(fast());
    let on = env.state(json!({"vms": [{"vmid": 100, "ha": {}}, {"vmid": 110, "ha": {}}]}));
    assert!(env.apply(&on).await.ok);
    {
        let mut w = env.sim.world.lock().unwrap();
        w.guests.insert(
            101,
            pve_sim::Guest {
                kind: "qemu",
                config: [("name".to_string(), "mine".to_string())].into(),
                running: true,
            },
        );
        w.ha.insert(
            "vm:101".into(),
            [("state".to_string(), "started".to_string())].into(),
        );
    }
    // One the state turns off that op-dbus did not add: refused, kept
    // (and the refusal fails the transaction, as every refusal does).
    let hand = env
        .state(json!({"vms": [{"vmid": 100, "ha": {}}, {"vmid": 101, "ha": {"enabled": false}}]}));
    let r = env.apply(&hand).await;
    assert!(!r.ok);
    assert!(ha_of(&env, "vm:101").is_some(), "{}", dump(&r));
    assert!(
        dump(&r).contains(
            "op-dbus did not add that HA resource: remove it by hand (`ha-manager remove vm:101`)"
        ),
        "{}",
        dump(&r)
    );
    let off = env.state(json!({"vms": [
        {"vmid": 100, "ha": {"enabled": false}},
        {"vmid": 110, "state": "absent"}
    ]}));
    let r = env.apply(&off).await;
    assert!(r.ok, "{}", dump(&r));
    assert!(ha_of(&env, "vm:100").is_none(), "{}", dump(&r));
    assert!(
        ha_of(&env, "vm:110").is_none() && env.sim.guest(110).is_none(),
        "{}",
        dump(&r)
    );
    assert!(ha_of(&env, "vm:101").is_some(), "{}", dump(&r));
    // VM 100 is no HA resource now: op-dbus starts and stops it again.
    assert!(env.sim.guest(100).unwrap().running);
}

/// Two HA resources written at once contend for PVE's HA domain lock
/// ("cfs-lock 'domain-ha' error: got lock request timeout"): the error is
/// retryable and both end right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ha_resources_at_once_under_lock_contention_both_end_right() {
    let env = Env::new(Timing {
        task: Duration::from_millis(400),
        lock_wait: Duration::from_millis(100),
    });
    let state = env.state(json!({"vms": [
        {"vmid": 120, "cores": 1, "ha": {"max_restart": 2}},
        {"vmid": 121, "cores": 1, "ha": {"max_restart": 2}}
    ]}));
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    for sid in ["vm:120", "vm:121"] {
        assert_eq!(ha_of(&env, sid).unwrap()["max_restart"], "2", "{sid}");
    }
    let ha: Vec<_> = r.plugins[0]
        .actions
        .iter()
        .filter(|a| a.action == "create-ha-resource")
        .collect();
    assert_eq!(ha.len(), 2, "{}", dump(&r));
    assert!(
        ha.iter().all(|a| a.result == "ok") && ha.iter().any(|a| a.attempt >= 2),
        "no HA lock contention happened or it was not retried: {}",
        dump(&r)
    );
}

/// Cluster membership: queried and reported; a join is refused, naming
/// what is missing, until the state gives peer, fingerprint and a
/// root-only password file; then the join is sent and its task polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_is_refused_until_the_state_gives_what_it_needs() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(fast());
    let fp = "ab:".repeat(31) + "ab";
    env.sim.world.lock().unwrap().joinable = Some(pve_sim::Joinable {
        cluster: "prod".into(),
        peer_name: "pve1".into(),
        peer: "192.168.1.11".into(),
        fingerprint: fp.to_ascii_uppercase(),
        password: "peer-root-secret".into(),
    });
    let partial = env.state(json!({"cluster": {"enabled": true, "name": "prod",
        "nodes": [{"name": "pve1", "ip": "192.168.1.11"}], "join": {"fingerprint": fp}}}));
    let r = env.apply(&partial).await;
    assert!(!r.ok);
    let text = dump(&r);
    assert!(
        text.contains("node pve is a standalone node and the state puts it in cluster prod; joining needs what the state does not give: /plugins/proxmox/cluster/join/password_file"),
        "{text}"
    );
    assert!(
        !text.contains("join/peer"),
        "the peer comes from nodes: {text}"
    );
    assert_eq!(env.sim.writes(), 0);

    let pw = env.dir.path().join("pve-root-password");
    std::fs::write(&pw, "peer-root-secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let full = env.state(json!({"cluster": {"enabled": true, "name": "prod",
        "nodes": [{"name": "pve1", "ip": "192.168.1.11"}],
        "join": {"fingerprint": fp, "password_file": pw.to_str().unwrap()}}}));
    let r = env.apply(&full).await;
    assert!(!r.ok);
    assert!(
        dump(&r).contains("readable by group or others"),
        "{}",
        dump(&r)
    );
    assert_eq!(
        env.sim.writes(),
        0,
        "a join was sent with a world-readable password"
    );

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = env.apply(&full).await;
    assert!(r.ok, "{}", dump(&r));
    assert_eq!(
        env.sim.world.lock().unwrap().cluster.as_deref(),
        Some("prod")
    );
    let text = dump(&r);
    assert!(
        !text.contains("peer-root-secret"),
        "the password leaked: {text}"
    );
    {
        let w = env.sim.world.lock().unwrap();
        let join = w
            .tasks
            .values()
            .find(|t| t.upid.contains(":clusterjoin:"))
            .unwrap();
        assert!(join.done && join.exitstatus == "OK", "{join:?}");
    }
    // Membership is queried and reported: the peer is a member now.
    let p = env.engine.plugin("proxmox").unwrap();
    let ctx = env.ctx();
    let desired = p.desired_json(&full.state).unwrap().unwrap();
    let current = p.query_json(&ctx, &desired).await.unwrap();
    assert_eq!(current["cluster"]["name"], "prod");
    assert_eq!(current["cluster"]["config_nodes"], json!(["pve", "pve1"]));
    let writes = env.sim.writes();
    let again = env.apply(&full).await;
    assert_eq!(
        outcome(&again),
        PluginOutcome::Unchanged,
        "{}",
        dump(&again)
    );
    assert_eq!(env.sim.writes(), writes);
}

/// A join the peer refuses fails with the task's log in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_join_puts_the_task_log_in_the_error() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new(fast());
    let fp = "CD:".repeat(31) + "CD";
    env.sim.world.lock().unwrap().joinable = Some(pve_sim::Joinable {
        cluster: "prod".into(),
        peer_name: "pve1".into(),
        peer: "192.168.1.11".into(),
        fingerprint: fp.clone(),
        password: "right".into(),
    });
    let pw = env.dir.path().join("pw");
    std::fs::write(&pw, "wrong\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let st = env.state(json!({"cluster": {"enabled": true, "name": "prod",
        "join": {"peer": "192.168.1.11", "fingerprint": fp, "password_file": pw.to_str().unwrap()}}}));
    let r = env.apply(&st).await;
    assert!(!r.ok);
    let text = dump(&r);
    assert!(
        text.contains("401 authentication failure") && text.contains("TASK ERROR"),
        "{text}"
    );
    assert!(env.sim.world.lock().unwrap().cluster.is_none());
}

/// `state-examples/proxmox-fleet.json` (seed 002, example 3: a VM pinned
/// to a node with HA) applies on a member of its cluster; a second apply
/// sends no write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_example_with_ha_applies_and_a_second_apply_writes_nothing() {
    let env = Env::new(fast());
    {
        let mut w = env.sim.world.lock().unwrap();
        w.cluster = Some("prod-cluster".into());
        w.members = vec![("pve1".into(), "192.168.1.10".into())];
        w.ha_groups = vec!["web-servers".into()];
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/proxmox-fleet.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let state = env.state(v["plugins"]["proxmox"].clone());
    let r = env.apply(&state).await;
    assert!(r.ok, "{}", dump(&r));
    let h = ha_of(&env, "vm:100").unwrap();
    assert_eq!(
        (
            h["group"].as_str(),
            h["max_relocate"].as_str(),
            h["state"].as_str()
        ),
        ("web-servers", "1", "started")
    );
    assert!(env.sim.guest(100).unwrap().running);
    let log = env.sim.world.lock().unwrap().log.clone();
    assert!(
        log.iter().any(|l| l.starts_with("POST /nodes/pve1/qemu ")),
        "{log:?}"
    );
    let writes = env.sim.writes();
    let again = env.apply(&state).await;
    assert_eq!(
        outcome(&again),
        PluginOutcome::Unchanged,
        "{}",
        dump(&again)
    );
    assert_eq!(env.sim.writes(), writes, "a re-apply wrote to the API");
}

/// `state: absent` on a storage definition removes one op-dbus made (the
/// data stays) and refuses one it did not make.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_storage_is_removed_only_when_op_dbus_made_it() {
    let env = Env::new(fast());
    let nfs = json!({"id": "nfs-backup", "type": "nfs", "server": "192.168.1.100",
                     "export": "/mnt/backups", "content": ["backup"]});
    assert!(
        env.apply(&env.state(json!({"storage": [nfs.clone()]})))
            .await
            .ok
    );
    let mut gone = nfs.clone();
    gone["state"] = json!("absent");
    let local = json!({"id": "local", "type": "dir", "state": "absent"});
    let r = env
        .apply(&env.state(json!({"storage": [gone.clone(), local]})))
        .await;
    assert!(!r.ok);
    assert!(
        dump(&r).contains("the state marks storage local absent, but op-dbus did not define it"),
        "{}",
        dump(&r)
    );
    // The refusal rolled the transaction back: nfs-backup is defined again.
    assert!(
        env.sim
            .world
            .lock()
            .unwrap()
            .storage
            .contains_key("nfs-backup"),
        "{}",
        dump(&r)
    );
    let r = env.apply(&env.state(json!({"storage": [gone]}))).await;
    assert!(r.ok, "{}", dump(&r));
    let w = env.sim.world.lock().unwrap();
    assert!(!w.storage.contains_key("nfs-backup") && w.storage.contains_key("local"));
}
