//! The real binary: `status [--wait]` exit codes and `run --once` with the
//! first-boot marker tied to /etc/machine-id.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use opdbus_agent::engine::{Phase, Status};

fn agent(state_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"));
    c.arg("--state-dir").arg(state_dir);
    c
}

fn write_status(dir: &Path, phase: Phase, pid: Option<u32>) {
    let mut s = Status::fatal("boom: plugin 'users' failed on user:admin".into());
    s.status = phase;
    s.pid = pid;
    if phase != Phase::Failed {
        s.errors.clear();
    }
    s.write(dir).unwrap();
}

#[test]
fn status_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let code = |args: &[&str]| {
        agent(dir.path())
            .arg("status")
            .args(args)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(code(&[]), Some(2), "no status file yet: not done");
    write_status(dir.path(), Phase::Done, None);
    assert_eq!(code(&[]), Some(0));
    write_status(dir.path(), Phase::Failed, None);
    assert_eq!(code(&[]), Some(1));
    write_status(dir.path(), Phase::Running, Some(std::process::id()));
    assert_eq!(code(&[]), Some(2));
    // A running status whose process is gone counts as failed.
    write_status(dir.path(), Phase::Running, Some(u32::MAX - 1));
    assert_eq!(code(&[]), Some(1));
    let out = agent(dir.path())
        .args(["status", "--result-line"])
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(
        line.starts_with("OPDBUS-RESULT {\"status\":\"failed\""),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
}

#[test]
fn status_wait_blocks_until_done() {
    let dir = tempfile::tempdir().unwrap();
    write_status(dir.path(), Phase::Running, Some(std::process::id()));
    let mut child = agent(dir.path())
        .args(["status", "--wait"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "status --wait returned while running"
    );
    write_status(dir.path(), Phase::Done, None);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    // --timeout gives up with 2.
    write_status(dir.path(), Phase::Running, Some(std::process::id()));
    let code = agent(dir.path())
        .args(["status", "--wait", "--timeout", "1"])
        .status()
        .unwrap()
        .code();
    assert_eq!(code, Some(2));
}

#[test]
fn run_once_respects_the_first_boot_marker() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/machine-id"), "aaaa\n").unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(
        &state,
        r#"{"version":1,"plugins":{"opdbus":{"root":"/var/lib/op-dbus","subvolumes":{"@cache":{},"@state":{}}}}}"#,
    )
    .unwrap();
    let run = || {
        agent(&state_dir)
            .args(["run", "--once", "--state"])
            .arg(&state)
            .arg("--root")
            .arg(&root)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(run(), Some(0));
    assert!(root.join("var/lib/op-dbus/@cache").is_dir());
    assert_eq!(
        std::fs::read_to_string(state_dir.join("first-boot.done")).unwrap(),
        "aaaa\n"
    );
    let status = Status::read(&state_dir).unwrap().unwrap();
    assert_eq!(status.status, Phase::Done);
    assert_eq!(
        agent(&state_dir).arg("status").status().unwrap().code(),
        Some(0)
    );

    // A reboot: the marker matches, nothing runs (the removed dir stays gone).
    std::fs::remove_dir(root.join("var/lib/op-dbus/@cache")).unwrap();
    assert_eq!(run(), Some(0));
    assert!(!root.join("var/lib/op-dbus/@cache").exists());
    // A re-installation (new machine id) runs the first reconcile again.
    std::fs::write(root.join("etc/machine-id"), "bbbb\n").unwrap();
    assert_eq!(run(), Some(0));
    assert!(root.join("var/lib/op-dbus/@cache").is_dir());
    assert_eq!(
        std::fs::read_to_string(state_dir.join("first-boot.done")).unwrap(),
        "bbbb\n"
    );
}

/// A root with the account files the users plugin reads and writes.
fn seed_users_root(root: &Path) {
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nsudo:x:27:\n").unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\nsudo:*::\n").unwrap();
    std::fs::write(etc.join("machine-id"), "cccc\n").unwrap();
}

/// Every file under `dir` with its content, for "nothing changed" checks.
fn snapshot(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// States `validate` rejects: a key given twice and a plaintext password.
const DUPLICATE_KEY: &str = r#"{
  "version": 1,
  "plugins": {"users": {"accounts": {
    "admin": {"uid": 1000},
    "admin": {"uid": 0, "password_hash": "!"}
  }}}
}"#;
const PLAINTEXT: &str = r#"{
  "version": 1,
  "plugins": {"users": {"accounts": {
    "admin": {"uid": 1000, "password_hash": "hunter2"}
  }}}
}"#;

