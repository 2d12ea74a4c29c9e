//! systemd-boot without a chroot or a mounted ESP: the EFI binary from the
//! target, `loader.conf`, one entry per kernel, kernels and initrds copied
//! onto the ESP, and the removable-media fallback `EFI/BOOT/BOOTX64.EFI`.

use anyhow::{Context, Result};

use super::{installed_kernels, BootConfig};
use crate::disk::esp::Esp;
use crate::target::Root;

/// systemd-boot's EFI binary (systemd-boot-efi), read from the target.
pub const EFI_BINARY: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// What was written to the ESP.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SystemdBootReport {
    pub entries: Vec<String>,
    pub default_kernel: String,
}

/// Installs systemd-boot and an entry per installed kernel into `esp`.
pub fn install_systemd_boot(
    esp: &Esp,
    root: &Root,
    boot: &BootConfig,
) -> Result<SystemdBootReport> {
    let efi = root.read(EFI_BINARY).context(
        "the target has no systemd-boot EFI binary; the payload must include systemd-boot-efi",
    )?;
    for dir in ["EFI/systemd", "EFI/BOOT", "loader/entries", "opdbus"] {
        esp.mkdir_all(dir)
            .with_context(|| format!("creating {dir} on the ESP"))?;
    }
    esp.write_file("EFI/systemd/systemd-bootx64.efi", &efi)
        .context("writing systemd-bootx64.efi to the ESP")?;
    esp.write_file("EFI/BOOT/BOOTX64.EFI", &efi)
        .context("writing the fallback EFI/BOOT/BOOTX64.EFI")?;

    let kernels = installed_kernels(root)?;
    let mut entries = Vec::new();
    for k in &kernels {
        let v = &k.version;
        let dir = format!("opdbus/{v}");
        esp.mkdir_all(&dir)
            .with_context(|| format!("creating {dir} on the ESP"))?;
        let linux = root.read(&format!("/boot/vmlinuz-{v}"))?;
        let initrd = root.read(&format!("/boot/initrd.img-{v}"))?;
        esp.write_file(&format!("{dir}/linux"), &linux)
            .with_context(|| format!("copying kernel {v} to the ESP"))?;
        esp.write_file(&format!("{dir}/initrd"), &initrd)
            .with_context(|| format!("copying the initramfs of {v} to the ESP"))?;
        let name = format!("opdbus-{v}.conf");
        esp.write_file(
            &format!("loader/entries/{name}"),
            entry_text(boot, v).as_bytes(),
        )
        .with_context(|| format!("writing boot entry {name}"))?;
        entries.push(name);
    }
    let default = entries.first().cloned().unwrap_or_default();
    esp.write_file("loader/loader.conf", loader_conf(&default).as_bytes())
        .context("writing loader/loader.conf")?;
    Ok(SystemdBootReport {
        entries,
        default_kernel: kernels[0].version.clone(),
    })
}

fn entry_text(boot: &BootConfig, version: &str) -> String {
    format!(
        "title   {} (Debian, {version})\nversion {version}\nlinux   /opdbus/{version}/linux\ninitrd  /opdbus/{version}/initrd\noptions {}\n",
        boot.title, boot.cmdline
    )
}

fn loader_conf(default: &str) -> String {
    format!("default {default}\ntimeout 3\nconsole-mode keep\neditor no\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_kernel_initrd_and_options() {
        let b = BootConfig {
            title: "node1".into(),
            cmdline: "root=UUID=x rw".into(),
            boot_fs_uuid: "x".into(),
            boot_dir_in_fs: "/@/boot".into(),
        };
        let e = entry_text(&b, "6.1.0-10-amd64");
        assert!(e.contains("linux   /opdbus/6.1.0-10-amd64/linux\n"));
        assert!(e.contains("options root=UUID=x rw\n"));
        assert!(loader_conf("opdbus-6.1.conf").starts_with("default opdbus-6.1.conf\n"));
    }
}
