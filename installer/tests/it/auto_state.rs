//! `op-dbus-install auto --dry-run` as the live ISO runs it: the saved copy
//! of the state (it carries the root password hash) is 0600 in a 0700
//! directory whatever the umask, and a plain-http state URL without
//! `opdbus.state_sha256` is refused. Tier 1: no root, loopback only.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const STATE: &str = include_str!("../../../state-examples/default.json");

/// Runs `auto --force --dry-run` under umask 000 with `cmdline` as the
/// kernel command line.
fn auto(dir: &Path, cmdline: &str) -> Output {
    let cl = dir.join("cmdline");
    std::fs::write(&cl, cmdline).expect("writing the command line");
    Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_op-dbus-install"))
        .args(["auto", "--force", "--dry-run", "--no-finish"])
        .args(["--network-timeout", "2"])
        .arg("--cmdline")
        .arg(&cl)
        .arg("--save-to")
        .arg(dir.join("run/opdbus/state.json"))
        .output()
        .expect("running op-dbus-install")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn saved_state_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sp = dir.path().join("state.json");
    std::fs::write(&sp, STATE).expect("writing the state");
    let out = auto(
        dir.path(),
        &format!("boot=live opdbus.auto opdbus.state={}", sp.display()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = dir.path().join("run/opdbus/state.json");
    assert_eq!(std::fs::read_to_string(&saved).expect("saved"), STATE);
    assert_eq!(mode(&saved), 0o600, "saved state");
    assert_eq!(mode(&dir.path().join("run/opdbus")), 0o700, "its directory");
    assert_eq!(mode(&dir.path().join("run")), 0o700, "created parents");
    // A re-run replaces it and keeps the modes.
    let out = auto(
        dir.path(),
        &format!("boot=live opdbus.auto opdbus.state={}", sp.display()),
    );
    assert!(out.status.success());
    assert_eq!(mode(&saved), 0o600);
}

#[test]
fn unpinned_http_state_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    // Serves the state to whoever asks, for 10 s at most.
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut served = 0;
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{STATE}",
                        STATE.len()
                    );
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            if served > 0 {
                break;
            }
        }
        served
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let out = auto(
        dir.path(),
        &format!("opdbus.auto opdbus.state=http://{addr}/state.json"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "accepted: {stdout}");
    assert!(
        stdout.contains("is plain http and opdbus.state_sha256 is not set")
            && stdout.contains("add opdbus.state_sha256=SHA256"),
        "{stdout}"
    );
    assert!(!dir.path().join("run/opdbus/state.json").exists());
    // With the pin it goes through.
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(STATE.as_bytes()))
    };
    let out = auto(
        dir.path(),
        &format!("opdbus.auto opdbus.state=http://{addr}/state.json opdbus.state_sha256={sha}"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(server.join().expect("server"), 1);
}
