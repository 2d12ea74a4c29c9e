//! Making the target bootable: systemd-boot on UEFI (written into the ESP
//! with `fatfs`, no mount), GRUB on BIOS (`grub-install` in a chroot), both
//! for `firmware: both`. Root is found by filesystem UUID and `rootflags=subvol=`.

mod cmdline;
mod grub;
mod systemd_boot;

pub use cmdline::{console_args, kernel_cmdline};
pub use grub::{grub_cfg, grub_defaults, install_grub_bios, GRUB_BIOS_MODULES};
pub use systemd_boot::{install_systemd_boot, EspTree, MountedEsp, SystemdBootReport, EFI_BINARY};

use anyhow::{Context, Result};

use crate::target::Root;

/// Where the installer keeps the boot decisions in the target, so that
/// [`sync`] on the installed system writes what the install wrote.
pub const BOOT_SETUP: &str = "/etc/op-dbus/boot.json";

/// The kernel hooks that call `op-dbus-install boot-sync` after every
/// kernel install and removal. Debian runs them in name order: after
/// initramfs-tools' (the initramfs exists) and after grub2-common's
/// `zz-update-grub` (whose `update-grub` would otherwise replace our menu).
pub const KERNEL_HOOKS: [&str; 2] = [
    "/etc/kernel/postinst.d/zzz-op-dbus",
    "/etc/kernel/postrm.d/zzz-op-dbus",
];

/// Settings for Debian's own `update-grub` (run when a grub package is
/// upgraded), so the menu it writes boots the same way ours does.
pub const GRUB_DEFAULTS: &str = "/etc/default/grub.d/op-dbus.cfg";

/// What the install decided about booting.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootSetup {
    pub config: BootConfig,
    /// systemd-boot entries on the ESP.
    pub systemd_boot: bool,
    /// GRUB for BIOS, its menu in /boot/grub/grub.cfg.
    pub grub_bios: bool,
    /// Mount points of every ESP when there is more than one (a mirrored
    /// install: `/boot/efi`, `/boot/efi2`); empty means `/boot/efi` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub esps: Vec<String>,
}

impl BootSetup {
    /// The ESP mount points [`sync`] writes, in order.
    pub fn esp_mounts(&self) -> Vec<String> {
        if self.esps.is_empty() {
            vec!["/boot/efi".to_string()]
        } else {
            self.esps.clone()
        }
    }
}

/// Reads [`BOOT_SETUP`] of an installed system.
pub fn read_setup(root: &Root) -> Result<BootSetup> {
    let text = root.read(BOOT_SETUP).with_context(|| {
        format!(
            "reading {} (written by op-dbus-install; this system was not installed by it?)",
            root.display_path(BOOT_SETUP).display()
        )
    })?;
    serde_json::from_slice(&text)
        .with_context(|| format!("parsing {}", root.display_path(BOOT_SETUP).display()))
}

/// What [`sync`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    /// Installed kernels, newest (the default entry) first.
    pub kernels: Vec<String>,
    /// The first ESP's entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd_boot: Option<SystemdBootReport>,
    /// Every ESP written (mount point), when the setup has several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub esps_written: Vec<String>,
    /// ESPs of the setup that were not mounted (their disk missing): not
    /// written; run `boot-sync` again once the disk is back.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub esps_skipped: Vec<String>,
    /// Whether /boot/grub/grub.cfg was rewritten.
    pub grub_menu: bool,
}

/// Writes GRUB's menu for the kernels in /boot of `root`, and the
/// settings that make Debian's `update-grub` write an equivalent one.
pub fn write_grub_menu(root: &Root, boot: &BootConfig) -> Result<Vec<String>> {
    let versions: Vec<String> = installed_kernels(root)?
        .into_iter()
        .map(|k| k.version)
        .collect();
    root.write("/boot/grub/grub.cfg", grub_cfg(boot, &versions), 0o644)?;
    root.write(GRUB_DEFAULTS, grub_defaults(boot), 0o644)?;
    Ok(versions)
}

/// Brings the boot menus of an installed system in line with the kernels in
/// its /boot, as the install set them up ([`BOOT_SETUP`]): every kernel gets
/// an entry, the newest is the default, entries of removed kernels go.
/// `esp` is the mounted ESP (needed when the system boots by systemd-boot).
pub fn sync(root: &Root, esp: Option<&dyn EspTree>) -> Result<SyncReport> {
    sync_all(root, &[("/boot/efi".to_string(), esp)])
}

