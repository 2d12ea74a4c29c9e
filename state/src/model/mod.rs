//! The typed model of state.json. Every struct rejects unknown fields; the
//! seeds' alternative spellings (`net` vs `network`, `services` vs `units`)
//! are separate types here and are normalized in `crate::normalize`.

mod bootstrap;
mod host;
mod misc;
mod network;
mod proxmox;
mod size;
mod storage;
mod systemd;
mod users;
mod util;
mod virt;
mod wireguard;

pub use bootstrap::*;
pub use host::*;
pub use misc::*;
pub use network::*;
pub use proxmox::*;
pub use size::*;
pub use storage::*;
pub use systemd::*;
pub use users::*;
pub use util::*;
pub use virt::*;
pub use wireguard::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The whole state.json document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version; only 1 exists.
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// What the installer needs: distribution, identity, firmware, bootloader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Bootstrap>,
    /// What the agent (and, for storage, the installer) brings the host to.
    #[serde(default)]
    pub plugins: Plugins,
}

/// Free-form description of the state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
}

/// One section per plugin; every section is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Storage>,
    /// Interfaces as a map keyed by name (roadmap form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Interfaces as a list with `ipv4`/`ipv6` blocks (deployment-guide form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetList>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<Systemd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Users>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packagekit: Option<PackageKit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<Firewall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lxc: Option<Lxc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvm: Option<Kvm>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<Proxmox>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmaker: Option<Netmaker>,
    /// WireGuard tunnels (kernel module, or wireguard-go where it is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<WireGuard>,
    /// The op-dbus host layout under /var/lib/op-dbus (seed 001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opdbus: Option<HostLayout>,
}
