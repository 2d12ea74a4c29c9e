//! Home directories and `~/.ssh/authorized_keys`: root writing into
//! directories a user owns. Every step goes through a directory fd checked
//! to be a directory of the user (or root) that nobody else may write; no
//! path inside a home is ever opened or chowned by name, final components
//! are never followed, files are created with a random name and `O_EXCL`,
//! their owner and mode are set through the fd and they are renamed within
//! the checked directory.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::Context as _;
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{fchown, Gid, Uid};
use opdbus_common::rootfs::{write_atomic_at, RootDir};

use super::KeysCurrent;

/// `~/.ssh/authorized_keys` is read up to this size; a larger one is not a
/// key file the agent wrote and is replaced.
const MAX_KEYS_FILE: u64 = 1 << 20;

/// The account a home belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

fn dir_flags() -> OFlag {
    OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Refuses a directory that is not owned by `uid` or root, or that its
/// group or others may write (they could plant entries in it).
fn check_dir(fd: &OwnedFd, uid: u32, shown: &Path) -> anyhow::Result<()> {
    let st = fstat(fd.as_fd()).with_context(|| format!("inspecting {}", shown.display()))?;
    anyhow::ensure!(is_dir(&st), "{} is not a directory", shown.display());
    anyhow::ensure!(
        st.st_uid == uid || st.st_uid == 0,
        "{} belongs to uid {}, not to uid {uid} or root: refusing to write into it; give it to its user (chown) or set the account's home",
        shown.display(),
        st.st_uid
    );
    anyhow::ensure!(
        st.st_mode & 0o022 == 0,
        "{} is writable by its group or others (mode {:o}): refusing to write into it; `chmod go-w` it",
        shown.display(),
        st.st_mode & 0o7777
    );
    Ok(())
}

/// The home as a path relative to the root and its last component.
fn split(home: &str) -> anyhow::Result<(PathBuf, OsString)> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in Path::new(home).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => parts.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                anyhow::bail!(
                    "home directory {home} contains '..': set an absolute path without it"
                )
            }
        }
    }
    let name = parts
        .pop()
        .with_context(|| format!("home directory {home:?} names no directory below /"))?;
    Ok((parts.iter().collect(), name.to_os_string()))
}

/// Opens the directory a home lives in. Every directory on the way
/// (symlinks resolved inside the root) must be root's and writable by root
/// alone, so no user can redirect the path; missing ones are created 0755.
fn open_parent(root: &RootDir, home: &str, create: bool) -> anyhow::Result<(OwnedFd, OsString)> {
    let (parent, name) = split(home)?;
    if create {
        root.create_dir_all(&parent, 0o755)
            .with_context(|| format!("creating {}", root.display_path(&parent).display()))?;
    }
    let mut prefix = PathBuf::from("/");
    let mut fd = root
        .open_dir("/")
        .with_context(|| format!("opening {}", root.path().display()))?;
    for c in parent.components() {
        prefix.push(c);
        let shown = root.display_path(&prefix);
        fd = root
            .open_dir(&prefix)
            .with_context(|| format!("opening {}", shown.display()))?;
        let st = fstat(fd.as_fd()).with_context(|| format!("inspecting {}", shown.display()))?;
        anyhow::ensure!(
            st.st_uid == 0 && st.st_mode & 0o022 == 0,
            "{} (on the way to the home {home}) is not root's alone (uid {}, mode {:o}): a user could redirect the home; make it root's and `chmod go-w` it",
            shown.display(),
            st.st_uid,
            st.st_mode & 0o7777
        );
    }
    Ok((fd, name))
}

/// Opens an existing entry `name` of `dir` as a directory, not following a
/// symlink; `None` when there is none.
fn open_child(dir: &OwnedFd, name: &OsStr, shown: &Path) -> anyhow::Result<Option<OwnedFd>> {
    match openat(dir.as_fd(), name, dir_flags(), Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) => anyhow::bail!(
            "{} is a symlink or not a directory: refusing to write through it; replace it with a real directory",
            shown.display()
        ),
        Err(e) => Err(e).with_context(|| format!("opening {}", shown.display())),
    }
}

