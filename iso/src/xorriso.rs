//! The ISO file itself: assembling the hybrid image with xorriso (GRUB
//! hybrid MBR, El Torito for BIOS and EFI, the ESP appended as GPT partition
//! 2), replacing files in an existing ISO, and extracting files from one.

use std::path::{Path, PathBuf};

use anyhow::Context;
use opdbus_common::Task;

use crate::boot::BOOT_HYBRID;

/// Volume ID of the medium.
pub const VOLUME_ID: &str = "OPDBUS";

/// Writes `output` from the small files under `iso_root`, the large files in
/// `grafts` (ISO path, host file) and the ESP image `efi_img`.
pub fn assemble(
    iso_root: &Path,
    grafts: &[(String, PathBuf)],
    efi_img: &Path,
    output: &Path,
) -> anyhow::Result<()> {
    let mut task = Task::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-r",
            "-J",
            "-joliet-long",
            "-V",
            VOLUME_ID,
            "-o",
        ])
        .arg(output)
        .args([
            "--grub2-mbr",
            BOOT_HYBRID,
            "-partition_offset",
            "16",
            "--mbr-force-bootable",
        ])
        .args(["-append_partition", "2", "28732ac11ff8d211ba4b00a0c93ec93b"])
        .arg(efi_img)
        .args([
            "-appended_part_as_gpt",
            "-iso_mbr_part_type",
            "a2a0d0ebe5b9334487c068b6b72699c7",
            "-c",
            "/boot.catalog",
            "-b",
            "/boot/grub/i386-pc/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "-eltorito-alt-boot",
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
            "-graft-points",
        ])
        .arg(format!("/={}", iso_root.display()));
    for (iso_path, host) in grafts {
        task = task.arg(format!("{iso_path}={}", host.display()));
    }
    task.run()
        .with_context(|| format!("writing the ISO {} with xorriso", output.display()))
}

/// Copies `input` to `output` with `replace` (ISO path, host file) mapped
/// in, keeping the boot equipment and the appended ESP as they were.
pub fn replace_files(
    input: &Path,
    output: &Path,
    replace: &[(&str, PathBuf)],
) -> anyhow::Result<()> {
    if output.exists() {
        std::fs::remove_file(output).with_context(|| format!("replacing {}", output.display()))?;
    }
    let mut task = Task::new("xorriso")
        .arg("-indev")
        .arg(input)
        .arg("-outdev")
        .arg(output)
        .args(["-boot_image", "any", "replay"]);
    for (iso_path, host) in replace {
        task = task.arg("-map").arg(host).arg(iso_path);
    }
    task.arg("-end").run().with_context(|| {
        format!(
            "writing {} from {} with xorriso",
            output.display(),
            input.display()
        )
    })
}

/// Extracts `iso_path` from `iso` to `dest`.
pub fn extract(iso: &Path, iso_path: &str, dest: &Path) -> anyhow::Result<()> {
    if dest.exists() {
        std::fs::remove_file(dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    Task::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .arg("-extract")
        .arg(iso_path)
        .arg(dest)
        .run()
        .with_context(|| format!("extracting {iso_path} from {}", iso.display()))
}
