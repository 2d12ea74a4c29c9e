//! The signal thread and `Task`: a SIGTERM to this process sets the flag and
//! stops the command running at that moment (with the child it started);
//! a command started afterwards (cleanup) runs to its end. Tier 1; its own
//! `main` installs the handler before any other thread exists.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::getpid;
use opdbus_common::interrupt::{self, Interrupted};
use opdbus_common::Task;

/// Running (not gone and not a zombie waiting for its new parent to reap it).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn main() {
    interrupt::install().unwrap();
    assert_eq!(interrupt::interrupted(), None);
    // Commands start with the signals unblocked (this process blocks them).
    let status = Task::new("grep")
        .args(["SigBlk", "/proc/self/status"])
        .read()
        .unwrap();
    assert_eq!(status.trim(), "SigBlk:\t0000000000000000", "{status}");
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("sleep.pid");
    let script = format!("sleep 600 & echo $! > {}; wait", pidfile.display());
    let worker = std::thread::spawn(move || {
        let t0 = Instant::now();
        let r = Task::new("sh").args(["-c", &script]).run();
        (r, t0.elapsed())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleep_pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(getpid(), Signal::SIGTERM).unwrap();
    let (r, took) = worker.join().unwrap();
    assert!(r.is_err(), "the running command was not stopped");
    // SIGTERM stops it; SIGKILL would come only after 5 s.
    assert!(took < Duration::from_secs(3), "stopping took {took:?}");
    assert_eq!(
        interrupt::interrupted(),
        Some(Interrupted {
            signal: Signal::SIGTERM
        })
    );
    assert_eq!(interrupt::check().unwrap_err().exit_code(), 143);
    // The command's own child went with it (the whole process group).
    std::thread::sleep(Duration::from_millis(200));
    assert!(!alive(sleep_pid), "the command's child still runs");
    // Cleanup after the signal is not stopped.
    let out = Task::new("sh")
        .args(["-c", "sleep 0.3; echo cleaned"])
        .read()
        .unwrap();
    assert_eq!(out.trim(), "cleaned");
    println!("interrupt: ok (stopped in {:.2} s)", took.as_secs_f64());
}
