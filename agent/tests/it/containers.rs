//! Containers from btrfs templates, for real: a loop-backed btrfs, a
//! busybox-static template, LXC containers on a bridge inside a network
//! namespace (the agent and every lxc-* tool run in it, with the host's
//! cgroup hierarchy bound back over the namespace's fresh /sys). Privileged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::dbus_daemon;
use crate::fake_systemd;
use crate::netns;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use netns::NetNs;
use opdbus_common::Task;

/// One LXC world at a time: containers, cgroups and loop devices are shared.
static SERIAL: Mutex<()> = Mutex::new(());

/// A btrfs on a loop device mounted in a temp dir, the cgroup bind and a
/// namespace with bridge `brt` (10.250.0.1/24). Drop kills the containers,
/// unmounts, detaches and deletes everything.
struct World {
    dir: tempfile::TempDir,
    mnt: PathBuf,
    cg: PathBuf,
    loopdev: String,
    ns: NetNs,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("btrfs.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(512 << 20)
            .unwrap();
        let loopdev = Task::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .read()
            .unwrap()
            .trim()
            .to_string();
        let mnt = dir.path().join("mnt");
        let cg = dir.path().join("cg");
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::create_dir_all(&cg).unwrap();
        let ns = NetNs::new();
        let w = World {
            dir,
            mnt,
            cg,
            loopdev,
            ns,
        };
        Task::new("mkfs.btrfs")
            .args(["-q", &w.loopdev])
            .run()
            .unwrap();
        Task::new("mount")
            .arg(&w.loopdev)
            .arg(&w.mnt)
            .run()
            .unwrap();
        Task::new("mount")
            .arg("--rbind")
            .arg("/sys/fs/cgroup")
            .arg(&w.cg)
            .run()
            .unwrap();
        Task::new("mount")
            .args(["--make-rslave"])
            .arg(&w.cg)
            .run()
            .unwrap();
        w.ns.ip(&["link", "add", "brt", "type", "bridge"]);
        w.ns.ip(&["addr", "add", "10.250.0.1/24", "dev", "brt"]);
        w.ns.ip(&["link", "set", "brt", "up"]);
        w
    }

    fn layout(&self) -> PathBuf {
        self.mnt.join("layout")
    }
    fn lxc_path(&self) -> PathBuf {
        self.mnt.join("lxc")
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `cmd args` inside the namespace, with the host's cgroups in place.
    fn in_ns(&self, program: &Path, args: &[&str]) -> Output {
        let script = format!(
            "mount --rbind '{}' /sys/fs/cgroup && exec \"$@\"",
            self.cg.display()
        );
        Command::new("ip")
            .args(["netns", "exec", self.ns.name(), "sh", "-c", &script, "sh"])
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    }

    /// The agent with this world's layout, lxc path and state dir.
    fn agent(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--layout".to_string(),
            self.layout().display().to_string(),
            "--lxc-path".to_string(),
            self.lxc_path().display().to_string(),
            "--state-dir".to_string(),
            self.state_dir().display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.in_ns(Path::new(env!("CARGO_BIN_EXE_op-dbus-agent")), &refs)
    }

    fn agent_ok(&self, args: &[&str]) -> String {
        let out = self.agent(args);
        assert!(
            out.status.success(),
            "op-dbus-agent {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn lxc(&self, tool: &str, name: &str, extra: &[&str]) -> Output {
        let lxc = self.lxc_path().display().to_string();
        let mut args = vec!["-n", name, "-P", &lxc];
        args.extend_from_slice(extra);
        self.in_ns(Path::new(tool), &args)
    }

    /// `ping -c1` from inside container `name`.
    fn ping(&self, name: &str, addr: &str) -> bool {
        self.lxc("lxc-attach", name, &["--", "ping", "-c1", "-W2", addr])
            .status
            .success()
    }

    fn containers(&self) -> serde_json::Value {
        serde_json::from_str(&self.agent_ok(&["container", "list", "--json"])).unwrap()
    }

    fn container(&self, name: &str) -> serde_json::Value {
        self.containers()
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }

    /// A busybox-static root filesystem: init respawns a sleep, SIGPWR
    /// (lxc-stop) powers it off.
    fn busybox_tree(&self) -> PathBuf {
        let r = self.dir.path().join("busybox-root");
        for d in [
            "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for app in ["sh", "ip", "ping", "sleep", "cat", "ls", "poweroff"] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(app)).unwrap();
        }
        std::os::unix::fs::symlink("../bin/busybox", r.join("sbin/init")).unwrap();
        std::fs::write(
            r.join("etc/inittab"),
            "::sysinit:/bin/true\n::respawn:/bin/sleep 2147483647\n",
        )
        .unwrap();
        r
    }

    fn make_template(&self) -> String {
        let tree = self.busybox_tree();
        self.agent_ok(&["template", "create", "bb", "--from", tree.to_str().unwrap()]);
        let list: serde_json::Value =
            serde_json::from_str(&self.agent_ok(&["template", "list", "--json"])).unwrap();
        let bb = &list[0];
        assert_eq!(bb["name"], "bb");
        assert_eq!(bb["rootfs"]["read_only"], true, "{list}");
        bb["rootfs"]["uuid"].as_str().unwrap().to_string()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.lxc_path()) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let _ = self.lxc("lxc-stop", &name, &["-k"]);
            }
        }
        let _ = Command::new("umount").arg("-R").arg(&self.cg).status();
        if Command::new("umount").arg(&self.mnt).status().is_err() {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
        // LXC leaves an empty lxc.pivot cgroup in every hierarchy.
        if let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hier.flatten() {
                let _ = std::fs::remove_dir(h.path().join("lxc.pivot"));
            }
        }
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
#[ignore = "privileged: loop device, btrfs, network namespace, LXC"]
fn two_containers_on_a_bridge_from_a_btrfs_template() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new();
    let tpl_uuid = w.make_template();