/// Creates `name` in `dir` (0700) unless it exists, then opens it without
/// following; a directory made here is given to `owner` through its fd.
fn ensure_child(
    dir: &OwnedFd,
    name: &OsStr,
    owner: Owner,
    shown: &Path,
) -> anyhow::Result<OwnedFd> {
    let made = match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => true,
        Err(Errno::EEXIST) => false,
        Err(e) => return Err(e).with_context(|| format!("creating {}", shown.display())),
    };
    let fd = open_child(dir, name, shown)?
        .with_context(|| format!("{} vanished while it was created", shown.display()))?;
    if made {
        give(&fd, owner, 0o700, shown)?;
    }
    check_dir(&fd, owner.uid, shown)?;
    Ok(fd)
}

/// Sets owner and mode through the fd.
fn give(fd: &OwnedFd, owner: Owner, mode: u32, shown: &Path) -> anyhow::Result<()> {
    fchown(
        fd.as_fd(),
        Some(Uid::from_raw(owner.uid)),
        Some(Gid::from_raw(owner.gid)),
    )
    .with_context(|| format!("setting the owner of {}", shown.display()))?;
    fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
        .with_context(|| format!("setting the mode of {}", shown.display()))
}

/// Opens the existing home `home` of `uid`, checked; `None` when missing.
fn open_home(root: &RootDir, home: &str, uid: u32) -> anyhow::Result<Option<OwnedFd>> {
    let (parent, name) = open_parent(root, home, false)?;
    let shown = root.display_path(home);
    let Some(fd) = open_child(&parent, &name, &shown)? else {
        return Ok(None);
    };
    check_dir(&fd, uid, &shown)?;
    Ok(Some(fd))
}

/// Creates the home `home` (0700, owned by `owner`) and missing parents.
pub fn create_home(root: &RootDir, home: &str, owner: Owner) -> anyhow::Result<()> {
    let (parent, name) = open_parent(root, home, true)?;
    ensure_child(&parent, &name, owner, &root.display_path(home)).map(drop)
}

/// Writes exactly `keys` to `~/.ssh/authorized_keys` (0600) in `~/.ssh`
/// (0700), both owned by `owner`.
pub fn set_keys(root: &RootDir, home: &str, owner: Owner, keys: &[String]) -> anyhow::Result<()> {
    let shown = root.display_path(home);
    let home_fd = open_home(root, home, owner.uid)?.with_context(|| {
        format!(
            "home directory {} does not exist: set the account's home",
            shown.display()
        )
    })?;
    let ssh_shown = shown.join(".ssh");
    let ssh = ensure_child(&home_fd, OsStr::new(".ssh"), owner, &ssh_shown)?;
    give(&ssh, owner, 0o700, &ssh_shown)?;
    let mut text = keys.join("\n");
    text.push('\n');
    write_atomic_at(
        &ssh,
        OsStr::new("authorized_keys"),
        text.as_bytes(),
        0o600,
        Some((owner.uid, owner.gid)),
    )
    .with_context(|| format!("writing {}", ssh_shown.join("authorized_keys").display()))
}

/// Whether something is at `home` (a directory, or anything the key writer
/// will refuse), without following it.
pub fn home_exists(root: &RootDir, home: &str) -> bool {
    split(home).is_ok() && root.symlink_metadata(home).is_ok()
}

/// The keys file of the home as found, read through no symlink, FIFO or
/// hard link; `None` when anything on the way is missing or not trusted
/// (the writer then replaces the file, or explains why it cannot).
pub fn keys_current(root: &RootDir, home: &str, uid: u32) -> Option<KeysCurrent> {
    let home_fd = open_home(root, home, uid).ok()??;
    let ssh = open_child(&home_fd, OsStr::new(".ssh"), Path::new(".ssh")).ok()??;
    let dm = fstat(ssh.as_fd()).ok()?;
    let file = openat(
        ssh.as_fd(),
        "authorized_keys",
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fm = fstat(file.as_fd()).ok()?;
    let regular = SFlag::from_bits_truncate(fm.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    if !regular || fm.st_nlink != 1 || fm.st_size as u64 > MAX_KEYS_FILE {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(file)
        .take(MAX_KEYS_FILE)
        .read_to_string(&mut text)
        .ok()?;
    Some(KeysCurrent {
        keys: text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect(),
        dir_mode: dm.st_mode & 0o7777,
        file_mode: fm.st_mode & 0o7777,
        dir_owner: (dm.st_uid, dm.st_gid),
        file_owner: (fm.st_uid, fm.st_gid),
    })
}
