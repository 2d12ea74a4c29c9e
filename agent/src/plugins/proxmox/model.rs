//! The plugin's typed values: what the state asks of PVE (normalized into
//! the property strings PVE's API takes), what a query found, and the
//! canonical comparison of PVE property strings (so a re-apply is a no-op).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use opdbus_state::model::{GuestNic, PveGuestState, PveHa, PveHaState, PveStorage, Size, VmDisk};
use opdbus_state::State;

/// The guest types PVE runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// A KVM VM (`/nodes/{node}/qemu`).
    Qemu,
    /// A container (`/nodes/{node}/lxc`).
    Lxc,
}

impl GuestKind {
    pub fn path(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
    /// `vm` / `ct`, as resources and action kinds name them.
    pub fn short(self) -> &'static str {
        match self {
            GuestKind::Qemu => "vm",
            GuestKind::Lxc => "ct",
        }
    }
    /// The type part of an HA resource id (`vm`, `ct`).
    pub fn ha_type(self) -> &'static str {
        self.short()
    }
}

/// Where the API is and how to authenticate (no secret: the token stays in its file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiConfig {
    pub url: String,
    pub token_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub task_timeout: u64,
}

/// A disk the state asks for: its storage and size in GiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskWant {
    pub storage: String,
    pub gib: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredGuest {
    pub kind: GuestKind,
    pub vmid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub state: PveGuestState,
    /// Config keys to values in PVE's syntax; only these are compared.
    pub config: BTreeMap<String, String>,
    /// Disks by slot (`scsi0`, `rootfs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disks: BTreeMap<String, DiskWant>,
    /// Used only when creating (`ostemplate`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub create: BTreeMap<String, String>,
    /// The guest as an HA resource; `None`: the state says nothing about HA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<DesiredHa>,
}

impl DesiredGuest {
    /// `vm:100` / `ct:200`, the HA resource id.
    pub fn sid(&self) -> String {
        format!("{}:{}", self.kind.ha_type(), self.vmid)
    }

    /// Whether the HA manager, not op-dbus, starts and stops the guest.
    pub fn ha_managed(&self) -> bool {
        self.ha.as_ref().is_some_and(|h| {
            h.enabled && h.params.get("state").map(String::as_str) != Some("ignored")
        })
    }
}

/// An HA resource as the state wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredHa {
    /// `false`: no HA resource (one op-dbus added is removed).
    pub enabled: bool,
    /// `state`, `group`, `max_restart`, `max_relocate`, `comment`; only
    /// these are compared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredBackup {
    pub id: String,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredCluster {
    pub enabled: bool,
    pub name: String,
    /// Members the state expects (name, address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<DesiredJoin>,
}

/// What the state gives for a join (`None`: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredJoin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// As PVE takes it: `AB:CD:...` (32 upper-case pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link0: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub api: ApiConfig,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guests: Vec<DesiredGuest>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage: Vec<PveStorage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<DesiredBackup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<DesiredCluster>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestCurrent {
    pub kind: GuestKind,
    pub vmid: u32,
    pub node: String,
    /// `None`: no such guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `running` / `stopped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    pub online: bool,
}

/// Cluster membership as `/cluster/status` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// `None`: a standalone node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorate: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ClusterNode>,
    /// The corosync members (`/cluster/config/nodes`); empty on a standalone node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_nodes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub node: String,
    pub cluster: ClusterInfo,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guests: Vec<GuestCurrent>,
    /// Storage id to its config (`None`: not defined).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// Backup job id to its config (`None`: no such job).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backups: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// What op-dbus created (`vm/100`, `ct/200`), from the ownership registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned: Vec<String>,
    /// HA resource id (`vm:100`) to its config, digest included (`None`:
    /// the guest is no HA resource).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ha: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// Storage definitions op-dbus made, from the ownership registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_storage: Vec<String>,
    /// HA resources op-dbus added (`vm:100`), from the ownership registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_ha: Vec<String>,
}

pub const DEFAULT_URL: &str = "https://localhost:8006";
pub const DEFAULT_TOKEN_FILE: &str = "/etc/op-dbus/pve-token";
pub const NODE_CERT: &str = "/etc/pve/local/pve-ssl.pem";

/// The NIC models of `net[n]` (each is also the key of `MODEL=MAC`).
const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