    for (name, ip) in [("c1", "10.250.0.11"), ("c2", "10.250.0.12")] {
        let net = format!("bridge=brt,ip={ip}/24,gw=10.250.0.1");
        w.agent_ok(&[
            "container",
            "create",
            name,
            "--template",
            "bb",
            "--network",
            &net,
            "--memory",
            "64M",
            "--cpus",
            "1",
            "--start",
        ]);
    }
    for name in ["c1", "c2"] {
        let c = w.container(name);
        assert_eq!(c["status"], "running", "{c}");
        assert_eq!(c["owned"], true, "{c}");
        assert_eq!(c["template"], "bb", "{c}");
        assert_eq!(c["subvolume"]["parent_uuid"], tpl_uuid.as_str(), "{c}");
        assert_eq!(c["subvolume"]["read_only"], false, "{c}");
        assert_eq!(c["memory"], 64 << 20, "{c}");
    }
    // Both reach each other and the bridge.
    assert!(w.ping("c1", "10.250.0.12"), "c1 cannot reach c2");
    assert!(w.ping("c2", "10.250.0.11"), "c2 cannot reach c1");
    assert!(w.ping("c1", "10.250.0.1"), "c1 cannot reach the bridge");
    assert!(w.ping("c2", "10.250.0.1"), "c2 cannot reach the bridge");
    // The memory limit reached the cgroup (v1 here, v2 elsewhere).
    let v1 = Path::new("/sys/fs/cgroup/memory/lxc.payload.c1/memory.limit_in_bytes");
    let v2 = Path::new("/sys/fs/cgroup/lxc.payload.c1/memory.max");
    let limit = std::fs::read_to_string(v1)
        .or_else(|_| std::fs::read_to_string(v2))
        .unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());

    // An existing name is an error.
    let again = w.agent(&["container", "create", "c1", "--template", "bb"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // Stop, start.
    w.agent_ok(&["container", "stop", "c1"]);
    assert_eq!(w.container("c1")["status"], "stopped");
    w.agent_ok(&["container", "start", "c1"]);
    assert_eq!(w.container("c1")["status"], "running");
    assert!(
        w.ping("c1", "10.250.0.12"),
        "c1 cannot reach c2 after a restart"
    );

    // A container op-dbus did not create is not deleted.
    let foreign = w.lxc_path().join("foreign");
    std::fs::create_dir_all(foreign.join("rootfs")).unwrap();
    std::fs::write(foreign.join("config"), "lxc.uts.name = foreign\n").unwrap();
    let refused = w.agent(&["container", "delete", "foreign"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("was not created by op-dbus"),
        "{}",
        stderr(&refused)
    );
    assert!(foreign.join("config").exists() && foreign.join("rootfs").exists());
    assert_eq!(w.container("foreign")["owned"], false);

    // Delete removes the snapshot and config, never the template.
    w.agent_ok(&["container", "delete", "c1"]);
    w.agent_ok(&["container", "delete", "c2"]);
    assert!(!w.lxc_path().join("c1").exists() && !w.lxc_path().join("c2").exists());
    let tpl_root = w.layout().join("@templates/bb/rootfs");
    assert!(
        tpl_root.join("bin/busybox").exists(),
        "template rootfs damaged"
    );
    assert!(w.lxc_path().join("foreign/config").exists());
}

#[test]
#[ignore = "privileged: loop device, btrfs, LXC"]
fn create_refuses_bad_names_missing_templates_and_another_filesystem() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new();
    w.make_template();
    let bad = w.agent(&["container", "create", "../etc", "--template", "bb"]);
    assert!(
        stderr(&bad).contains("invalid container name"),
        "{}",
        stderr(&bad)
    );
    let missing = w.agent(&["container", "create", "x", "--template", "nope"]);
    assert!(
        stderr(&missing).contains("no template \"nope\""),
        "{}",
        stderr(&missing)
    );
    assert!(
        stderr(&missing).contains("templates: bb"),
        "{}",
        stderr(&missing)
    );
    // --lxc-path on a filesystem that is not the layout's btrfs.
    let other = w.dir.path().join("not-btrfs");
    let out = w.in_ns(
        Path::new(env!("CARGO_BIN_EXE_op-dbus-agent")),
        &[
            "--layout",
            w.layout().to_str().unwrap(),
            "--lxc-path",
            other.to_str().unwrap(),
            "--state-dir",
            w.state_dir().to_str().unwrap(),
            "container",
            "create",
            "x",
            "--template",
            "bb",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not on btrfs"), "{}", stderr(&out));
    assert!(
        !other.join("x").exists(),
        "a failed create left {}",
        other.join("x").display()
    );
}

/// A state naming containers `(name, ip, memory, state)` on `brt`.
fn lxc_state(w: &World, containers: &[(&str, &str, &str, &str)]) -> PathBuf {
    let mut map = serde_json::Map::new();
    for (name, ip, memory, state) in containers {
        map.insert(
            name.to_string(),
            serde_json::json!({
                "template": "bb",
                "config": {"memory": memory, "cpus": 1,
                           "network": {"bridge": "brt", "ip": format!("{ip}/24"), "gateway": "10.250.0.1"}},
                "autostart": true,
                "state": state
            }),
        );
    }
    let doc = serde_json::json!({"version": 1, "plugins": {"lxc": {"containers": map}}});
    let path = w.dir.path().join("state.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    path
}

/// `apply --plugin lxc --json STATE`: the exit status and the lxc plugin's
/// action kinds.
fn apply(w: &World, state: &Path) -> (bool, Vec<String>, String) {
    let out = w.agent(&[
        "apply",
        "--plugin",
        "lxc",
        "--json",
        state.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "apply report: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    let kinds = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["plugin"] == "lxc")
        .flat_map(|p| p["actions"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            format!(
                "{} {}",
                a["action"].as_str().unwrap(),
                a["resource"].as_str().unwrap()
            )
        })
        .collect();
    (
        out.status.success(),
        kinds,
        format!("{report}\n{}", stderr(&out)),
    )
}

#[test]
#[ignore = "privileged: loop device, btrfs, network namespace, LXC"]
fn the_lxc_plugin_creates_reconfigures_stops_and_deletes_only_its_own() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let w = World::new();
    let tpl_uuid = w.make_template();
    // A container made by hand, not by op-dbus.
    let foreign = w.lxc_path().join("foreign");
    std::fs::create_dir_all(foreign.join("rootfs")).unwrap();
    std::fs::write(foreign.join("config"), "lxc.uts.name = foreign\n").unwrap();

    let s1 = lxc_state(
        &w,
        &[
            ("p1", "10.250.0.21", "64M", "started"),
            ("p2", "10.250.0.22", "64M", "started"),
        ],
    );
    let (ok, kinds, log) = apply(&w, &s1);
    assert!(ok, "{log}");
    assert_eq!(
        kinds,
        [
            "create-container container:p1",
            "create-container container:p2"
        ],
        "{log}"
    );
    for name in ["p1", "p2"] {
        let c = w.container(name);
        assert_eq!(c["status"], "running", "{c}");
        assert_eq!(c["subvolume"]["parent_uuid"], tpl_uuid.as_str(), "{c}");
        assert_eq!(c["autostart"], true, "{c}");
    }
    assert!(w.ping("p1", "10.250.0.22") && w.ping("p2", "10.250.0.21"));
    assert!(w.ping("p1", "10.250.0.1"));

    // Re-apply: nothing to do.
    let (ok, kinds, log) = apply(&w, &s1);
    assert!(
        ok && kinds.is_empty(),
        "re-apply was not a no-op: {kinds:?} {log}"
    );

    // The network plugin pruning the bridge the containers hang on leaves
    // their veths on it.
    let net = w.dir.path().join("net.json");
    std::fs::write(
        &net,
        r#"{"version": 1, "plugins": {"network": {"prune": true,
            "interfaces": {"brt": {"type": "bridge", "address": "10.250.0.1/24"}}}}}"#,
    )
    .unwrap();
    let out = w.agent(&["apply", "--plugin", "network", net.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ports = w.ns.ip(&["-j", "link", "show", "master", "brt"]);
    let ports: serde_json::Value = serde_json::from_str(&ports).unwrap();
    assert_eq!(
        ports.as_array().unwrap().len(),
        2,
        "container veths detached: {ports}"
    );
    assert!(
        w.ping("p1", "10.250.0.22"),
        "p1 lost p2 after a network prune"
    );

    // Stop one, reconfigure the other (restarted with the new limit).
    let s2 = lxc_state(
        &w,
        &[
            ("p1", "10.250.0.21", "64M", "stopped"),
            ("p2", "10.250.0.22", "96M", "started"),
        ],
    );
    let (ok, kinds, log) = apply(&w, &s2);
    assert!(ok, "{log}");
    assert_eq!(
        kinds,
        [
            "stop-container container:p1",
            "reconfigure-container container:p2"
        ],
        "{log}"
    );
    assert_eq!(w.container("p1")["status"], "stopped");
    let p2 = w.container("p2");
    assert_eq!(
        (p2["status"].as_str(), p2["memory"].as_u64()),
        (Some("running"), Some(96 << 20)),
        "{p2}"
    );
    let (ok, kinds, log) = apply(&w, &s2);
    assert!(ok && kinds.is_empty(), "{kinds:?} {log}");

    // discover describes both (not the foreign one), and diff of it is empty.
    let found = w.dir.path().join("discovered.json");
    let out = w.agent(&[
        "discover",
        "--plugin",
        "lxc",
        "--output",
        found.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&found).unwrap()).unwrap();
    let cs = &doc["plugins"]["lxc"]["containers"];
    assert_eq!(
        (cs["p1"]["state"].as_str(), cs["p2"]["state"].as_str()),
        (Some("stopped"), Some("started")),
        "{doc}"
    );
    assert_eq!(cs["p2"]["config"]["memory"], "96M", "{doc}");
    assert!(cs.get("foreign").is_none(), "{doc}");
    let out = w.agent(&["diff", found.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 action(s), 0 part(s) not applied",
        "{}",
        stderr(&out)
    );

    // Absent: both go; the foreign container and the template stay.
    let s3 = lxc_state(
        &w,
        &[
            ("p1", "10.250.0.21", "64M", "absent"),
            ("p2", "10.250.0.22", "96M", "absent"),
        ],
    );
    let (ok, kinds, log) = apply(&w, &s3);
    assert!(ok, "{log}");
    assert_eq!(
        kinds,
        [
            "delete-container container:p1",
            "delete-container container:p2"
        ],
        "{log}"
    );
    assert!(!w.lxc_path().join("p1").exists() && !w.lxc_path().join("p2").exists());
    assert!(
        foreign.join("config").exists(),
        "the foreign container was removed"
    );
    assert!(w.layout().join("@templates/bb/rootfs/bin/busybox").exists());

    // Naming the foreign one absent is refused as a conflict; it stays.
    let s4 = lxc_state(&w, &[("foreign", "10.250.0.23", "64M", "absent")]);
    let (ok, _, log) = apply(&w, &s4);
    assert!(!ok, "deleting a foreign container succeeded: {log}");
    assert!(log.contains("was not created by op-dbus"), "{log}");
    assert!(foreign.join("config").exists() && foreign.join("rootfs").exists());
}

/// When systemd runs the host, start and stop are `lxc@NAME.service` jobs
/// over D-Bus (a fake systemd on a private bus; tier 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_stop_go_through_lxc_at_name_service_under_systemd() {
    use opdbus_agent::lxc::runner::{self, Via};
    let bus = dbus_daemon::PrivateBus::start().unwrap();
    let fake = fake_systemd::FakeSystemd::serve(bus.address())
        .await
        .unwrap();
    fake.set_job_delay(std::time::Duration::from_millis(1));
    fake.add_unit("lxc@web.service", "inactive", "dead", "static")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctx = opdbus_agent::engine::Context::new(dir.path()).with_bus(bus.connect().await.unwrap());
    let paths = opdbus_agent::lxc::Paths::default();
    let how = runner::start_via(Via::Systemd, Some(&ctx), &paths, "web")
        .await
        .unwrap();
    assert_eq!(how, "via systemd (lxc@web.service)");
    runner::stop_via(Via::Systemd, Some(&ctx), &paths, "web")
        .await
        .unwrap();
    let calls = fake.calls();
    assert!(
        calls.contains(&"StartUnit(lxc@web.service, replace)".to_string()),
        "{calls:?}"
    );
    assert!(
        calls.contains(&"StopUnit(lxc@web.service, replace)".to_string()),
        "{calls:?}"
    );
    // A failing job is an error naming the unit.
    fake.set_job_result("lxc@web.service", "failed");
    let err = runner::start_via(Via::Systemd, Some(&ctx), &paths, "web")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("lxc@web.service"), "{err:#}");
}

/// `/etc/subuid` and `/etc/subgid` as they are (`None`: missing).
fn subids() -> (Option<String>, Option<String>) {
    let r = |f: &str| std::fs::read_to_string(f).ok();
    (r("/etc/subuid"), r("/etc/subgid"))
}

#[test]
#[ignore = "privileged: loop device, btrfs, network namespace, LXC, /etc/subuid (its own line only)"]
fn an_unprivileged_container_runs_its_init_as_the_mapped_host_uid() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let before = subids();
    let w = World::new();
    let tpl_uuid = w.make_template();
    w.agent_ok(&[
        "container",
        "create",
        "u1",
        "--template",
        "bb",
        "--network",
        "bridge=brt,ip=10.250.0.31/24",
        "--unprivileged",
        "--start",
    ]);
    let c = w.container("u1");
    assert_eq!(c["status"], "running", "{c}");
    assert_eq!(c["unprivileged"], true, "{c}");
    assert_eq!(c["subvolume"]["parent_uuid"], tpl_uuid.as_str(), "{c}");
    // Its init is host uid/gid 100000, root inside.
    let pid = w.lxc("lxc-info", "u1", &["-p", "-H"]);
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (field("Uid:"), field("Gid:")),
        ("100000".to_string(), "100000".to_string())
    );
    let inside = w.lxc("lxc-attach", "u1", &["--", "cat", "/proc/self/uid_map"]);
    let map = String::from_utf8_lossy(&inside.stdout).to_string();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536"],
        "{map}"
    );
    // The rootfs was not chowned: an idmapped mount shows the template's
    // root-owned files as the container's root.
    let rootfs = w.lxc_path().join("u1/rootfs/bin/busybox");
    assert_eq!(std::fs::metadata(&rootfs).unwrap().uid(), 0);
    let ls = w.lxc("lxc-attach", "u1", &["--", "ls", "-ln", "/bin/busybox"]);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.split_whitespace().nth(2) == Some("0"), "{ls}");
    assert!(w.ping("u1", "10.250.0.1"), "u1 cannot reach the bridge");
    // The id range is reserved for root.
    let (uid, gid) = subids();
    let (uid, gid) = (uid.unwrap_or_default(), gid.unwrap_or_default());
    let reserved = |t: &str, was: &Option<String>| {
        t.lines().any(|l| l == "root:100000:65536")
            || was
                .as_deref()
                .is_some_and(|w| w.lines().any(|l| l.starts_with("root:")))
    };
    assert!(reserved(&uid, &before.0), "{uid}");
    assert!(reserved(&gid, &before.1), "{gid}");

    // Deleting op-dbus's last unprivileged container removes only its lines.
    w.agent_ok(&["container", "delete", "u1"]);
    assert_eq!(subids(), before);
}
