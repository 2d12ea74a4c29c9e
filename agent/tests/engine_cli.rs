//! The real binary: `status [--wait]` exit codes and `run --once` with the
//! first-boot marker tied to /etc/machine-id.
#![allow(clippy::unwrap_used)]

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
