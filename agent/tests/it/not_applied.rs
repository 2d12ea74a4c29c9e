//! The real binary on a state with sections this version does not apply
//! (LXC containers in the list form, a KVM VM; audit switched
//! off, which is applied: no audit log): `validate` warns by pointer and fails with --strict,
//! `diff` and `apply` list them under "not applied", `apply` and `run` exit
//! 3 unless `--allow-unapplied`, and the OPDBUS-RESULT line carries the list.

use std::path::PathBuf;
use std::process::{Command, Output};

const STATE: &str = r#"{
  "version": 1,
  "plugins": {
    "opdbus": {
      "root": "/var/lib/op-dbus",
      "subvolumes": {"@cache": {}}, "plugins": [], "sockets": false,
      "audit": {"enabled": false}
    },
    "lxc": {"containers": [{"id": "100", "veth": "veth100"}]},
    "kvm": {"vms": {"db": {"cores": 2, "memory": 2048}}}
  }
}
"#;

const POINTERS: &[&str] = &[
    "/plugins/lxc/containers/0/id",
    "/plugins/lxc/containers/0/veth",
    "/plugins/kvm",
];

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state_dir: PathBuf,
    state: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/machine-id"), "aaaa\n").unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, STATE).unwrap();
    Fixture {
        state_dir: dir.path().join("state"),
        root,
        state,
        _dir: dir,
    }
}

impl Fixture {
    fn agent(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"));
        c.arg("--state-dir").arg(&self.state_dir);
        for a in args {
            if *a == "STATE" {
                c.arg(&self.state);
            } else {
                c.arg(a);
            }
        }
        c.arg("--root").arg(&self.root).output().unwrap()
    }

    fn status(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("status")
            .args(args)
            .output()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn pointers(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not_applied is not a list: {v}"))
        .iter()
        .map(|u| u["pointer"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn apply_exits_3_and_lists_what_it_did_not_apply() {
    let f = fixture();
    let out = f.agent(&["apply", "STATE", "--json"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(pointers(&report["not_applied"]), POINTERS);
    assert_eq!(report["not_applied"][0]["plugin"], "lxc");
    // What is applied still is.
    assert!(f.root.join("var/lib/op-dbus/@cache").is_dir());

    let out = f.agent(&["apply", "STATE"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("\nnot applied:\n"), "{text}");
    assert!(
        text.contains(
            "\n  /plugins/lxc/containers/0/id: not applied by this version of op-dbus; the list form of containers"
        ),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("3 part(s) of the state not applied by this version (exit 3)")
            && err.contains("--allow-unapplied"),
        "{err}"
    );
}

#[test]
fn allow_unapplied_accepts_them_and_still_lists_them() {
    let f = fixture();
    let out = f.agent(&["apply", "STATE", "--json", "--allow-unapplied"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["allow_unapplied"], true);
    assert_eq!(pointers(&report["not_applied"]), POINTERS);
    // audit.enabled false: the apply changed the host and recorded nothing.
    assert!(f.root.join("var/lib/op-dbus/@cache").is_dir());
    assert!(
        !opdbus_agent::audit::db_path(&f.state_dir).exists(),
        "audit.enabled false must keep no audit log"
    );
}

#[test]
fn apply_of_one_plugin_reports_only_that_plugins_parts_and_audit_off_is_applied() {
    let f = fixture();
    let out = f.agent(&["apply", "STATE", "--json", "--plugin", "storage"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pointers(&report["not_applied"]), [] as [&str; 0]);
}

#[test]
fn diff_lists_them_under_not_applied() {
    let f = fixture();
    let out = f.agent(&["diff", "STATE", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let diff: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pointers(&diff["not_applied"]), POINTERS);
    assert_eq!(diff["plugins"][0]["plugin"], "storage");

    let text = stdout(&f.agent(&["diff", "STATE"]));
    assert!(
        text.ends_with("1 action(s), 3 part(s) not applied\n"),
        "{text}"
    );
}

#[test]
fn run_exits_3_and_the_result_line_carries_the_list() {
    let f = fixture();
    let out = f.agent(&["run", "--once", "--state", "STATE"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // The reconcile finished: it does not run again at the next boot.
    assert!(f.state_dir.join("first-boot.done").is_file());
    assert_eq!(f.status(&[]).status.code(), Some(3));
    let text = stdout(&f.status(&[]));
    assert!(
        text.starts_with("status: done\nnot applied:\n  /plugins/lxc/containers/0/id: "),
        "{text}"
    );
    let line = stdout(&f.status(&["--result-line"]));
    let json = line
        .strip_prefix("OPDBUS-RESULT ")
        .unwrap_or_else(|| panic!("{line}"));
    let result: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(result["status"], "done");
    assert_eq!(pointers(&result["not_applied"]), POINTERS);

    let out = f.agent(&[
        "run",
        "--once",
        "--force",
        "--allow-unapplied",
        "--state",
        "STATE",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(f.status(&[]).status.code(), Some(0));
    let line = stdout(&f.status(&["--result-line"]));
    assert!(
        line.contains("\"not_applied\":[{\"pointer\":\"/plugins/lxc/containers/0/id\""),
        "{line}"
    );
}

#[test]
fn validate_warns_by_pointer_and_strict_fails() {
    let f = fixture();
    let validate = |strict: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"));
        c.arg("validate").arg(&f.state);
        if strict {
            c.arg("--strict");
        }
        c.output().unwrap()
    };
    let file = f.state.display().to_string();
    let out = validate(false);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "{file}:9:35: /plugins/lxc/containers/0/id: warning: not applied by this version of op-dbus; the list form"
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!("{file}: valid, 3 warning(s)\n")),
        "{text}"
    );
    let out = validate(true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stdout(&out).ends_with(&format!(
            "{file}: invalid: 3 warning(s), fatal with --strict\n"
        )),
        "{out:?}"
    );
}
