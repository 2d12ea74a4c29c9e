//! SIGINT and SIGTERM as a flag instead of a sudden death: a signal thread
//! (`sigwait`) records the first signal and stops the commands [`Task`] is
//! running; the program checks [`interrupted`] at its next safe point,
//! releases its guards (mounts, loop devices) and exits 128 + signal.
//! Unsafe: one `pre_exec` hook that unblocks the signals in children.
//!
//! [`Task`]: crate::Task

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::unistd::Pid;

/// The first signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Whether [`install`] ran: only then do commands get their own process group.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Process groups of the commands running now, started by `Task`.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// How long stopped commands get between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// The run was stopped by a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}", signal.as_str())]
pub struct Interrupted {
    pub signal: Signal,
}

impl Interrupted {
    /// The shell convention: 130 for SIGINT, 143 for SIGTERM.
    pub fn exit_code(&self) -> u8 {
        (128 + self.signal as i32) as u8
    }
}

fn signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Blocks SIGINT and SIGTERM and starts the thread that waits for them.
/// Call it early, before other threads start (they inherit the mask).
/// Commands started afterwards reset the mask, as `std::process` does.
pub fn install() -> Result<(), nix::Error> {
    if ENABLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let set = signals();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let Ok(sig) = set.wait() else { continue };
            on_signal(sig);
        })
        .map_err(|_| nix::Error::EAGAIN)?;
    Ok(())
}

fn on_signal(sig: Signal) {
    let first = SIGNAL
        .compare_exchange(0, sig as i32, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first {
        tracing::warn!(
            signal = sig.as_str(),
            "stopping at the next safe point and cleaning up"
        );
    } else {
        tracing::warn!(signal = sig.as_str(), "already stopping; cleaning up first");
    }
    // Under the lock: a command started before the flag was set is in the
    // list; one started after it (cleanup) is not stopped.
    let groups = lock().clone();
    for g in &groups {
        let _ = kill(Pid::from_raw(-g), Signal::SIGTERM);
    }
    if groups.is_empty() || !first {
        return;
    }
    std::thread::sleep(GRACE);
    let still = lock().clone();
    for g in groups.iter().filter(|g| still.contains(g)) {
        tracing::warn!(pgid = g, "a command ignored SIGTERM; killing it");
        let _ = kill(Pid::from_raw(-g), Signal::SIGKILL);
    }
}

fn lock() -> std::sync::MutexGuard<'static, Vec<i32>> {
    RUNNING.lock().unwrap_or_else(|p| p.into_inner())
}

/// The signal that stopped this run, if any. Cheap: one atomic load; call
/// it between steps and inside long loops.
pub fn interrupted() -> Option<Interrupted> {
    match SIGNAL.load(Ordering::Relaxed) {
        0 => None,
        n => Signal::try_from(n)
            .ok()
            .map(|signal| Interrupted { signal }),
    }
}

/// `Err` once a signal arrived: `interrupt::check()?` at a safe point.
pub fn check() -> Result<(), Interrupted> {
    match interrupted() {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

/// Whether commands should run in their own process group (so the signal
/// thread can stop them with everything they started).
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts a command with the running list locked, so a signal either sees
/// it or was recorded before it started.
pub(crate) fn spawn_tracked(
    cmd: &mut std::process::Command,
) -> std::io::Result<std::process::Child> {
    if !enabled() {
        return cmd.spawn();
    }
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    unblock_in_child(cmd);
    let mut running = lock();
    let child = cmd.spawn()?;
    if interrupted().is_none() {
        running.push(child.id() as i32);
    }
    Ok(child)
}

/// The child starts with SIGINT and SIGTERM unblocked again: it inherits
/// the signal mask, and `std::process` does not reset it (a blocked SIGTERM
/// made every stopped command wait for SIGKILL).
#[allow(unsafe_code)]
fn unblock_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls
    // pthread_sigmask on a set built beforehand; sigprocmask is
    // async-signal-safe and allocates nothing.
    unsafe {
        let set = signals();
        cmd.pre_exec(move || {
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
                .map_err(std::io::Error::from)
        });
    }
}

/// Forgets a command once it has been waited for.
pub(crate) fn untrack(pid: u32) {
    if enabled() {
        lock().retain(|p| *p != pid as i32);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        let i = Interrupted {
            signal: Signal::SIGINT,
        };
        assert_eq!(i.exit_code(), 130);
        assert_eq!(i.to_string(), "interrupted by SIGINT");
        let t = Interrupted {
            signal: Signal::SIGTERM,
        };
        assert_eq!(t.exit_code(), 143);
        assert_eq!(check(), Ok(()));
    }
}