/// `diff`, `apply`, `apply --plugin users` and `run --once` refuse both
/// states with `validate`'s lines and leave the root and the state dir as
/// they were.
#[test]
fn every_entry_point_refuses_an_invalid_state() {
    let cases = [
        (
            DUPLICATE_KEY,
            "state.json:5:5: /plugins/users/accounts/admin: duplicate key \"admin\"",
        ),
        (
            PLAINTEXT,
            "state.json:4:45: /plugins/users/accounts/admin/password_hash: plaintext password",
        ),
    ];
    let commands: [&[&str]; 5] = [
        &["diff"],
        &["diff", "--json"],
        &["apply"],
        &["apply", "--plugin", "users"],
        &["run", "--once", "--state"],
    ];
    for (text, expected) in cases {
        for cmd in commands {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            let state_dir = dir.path().join("var");
            seed_users_root(&root);
            let state = dir.path().join("state.json");
            std::fs::write(&state, text).unwrap();
            let before = snapshot(&root);
            let out = agent(&state_dir)
                .current_dir(dir.path())
                .args(cmd)
                .arg("state.json")
                .arg("--root")
                .arg(&root)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let what = format!("{cmd:?} on {text}");
            assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
            assert!(
                stderr.contains("state.json is not a valid state; nothing was changed"),
                "{what}: {stderr}"
            );
            assert!(
                stderr.lines().any(|l| l.starts_with(expected)),
                "{what}: no line starting {expected:?} in\n{stderr}"
            );
            assert_eq!(snapshot(&root), before, "{what}: the root changed");
            assert!(
                !opdbus_agent::audit::db_path(&state_dir).exists(),
                "{what}: an audit record was written"
            );
            assert!(!state_dir.join("first-boot.done").exists(), "{what}");
        }
    }
}

/// Every file under `dir` (recursively), directories included.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A password hash applied under umask 022 appears in no output and no file
/// of the state dir (a fingerprint does); the state dir is 0700 (tightened
/// from 0755), its files 0600.
#[test]
#[ignore = "privileged: the users plugin writes /etc/shadow with its owner in a temp root"]
fn secrets_stay_out_of_outputs_and_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state_dir = dir.path().join("var");
    seed_users_root(&root);
    // Left wide by an older agent or an installer under umask 022.
    std::fs::create_dir_all(state_dir.join("@timing")).unwrap();
    for d in [&state_dir, &state_dir.join("@timing")] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    // A registry no step of this run rewrites, left 0644.
    let registry = state_dir.join("ownership.json");
    std::fs::write(&registry, r#"{"version": 1, "owned": []}"#).unwrap();
    std::fs::set_permissions(
        &registry,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let first = "$6$saltsalt$FirstSecretHashValue0123456789abcdef";
    let second = "$6$saltsalt$SecondSecretHashValue0123456789abcdef";
    let write_state = |hash: &str| {
        std::fs::write(
            dir.path().join("state.json"),
            serde_json::json!({"version": 1, "plugins": {"users": {"accounts": {
                "svc": {"uid": 1500, "system": true, "password_hash": hash}
            }}}})
            .to_string(),
        )
        .unwrap();
    };
    let mut outputs = String::new();
    let mut sh = |args: &[&str]| {
        let out = Command::new("sh")
            .arg("-c")
            .arg("umask 022; exec \"$@\"")
            .arg("sh")
            .arg(env!("CARGO_BIN_EXE_op-dbus-agent"))
            .arg("--state-dir")
            .arg(&state_dir)
            .args(args)
            .arg("--root")
            .arg(&root)
            .current_dir(dir.path())
            .output()
            .unwrap();
        outputs.push_str(&String::from_utf8_lossy(&out.stdout));
        outputs.push_str(&String::from_utf8_lossy(&out.stderr));
        out.status.code()
    };
    write_state(first);
    assert_eq!(sh(&["diff", "--json", "state.json"]), Some(0), "{outputs}");
    assert_eq!(sh(&["apply", "--json", "state.json"]), Some(0), "{outputs}");
    // A changed hash: the first reconcile (status file, marker) sets it.
    write_state(second);
    assert_eq!(sh(&["diff", "--json", "state.json"]), Some(0), "{outputs}");
    assert_eq!(
        sh(&["run", "--once", "--state", "state.json"]),
        Some(0),
        "{outputs}"
    );
    assert_eq!(
        sh(&["query", "--state", "state.json"]),
        Some(0),
        "{outputs}"
    );
    for a in [
        &["audit", "export"][..],
        &["audit", "list", "--json"],
        &["audit", "list"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"))
            .arg("--state-dir")
            .arg(&state_dir)
            .args(a)
            .output()
            .unwrap();
        assert!(out.status.success());
        outputs.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(
        std::fs::read_to_string(root.join("etc/shadow"))
            .unwrap()
            .contains(second),
        "the hash was not applied"
    );
    for hash in [first, second] {
        assert!(
            !outputs.contains(hash),
            "an output holds {hash}:\n{outputs}"
        );
        for f in walk(&state_dir).iter().filter(|p| p.is_file()) {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                !bytes.windows(hash.len()).any(|w| w == hash.as_bytes()),
                "{} holds {hash}",
                f.display()
            );
        }
    }
    // The change stays visible: audit export shows both fingerprints.
    for hash in [first, second] {
        let fp = opdbus_agent::engine::secret::fingerprint(hash);
        assert!(outputs.contains(&fp), "no {fp} in the outputs");
    }
    assert_eq!(mode(&state_dir), 0o700);
    let files = walk(&state_dir);
    assert!(files.iter().any(|p| p.ends_with("@timing/blockchain.db")));
    assert!(files.iter().any(|p| p.ends_with("status.json")));
    assert!(files.iter().any(|p| p.ends_with("first-boot.done")));
    for p in &files {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(p), want, "{}", p.display());
    }
}
