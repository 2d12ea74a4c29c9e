//! Reading state files: only regular files, at most 4 MiB, never blocking on
//! a FIFO (issue 12 item 15). Each case must fail fast with a clear message.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `load(path)` in a thread, so a hang fails the test instead of the run.
fn load_within(path: &Path, limit: Duration) -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let r = opdbus_state::load(&p)
            .map(|_| ())
            .map_err(|f| f.lines().join("\n"));
        let _ = tx.send(r);
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("loading {} did not return within {limit:?}", path.display()))
}

#[test]
fn symlink_to_dev_zero_is_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("state.json");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let started = Instant::now();
    let err = load_within(&link, Duration::from_secs(5)).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        err.contains("not a regular file but a character device"),
        "{err}"
    );
    assert!(err.starts_with(&link.display().to_string()), "{err}");
}

#[test]
fn fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("state.json");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let err = load_within(&fifo, Duration::from_secs(5)).unwrap_err();
    assert!(err.contains("not a regular file but a FIFO"), "{err}");
    // `validate` takes the same path.
    let report = opdbus_state::check_files(&[&fifo], false);
    assert!(!report.ok);
    assert!(report.lines[0].contains("FIFO"), "{:?}", report.lines);
}

#[test]
fn directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_within(dir.path(), Duration::from_secs(5)).unwrap_err();
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn oversized_file_names_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("state.json");
    // Valid JSON, so only the size can refuse it: `{"version": 1, "x": "aaaa…"}`.
    let mut text = String::from("{\"version\": 1, \"metadata\": {\"name\": \"");
    text.push_str(&"a".repeat(5 * 1024 * 1024));
    text.push_str("\"}}");
    std::fs::write(&big, text).unwrap();
    let err = load_within(&big, Duration::from_secs(5)).unwrap_err();
    assert!(
        err.contains("larger than the limit of 4194304 bytes (4 MiB)"),
        "{err}"
    );
}

#[test]
fn symlink_to_a_regular_file_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.json");
    std::fs::write(&real, "{\"version\": 1}").unwrap();
    let link = dir.path().join("state.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    load_within(&link, Duration::from_secs(5)).unwrap();
}