fn gib(size: &Size, at: &str) -> anyhow::Result<u64> {
    const G: u64 = 1 << 30;
    match size {
        Size::Bytes(b) if b % G == 0 => Ok(b / G),
        Size::Bytes(b) => anyhow::bail!(
            "{at}: PVE allocates disks in whole GiB; {b} bytes is not one: use a size such as \"{}G\"",
            b.div_ceil(G)
        ),
        Size::Remaining => anyhow::bail!("{at}: \"remaining\" is not a guest disk size; give one such as \"20G\""),
    }
}

fn disk(d: &VmDisk, at: &str) -> anyhow::Result<DiskWant> {
    Ok(DiskWant {
        storage: d.storage.clone(),
        gib: gib(&d.size, at)?,
    })
}

fn vm_nic(n: &GuestNic) -> String {
    format!(
        "model={},bridge={}",
        n.model.as_deref().unwrap_or("virtio"),
        n.bridge
    )
}

fn ipconfig(n: &GuestNic) -> Option<String> {
    let ip = n.ip.as_deref()?;
    let mut s = format!("ip={ip}");
    if let Some(gw) = &n.gateway {
        s.push_str(&format!(",gw={gw}"));
    }
    Some(s)
}

fn ct_nic(n: &GuestNic) -> String {
    let mut s = format!(
        "name={},bridge={}",
        n.name.as_deref().unwrap_or("eth0"),
        n.bridge
    );
    if let Some(ip) = &n.ip {
        s.push_str(&format!(",ip={ip}"));
    }
    if let Some(gw) = &n.gateway {
        s.push_str(&format!(",gw={gw}"));
    }
    s
}

/// `daily` + `02:00` → the PVE calendar event `02:00`.
fn calendar(schedule: &str, time: Option<&str>) -> String {
    match (schedule, time) {
        (s, None) => s.to_string(),
        ("daily", Some(t)) => t.to_string(),
        ("weekly", Some(t)) => format!("sun {t}"),
        ("monthly", Some(t)) => format!("*-*-01 {t}"),
        (s, Some(t)) => format!("{s} {t}"),
    }
}

