//! GRUB for both firmwares: a standalone EFI image (modules in its memdisk)
//! and a BIOS El Torito core whose modules sit on the ISO. Both carry a tiny
//! config that finds this medium by its search file and reads its grub.cfg.

use std::fs;
use std::path::Path;

use anyhow::Context;
use opdbus_common::Task;

use crate::menu::embedded_cfg;

/// GRUB's BIOS files on the build host (package grub-pc-bin).
pub const GRUB_I386: &str = "/usr/lib/grub/i386-pc";
/// GRUB's EFI files on the build host (package grub-efi-amd64-bin).
pub const GRUB_EFI: &str = "/usr/lib/grub/x86_64-efi";
/// The hybrid MBR for GRUB-booted ISOs.
pub const BOOT_HYBRID: &str = "/usr/lib/grub/i386-pc/boot_hybrid.img";

/// Modules preloaded into the EFI image (all others are in its memdisk).
const EFI_MODULES: &str = "part_gpt part_msdos iso9660 fat search search_fs_file configfile normal linux serial terminal echo test";
/// Modules of the BIOS core; `normal` and the rest load from /boot/grub/i386-pc.
const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "iso9660",
    "part_msdos",
    "part_gpt",
    "search",
    "search_fs_file",
];

/// Writes `BOOTX64.EFI` to `output`.
pub fn efi_image(search_file: &str, work: &Path, output: &Path) -> anyhow::Result<()> {
    let cfg = work.join("embed-efi.cfg");
    fs::write(&cfg, embedded_cfg(search_file, false))
        .with_context(|| format!("writing {}", cfg.display()))?;
    Task::new("grub-mkstandalone")
        .args(["-O", "x86_64-efi", "--locales=", "--fonts=", "--themes="])
        .arg(format!("--modules={EFI_MODULES}"))
        .arg("-o")
        .arg(output)
        .arg(format!("boot/grub/grub.cfg={}", cfg.display()))
        .run()
        .context("making the GRUB EFI image (is grub-efi-amd64-bin installed?)")
}

/// Lays out `/boot/grub/i386-pc/` (modules and `eltorito.img`) under `iso_root`.
pub fn bios_tree(search_file: &str, work: &Path, iso_root: &Path) -> anyhow::Result<()> {
    let dest = iso_root.join("boot/grub/i386-pc");
    fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    for entry in fs::read_dir(GRUB_I386)
        .with_context(|| format!("listing {GRUB_I386} (is grub-pc-bin installed?)"))?
    {
        let path = entry
            .with_context(|| format!("listing {GRUB_I386}"))?
            .path();
        let keep = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "mod" | "lst"));
        if keep {
            if let Some(name) = path.file_name() {
                fs::copy(&path, dest.join(name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    let cfg = work.join("embed-bios.cfg");
    fs::write(&cfg, embedded_cfg(search_file, true))
        .with_context(|| format!("writing {}", cfg.display()))?;
    Task::new("grub-mkimage")
        .args(["-O", "i386-pc-eltorito", "-p", "/boot/grub", "-c"])
        .arg(&cfg)
        .arg("-o")
        .arg(dest.join("eltorito.img"))
        .args(BIOS_MODULES)
        .run()
        .context("making the GRUB BIOS El Torito image")
}
