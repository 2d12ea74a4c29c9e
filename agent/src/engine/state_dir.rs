//! The agent's state directory (`--state-dir`): audit database, markers,
//! status, checkpoints, the ownership registry. It may hold secrets and
//! facts about the host, so it is 0700 and its files 0600 whatever the
//! umask; a directory found wider is tightened.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::Context as _;
use opdbus_common::rootfs::RootDir;

/// Mode of the state directory and of directories below it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the agent writes there.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents, 0700) or tightens it to 0700.
pub fn ensure(dir: &Path) -> anyhow::Result<()> {
    create_private_dir(dir)
        .with_context(|| format!("creating the state directory {} (mode 0700)", dir.display()))
}

/// [`ensure`] with the bare io error (for the audit log's own error type).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    tighten(dir, DIR_MODE)
}

/// Sets `mode` on `path` if it grants group or other anything; a missing
/// path or a symlink (it has no mode of its own) is left alone.
pub fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Tightens an existing state dir left wide (by an older agent, or an
/// installer under umask 022): the dir and `@timing` to 0700, the regular
/// files directly in them to 0600. Nothing is created.
pub fn secure_existing(dir: &Path) -> anyhow::Result<()> {
    let timing = dir.join(crate::audit::TIMING_DIR);
    for d in [dir, timing.as_path()] {
        let entries = match std::fs::read_dir(d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", d.display())),
        };
        tighten(d, DIR_MODE).with_context(|| format!("setting mode 0700 on {}", d.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            if e.file_type().is_ok_and(|t| t.is_file()) {
                tighten(&e.path(), FILE_MODE)
                    .with_context(|| format!("setting mode 0600 on {}", e.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Replaces `<dir>/<name>` atomically with `data`, mode 0600 (a random
/// temp name with `O_EXCL|O_NOFOLLOW`, synced, renamed over the old file).
pub fn write(dir: &Path, name: &str, data: &[u8]) -> anyhow::Result<()> {
    ensure(dir)?;
    let root = RootDir::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    root.write_atomic(name, data, FILE_MODE, None)
        .with_context(|| format!("writing {}", dir.join(name).display()))
}