/// A fingerprint as PVE's join takes it: `AB:CD:...`.
pub fn pve_fingerprint(text: &str) -> String {
    let hex: Vec<char> = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hex.chunks(2)
        .map(|p| p.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(":")
}

/// The HA settings of a guest in PVE's syntax; `state` follows the
/// guest's unless the state sets it.
fn ha(h: &PveHa, guest: PveGuestState) -> DesiredHa {
    let mut params = BTreeMap::new();
    let state = h.state.unwrap_or(match guest {
        PveGuestState::Stopped => PveHaState::Stopped,
        _ => PveHaState::Started,
    });
    params.insert("state".to_string(), state.as_str().to_string());
    if let Some(g) = &h.group {
        params.insert("group".to_string(), g.clone());
    }
    if let Some(n) = h.max_restart {
        params.insert("max_restart".to_string(), n.to_string());
    }
    if let Some(n) = h.max_relocate {
        params.insert("max_relocate".to_string(), n.to_string());
    }
    if let Some(c) = &h.comment {
        params.insert("comment".to_string(), c.clone());
    }
    DesiredHa {
        enabled: h.enabled,
        params,
    }
}

/// Whether an HA resource option has the value `want`: PVE leaves out
/// what is at its default (`state` started, `max_restart` and
/// `max_relocate` 1) and `enabled` is an alias of `started`.
pub fn ha_matches(key: &str, current: Option<&str>, want: &str) -> bool {
    let default = match key {
        "state" => Some("started"),
        "max_restart" | "max_relocate" => Some("1"),
        _ => None,
    };
    let canon = |v: &str| {
        let v = v.trim();
        if key == "state" && v == "enabled" {
            "started".to_string()
        } else {
            v.to_string()
        }
    };
    match current.or(default) {
        Some(c) => canon(c) == canon(want),
        None => false,
    }
}

/// What membership the query found against the members the state
/// lists: reported, never acted on (each node joins by its own state).
pub fn cluster_report(now: &ClusterInfo, want: &DesiredCluster) -> Vec<String> {
    let Some(name) = &now.name else {
        return vec!["this node is standalone".to_string()];
    };
    if *name != want.name {
        return vec![format!("this node is in cluster {name}")];
    }
    let mut out = Vec::new();
    for (n, ip) in &want.nodes {
        match now.nodes.iter().find(|m| m.name == *n) {
            None => out.push(format!("{n} ({ip}) is not a member yet")),
            Some(m) if !m.online => out.push(format!("member {n} is offline")),
            Some(_) => {}
        }
    }
    for m in &now.nodes {
        if !want.nodes.is_empty() && !want.nodes.iter().any(|(n, _)| *n == m.name) {
            out.push(format!("member {} is not listed in the state", m.name));
        }
    }
    if now.quorate == Some(false) {
        out.push("the cluster has no quorum: writes to /etc/pve fail".to_string());
    }
    out
}

/// HA resource options op-dbus sets (and restores).
pub const HA_KEYS: &[&str] = &["state", "group", "max_restart", "max_relocate", "comment"];

/// The normalized desired state of `plugins.proxmox`.
pub fn desired(state: &State) -> anyhow::Result<Option<Desired>> {
    let Some(p) = state.plugins.proxmox.as_ref() else {
        return Ok(None);
    };
    let api = p.api.clone().unwrap_or_default();
    let mut out = Desired {
        node: p.node.clone(),
        api: ApiConfig {
            url: api.url.unwrap_or_else(|| DEFAULT_URL.to_string()),
            token_file: api
                .token_file
                .unwrap_or_else(|| DEFAULT_TOKEN_FILE.to_string()),
            fingerprint: api.fingerprint,
            task_timeout: api.task_timeout.unwrap_or(300),
        },
        storage: p.storage.clone(),
        cluster: p.cluster.as_ref().map(|c| DesiredCluster {
            enabled: c.enabled,
            name: c.name.clone(),
            nodes: c
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.ip.clone()))
                .collect(),
            join: c.join.as_ref().map(|j| DesiredJoin {
                peer: j.peer.clone(),
                fingerprint: j.fingerprint.as_deref().map(pve_fingerprint),
                password_file: j.password_file.clone(),
                link0: j.link0.clone(),
            }),
        }),
        ..Desired::default()
    };
    for (i, vm) in p.vms.iter().enumerate() {
        let at = format!("/plugins/proxmox/vms/{i}");
        let mut config = BTreeMap::new();
        let mut set = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                config.insert(k.to_string(), v);
            }
        };
        set("name", vm.name.clone());
        set("cores", vm.cores.map(|c| c.to_string()));
        set("memory", vm.memory.map(|m| m.to_string()));
        set("cpu", vm.cpu.clone());
        set("boot", vm.boot.clone());
        set("ostype", vm.ostype.clone());
        set("description", vm.comment.clone());
        let mut nics: BTreeMap<String, &GuestNic> =
            vm.nics.iter().map(|(k, v)| (k.clone(), v)).collect();
        if let Some(n) = &vm.network {
            nics.entry("net0".to_string()).or_insert(n);
        }
        for (slot, n) in nics {
            let Some(idx) = slot.strip_prefix("net").filter(|i| i.parse::<u8>().is_ok()) else {
                anyhow::bail!("{at}/nics/{slot}: a NIC slot is net0 ... net31");
            };
            if let Some(ipc) = ipconfig(n) {
                config.insert(format!("ipconfig{idx}"), ipc);
            }
            config.insert(slot, vm_nic(n));
        }
        let mut disks = BTreeMap::new();
        for (slot, d) in &vm.disks {
            let bus = slot.trim_end_matches(|c: char| c.is_ascii_digit());
            anyhow::ensure!(
                matches!(bus, "scsi" | "virtio" | "sata" | "ide") && bus.len() < slot.len(),
                "{at}/disks/{slot}: a disk slot is scsiN, virtioN, sataN or ideN"
            );
            disks.insert(slot.clone(), disk(d, &format!("{at}/disks/{slot}/size"))?);
        }
        if let Some(d) = &vm.disk {
            if !disks.contains_key("scsi0") {
                disks.insert("scsi0".to_string(), disk(d, &format!("{at}/disk/size"))?);
            }
        }
        out.guests.push(DesiredGuest {
            kind: GuestKind::Qemu,
            vmid: vm.vmid,
            node: vm.node.clone(),
            state: vm.state,
            config,
            disks,
            create: BTreeMap::new(),
            ha: vm.ha.as_ref().map(|h| ha(h, vm.state)),
        });
    }
    for (i, ct) in p.containers.iter().enumerate() {
        let at = format!("/plugins/proxmox/containers/{i}");
        let mut config = BTreeMap::new();
        if let Some(v) = &ct.name {
            config.insert("hostname".to_string(), v.clone());
        }
        if let Some(v) = ct.cores {
            config.insert("cores".to_string(), v.to_string());
        }
        if let Some(v) = ct.memory {
            config.insert("memory".to_string(), v.to_string());
        }
        if let Some(v) = &ct.comment {
            config.insert("description".to_string(), v.clone());
        }
        if let Some(n) = &ct.network {
            config.insert("net0".to_string(), ct_nic(n));
        }
        let mut disks = BTreeMap::new();
        if let Some(d) = &ct.rootfs {
            disks.insert("rootfs".to_string(), disk(d, &format!("{at}/rootfs/size"))?);
        }
        let mut create = BTreeMap::new();
        if let Some(t) = &ct.ostemplate {
            create.insert("ostemplate".to_string(), t.clone());
        }
        out.guests.push(DesiredGuest {
            kind: GuestKind::Lxc,
            vmid: ct.vmid,
            node: ct.node.clone(),
            state: ct.state,
            config,
            disks,
            create,
            ha: ct.ha.as_ref().map(|h| ha(h, ct.state)),
        });
    }
    for (i, b) in p.backups.iter().enumerate() {
        let mut params = BTreeMap::new();
        params.insert(
            "schedule".to_string(),
            calendar(&b.schedule, b.time.as_deref()),
        );
        params.insert("storage".to_string(), b.storage.clone());
        params.insert("enabled".to_string(), "1".to_string());
        if let Some(m) = &b.mode {
            params.insert("mode".to_string(), m.clone());
        }
        if let Some(c) = &b.compression {
            params.insert("compress".to_string(), c.clone());
        }
        let mut ids: Vec<u32> = b.vms.iter().chain(&b.containers).copied().collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            params.insert("all".to_string(), "1".to_string());
        } else {
            let list: Vec<String> = ids.iter().map(u32::to_string).collect();
            params.insert("vmid".to_string(), list.join(","));
        }
        if let Some(r) = &b.retention {
            let mut keep = Vec::new();
            for (k, v) in [
                ("keep-daily", r.keep_daily),
                ("keep-monthly", r.keep_monthly),
                ("keep-weekly", r.keep_weekly),
            ] {
                if let Some(v) = v {
                    keep.push(format!("{k}={v}"));
                }
            }
            if !keep.is_empty() {
                params.insert("prune-backups".to_string(), keep.join(","));
            }
        }
        out.backups.push(DesiredBackup {
            id: b.id.clone().unwrap_or_else(|| format!("opdbus-{}", i + 1)),
            params,
        });
    }
    Ok(Some(out))
}

