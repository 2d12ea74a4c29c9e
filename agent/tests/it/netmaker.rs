//! The real binary with `plugins.netmaker` in a fake root, with no
//! netclient on PATH: the templates get the enrollment unit (0644), its
//! multi-user.target.wants link and the join key (0600, owned by the
//! agent's user: root in CI); re-apply is a no-op, a loosened key mode is
//! repaired; the host part is reported not applied on this host (exit 3,
//! the OPDBUS-RESULT list); the key appears in no output, report, audit
//! record or file of the state directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEY: &str = "nm-enroll-SECRET-7f3a9c2e41b8";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state_dir: PathBuf,
    state: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for t in ["debian-base", "web"] {
        std::fs::create_dir_all(root.join(format!("var/lib/op-dbus/@templates/{t}/rootfs/etc")))
            .unwrap();
    }
    std::fs::create_dir_all(root.join("etc/op-dbus")).unwrap();
    std::fs::write(root.join("etc/machine-id"), "aaaa\n").unwrap();
    std::fs::write(root.join("etc/op-dbus/netmaker.key"), format!("{KEY}\n")).unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"version": 1, "plugins": {
  "opdbus": {"subvolumes": {"@templates": {}}, "templates": {"web": {"netmaker": true}}},
  "netmaker": {"enabled": true, "server": "https://nm.example.test", "network": "mesh",
               "join_key_file": "/etc/op-dbus/netmaker.key", "templates": ["debian-base"]}
}}"#,
    )
    .unwrap();
    Fixture {
        state_dir: dir.path().join("state"),
        root,
        state,
        _dir: dir,
    }
}

impl Fixture {
    fn agent(&self, args: &[&str], root: bool) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"));
        // A PATH without netclient.
        c.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        c.arg("--state-dir").arg(&self.state_dir);
        for a in args {
            if *a == "STATE" {
                c.arg(&self.state);
            } else {
                c.arg(a);
            }
        }
        if root {
            c.arg("--root").arg(&self.root);
        }
        c.output().unwrap()
    }

    fn rootfs(&self, t: &str) -> PathBuf {
        self.root
            .join(format!("var/lib/op-dbus/@templates/{t}/rootfs"))
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn all_files(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out += &String::from_utf8_lossy(&b);
            }
        }
    }
    out
}

/// The not-applied entries of the netmaker plugin (the template's
/// `suite` of `plugins.opdbus` is another, not yet applied).
fn netmaker_parts(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter(|u| u["plugin"] == "netmaker")
        .cloned()
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn templates_get_unit_and_key_and_the_host_part_is_not_applied_without_netclient() {
    let f = fixture();
    let out = f.agent(&["apply", "STATE", "--json"], true);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains(KEY), "key in apply --json output");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let na = netmaker_parts(&report["not_applied"]);
    assert_eq!(na.len(), 1, "{report}");
    assert_eq!(na[0]["pointer"], "/plugins/netmaker");
    assert_eq!(na[0]["plugin"], "netmaker");
    assert_eq!(na[0]["on_host"], true);
    let fp = opdbus_agent::engine::secret::fingerprint(KEY);
    assert!(report.to_string().contains(&fp), "{report}");

    let me = nix::unistd::geteuid().as_raw();
    for t in ["debian-base", "web"] {
        let r = f.rootfs(t);
        let unit = r.join("etc/systemd/system/netmaker-enroll.service");
        let key = r.join("etc/netmaker/join-key");
        let u = std::fs::read_to_string(&unit).unwrap();
        assert!(
            u.contains("ExecStart=/bin/sh -c 'exec netclient join -t"),
            "{u}"
        );
        assert!(
            u.contains("ConditionPathExists=/etc/netmaker/join-key"),
            "{u}"
        );
        assert_eq!(mode(&unit), 0o644);
        assert_eq!(std::fs::read_to_string(&key).unwrap().trim(), KEY);
        assert_eq!(mode(&key), 0o600);
        assert_eq!(std::fs::metadata(&key).unwrap().uid(), me);
        assert_eq!(mode(&r.join("etc/netmaker")), 0o700);
        assert_eq!(
            std::fs::read_link(
                r.join("etc/systemd/system/multi-user.target.wants/netmaker-enroll.service")
            )
            .unwrap(),
            Path::new("/etc/systemd/system/netmaker-enroll.service")
        );
    }

    // Text output names the host part; exit 3 is documented.
    let out = f.agent(&["apply", "STATE"], true);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out)
            .contains("/plugins/netmaker: not applied on this host; netclient is not on PATH"),
        "{}",
        text(&out)
    );
    let out = f.agent(&["apply", "STATE", "--json"], true);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let acted: Vec<&serde_json::Value> = report["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["actions"].as_array().cloned().unwrap_or_default())
        .map(|_| &serde_json::Value::Null)
        .collect();
    assert!(acted.is_empty(), "re-apply is a no-op: {report}");

    // Drift: a key readable by others is rewritten 0600.
    let key = f.rootfs("web").join("etc/netmaker/join-key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = f.agent(&["diff", "STATE", "--json"], true);
    assert!(!text(&out).contains(KEY));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(d.to_string().contains("install-key"), "{d}");
    assert_eq!(netmaker_parts(&d["not_applied"]).len(), 1, "{d}");
    let out = f.agent(&["apply", "STATE", "--allow-unapplied"], true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(KEY));
    assert_eq!(mode(&key), 0o600);

    // run: exit 3 and the OPDBUS-RESULT line lists the host part.
    let out = f.agent(&["run", "--once", "--force", "--state", "STATE"], true);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains(KEY));
    let line = f.agent(&["status", "--result-line"], false);
    let line = String::from_utf8_lossy(&line.stdout).into_owned();
    let json = line
        .strip_prefix("OPDBUS-RESULT ")
        .unwrap_or_else(|| panic!("{line}"));
    let result: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(netmaker_parts(&result["not_applied"]).len(), 1, "{result}");

    // The audit log and every file of the state directory lack the key.
    let out = f.agent(&["audit", "list"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("install-key"), "{}", text(&out));
    assert!(!text(&out).contains(KEY));
    let out = f.agent(&["audit", "export"], false);
    assert!(!text(&out).contains(KEY));
    assert!(
        !all_files(&f.state_dir).contains(KEY),
        "key in the state directory"
    );
}
