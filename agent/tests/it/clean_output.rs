//! What an operator reads on stderr: no ANSI colour when stderr is a pipe,
//! a file or NO_COLOR is set (but colour on a terminal), and an error chain
//! that names each cause once.
//!
//! The run used throughout: `op-dbus-agent diff` on a state with two
//! validation warnings (logged through the shared logging setup) against a
//! D-Bus address whose socket does not exist, so it fails with ENOENT
//! without touching the host's bus.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const ESC: u8 = 0x1b;

fn diff_command(state_dir: &Path) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_op-dbus-agent"));
    cmd.current_dir(&root)
        .args(["diff", "state-examples/complete-server.json"])
        .arg("--bus")
        .arg(format!(
            "unix:path={}",
            state_dir.join("no-such-bus-socket").display()
        ))
        .arg("--state-dir")
        .arg(state_dir)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

fn state_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state");
    (dir, path)
}

/// Runs `cmd` with stderr on the slave side of a fresh pty and returns what
/// the master read.
fn stderr_on_a_terminal(mut cmd: Command) -> Vec<u8> {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave: OwnedFd = pty.slave;
    let mut child = cmd.stderr(Stdio::from(slave)).spawn().expect("spawning");
    // The command above held the only other copy of the slave; once the
    // child exits, reading the master ends with EIO.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(e) => panic!("reading the pty: {e}"),
        }
    }
    child.wait().expect("waiting for op-dbus-agent");
    out
}

fn stderr_to_a_pipe(mut cmd: Command) -> String {
    let out = cmd.stderr(Stdio::piped()).output().expect("running");
    assert_eq!(out.status.code(), Some(1), "the diff must fail");
    String::from_utf8(out.stderr).expect("UTF-8 stderr")
}

#[test]
fn no_colour_when_stderr_is_a_pipe() {
    let (_tmp, dir) = state_dir();
    let stderr = stderr_to_a_pipe(diff_command(&dir));
    assert!(
        stderr.contains("WARN") && stderr.contains("warning: malformed SSH public key"),
        "the run must log its warnings for this test to mean anything:\n{stderr}"
    );
    assert!(
        !stderr.as_bytes().contains(&ESC),
        "ESC in stderr written to a pipe:\n{stderr:?}"
    );
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    let (_tmp, dir) = state_dir();
    let tty = stderr_on_a_terminal(diff_command(&dir));
    let text = String::from_utf8_lossy(&tty);
    assert!(text.contains("WARN"), "{text}");
    assert!(
        tty.contains(&ESC),
        "a terminal keeps its colours:\n{text:?}"
    );

    let mut cmd = diff_command(&dir);
    cmd.env("NO_COLOR", "1");
    let tty = stderr_on_a_terminal(cmd);
    let text = String::from_utf8_lossy(&tty);
    assert!(text.contains("WARN"), "{text}");
    assert!(!tty.contains(&ESC), "NO_COLOR=1 on a terminal:\n{text:?}");
}

#[test]
fn an_error_names_its_cause_once() {
    let (_tmp, dir) = state_dir();
    let stderr = stderr_to_a_pipe(diff_command(&dir));
    let line = stderr
        .lines()
        .find(|l| l.starts_with("op-dbus-agent: error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    assert!(line.contains("no-such-bus-socket"), "{line}");
    assert_eq!(
        line.matches("No such file or directory (os error 2)")
            .count(),
        1,
        "the cause must appear once: {line}"
    );
}
