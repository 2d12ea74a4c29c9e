//! A directory tree that root code writes into without ever leaving it: the
//! installer's target root, the agent's `--root`. Every path is resolved by
//! the kernel with `openat2(RESOLVE_IN_ROOT)` relative to one directory fd, so
//! a symlink planted in the tree (`etc -> /`, `x -> ../../..`) resolves inside
//! the tree as it would after a chroot, never onto the host. Final components
//! are never followed: files are replaced by rename, not written through.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, renameat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode};
use nix::unistd::{fchown, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// An open directory that paths are resolved beneath.
#[derive(Debug)]
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io_err(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Splits `/etc/ssh/sshd_config` into `etc/ssh` and `sshd_config`; refuses
/// empty names, `.` and `..` as the final component.
fn split(rel: &Path) -> io::Result<(PathBuf, &OsStr)> {
    let name = match rel.components().next_back() {
        Some(Component::Normal(n)) => n,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{}' does not name a file", rel.display()),
            ))
        }
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    Ok((relative(parent), name))
}

/// The path relative to the root: `/etc/x` and `etc/x` mean the same.
fn relative(p: &Path) -> PathBuf {
    let rel: PathBuf = p
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

impl RootDir {
    /// Opens `path` (a directory, not followed if it is itself a symlink).
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(io_err)?;
        Ok(RootDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path on this system (for messages and for tools that
    /// take a path, such as `chroot`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where `abs` of the tree is, for messages: `<root>/etc/fstab`.
    pub fn display_path(&self, abs: impl AsRef<Path>) -> PathBuf {
        self.path.join(relative(abs.as_ref()))
    }

    fn how(flags: OFlag, mode: u32) -> OpenHow {
        OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(mode))
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
    }

    /// Opens a directory of the tree; symlinks on the way (the last one
    /// included) resolve inside the tree, as after a chroot.
    pub fn open_dir(&self, abs: impl AsRef<Path>) -> io::Result<OwnedFd> {
        let rel = relative(abs.as_ref());
        openat2(
            self.fd.as_fd(),
            &rel,
            Self::how(OFlag::O_DIRECTORY | OFlag::O_RDONLY, 0),
        )
        .map_err(io_err)
    }

    /// Opens a directory of the tree whose last component must be a real
    /// directory, not a symlink (fails with ENOTDIR on a symlink): for
    /// directories whose identity is checked, such as a user's home.
    pub fn open_dir_nofollow(&self, abs: impl AsRef<Path>) -> io::Result<OwnedFd> {
        let rel = relative(abs.as_ref());
        openat2(
            self.fd.as_fd(),
            &rel,
            Self::how(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW, 0),
        )
        .map_err(io_err)
    }

    /// A sub-tree as a root of its own (for example a home directory).
    pub fn sub(&self, abs: impl AsRef<Path>) -> io::Result<RootDir> {
        let fd = self.open_dir(abs.as_ref())?;
        Ok(RootDir {
            fd,
            path: self.display_path(abs),
        })
    }

    /// Creates `abs` and its missing parents as directories with `mode`.
    pub fn create_dir_all(&self, abs: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        let rel = relative(abs.as_ref());
        let mut cur = PathBuf::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => cur.push(n),
                Component::ParentDir => cur.push(".."),
                _ => continue,
            }
            match self.open_dir(&cur) {
                Ok(_) => continue,
                Err(e) if e.raw_os_error() == Some(libc_enoent()) => {}
                Err(e) => return Err(e),
            }
            let (parent, name) = split(&cur)?;
            let pfd = self.open_dir(&parent)?;
            match mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(())
    }

    /// Opens an existing regular file for reading. Symlinks, the last one
    /// included (`/etc/os-release -> ../usr/lib/os-release`), resolve inside
    /// the tree; a FIFO or device is refused without blocking.
    pub fn open_read(&self, abs: impl AsRef<Path>) -> io::Result<File> {
        let rel = relative(abs.as_ref());
        let fd = openat2(
            self.fd.as_fd(),
            &rel,
            Self::how(OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0),
        )
        .map_err(io_err)?;
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", self.display_path(abs).display()),
            ));
        }
        Ok(f)
    }

    pub fn read(&self, abs: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_read(abs)?.read_to_end(&mut buf)?;
        Ok(buf)
    }

    pub fn read_to_string(&self, abs: impl AsRef<Path>) -> io::Result<String> {
        String::from_utf8(self.read(abs)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Metadata of `abs` itself (a symlink is not followed).
    pub fn symlink_metadata(&self, abs: impl AsRef<Path>) -> io::Result<nix::sys::stat::FileStat> {
        let (parent, name) = split(abs.as_ref())?;
        let pfd = self.open_dir(&parent)?;
        fstatat(pfd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io_err)
    }

    pub fn exists(&self, abs: impl AsRef<Path>) -> bool {
        self.symlink_metadata(abs).is_ok()
    }

    /// Replaces `abs` atomically: a new file with a random name in the same
    /// directory (`O_EXCL|O_NOFOLLOW`, so nothing planted there is opened),
    /// its mode set exactly (whatever the umask) and its owner set through
    /// the fd, synced, then renamed over the old one. The parent directories
    /// are created (0755) when missing.
    pub fn write_atomic(
        &self,
        abs: impl AsRef<Path>,
        data: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let (parent, name) = split(abs.as_ref())?;
        self.create_dir_all(&parent, 0o755)?;
        let pfd = self.open_dir(&parent)?;
        write_atomic_at(&pfd, name, data, mode, owner)
    }

    /// Replaces whatever file or symlink is at `abs` with a symlink to `target`.
    pub fn symlink(&self, target: impl AsRef<Path>, abs: impl AsRef<Path>) -> io::Result<()> {
        let (parent, name) = split(abs.as_ref())?;
        self.create_dir_all(&parent, 0o755)?;
        let pfd = self.open_dir(&parent)?;
        let tmp = temp_name(name);
        symlinkat(target.as_ref(), pfd.as_fd(), tmp.as_os_str()).map_err(io_err)?;
        renameat(pfd.as_fd(), tmp.as_os_str(), pfd.as_fd(), name).map_err(|e| {
            let _ = unlinkat(pfd.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            io_err(e)
        })
    }

    /// Removes a file or symlink (not followed); a missing one is fine.
    pub fn remove_file(&self, abs: impl AsRef<Path>) -> io::Result<()> {
        let (parent, name) = split(abs.as_ref())?;
        let pfd = match self.open_dir(&parent) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc_enoent()) => return Ok(()),
            Err(e) => return Err(e),
        };
        match unlinkat(pfd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Removes the empty directory `abs` (not followed); a missing one is fine.
    pub fn remove_dir(&self, abs: impl AsRef<Path>) -> io::Result<()> {
        let (parent, name) = split(abs.as_ref())?;
        let pfd = match self.open_dir(&parent) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc_enoent()) => return Ok(()),
            Err(e) => return Err(e),
        };
        match unlinkat(pfd.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Sets the mode of the directory `abs` itself (a final symlink is
    /// refused) exactly, whatever the umask was when it was made.
    pub fn set_dir_mode(&self, abs: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        let fd = self.open_dir_nofollow(abs)?;
        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(io_err)
    }

    /// The names in directory `abs` (without `.` and `..`), sorted.
    pub fn read_dir(&self, abs: impl AsRef<Path>) -> io::Result<Vec<std::ffi::OsString>> {
        let fd = self.open_dir(abs)?;
        // The fd's own /proc entry names exactly the directory opened.
        let dir = Path::new("/proc/self/fd").join(fd.as_raw_fd().to_string());
        let mut names = std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names)
    }

    /// The owner (uid, gid) and mode of `abs` itself.
    pub fn owner_of(&self, abs: impl AsRef<Path>) -> io::Result<(u32, u32, u32)> {
        let st = self.symlink_metadata(abs)?;
        Ok((st.st_uid, st.st_gid, st.st_mode))
    }
}

impl AsFd for RootDir {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn libc_enoent() -> i32 {
    Errno::ENOENT as i32
}

fn temp_name(name: &OsStr) -> PathBuf {
    let mut bytes = [0u8; 8];
    // Randomness only has to make the name unpredictable to the owner of the
    // directory; O_EXCL makes any clash an error, never a write through.
    if File::open("/dev/urandom")
        .and_then(|mut r| r.read_exact(&mut bytes))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        bytes = t.to_le_bytes();
    }
    let mut s = std::ffi::OsString::from(".");
    s.push(name);
    s.push(format!(".{:016x}.tmp", u64::from_le_bytes(bytes)));
    PathBuf::from(s)
}

/// Replaces `name` in the open directory `dir` as [`RootDir::write_atomic`]
/// does (random temp name, `O_EXCL|O_NOFOLLOW`, exact mode, owner set
/// through the fd, synced, renamed within `dir`): for directories opened
/// and checked by the caller, such as a user's `~/.ssh`.
pub fn write_atomic_at(
    dir: &OwnedFd,
    name: &OsStr,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    if !is_plain_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("'{}' is not a file name", Path::new(name).display()),
        ));
    }
    let (tmp, mut f) = create_temp(dir, name, mode)?;
    let written = (|| {
        f.write_all(data)?;
        fchmod(f.as_fd(), Mode::from_bits_truncate(mode)).map_err(io_err)?;
        if let Some((uid, gid)) = owner {
            fchown(
                f.as_fd(),
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
            )
            .map_err(io_err)?;
        }
        f.sync_all()?;
        renameat(dir.as_fd(), tmp.as_os_str(), dir.as_fd(), name).map_err(io_err)
    })();
    if written.is_err() {
        let _ = unlinkat(dir.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

/// Creates a fresh file next to `name` in `dir` that no one else can have
/// prepared: random name, `O_CREAT|O_EXCL|O_NOFOLLOW`.
pub fn create_temp(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<(PathBuf, File)> {
    for _ in 0..8 {
        let tmp = temp_name(name);
        match nix::fcntl::openat(
            dir.as_fd(),
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode & 0o700),
        ) {
            Ok(fd) => return Ok((tmp, File::from(fd))),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free temporary name next to {}",
            Path::new(name).display()
        ),
    ))
}

/// Whether `meta` (of a file already opened) is a regular file owned by `uid`.
pub fn owned_regular(meta: &std::fs::Metadata, uid: u32) -> bool {
    meta.is_file() && meta.uid() == uid
}

/// The mode bits of an open file.
pub fn mode_of(f: &File) -> io::Result<u32> {
    Ok(f.metadata()?.permissions().mode() & 0o7777)
}

/// Whether `name` is a single path component (no `/`, not `.` or `..`).
pub fn is_plain_name(name: &OsStr) -> bool {
    let b = name.as_bytes();
    !b.is_empty() && b != b"." && b != b".." && !b.contains(&b'/') && !b.contains(&0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_stay_inside_through_absolute_and_relative_symlinks() {
        let host = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        // etc -> <host dir> (absolute) and up -> ../../.. (relative)
        std::os::unix::fs::symlink(host.path(), tree.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../..", tree.path().join("up")).unwrap();
        let root = RootDir::open(tree.path()).unwrap();
        // etc dangles inside the tree: the write fails, the host is untouched
        assert!(root.write_atomic("/etc/fstab", b"x", 0o644, None).is_err());
        assert!(
            !host.path().join("fstab").exists(),
            "wrote through etc -> host"
        );
        // with the link's target present inside the tree, it lands there, as
        // after a chroot
        let inside = tree.path().join(host.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        root.write_atomic("/etc/fstab", b"x", 0o644, None).unwrap();
        root.write_atomic("/up/passwd", b"y", 0o600, None).unwrap();
        assert!(
            !host.path().join("fstab").exists(),
            "wrote through etc -> host"
        );
        assert_eq!(std::fs::read(inside.join("fstab")).unwrap(), b"x");
        assert_eq!(std::fs::read(tree.path().join("passwd")).unwrap(), b"y");
        assert!(root.open_dir_nofollow("/etc").is_err());
        assert!(root.open_dir("/etc").is_ok());
    }

    #[test]
    fn final_symlink_is_replaced_not_followed() {
        let host = tempfile::tempdir().unwrap();
        let victim = host.path().join("shadow");
        std::fs::write(&victim, b"secret").unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&victim, tree.path().join("etc/hostname")).unwrap();
        let root = RootDir::open(tree.path()).unwrap();
        assert!(
            root.read("/etc/hostname").is_err(),
            "read followed a final symlink"
        );
        root.write_atomic("/etc/hostname", b"node1\n", 0o644, None)
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        let m = std::fs::symlink_metadata(tree.path().join("etc/hostname")).unwrap();
        assert!(m.is_file());
        assert_eq!(m.permissions().mode() & 0o777, 0o644);
    }

    #[test]
    fn mode_is_exact_whatever_the_umask() {
        let tree = tempfile::tempdir().unwrap();
        let root = RootDir::open(tree.path()).unwrap();
        root.write_atomic("/a/b/c", b"", 0o640, None).unwrap();
        let m = std::fs::metadata(tree.path().join("a/b/c")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        root.symlink("/usr/share/zoneinfo/UTC", "/etc/localtime")
            .unwrap();
        assert_eq!(
            std::fs::read_link(tree.path().join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/UTC")
        );
        root.remove_file("/etc/localtime").unwrap();
        root.remove_file("/etc/localtime").unwrap();
        assert!(!root.exists("/etc/localtime"));
    }

    #[test]
    fn dir_mode_and_listing_do_not_follow_out() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("secret"), b"").unwrap();
        let tree = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(host.path(), tree.path().join("h")).unwrap();
        let root = RootDir::open(tree.path()).unwrap();
        root.create_dir_all("/root/.ssh", 0o755).unwrap();
        root.set_dir_mode("/root/.ssh", 0o700).unwrap();
        let m = std::fs::metadata(tree.path().join("root/.ssh")).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o700);
        // A final symlink is refused, the host directory keeps its mode.
        let before = std::fs::metadata(host.path()).unwrap().permissions().mode();
        assert!(root.set_dir_mode("/h", 0o777).is_err());
        assert_eq!(
            std::fs::metadata(host.path()).unwrap().permissions().mode(),
            before
        );
        // The link resolves inside the tree, where it dangles.
        assert!(root.read_dir("/h").is_err());
        root.write_atomic("/boot/b", b"", 0o644, None).unwrap();
        root.write_atomic("/boot/a", b"", 0o644, None).unwrap();
        assert_eq!(root.read_dir("/boot").unwrap(), ["a", "b"]);
    }
}
