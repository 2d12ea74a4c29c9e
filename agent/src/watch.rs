//! Watches the resident agent's state file: an inotify watch on the file's
//! directory (so an editor that writes a temp file and renames it over the
//! state is seen, not only in-place writes), filtered to the file's name and
//! debounced, so one save is one change.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// A change counts once no event came for this long.
pub const DEBOUNCE: Duration = Duration::from_millis(250);
/// A file written without pause is read at least this often.
const MAX_DEBOUNCE: Duration = Duration::from_secs(3);
/// How often a lost watch (the directory was removed) is tried again.
const REWATCH_PAUSE: Duration = Duration::from_secs(1);

struct Fd(Inotify);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

#[allow(unsafe_code)]
fn register(fd: Fd) -> std::io::Result<AsyncFd<Fd>> {
    // SAFETY: `Fd` owns the inotify descriptor (nix's `Inotify` holds an
    // `OwnedFd`), so it stays open and the same until the `AsyncFd` that
    // owns the `Fd` is dropped, and `as_raw_fd` always returns that one.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into())
}

/// An inotify watch on the directory of one file.
pub struct StateWatch {
    fd: AsyncFd<Fd>,
    dir: PathBuf,
    name: OsString,
    /// The directory's watch ended (it was removed or moved away).
    lost: bool,
}

fn dir_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

impl StateWatch {
    /// Watches the directory of `file` (which need not exist yet). Needs a
    /// tokio runtime with I/O enabled.
    pub fn new(file: &Path) -> anyhow::Result<Self> {
        let name = file
            .file_name()
            .with_context(|| format!("{} names no file to watch", file.display()))?
            .to_os_string();
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .context("creating an inotify instance (fs.inotify.max_user_instances reached?)")?;
        ino.add_watch(&dir, dir_flags())
            .with_context(|| format!("watching {} with inotify", dir.display()))?;
        let fd = register(Fd(ino)).context("registering the inotify fd with tokio")?;
        Ok(Self {
            fd,
            dir,
            name,
            lost: false,
        })
    }

    fn relevant(&mut self, e: &InotifyEvent) -> bool {
        if e.mask.intersects(
            AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_IGNORED,
        ) {
            self.lost = true;
            return true;
        }
        e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) || e.name.as_ref() == Some(&self.name)
    }

    /// Waits for the next batch of events; true when one concerns the file.
    async fn next_batch(&mut self) -> anyhow::Result<bool> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .context("waiting on the inotify fd")?;
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(events) => {
                    let events = events.with_context(|| {
                        format!("reading inotify events for {}", self.dir.display())
                    })?;
                    let mut any = false;
                    for e in &events {
                        any |= self.relevant(e);
                    }
                    return Ok(any);
                }
                Err(_would_block) => continue,
            }
        }
    }

    /// Returns once the file was written, replaced, created or removed and
    /// then left alone for [`DEBOUNCE`].
    pub async fn changed(&mut self) -> anyhow::Result<()> {
        if self.lost {
            self.rewatch().await;
            return Ok(());
        }
        while !self.next_batch().await? {}
        let deadline = Instant::now() + MAX_DEBOUNCE;
        while !self.lost {
            let quiet = (Instant::now() + DEBOUNCE).min(deadline);
            match tokio::time::timeout_at(quiet, self.next_batch()).await {
                Err(_elapsed) => break,
                Ok(r) => {
                    r?;
                }
            }
        }
        Ok(())
    }

    /// Adds the directory's watch again once it exists again.
    async fn rewatch(&mut self) {
        loop {
            match self.fd.get_ref().0.add_watch(&self.dir, dir_flags()) {
                Ok(_) => {
                    tracing::info!(dir = %self.dir.display(), "watching the state directory again");
                    self.lost = false;
                    return;
                }
                Err(e) => {
                    tracing::debug!(dir = %self.dir.display(), "cannot watch yet: {e}");
                    tokio::time::sleep(REWATCH_PAUSE).await;
                }
            }
        }
    }
}