/// A PVE property string (`virtio=BC:24:11:00:00:01,bridge=vmbr0`) as a
/// map; a value without `key=` belongs to `default_key`.
pub fn props(value: &str, default_key: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) => out.insert(k.trim().to_string(), v.trim().to_string()),
            None => out.insert(default_key.to_string(), part.to_string()),
        };
    }
    out
}

/// The default key of a config key's property string; `None`: a plain value.
fn default_key(kind: GuestKind, key: &str) -> Option<&'static str> {
    let bus = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match (kind, key, bus) {
        (GuestKind::Qemu, "memory", _) => Some("current"),
        (GuestKind::Qemu, "cpu", _) => Some("cputype"),
        (GuestKind::Qemu, "boot", _) => Some("legacy"),
        (GuestKind::Qemu, _, "net") => Some("model"),
        (GuestKind::Lxc, _, "net") => Some("name"),
        (_, _, "ipconfig") => Some("ip"),
        (_, "rootfs", _) | (_, _, "scsi" | "virtio" | "sata" | "ide" | "mp") => Some("file"),
        _ => None,
    }
}

/// A guest property string as a map, `MODEL=MAC` of a VM's NIC split into
/// `model` and `macaddr`.
pub fn guest_props(kind: GuestKind, key: &str, value: &str) -> BTreeMap<String, String> {
    let Some(dk) = default_key(kind, key) else {
        let mut m = BTreeMap::new();
        m.insert(String::new(), value.trim_end().to_string());
        return m;
    };
    let mut m = props(value, dk);
    if dk == "model" {
        if let Some((model, mac)) = NIC_MODELS
            .iter()
            .find_map(|model| m.get(*model).map(|mac| (model.to_string(), mac.clone())))
        {
            m.remove(&model);
            m.insert("model".to_string(), model);
            m.insert("macaddr".to_string(), mac);
        }
    }
    m
}

