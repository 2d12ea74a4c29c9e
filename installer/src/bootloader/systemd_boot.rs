//! systemd-boot without a chroot: the EFI binary from the target,
//! `loader.conf`, one entry per kernel, kernels and initrds copied onto the
//! ESP, and the removable-media fallback `EFI/BOOT/BOOTX64.EFI`. The same
//! code runs at install (the ESP written in user space with `fatfs`) and on
//! the installed system after every kernel install or removal (the mounted
//! ESP; `op-dbus-install boot-sync` from /etc/kernel/post{inst,rm}.d).

use anyhow::{Context, Result};

use super::{installed_kernels, BootConfig};
use crate::disk::esp::Esp;
use crate::target::Root;
use opdbus_common::rootfs::RootDir;

/// Where boot files go: the ESP as a FAT filesystem written in user space
/// (the installer), or the mounted ESP of the running system.
pub trait EspTree {
    fn mkdir_all(&self, path: &str) -> Result<()>;
    fn write_file(&self, path: &str, data: &[u8]) -> Result<()>;
    /// Names in `path`, sorted; empty when it does not exist.
    fn list_dir(&self, path: &str) -> Result<Vec<String>>;
    /// Removes a file or an empty directory; a missing one is fine.
    fn remove(&self, path: &str) -> Result<()>;
}

impl EspTree for Esp {
    fn mkdir_all(&self, path: &str) -> Result<()> {
        Ok(Esp::mkdir_all(self, path)?)
    }
    fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        Ok(Esp::write_file(self, path, data)?)
    }
    fn list_dir(&self, path: &str) -> Result<Vec<String>> {
        Ok(Esp::list_dir(self, path)?)
    }
    fn remove(&self, path: &str) -> Result<()> {
        Ok(Esp::remove(self, path)?)
    }
}

/// The mounted ESP of a running system, written beneath its directory fd.
pub struct MountedEsp(pub RootDir);

impl EspTree for MountedEsp {
    fn mkdir_all(&self, path: &str) -> Result<()> {
        self.0
            .create_dir_all(format!("/{path}"), 0o755)
            .with_context(|| format!("creating {}", self.0.display_path(path).display()))
    }
    /// A new file renamed over the old one. No chmod: FAT has no modes, the
    /// mount options decide them (and vfat refuses most mode changes).
    fn write_file(&self, path: &str, data: &[u8]) -> Result<()> {
        use std::io::Write as _;
        let shown = self.0.display_path(path);
        let (parent, name) = match path.trim_start_matches('/').rsplit_once('/') {
            Some((p, n)) => (format!("/{p}"), n),
            None => ("/".to_string(), path.trim_start_matches('/')),
        };
        self.mkdir_all(&parent)?;
        let dir = self
            .0
            .open_dir(&parent)
            .with_context(|| format!("opening the folder of {}", shown.display()))?;
        let name = std::ffi::OsStr::new(name);
        let (tmp, mut f) = opdbus_common::rootfs::create_temp(&dir, name, 0o644)
            .with_context(|| format!("creating a file next to {}", shown.display()))?;
        let written = f
            .write_all(data)
            .and_then(|()| f.sync_all())
            .and_then(|()| {
                nix::fcntl::renameat(
                    std::os::fd::AsFd::as_fd(&dir),
                    tmp.as_os_str(),
                    std::os::fd::AsFd::as_fd(&dir),
                    name,
                )
                .map_err(std::io::Error::from)
            });
        if written.is_err() {
            let _ = nix::unistd::unlinkat(
                std::os::fd::AsFd::as_fd(&dir),
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        written.with_context(|| format!("writing {}", shown.display()))
    }
    fn list_dir(&self, path: &str) -> Result<Vec<String>> {
        match self.0.read_dir(format!("/{path}")) {
            Ok(v) => Ok(v
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => {
                Err(e).with_context(|| format!("listing {}", self.0.display_path(path).display()))
            }
        }
    }
    fn remove(&self, path: &str) -> Result<()> {
        let abs = format!("/{path}");
        let is_dir = self
            .0
            .symlink_metadata(&abs)
            .map(|st| st.st_mode & 0o170000 == 0o040000)
            .unwrap_or(false);
        let r = if is_dir {
            self.0.remove_dir(&abs)
        } else {
            self.0.remove_file(&abs)
        };
        r.with_context(|| format!("removing {}", self.0.display_path(path).display()))
    }
}

/// systemd-boot's EFI binary (systemd-boot-efi), read from the target.
pub const EFI_BINARY: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// What was written to the ESP.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SystemdBootReport {
    pub entries: Vec<String>,
    pub default_kernel: String,
    /// Entries of kernels no longer installed, removed with their files.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
}

const ENTRY_PREFIX: &str = "opdbus-";

/// Installs systemd-boot and an entry per installed kernel into `esp` (the
/// newest the default, the older ones kept as fallbacks), and removes the
/// entries and files of kernels that are gone. Running it again changes
/// nothing.
pub fn install_systemd_boot(
    esp: &dyn EspTree,
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
        let name = format!("{ENTRY_PREFIX}{v}.conf");
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
    let installed = |v: &str| kernels.iter().any(|k| k.version == v);
    let mut removed = Vec::new();
    for name in esp.list_dir("loader/entries")? {
        let Some(v) = name
            .strip_prefix(ENTRY_PREFIX)
            .and_then(|n| n.strip_suffix(".conf"))
        else {
            continue;
        };
        if !installed(v) {
            esp.remove(&format!("loader/entries/{name}"))?;
            removed.push(name);
        }
    }
    for v in esp.list_dir("opdbus")? {
        if !installed(&v) {
            for f in esp.list_dir(&format!("opdbus/{v}"))? {
                esp.remove(&format!("opdbus/{v}/{f}"))?;
            }
            esp.remove(&format!("opdbus/{v}"))?;
        }
    }
    Ok(SystemdBootReport {
        entries,
        default_kernel: kernels[0].version.clone(),
        removed,
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
