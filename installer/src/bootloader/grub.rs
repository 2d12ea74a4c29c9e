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

#[cfg(test)]
mod tests {
    use super::*;

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
