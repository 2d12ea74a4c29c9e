//! The base live system: Debian from the build host's apt sources, made with
//! mmdebstrap and packed as `/live/filesystem.squashfs` plus the kernel and
//! initrd. Nothing of op-dbus goes in here (see `layer`), so it is cached by
//! the hash of its inputs and rebuilt only when packages or mirror change.

use std::fs;
use std::path::{Path, PathBuf};

use opdbus_common::Task;
use sha2::{Digest, Sha256};

/// Packages of the live system (the installer's runtime needs included).
pub const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "live-boot",
    "systemd-sysv",
    "systemd-resolved",
    "udev",
    "kmod",
    "mount",
    "btrfs-progs",
    "libbtrfsutil1",
    "dosfstools",
    "e2fsprogs",
    "gdisk",
    "fdisk",
    "util-linux",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "systemd-boot-efi",
    "iproute2",
    "zstd",
    "ca-certificates",
];

/// dpkg path filters: no docs, man pages, locales.
pub const DPKG_OPTS: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/info/*",
];

/// Generic live-medium settings, run by mmdebstrap after install ($1 = root).
pub const CUSTOMIZE_HOOKS: &[&str] = &[
    "echo opdbus-live > \"$1/etc/hostname\"",
    "chroot \"$1\" passwd -d root",
    "printf '[Match]\\nName=en* eth*\\n\\n[Network]\\nDHCP=yes\\n' > \"$1/etc/systemd/network/80-live-dhcp.network\"",
    "chroot \"$1\" systemctl enable systemd-networkd.service",
    "rm -f \"$1\"/var/cache/apt/*.bin \"$1\"/var/log/*.log \"$1\"/etc/machine-id && touch \"$1/etc/machine-id\"",
];

/// squashfs compression: zstd (levels 3 and 15 both gave 181 MB for this tree; zstd decompresses fast under TCG).
pub const SQUASHFS_ARGS: &[&str] = &["-comp", "zstd", "-Xcompression-level", "3", "-b", "1M"];

/// Bump when the recipe changes in ways the lists above do not show.
const RECIPE_VERSION: &str = "opdbus-live-1";

/// What the base live system is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveSpec {
    pub suite: String,
    /// `deb` source line for mmdebstrap, from the host's apt sources.
    pub source_line: String,
}

impl LiveSpec {
    /// The spec for `suite` from `mirror` (URI and optional keyring).
    pub fn new(suite: &str, mirror_uri: &str, signed_by: Option<&str>) -> Self {
        let opts = signed_by
            .map(|k| format!("[signed-by={k}] "))
            .unwrap_or_default();
        LiveSpec {
            suite: suite.into(),
            source_line: format!("deb {opts}{mirror_uri} {suite} main"),
        }
    }

    /// Hex sha256 over everything that determines the result.
    pub fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        for part in [RECIPE_VERSION, &self.suite, &self.source_line]
            .into_iter()
            .chain(PACKAGES.iter().copied())
            .chain(DPKG_OPTS.iter().copied())
            .chain(CUSTOMIZE_HOOKS.iter().copied())
            .chain(SQUASHFS_ARGS.iter().copied())
        {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// A built base live system.
#[derive(Debug, Clone)]
pub struct LiveImage {
    pub squashfs: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    pub from_cache: bool,
}

impl LiveImage {
    fn in_dir(dir: &Path, from_cache: bool) -> Self {
        LiveImage {
            squashfs: dir.join("filesystem.squashfs"),
            vmlinuz: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            from_cache,
        }
    }
}

const COMPLETE: &str = "complete";

/// The live image for `spec` in `dir/live-<key>`: reused when complete, else
/// built there (a partial earlier attempt is discarded).
pub fn build_or_reuse(spec: &LiveSpec, dir: &Path) -> anyhow::Result<LiveImage> {
    use anyhow::Context;
    let entry = dir.join(format!("live-{}", &spec.cache_key()[..16]));
    if entry.join(COMPLETE).is_file() {
        return Ok(LiveImage::in_dir(&entry, true));
    }
    if entry.exists() {
        fs::remove_dir_all(&entry)
            .with_context(|| format!("removing the partial build {}", entry.display()))?;
    }
    fs::create_dir_all(&entry).with_context(|| format!("creating {}", entry.display()))?;
    let root = entry.join("root");
    let mut task =
        Task::new("mmdebstrap").args(["--mode=root", "--variant=minbase", "--format=directory"]);
    task = task.arg(format!("--include={}", PACKAGES.join(",")));
    for o in DPKG_OPTS {
        task = task.arg(format!("--dpkgopt={o}"));
    }
    for h in CUSTOMIZE_HOOKS {
        task = task.arg(format!("--customize-hook={h}"));
    }
    task.arg(&spec.suite)
        .arg(&root)
        .arg(&spec.source_line)
        .run_inherit()
        .with_context(|| {
            format!(
                "bootstrapping the live system ({}) with mmdebstrap",
                spec.source_line
            )
        })?;
    let image = LiveImage::in_dir(&entry, false);
    copy_boot_file(&root.join("boot"), "vmlinuz-", &image.vmlinuz)?;
    copy_boot_file(&root.join("boot"), "initrd.img-", &image.initrd)?;
    // The kernel and initrd boot from the medium, not from the squashfs:
    // empty /boot here rather than asking mksquashfs to exclude it
    // (`-wildcards -e 'boot/*'` took it from 3 s to 99 s on this tree).
    let boot = root.join("boot");
    fs::remove_dir_all(&boot).with_context(|| format!("emptying {}", boot.display()))?;
    fs::create_dir(&boot).with_context(|| format!("recreating {}", boot.display()))?;
    Task::new("mksquashfs")
        .arg(&root)
        .arg(&image.squashfs)
        .args(["-noappend", "-quiet", "-no-progress"])
        .args(SQUASHFS_ARGS)
        .run()
        .with_context(|| {
            format!(
                "packing {} into {}",
                root.display(),
                image.squashfs.display()
            )
        })?;
    fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    fs::write(entry.join(COMPLETE), spec.cache_key())
        .with_context(|| format!("marking {} complete", entry.display()))?;
    Ok(image)
}

/// Copies the single `boot/<prefix>*` file to `dest`.
fn copy_boot_file(boot: &Path, prefix: &str, dest: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut found: Vec<PathBuf> = fs::read_dir(boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    let src = found.pop().with_context(|| {
        format!(
            "no {prefix}* in {} (did linux-image-amd64 install?)",
            boot.display()
        )
    })?;
    fs::copy(&src, dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_follows_mirror_and_suite() {
        let a = LiveSpec::new("bookworm", "http://m.example/debian", None);
        let b = LiveSpec::new("bookworm", "http://other.example/debian", None);
        let c = LiveSpec::new("trixie", "http://m.example/debian", None);
        assert_eq!(
            a.cache_key(),
            LiveSpec::new("bookworm", "http://m.example/debian", None).cache_key()
        );
        assert_ne!(a.cache_key(), b.cache_key());
        assert_ne!(a.cache_key(), c.cache_key());
        assert_eq!(
            LiveSpec::new("bookworm", "http://m/debian", Some("/k.gpg")).source_line,
            "deb [signed-by=/k.gpg] http://m/debian bookworm main"
        );
    }
}
