//! `op-dbus-install boot-sync`: on an installed system, after a kernel was
//! installed or removed (the /etc/kernel/post{inst,rm}.d hooks call it),
//! brings the systemd-boot entries on the ESP and GRUB's menu in line with
//! the kernels in /boot, with the installer's own boot code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::bootloader::{self, MountedEsp};
use crate::target::Root;
use opdbus_common::rootfs::RootDir;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Root of the installed system.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// The mounted ESP (default: every ESP the install recorded, mounted
    /// below ROOT: /boot/efi, and /boot/efi2… on a mirrored install).
    #[arg(long, value_name = "DIR")]
    pub esp: Option<PathBuf>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let root = Root::open(&a.root)?;
    // (mount point as shown, where it is from here).
    let dirs: Vec<(String, PathBuf)> = match &a.esp {
        Some(d) => vec![(d.display().to_string(), d.clone())],
        None => {
            let setup = bootloader::read_setup(&root)?;
            setup
                .esp_mounts()
                .into_iter()
                .map(|m| {
                    let here = a.root.join(m.trim_start_matches('/'));
                    (m, here)
                })
                .collect()
        }
    };
    let mut opened = Vec::new();
    for (shown, dir) in &dirs {
        // An ESP the setup lists but that is not mounted (its disk was
        // pulled) is skipped: writing there would fill the root
        // filesystem's directory instead. `--esp` is taken as given.
        let mounted = a.esp.is_some() || is_mount_point(dir);
        let esp = match RootDir::open(dir) {
            Ok(d) if mounted => Some(MountedEsp(d)),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("opening the ESP {}", dir.display())),
        };
        opened.push((shown.clone(), esp));
    }
    let esps: Vec<(String, Option<&dyn bootloader::EspTree>)> = opened
        .iter()
        .map(|(p, e)| (p.clone(), e.as_ref().map(|e| e as &dyn bootloader::EspTree)))
        .collect();
    let report = bootloader::sync_all(&root, &esps)?;
    let esp_dir = dirs.first().map(|(s, _)| s.clone()).unwrap_or_default();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "op-dbus boot-sync: kernels {} (default {})",
        report.kernels.join(", "),
        report.kernels.first().map(String::as_str).unwrap_or("-")
    );
    if let Some(sb) = &report.systemd_boot {
        println!(
            "  systemd-boot entries on {}: {}",
            if report.esps_written.is_empty() {
                esp_dir.clone()
            } else {
                report.esps_written.join(", ")
            },
            sb.entries.join(", ")
        );
        if !sb.removed.is_empty() {
            println!("  removed: {}", sb.removed.join(", "));
        }
    }
    for s in &report.esps_skipped {
        eprintln!(
            "warning: the ESP {s} is not mounted (its disk missing?): not written; run op-dbus-install boot-sync again once it is back"
        );
    }
    if report.grub_menu {
        println!("  GRUB menu: /boot/grub/grub.cfg rewritten");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `dir` is a mount point: on another device than its parent (an
/// ESP is a filesystem of its own), or the same inode as the parent (`/`).
fn is_mount_point(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(d), Ok(p)) = (
        std::fs::symlink_metadata(dir),
        std::fs::metadata(dir.join("..")),
    ) else {
        return false;
    };
    d.is_dir() && (d.dev() != p.dev() || d.ino() == p.ino())
}
