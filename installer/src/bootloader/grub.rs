//! GRUB for BIOS: `grub-install --target=i386-pc` into the BIOS boot
//! partition (GPT) or the MBR gap, run in a chroot of the target against
//! the real (loop) block device, never an image file, then our own grub.cfg.

use std::path::Path;

use anyhow::{Context, Result};

use super::BootConfig;
use crate::target::{Chroot, Root};

/// A file of GRUB's BIOS modules (grub-pc-bin) that must be in the target.
pub const GRUB_BIOS_MODULES: &str = "/usr/lib/grub/i386-pc/modinfo.sh";

/// Installs GRUB's boot code on `disk` and writes `/boot/grub/grub.cfg`.
pub fn install_grub_bios(root: &Root, disk: &Path, boot: &BootConfig) -> Result<()> {
    if !root.exists(GRUB_BIOS_MODULES) {
        anyhow::bail!("the target has no GRUB BIOS modules; the payload must include grub-pc-bin");
    }
    super::write_grub_menu(root, boot)?;
    // grub-install writes below /boot of the chroot: a real directory.
    root.open_dir("/boot")?;
    let chroot = Chroot::enter(root)?;
    chroot
        .task("grub-install")
        .args([
            "--target=i386-pc",
            "--boot-directory=/boot",
            "--modules=part_gpt part_msdos btrfs ext2 search_fs_uuid",
            "--no-floppy",
        ])
        .arg(disk)
        .run()
        .with_context(|| format!("installing GRUB on {}", disk.display()))?;
    chroot.close()
}

/// A static grub.cfg: find /boot by UUID, one entry per kernel, serial and
/// VGA console both.
pub fn grub_cfg(boot: &BootConfig, versions: &[String]) -> String {
    let dir = boot.boot_dir_in_fs.trim_end_matches('/');
    let mut cfg = format!(
        "# Written by op-dbus-install.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout=3\n\
         set default=0\n\
         insmod part_gpt\ninsmod part_msdos\ninsmod btrfs\ninsmod ext2\n\
         search --no-floppy --fs-uuid --set=root {}\n",
        boot.boot_fs_uuid
    );
    for v in versions {
        cfg.push_str(&format!(
            "menuentry '{} (Debian, {v})' {{\n    linux {dir}/vmlinuz-{v} {}\n    initrd {dir}/initrd.img-{v}\n}}\n",
            boot.title, boot.cmdline
        ));
    }
    cfg
}

/// `/etc/default/grub.d/op-dbus.cfg`: what Debian's `grub-mkconfig` needs
/// to write a menu equivalent to [`grub_cfg`] (same serial console and
/// kernel arguments, newest kernel first and default, no submenu, no
/// os-prober). It finds `root=` and btrfs' `rootflags=subvol=` itself.
pub fn grub_defaults(boot: &BootConfig) -> String {
    let args: Vec<&str> = boot
        .cmdline
        .split_whitespace()
        .filter(|a| !a.starts_with("root=") && !a.starts_with("rootflags=subvol=") && *a != "rw")
        .collect();
    format!(
        "# Written by op-dbus-install: Debian's update-grub then writes the\n\
         # menu op-dbus-install boot-sync writes (see /etc/op-dbus/boot.json).\n\
         GRUB_DEFAULT=0\n\
         GRUB_TIMEOUT=3\n\
         GRUB_DISTRIBUTOR='{}'\n\
         GRUB_CMDLINE_LINUX_DEFAULT=''\n\
         GRUB_CMDLINE_LINUX='{}'\n\
         GRUB_TERMINAL='console serial'\n\
         GRUB_SERIAL_COMMAND='serial --unit=0 --speed=115200'\n\
         GRUB_DISABLE_SUBMENU=y\n\
         GRUB_DISABLE_OS_PROBER=true\n",
        shell_quoted(&boot.title),
        shell_quoted(&args.join(" "))
    )
}

/// `s` for the inside of a single-quoted shell word.
fn shell_quoted(s: &str) -> String {
    s.replace('\'', "'\\''")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debian_update_grub_gets_the_same_console_and_arguments() {
        let b = BootConfig {
            title: "web's host".into(),
            cmdline: "root=UUID=u rootflags=subvol=@ rw quiet console=ttyS0,115200".into(),
            boot_fs_uuid: "u".into(),
            boot_dir_in_fs: "/@/boot".into(),
        };
        let d = grub_defaults(&b);
        assert!(
            d.contains("\nGRUB_CMDLINE_LINUX='quiet console=ttyS0,115200'\n"),
            "{d}"
        );
        assert!(d.contains("\nGRUB_DISTRIBUTOR='web'\\''s host'\n"), "{d}");
        assert!(d.contains("\nGRUB_TERMINAL='console serial'\n"), "{d}");
        // What sh makes of it (grub-mkconfig sources the file).
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{d}\nprintf '%s|%s' \"$GRUB_DISTRIBUTOR\" \"$GRUB_CMDLINE_LINUX\""
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "web's host|quiet console=ttyS0,115200"
        );
    }

    #[test]
    fn cfg_searches_uuid_and_uses_subvolume_paths() {
        let b = BootConfig {
            title: "n".into(),
            cmdline: "root=UUID=u rootflags=subvol=@ rw".into(),
            boot_fs_uuid: "u".into(),
            boot_dir_in_fs: "/@/boot".into(),
        };
        let cfg = grub_cfg(&b, &["6.1.0-10-amd64".into()]);
        assert!(cfg.contains("search --no-floppy --fs-uuid --set=root u\n"));
        assert!(cfg.contains(
            "    linux /@/boot/vmlinuz-6.1.0-10-amd64 root=UUID=u rootflags=subvol=@ rw\n"
        ));
        assert!(cfg.contains("    initrd /@/boot/initrd.img-6.1.0-10-amd64\n"));
    }
}
