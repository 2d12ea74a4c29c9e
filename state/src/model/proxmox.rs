//! `plugins.proxmox` (seed 002): guests, storage, network, cluster and
//! backups as the PVE API knows them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{GuestNic, OneOrMany, VmDisk};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxmox {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How the agent reaches the PVE REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<PveApi>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<PveVm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<PveContainer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<PveStorage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<PveNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<PveCluster>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<PveBackup>,
}

/// The PVE REST API endpoint (`/api2/json`) and its credentials.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveApi {
    /// Default `https://localhost:8006`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A root-only file (mode 0600 or stricter) holding one line
    /// `USER@REALM!TOKENID=SECRET`. Default `/etc/op-dbus/pve-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// SHA-256 of the server certificate (DER), 64 hex digits, colons
    /// allowed. Default: the node's own `/etc/pve/local/pve-ssl.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// How long to wait for one PVE task (UPID), in seconds. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_timeout: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PveGuestState {
    #[default]
    Running,
    Stopped,
    /// Destroyed if op-dbus created it; refused otherwise.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveVm {
    pub vmid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Pin to a cluster node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default)]
    pub state: PveGuestState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Emulated CPU type (`host`, `x86-64-v2-AES`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Shorthand for `disks.scsi0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<VmDisk>,
    /// Disks by slot (`scsi0`, `virtio1`, `sata0`, `ide2`): adding one never
    /// touches the others; a bigger size grows the disk, a smaller one is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disks: BTreeMap<String, VmDisk>,
    /// Shorthand for `nics.net0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<GuestNic>,
    /// NICs by slot (`net0`, `net1`); the MAC PVE generated is kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nics: BTreeMap<String, GuestNic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ostype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_mitigations: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<PveHa>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A guest as an HA resource (`/cluster/ha/resources`, sid `vm:ID` /
/// `ct:ID`). While it is one, the HA manager starts and stops the guest:
/// its `state` follows the guest's `state` unless set here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveHa {
    /// `false`: the guest is no HA resource (an HA resource op-dbus added
    /// is removed; one added by hand is refused). Default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The HA group (it must exist: `ha-manager groupadd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The state the HA manager keeps; default `started` for a running
    /// guest, `stopped` for a stopped one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PveHaState>,
    /// Restarts on the node after a failed start (PVE default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart: Option<u32>,
    /// Relocations to another node after failed restarts (PVE default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_relocate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn yes() -> bool {
    true
}

/// The requested state of an HA resource, as `ha-manager` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PveHaState {
    Started,
    Stopped,
    /// Stopped and not relocated on node failure (error recovery).
    Disabled,
    /// The HA stack leaves the guest alone.
    Ignored,
}

impl PveHaState {
    pub fn as_str(self) -> &'static str {
        match self {
            PveHaState::Started => "started",
            PveHaState::Stopped => "stopped",
            PveHaState::Disabled => "disabled",
            PveHaState::Ignored => "ignored",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveContainer {
    pub vmid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default)]
    pub state: PveGuestState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<VmDisk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<GuestNic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ostemplate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<PveHa>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveStorage {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `absent`: the definition is removed if op-dbus made it (the data on
    /// it stays); refused otherwise.
    #[serde(default, skip_serializing_if = "PveStorageState::is_present")]
    pub state: PveStorageState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinpool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vgname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PveStorageState {
    #[default]
    Present,
    Absent,
}

impl PveStorageState {
    pub fn is_present(&self) -> bool {
        *self == PveStorageState::Present
    }
}

/// A stanza of /etc/network/interfaces as PVE writes it. The network
/// plugin writes it (one writer of that file): each entry becomes an
/// interface of `plugins.network` before planning (`normalize`), and
/// one naming an interface `plugins.network` or `plugins.net` also
/// declares is refused by `validate`. `type` is `bridge` (a Linux bridge,
/// `vmbrN`), `OVSBridge` or `eth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveNetwork {
    pub iface: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub bridge_ports: OneOrMany<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveCluster {
    #[serde(default)]
    pub enabled: bool,
    pub name: String,
    /// The members the state expects; a member other than this node is
    /// the default peer of `join`. Reported, never removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<PveNode>,
    /// What joining this node to the cluster needs; without it a node
    /// outside the cluster is refused, not joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<PveJoin>,
}

/// `pvecm add` over the API (`POST /cluster/config/join` on this node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveJoin {
    /// Address of an existing member; default: the first of `nodes` that
    /// is not this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// SHA-256 of the peer's API certificate (`pvenode cert info`), 64
    /// hex digits, colons allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// A root-only file (0600) holding the peer's root@pam password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// This node's corosync link 0 address; default: PVE picks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link0: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveNode {
    pub name: String,
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveBackup {
    /// The job id in `/etc/pve/jobs.cfg`; default `opdbus-N` (N = position, from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<PveRetention>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PveRetention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
}
