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
    /// The mounted ESP (default: ROOT/boot/efi).
    #[arg(long, value_name = "DIR")]
    pub esp: Option<PathBuf>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let root = Root::open(&a.root)?;
    let esp_dir = a.esp.clone().unwrap_or_else(|| a.root.join("boot/efi"));
    let esp = match RootDir::open(&esp_dir) {
        Ok(d) => Some(MountedEsp(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("opening the ESP {}", esp_dir.display())),
    };
    let report = bootloader::sync(&root, esp.as_ref().map(|e| e as &dyn bootloader::EspTree))?;
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
            esp_dir.display(),
            sb.entries.join(", ")
        );
        if !sb.removed.is_empty() {
            println!("  removed: {}", sb.removed.join(", "));
        }
    }
    if report.grub_menu {
        println!("  GRUB menu: /boot/grub/grub.cfg rewritten");
    }
    Ok(ExitCode::SUCCESS)
}