/// [`sync`] onto several ESPs, `(mount point, the mounted ESP or None when
/// it is not mounted)`: every mounted one gets the same files; one not
/// mounted is skipped and reported, unless none is mounted.
pub fn sync_all(root: &Root, esps: &[(String, Option<&dyn EspTree>)]) -> Result<SyncReport> {
    let setup = read_setup(root)?;
    let kernels: Vec<String> = installed_kernels(root)?
        .into_iter()
        .map(|k| k.version)
        .collect();
    let mut systemd_boot = None;
    let (mut written, mut skipped) = (Vec::new(), Vec::new());
    if setup.systemd_boot {
        for (path, esp) in esps {
            match esp {
                Some(esp) => {
                    let r = install_systemd_boot(*esp, root, &setup.config)
                        .with_context(|| format!("writing the ESP at {path}"))?;
                    systemd_boot.get_or_insert(r);
                    written.push(path.clone());
                }
                None => skipped.push(path.clone()),
            }
        }
        if systemd_boot.is_none() {
            anyhow::bail!(
                "this system boots by systemd-boot and no ESP of it is mounted ({}): mount it (fstab: /boot/efi) or pass --esp DIR",
                esps.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if setup.grub_bios {
        write_grub_menu(root, &setup.config)?;
    }
    Ok(SyncReport {
        kernels,
        systemd_boot,
        esps_written: if esps.len() > 1 { written } else { Vec::new() },
        esps_skipped: skipped,
        grub_menu: setup.grub_bios,
    })
}

/// What every boot entry needs to find and start the installed system.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootConfig {
    /// Entry title (the host name).
    pub title: String,
    /// Full kernel command line (see [`kernel_cmdline`]).
    pub cmdline: String,
    /// UUID of the filesystem that holds `/boot`, and the path of `/boot`
    /// inside that filesystem as GRUB sees it (`/@/boot` for a btrfs root
    /// subvolume `@`, `/boot` for a plain root, `/` for a separate /boot).
    pub boot_fs_uuid: String,
    pub boot_dir_in_fs: String,
}

/// One installed kernel with its initramfs, found in the target's /boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub version: String,
}

/// Kernels in `/boot` that have an initramfs, newest first.
pub fn installed_kernels(root: &Root) -> Result<Vec<Kernel>> {
    let mut out = Vec::new();
    for name in root.read_dir("/boot")? {
        let name = name.to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("vmlinuz-") {
            if root.exists(&format!("/boot/initrd.img-{v}")) {
                out.push(Kernel {
                    version: v.to_string(),
                });
            }
        }
    }
    out.sort_by(|a, b| version_cmp(&b.version, &a.version));
    if out.is_empty() {
        anyhow::bail!(
            "no kernel with an initramfs in {} (vmlinuz-* and initrd.img-*); the payload must include linux-image and initramfs-tools",
            root.display_path("/boot").display()
        );
    }
    Ok(out)
}

/// Orders versions like `6.1.0-10-amd64` numerically, field by field.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let split = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', '+', '~'])
            .map(|p| (p.parse::<u64>().unwrap_or(0), p.to_string()))
            .collect()
    };
    split(a).cmp(&split(b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn newest_kernel_first() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        for v in ["6.1.0-9-amd64", "6.1.0-10-amd64", "6.1.0-11-amd64"] {
            r.write(&format!("/boot/vmlinuz-{v}"), "k", 0o644).unwrap();
        }
        r.write("/boot/initrd.img-6.1.0-9-amd64", "i", 0o644)
            .unwrap();
        r.write("/boot/initrd.img-6.1.0-10-amd64", "i", 0o644)
            .unwrap();
        let k = installed_kernels(&r).unwrap();
        let v: Vec<_> = k.iter().map(|k| k.version.as_str()).collect();
        // 11 has no initramfs and is skipped; 10 sorts above 9.
        assert_eq!(v, ["6.1.0-10-amd64", "6.1.0-9-amd64"]);
    }

    #[test]
    fn no_kernel_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        r.write("/boot/config", "", 0o644).unwrap();
        assert!(installed_kernels(&r)
            .unwrap_err()
            .to_string()
            .contains("linux-image"));
    }
}