/// Whether `current` already has every property `want` sets (PVE adds
/// defaults and generated values, such as a NIC's MAC, that the state does
/// not name).
pub fn matches(kind: GuestKind, key: &str, current: Option<&str>, want: &str) -> bool {
    let Some(current) = current else {
        return false;
    };
    let cur = guest_props(kind, key, current);
    guest_props(kind, key, want)
        .iter()
        .all(|(k, v)| cur.get(k) == Some(v))
}

/// The value to send for `key`: `want` merged over what PVE has, so a MAC
/// or a firewall flag set elsewhere is kept.
pub fn merged(kind: GuestKind, key: &str, current: Option<&str>, want: &str) -> String {
    let Some(dk) = default_key(kind, key) else {
        return want.to_string();
    };
    let mut m = current
        .map(|c| guest_props(kind, key, c))
        .unwrap_or_default();
    m.extend(guest_props(kind, key, want));
    let mut parts = Vec::new();
    if dk == "model" {
        if let Some(model) = m.remove("model") {
            match m.remove("macaddr") {
                Some(mac) => parts.push(format!("{model}={mac}")),
                None => parts.push(format!("model={model}")),
            }
        }
    }
    if let Some(v) = m.remove(dk) {
        parts.insert(0, format!("{dk}={v}"));
    }
    parts.extend(m.into_iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(",")
}

/// A disk value's storage and size: `local-lvm:vm-100-disk-0,size=20G`.
pub fn disk_of(value: &str) -> (String, Option<u64>) {
    let m = props(value, "file");
    let storage = m
        .get("file")
        .and_then(|f| f.split_once(':'))
        .map(|(s, _)| s.to_string())
        .unwrap_or_default();
    let size = m
        .get("size")
        .and_then(|s| s.parse::<Size>().ok())
        .and_then(|s| match s {
            Size::Bytes(b) => Some(b),
            Size::Remaining => None,
        });
    (storage, size)
}

/// Whether a storage option `key` has the value `want` (content is a set).
pub fn storage_matches(key: &str, current: Option<&str>, want: &str) -> bool {
    let Some(current) = current else {
        return false;
    };
    if key == "content" {
        let set = |s: &str| {
            let mut v: Vec<String> = s.split(',').map(|x| x.trim().to_string()).collect();
            v.sort();
            v
        };
        return set(current) == set(want);
    }
    current.trim() == want.trim()
}

/// Whether a backup job option has the value `want` (vmid is a set,
/// prune-backups a property string).
pub fn backup_matches(key: &str, current: Option<&str>, want: &str) -> bool {
    let Some(current) = current else {
        return false;
    };
    match key {
        "vmid" => {
            let set = |s: &str| {
                let mut v: Vec<u64> = s
                    .split([',', ' ', ';'])
                    .filter_map(|x| x.trim().parse().ok())
                    .collect();
                v.sort_unstable();
                v
            };
            set(current) == set(want)
        }
        "prune-backups" => props(current, "keep-all") == props(want, "keep-all"),
        _ => current.trim() == want.trim(),
    }
}

/// The options of a storage definition, in PVE's syntax.
pub fn storage_params(s: &PveStorage) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("type".to_string(), s.kind.clone());
    if !s.content.is_empty() {
        let mut c = s.content.clone();
        c.sort();
        m.insert("content".to_string(), c.join(","));
    }
    for (k, v) in [
        ("thinpool", &s.thinpool),
        ("vgname", &s.vgname),
        ("server", &s.server),
        ("export", &s.export),
        ("path", &s.path),
    ] {
        if let Some(v) = v {
            m.insert(k.to_string(), v.clone());
        }
    }
    m
}

