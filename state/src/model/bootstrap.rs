//! `bootstrap`: what the installer needs before any plugin runs: the
//! distribution, the machine's identity, firmware and bootloader.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// The storage device key the system is installed on (defaults to the
    /// only device in `plugins.storage.devices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default)]
    pub distribution: Distribution,
    /// Debian suite (bookworm, trixie); Proxmox VE follows its Debian base.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Proxmox VE major version the install is meant to be (8 or 9); checked
    /// against `suite` (PVE 8 is built on bookworm, PVE 9 on trixie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox_version: Option<u8>,
    /// Package mirror URL; by default the build host's apt sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_locale")]
    pub locale: String,
    /// Console keymap, such as "us" or "de-latin1".
    #[serde(default = "default_keyboard")]
    pub keyboard: String,
    #[serde(default)]
    pub firmware: Firmware,
    #[serde(default)]
    pub bootloader: Bootloader,
    /// Kernel command line of the installed system (console= arguments the
    /// installer was booted with are appended).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel_cmdline: String,
    /// crypt(3) hash (yescrypt `$y$`, SHA-512 `$6$`, SHA-256 `$5$`) or `!` for a locked root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_password_hash: Option<String>,
    /// SSH public keys for root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_ssh_authorized_keys: Vec<String>,
    /// Extra packages installed with the base system.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Where the base system comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<PayloadSource>,
    /// What the live system does when an unattended install ends.
    #[serde(default)]
    pub after_install: AfterInstall,
}

fn default_suite() -> String {
    "bookworm".into()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_locale() -> String {
    "C.UTF-8".into()
}
fn default_keyboard() -> String {
    "us".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    #[default]
    Debian,
    Proxmox,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    #[default]
    Uefi,
    Bios,
    Both,
}

impl Firmware {
    pub fn uefi(self) -> bool {
        matches!(self, Firmware::Uefi | Firmware::Both)
    }
    pub fn bios(self) -> bool {
        matches!(self, Firmware::Bios | Firmware::Both)
    }
}

/// `auto` picks systemd-boot for UEFI and GRUB for BIOS (both for `both`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    #[default]
    Auto,
    SystemdBoot,
    Grub,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PayloadSource {
    pub source: PayloadKind,
    /// Path of the tar.zst for `file` (the ISO's own payload for `embedded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Expected SHA-256 of the payload (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// The payload carried by the installer ISO.
    Embedded,
    /// A tar.zst at `path`.
    File,
    /// mmdebstrap/debootstrap from the mirror.
    Debootstrap,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AfterInstall {
    #[default]
    Poweroff,
    Reboot,
    Shell,
}
