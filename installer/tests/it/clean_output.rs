//! Errors of the real `op-dbus-install` on stderr (a pipe here): plain text,
//! each cause and each path named once.

use std::path::Path;
use std::process::{Command, Stdio};

fn run(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_op-dbus-install"))
        .current_dir(&root)
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("running op-dbus-install");
    assert_eq!(out.status.code(), Some(1), "{args:?} must fail");
    String::from_utf8(out.stderr).expect("UTF-8 stderr")
}

#[test]
fn a_missing_state_file_is_named_once_with_its_cause_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing-state.json");
    let missing = missing.to_str().expect("UTF-8 path");
    let output = dir.path().join("payload.tar.zst");
    let output = output.to_str().expect("UTF-8 path");
    for args in [
        vec!["payload", "--state", missing, "--output", output],
        vec!["plan", missing],
    ] {
        let stderr = run(&args);
        assert!(!stderr.as_bytes().contains(&0x1b), "ESC in {stderr:?}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("op-dbus-install: error: "))
            .unwrap_or_else(|| panic!("{args:?}: no error line:\n{stderr}"));
        assert_eq!(line.matches(missing).count(), 1, "{args:?}: {line}");
        assert_eq!(
            line.matches("No such file or directory (os error 2)")
                .count(),
            1,
            "{args:?}: {line}"
        );
    }
}
