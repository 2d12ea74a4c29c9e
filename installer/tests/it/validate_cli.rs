//! Runs the real `op-dbus-install validate` on a good and a bad state file and
//! checks stdout and the exit status.

use std::path::Path;
use std::process::Command;

fn validate(args: &[&str]) -> (String, Option<i32>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_op-dbus-install"))
        .current_dir(&root)
        .arg("validate")
        .args(args)
        .output()
        .expect("running op-dbus-install");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code(),
    )
}

#[test]
fn good_file_exits_zero() {
    let (stdout, code) = validate(&["state-examples/default.json"]);
    assert_eq!(stdout, "state-examples/default.json: valid\n");
    assert_eq!(code, Some(0));
}

#[test]
fn bad_file_prints_pinned_line_and_exits_one() {
    let bad = "state/tests/fixtures/invalid/gateway_outside_subnet/state.json";
    let (stdout, code) = validate(&["state-examples/default.json", bad]);
    assert_eq!(
        stdout,
        format!(
            "state-examples/default.json: valid\n\
             {bad}:12:22: /plugins/network/interfaces/vmbr0/gateway: gateway 192.168.2.1 is not inside any IPv4 subnet of the interface (192.168.1.0/24); use a gateway on one of the interface's subnets, or fix the address's prefix length\n\
             {bad}: invalid: 1 error(s)\n"
        )
    );
    assert_eq!(code, Some(1));
}

#[test]
fn warnings_are_fatal_only_with_strict() {
    let file = "state-examples/complete-server.json";
    let (stdout, code) = validate(&[file]);
    assert!(
        stdout.ends_with(&format!("{file}: valid, 3 warning(s)\n")),
        "{stdout}"
    );
    assert_eq!(code, Some(0));
    let (stdout, code) = validate(&["--strict", file]);
    assert!(
        stdout.contains(": warning: malformed SSH public key"),
        "{stdout}"
    );
    assert_eq!(code, Some(1));
}

#[test]
fn json_output_parses_and_carries_the_same_lines() {
    let bad = "state/tests/fixtures/invalid/gateway_outside_subnet/state.json";
    let (stdout, code) = validate(&["--json", "state-examples/default.json", bad]);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("validate --json prints JSON");
    assert_eq!(v["ok"], false);
    assert_eq!(v["lines"][0], "state-examples/default.json: valid");
    assert_eq!(v["lines"][2], format!("{bad}: invalid: 1 error(s)"));
    assert_eq!(code, Some(1));
}