/// Storage options PVE fixes at creation (`PUT /storage/{id}` refuses them).
pub const STORAGE_FIXED: &[&str] = &["type", "thinpool", "vgname", "export", "path"];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_nic_matches_whatever_mac_pve_generated() {
        let have = "virtio=BC:24:11:00:64:00,bridge=vmbr0,firewall=1";
        assert!(matches(
            GuestKind::Qemu,
            "net0",
            Some(have),
            "model=virtio,bridge=vmbr0"
        ));
        assert!(!matches(
            GuestKind::Qemu,
            "net0",
            Some(have),
            "model=e1000,bridge=vmbr0"
        ));
        assert!(!matches(
            GuestKind::Qemu,
            "net0",
            Some(have),
            "model=virtio,bridge=vmbr1"
        ));
        assert_eq!(
            merged(
                GuestKind::Qemu,
                "net0",
                Some(have),
                "model=virtio,bridge=vmbr1"
            ),
            "virtio=BC:24:11:00:64:00,bridge=vmbr1,firewall=1"
        );
        assert_eq!(
            merged(GuestKind::Qemu, "net1", None, "model=virtio,bridge=vmbr1"),
            "model=virtio,bridge=vmbr1"
        );
    }

    #[test]
    fn property_strings_compare_canonically() {
        assert!(matches(
            GuestKind::Qemu,
            "memory",
            Some("current=2048"),
            "2048"
        ));
        assert!(matches(
            GuestKind::Qemu,
            "cpu",
            Some("cputype=host,flags=+aes"),
            "host"
        ));
        assert!(matches(
            GuestKind::Qemu,
            "description",
            Some("db server\n"),
            "db server"
        ));
        assert!(matches(
            GuestKind::Lxc,
            "net0",
            Some("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:C8:00,ip=dhcp,type=veth"),
            "name=eth0,bridge=vmbr0,ip=dhcp"
        ));
        assert!(!matches(GuestKind::Qemu, "cores", None, "2"));
        assert_eq!(
            disk_of("local-lvm:vm-100-disk-0,iothread=1,size=20G"),
            ("local-lvm".to_string(), Some(20 << 30))
        );
        assert!(storage_matches(
            "content",
            Some("rootdir,images"),
            "images,rootdir"
        ));
        assert!(backup_matches("vmid", Some("200,100"), "100,200"));
        assert!(backup_matches(
            "prune-backups",
            Some("keep-weekly=4,keep-daily=7"),
            "keep-daily=7,keep-weekly=4"
        ));
    }

    #[test]
    fn ha_options_compare_with_pve_defaults() {
        assert!(ha_matches("state", None, "started"));
        assert!(ha_matches("state", Some("enabled"), "started"));
        assert!(!ha_matches("state", Some("stopped"), "started"));
        assert!(ha_matches("max_restart", None, "1"));
        assert!(!ha_matches("max_relocate", None, "2"));
        assert!(!ha_matches("group", None, "web"));
        assert!(ha_matches("group", Some("web"), "web"));
    }

    #[test]
    fn a_join_fingerprint_is_written_as_pve_takes_it() {
        let plain = "ab".repeat(32);
        let want = ["AB"; 32].join(":");
        assert_eq!(pve_fingerprint(&plain), want);
        assert_eq!(pve_fingerprint(&want.to_ascii_lowercase()), want);
    }

    #[test]
    fn cluster_membership_is_reported_against_the_state() {
        let want = DesiredCluster {
            enabled: true,
            name: "prod".into(),
            nodes: vec![
                ("pve".into(), "192.0.2.10".into()),
                ("pve2".into(), "192.0.2.11".into()),
            ],
            join: None,
        };
        let node = |name: &str, online| ClusterNode {
            name: name.into(),
            ip: None,
            online,
        };
        let now = ClusterInfo {
            name: Some("prod".into()),
            quorate: Some(true),
            nodes: vec![node("pve", true), node("pve3", false)],
            config_nodes: vec![],
        };
        assert_eq!(
            cluster_report(&now, &want),
            [
                "pve2 (192.0.2.11) is not a member yet",
                "member pve3 is not listed in the state"
            ]
        );
        assert_eq!(
            cluster_report(&ClusterInfo::default(), &want),
            ["this node is standalone"]
        );
    }
}
