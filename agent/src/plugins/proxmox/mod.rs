//! proxmox plugin: guests (VMs and containers), storage definitions and
//! backup jobs of a Proxmox VE node over its REST API; cluster membership
//! is queried and reported. Only what the state names is read or touched;
//! a guest the state marks `absent` is destroyed only when op-dbus created
//! it (`engine/ownership.rs`).
//!
//! What users of other PVE tools meet, and how it is avoided here:
//! property strings are compared canonically (a re-apply is a no-op),
//! disks are keyed by slot (adding one never replaces the VM), every config
//! write carries the `digest` it was computed from (no lost update), writes
//! to one guest are serialized while guests proceed in parallel, and a
//! lock timeout ("can't lock file ... got timeout") is a retryable error.
//! Tasks (UPIDs) are polled with a deadline; a failed task's log is in the
//! error.

pub mod api;
pub mod model;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::ownership::Ownership;
use crate::engine::{ActionError, ActionResult, Context, Plugin, PluginAction};
use api::{encode, form, ApiError, Client, Endpoint};
use model::{ClusterInfo, ClusterNode, GuestCurrent};
pub use model::{Current, Desired, GuestKind};
use opdbus_state::model::{PveGuestState, PveStorageState};
use opdbus_state::State;

const PLUGIN: &str = "proxmox";

/// Secrets a PVE parameter may carry (storage passwords, cloud-init).
const SECRET_KEYS: &[&str] = &[
    "password",
    "cipassword",
    "encryption-key",
    "token",
    "keyring",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    CreateGuest {
        kind: GuestKind,
        node: String,
        vmid: u32,
        params: BTreeMap<String, String>,
    },
    /// `PUT .../config` with the digest the change was computed from.
    ConfigureGuest {
        kind: GuestKind,
        node: String,
        vmid: u32,
        set: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        delete: Vec<String>,
        digest: Option<String>,
    },
    ResizeDisk {
        kind: GuestKind,
        node: String,
        vmid: u32,
        disk: String,
        size: String,
        digest: Option<String>,
    },
    StartGuest {
        kind: GuestKind,
        node: String,
        vmid: u32,
    },
    StopGuest {
        kind: GuestKind,
        node: String,
        vmid: u32,
    },
    DestroyGuest {
        kind: GuestKind,
        node: String,
        vmid: u32,
    },
    CreateStorage {
        id: String,
        params: BTreeMap<String, String>,
    },
    UpdateStorage {
        id: String,
        set: BTreeMap<String, String>,
        digest: Option<String>,
    },
    /// `DELETE /storage/{id}`: the definition op-dbus made (not the data).
    RemoveStorage { id: String },
    CreateBackupJob {
        id: String,
        params: BTreeMap<String, String>,
    },
    UpdateBackupJob {
        id: String,
        set: BTreeMap<String, String>,
    },
    /// `POST /cluster/ha/resources`: the guest becomes an HA resource.
    CreateHaResource {
        sid: String,
        params: BTreeMap<String, String>,
    },
    /// `PUT /cluster/ha/resources/{sid}` with the digest it was computed from.
    UpdateHaResource {
        sid: String,
        set: BTreeMap<String, String>,
        digest: Option<String>,
    },
    /// `DELETE /cluster/ha/resources/{sid}` (one op-dbus added).
    RemoveHaResource { sid: String },
    /// `POST /cluster/config/join` on this node; the peer's root password
    /// is read from `password_file` when the action runs.
    JoinCluster {
        cluster: String,
        node: String,
        peer: String,
        fingerprint: String,
        password_file: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link0: Option<String>,
    },
    /// What the state asks and this plugin will not do; applying it fails
    /// with a conflict that says why and what to do.
    Refuse { resource: String, why: String },
}

fn keys(m: &BTreeMap<String, String>) -> String {
    m.keys().cloned().collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateGuest {
                kind, node, vmid, ..
            } => write!(f, "create {} {vmid} on node {node}", kind.short()),
            Action::ConfigureGuest {
                kind,
                vmid,
                set,
                delete,
                ..
            } => {
                write!(f, "configure {} {vmid}: set {}", kind.short(), keys(set))?;
                if !delete.is_empty() {
                    write!(f, "; delete {}", delete.join(", "))?;
                }
                Ok(())
            }
            Action::ResizeDisk {
                kind,
                vmid,
                disk,
                size,
                ..
            } => write!(f, "grow disk {disk} of {} {vmid} to {size}", kind.short()),
            Action::StartGuest { kind, vmid, .. } => write!(f, "start {} {vmid}", kind.short()),
            Action::StopGuest { kind, vmid, .. } => write!(f, "stop {} {vmid}", kind.short()),
            Action::DestroyGuest { kind, vmid, .. } => {
                write!(f, "destroy {} {vmid} (created by op-dbus)", kind.short())
            }
            Action::CreateStorage { id, params } => write!(
                f,
                "define storage {id} (type {})",
                params.get("type").map(String::as_str).unwrap_or("?")
            ),
            Action::UpdateStorage { id, set, .. } => {
                write!(f, "update storage {id}: set {}", keys(set))
            }
            Action::RemoveStorage { id } => {
                write!(f, "remove storage definition {id} (made by op-dbus)")
            }
            Action::CreateBackupJob { id, .. } => write!(f, "create backup job {id}"),
            Action::UpdateBackupJob { id, set } => {
                write!(f, "update backup job {id}: set {}", keys(set))
            }
            Action::CreateHaResource { sid, params } => write!(
                f,
                "add HA resource {sid} (state {})",
                params.get("state").map(String::as_str).unwrap_or("started")
            ),
            Action::UpdateHaResource { sid, set, .. } => {
                write!(f, "update HA resource {sid}: set {}", keys(set))
            }
            Action::RemoveHaResource { sid } => {
                write!(f, "remove HA resource {sid} (added by op-dbus)")
            }
            Action::JoinCluster {
                cluster,
                node,
                peer,
                ..
            } => write!(f, "join node {node} to cluster {cluster} through {peer}"),
            Action::Refuse { resource, why } => write!(f, "refuse {resource}: {why}"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::CreateGuest { .. } => "create-guest",
            Action::ConfigureGuest { .. } => "configure-guest",
            Action::ResizeDisk { .. } => "resize-disk",
            Action::StartGuest { .. } => "start-guest",
            Action::StopGuest { .. } => "stop-guest",
            Action::DestroyGuest { .. } => "destroy-guest",
            Action::CreateStorage { .. } => "create-storage",
            Action::UpdateStorage { .. } => "update-storage",
            Action::RemoveStorage { .. } => "remove-storage",
            Action::CreateBackupJob { .. } => "create-backup-job",
            Action::UpdateBackupJob { .. } => "update-backup-job",
            Action::CreateHaResource { .. } => "create-ha-resource",
            Action::UpdateHaResource { .. } => "update-ha-resource",
            Action::RemoveHaResource { .. } => "remove-ha-resource",
            Action::JoinCluster { .. } => "join-cluster",
            Action::Refuse { .. } => "refuse",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::CreateGuest { kind, vmid, .. }
            | Action::ConfigureGuest { kind, vmid, .. }
            | Action::ResizeDisk { kind, vmid, .. }
            | Action::StartGuest { kind, vmid, .. }
            | Action::StopGuest { kind, vmid, .. }
            | Action::DestroyGuest { kind, vmid, .. } => format!("pve-{}:{vmid}", kind.short()),
            Action::CreateStorage { id, .. }
            | Action::UpdateStorage { id, .. }
            | Action::RemoveStorage { id } => format!("pve-storage:{id}"),
            Action::CreateBackupJob { id, .. } | Action::UpdateBackupJob { id, .. } => {
                format!("pve-backup-job:{id}")
            }
            Action::CreateHaResource { sid, .. }
            | Action::UpdateHaResource { sid, .. }
            | Action::RemoveHaResource { sid } => format!("pve-ha:{sid}"),
            Action::JoinCluster { cluster, .. } => format!("pve-cluster:{cluster}"),
            Action::Refuse { resource, .. } => resource.clone(),
        }
    }
}

/// The plugin. It keeps the API client the last `query` built, for `apply`.
#[derive(Default)]
pub struct ProxmoxPlugin {
    client: Mutex<Option<Arc<Client>>>,
}

fn under_root(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

/// A JSON object of config values as strings (digest split off).
fn config_map(v: &Value) -> (BTreeMap<String, String>, Option<String>) {
    let mut m = BTreeMap::new();
    let mut digest = None;
    if let Some(o) = v.as_object() {
        for (k, val) in o {
            if k == "digest" {
                digest = val.as_str().map(str::to_string);
            } else if let Some(t) = text(val) {
                m.insert(k.clone(), t);
            }
        }
    }
    (m, digest)
}

impl ProxmoxPlugin {
    fn connect(&self, ctx: &Context, d: &Desired) -> anyhow::Result<Arc<Client>> {
        let token = api::read_token(&under_root(&ctx.root, &d.api.token_file))?;
        let fingerprint = match &d.api.fingerprint {
            Some(f) => api::normalize_fingerprint(f)?,
            None => api::pem_fingerprint(&under_root(&ctx.root, model::NODE_CERT))?,
        };
        let client = Arc::new(Client::new(&Endpoint {
            url: d.api.url.clone(),
            token,
            fingerprint,
            task_timeout: Duration::from_secs(d.api.task_timeout),
        })?);
        if let Ok(mut slot) = self.client.lock() {
            *slot = Some(client.clone());
        }
        Ok(client)
    }

    fn client(&self) -> anyhow::Result<Arc<Client>> {
        self.client
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| {
                anyhow::anyhow!("the proxmox plugin applies only after a query (engine bug)")
            })
    }
}

/// Cluster membership: `/cluster/status` (name, quorum, nodes, which is
/// this one) and, in a cluster, the corosync members of
/// `/cluster/config/nodes`.
async fn query_cluster(c: &Client) -> Result<(ClusterInfo, Option<String>), ApiError> {
    let status = c.get("/cluster/status").await?;
    let mut info = ClusterInfo::default();
    let mut local = None;
    for item in status.as_array().into_iter().flatten() {
        let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
        match item.get("type").and_then(Value::as_str) {
            Some("cluster") => {
                info.name = Some(name.to_string());
                info.quorate = item.get("quorate").and_then(Value::as_u64).map(|q| q == 1);
            }
            Some("node") => {
                if item.get("local").and_then(Value::as_u64) == Some(1) {
                    local = Some(name.to_string());
                }
                info.nodes.push(ClusterNode {
                    name: name.to_string(),
                    ip: item.get("ip").and_then(Value::as_str).map(str::to_string),
                    online: item.get("online").and_then(Value::as_u64) == Some(1),
                });
            }
            _ => {}
        }
    }
    if info.name.is_some() {
        let nodes = c.get("/cluster/config/nodes").await?;
        info.config_nodes = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n.get("node").and_then(Value::as_str))
            .map(str::to_string)
            .collect();
        info.config_nodes.sort();
    }
    Ok((info, local))
}

fn owned_id(kind: GuestKind, vmid: u32) -> String {
    format!("{}/{vmid}", kind.short())
}

/// The actions for one guest.
fn diff_guest(
    g: &model::DesiredGuest,
    cur: Option<&GuestCurrent>,
    node: &str,
    owned: &[String],
    out: &mut Vec<Action>,
) {
    let kind = g.kind;
    let vmid = g.vmid;
    let resource = format!("pve-{}:{vmid}", kind.short());
    let config = cur.and_then(|c| c.config.as_ref());
    let running = cur.and_then(|c| c.status.as_deref()) == Some("running");
    let Some(config) = config else {
        if g.state == PveGuestState::Absent {
            return;
        }
        if kind == GuestKind::Lxc && !g.create.contains_key("ostemplate") {
            out.push(Action::Refuse {
                resource,
                why: format!("container {vmid} does not exist and a container is created from a template: set ostemplate (such as local:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst)"),
            });
            return;
        }
        let mut params = g.config.clone();
        params.extend(g.create.clone());
        for (slot, d) in &g.disks {
            params.insert(slot.clone(), format!("{}:{}", d.storage, d.gib));
        }
        out.push(Action::CreateGuest {
            kind,
            node: node.to_string(),
            vmid,
            params,
        });
        if g.state == PveGuestState::Running && !g.ha_managed() {
            out.push(Action::StartGuest {
                kind,
                node: node.to_string(),
                vmid,
            });
        }
        return;
    };
    if g.state == PveGuestState::Absent {
        if !owned.contains(&owned_id(kind, vmid)) {
            out.push(Action::Refuse {
                resource,
                why: format!("the state marks {} {vmid} absent, but op-dbus did not create it: destroy it by hand if it should go, or remove it from the state", kind.short()),
            });
            return;
        }
        if running {
            out.push(Action::StopGuest {
                kind,
                node: node.to_string(),
                vmid,
            });
        }
        out.push(Action::DestroyGuest {
            kind,
            node: node.to_string(),
            vmid,
        });
        return;
    }
    let digest = cur.and_then(|c| c.digest.clone());
    let mut set = BTreeMap::new();
    for (k, want) in &g.config {
        let have = config.get(k).map(String::as_str);
        if !model::matches(kind, k, have, want) {
            set.insert(k.clone(), model::merged(kind, k, have, want));
        }
    }
    let mut resizes = Vec::new();
    for (slot, d) in &g.disks {
        let want = format!("{}:{}", d.storage, d.gib);
        match config.get(slot) {
            None => {
                set.insert(slot.clone(), want);
            }
            Some(v) => {
                let (storage, size) = model::disk_of(v);
                let want_bytes = d.gib << 30;
                if storage != d.storage {
                    out.push(Action::Refuse {
                        resource: resource.clone(),
                        why: format!("disk {slot} is on storage {storage}, the state wants {}: op-dbus does not move disks; move it with `qm disk move {vmid} {slot} {}` or change the state", d.storage, d.storage),
                    });
                } else if size.is_some_and(|s| s < want_bytes) {
                    resizes.push(Action::ResizeDisk {
                        kind,
                        node: node.to_string(),
                        vmid,
                        disk: slot.clone(),
                        size: format!("{}G", d.gib),
                        digest: None,
                    });
                } else if size.is_some_and(|s| s > want_bytes) {
                    out.push(Action::Refuse {
                        resource: resource.clone(),
                        why: format!("disk {slot} is {v}, larger than the {}G the state asks: PVE cannot shrink a disk; raise the size in the state", d.gib),
                    });
                }
            }
        }
    }
    let configured = !set.is_empty();
    if configured {
        out.push(Action::ConfigureGuest {
            kind,
            node: node.to_string(),
            vmid,
            set,
            delete: Vec::new(),
            digest: digest.clone(),
        });
    }
    for mut r in resizes {
        // After a config write the digest changed: the resize goes without one.
        if let Action::ResizeDisk { digest: d, .. } = &mut r {
            *d = if configured { None } else { digest.clone() };
        }
        out.push(r);
    }
    if g.ha_managed() {
        // The HA manager starts and stops it (its HA resource's state).
        return;
    }
    match (g.state, running) {
        (PveGuestState::Running, false) => out.push(Action::StartGuest {
            kind,
            node: node.to_string(),
            vmid,
        }),
        (PveGuestState::Stopped, true) => out.push(Action::StopGuest {
            kind,
            node: node.to_string(),
            vmid,
        }),
        _ => {}
    }
}

/// The HA resource of one guest. A resource the state does not speak of
/// (no `ha`) is left alone; one it turns off (`enabled: false`, or the
/// guest `absent`) is removed only when op-dbus added it.
fn diff_ha(g: &model::DesiredGuest, current: &Current, out: &mut Vec<Action>) {
    let sid = g.sid();
    let have = current.ha.get(&sid).and_then(Option::as_ref);
    let want =
        g.ha.as_ref()
            .filter(|h| h.enabled && g.state != PveGuestState::Absent);
    match (want, have) {
        (None, None) => {}
        (None, Some(_)) => {
            if g.ha.is_none() && g.state != PveGuestState::Absent {
                return;
            }
            if current.owned_ha.contains(&sid) {
                out.push(Action::RemoveHaResource { sid });
            } else {
                out.push(Action::Refuse {
                    resource: format!("pve-ha:{sid}"),
                    why: format!("the state turns HA off for {sid}, but op-dbus did not add that HA resource: remove it by hand (`ha-manager remove {sid}`) if it should go, or remove ha from the state"),
                });
            }
        }
        (Some(h), None) => out.push(Action::CreateHaResource {
            sid,
            params: h.params.clone(),
        }),
        (Some(h), Some(have)) => {
            let set: BTreeMap<String, String> = h
                .params
                .iter()
                .filter(|(k, v)| !model::ha_matches(k, have.get(*k).map(String::as_str), v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !set.is_empty() {
                out.push(Action::UpdateHaResource {
                    sid,
                    set,
                    digest: have.get("digest").cloned(),
                });
            }
        }
    }
}

/// Cluster membership: a node in the wanted cluster is left alone, one in
/// another cluster is refused, a standalone node joins only when the state
/// gives the peer, its fingerprint and a root-only password file.
fn diff_cluster(c: &model::DesiredCluster, current: &Current, out: &mut Vec<Action>) {
    if !c.enabled {
        return;
    }
    let resource = format!("pve-cluster:{}", c.name);
    match &current.cluster.name {
        Some(n) if *n == c.name => {}
        Some(n) => out.push(Action::Refuse {
            resource,
            why: format!("node {} is in cluster {n}, the state wants cluster {}: op-dbus does not move a node between clusters; remove it from {n} (`pvecm delnode {}` on a member) first, or change /plugins/proxmox/cluster/name", current.node, c.name, current.node),
        }),
        None => {
            let join = c.join.clone().unwrap_or_default();
            let peer = join.peer.clone().or_else(|| {
                c.nodes
                    .iter()
                    .find(|(name, _)| *name != current.node)
                    .map(|(_, ip)| ip.clone())
            });
            let mut missing = Vec::new();
            if peer.is_none() {
                missing.push("/plugins/proxmox/cluster/join/peer (the address of a member; or list a member other than this node in /plugins/proxmox/cluster/nodes)");
            }
            if join.fingerprint.is_none() {
                missing.push("/plugins/proxmox/cluster/join/fingerprint (the SHA-256 of the peer's certificate, `pvenode cert info` on the peer)");
            }
            if join.password_file.is_none() {
                missing.push("/plugins/proxmox/cluster/join/password_file (a root-only file holding the peer's root@pam password)");
            }
            match (peer, join.fingerprint, join.password_file) {
                (Some(peer), Some(fingerprint), Some(password_file)) => {
                    out.push(Action::JoinCluster {
                        cluster: c.name.clone(),
                        node: current.node.clone(),
                        peer,
                        fingerprint,
                        password_file,
                        link0: join.link0,
                    })
                }
                _ => out.push(Action::Refuse {
                    resource,
                    why: format!("node {} is a standalone node and the state puts it in cluster {}; joining needs what the state does not give: {}; or create the cluster on its first node with `pvecm create {}`", current.node, c.name, missing.join(", "), c.name),
                }),
            }
        }
    }
}

pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    if let Some(c) = &desired.cluster {
        diff_cluster(c, current, &mut out);
    }
    for s in &desired.storage {
        let want = model::storage_params(s);
        if s.state == PveStorageState::Absent {
            if current
                .storage
                .get(&s.id)
                .and_then(Option::as_ref)
                .is_some()
            {
                if current.owned_storage.contains(&s.id) {
                    out.push(Action::RemoveStorage { id: s.id.clone() });
                } else {
                    out.push(Action::Refuse {
                        resource: format!("pve-storage:{}", s.id),
                        why: format!("the state marks storage {} absent, but op-dbus did not define it: remove it by hand (`pvesm remove {}`) if it should go, or remove it from the state", s.id, s.id),
                    });
                }
            }
            continue;
        }
        match current.storage.get(&s.id).and_then(Option::as_ref) {
            None => out.push(Action::CreateStorage {
                id: s.id.clone(),
                params: want,
            }),
            Some(have) => {
                let mut set = BTreeMap::new();
                let mut fixed = Vec::new();
                for (k, v) in &want {
                    if model::storage_matches(k, have.get(k).map(String::as_str), v) {
                        continue;
                    }
                    if model::STORAGE_FIXED.contains(&k.as_str()) {
                        fixed.push(format!(
                            "{k} is {} (the state wants {v})",
                            have.get(k).map(String::as_str).unwrap_or("unset")
                        ));
                    } else {
                        set.insert(k.clone(), v.clone());
                    }
                }
                if !fixed.is_empty() {
                    out.push(Action::Refuse {
                        resource: format!("pve-storage:{}", s.id),
                        why: format!("{}: PVE fixes these when a storage is defined; remove the definition (`pvesm remove {}`) to have it defined again, or change the state", fixed.join(", "), s.id),
                    });
                }
                if !set.is_empty() {
                    out.push(Action::UpdateStorage {
                        id: s.id.clone(),
                        set,
                        digest: have.get("digest").cloned(),
                    });
                }
            }
        }
    }
    for g in &desired.guests {
        let node = g.node.clone().unwrap_or_else(|| current.node.clone());
        let cur = current
            .guests
            .iter()
            .find(|c| c.kind == g.kind && c.vmid == g.vmid);
        if g.state == PveGuestState::Absent {
            // Its HA resource goes first: PVE will not destroy an HA-managed guest.
            diff_ha(g, current, &mut out);
            diff_guest(g, cur, &node, &current.owned, &mut out);
        } else {
            diff_guest(g, cur, &node, &current.owned, &mut out);
            diff_ha(g, current, &mut out);
        }
    }
    for b in &desired.backups {
        match current.backups.get(&b.id).and_then(Option::as_ref) {
            None => out.push(Action::CreateBackupJob {
                id: b.id.clone(),
                params: b.params.clone(),
            }),
            Some(have) => {
                let set: BTreeMap<String, String> = b
                    .params
                    .iter()
                    .filter(|(k, v)| !model::backup_matches(k, have.get(*k).map(String::as_str), v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !set.is_empty() {
                    out.push(Action::UpdateBackupJob {
                        id: b.id.clone(),
                        set,
                    });
                }
            }
        }
    }
    out
}

fn params(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    form(m)
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// An API error as an action error: lock timeouts and digest mismatches
/// are retryable.
fn action_error(e: ApiError) -> ActionError {
    if e.is_retryable() {
        ActionError::retryable(e)
    } else {
        ActionError::fatal(e)
    }
}

async fn apply_one(c: &Client, ownership: &Ownership, root: &Path, a: &Action) -> ActionResult {
    let guest =
        |kind: GuestKind, node: &str, vmid: u32| format!("/nodes/{node}/{}/{vmid}", kind.path());
    let note = match a {
        Action::CreateGuest {
            kind,
            node,
            vmid,
            params: p,
        } => {
            let mut form = vec![pair("vmid", vmid.to_string())];
            form.extend(params(p));
            let r = c
                .post(&format!("/nodes/{node}/{}", kind.path()), &form)
                .await
                .map_err(action_error)?;
            let upid = c.wait(node, r).await.map_err(action_error)?;
            ownership.record(PLUGIN, "guest", &owned_id(*kind, *vmid), None)?;
            upid
        }
        Action::ConfigureGuest {
            kind,
            node,
            vmid,
            set,
            delete,
            digest,
        } => {
            let mut form = params(set);
            if !delete.is_empty() {
                form.push(pair("delete", delete.join(",")));
            }
            if let Some(d) = digest {
                form.push(pair("digest", d.clone()));
            }
            let r = c
                .put(&format!("{}/config", guest(*kind, node, *vmid)), &form)
                .await
                .map_err(action_error)?;
            c.wait(node, r).await.map_err(action_error)?
        }
        Action::ResizeDisk {
            kind,
            node,
            vmid,
            disk,
            size,
            digest,
        } => {
            let mut form = vec![pair("disk", disk.clone()), pair("size", size.clone())];
            if let Some(d) = digest {
                form.push(pair("digest", d.clone()));
            }
            let r = c
                .put(&format!("{}/resize", guest(*kind, node, *vmid)), &form)
                .await
                .map_err(action_error)?;
            c.wait(node, r).await.map_err(action_error)?
        }
        Action::StartGuest { kind, node, vmid } | Action::StopGuest { kind, node, vmid } => {
            let verb = if matches!(a, Action::StartGuest { .. }) {
                "start"
            } else {
                "stop"
            };
            let r = c
                .post(&format!("{}/status/{verb}", guest(*kind, node, *vmid)), &[])
                .await
                .map_err(action_error)?;
            c.wait(node, r).await.map_err(action_error)?
        }
        Action::DestroyGuest { kind, node, vmid } => {
            let r = c
                .delete(&guest(*kind, node, *vmid), &[pair("purge", "1")])
                .await
                .map_err(action_error)?;
            let upid = c.wait(node, r).await.map_err(action_error)?;
            ownership.forget(PLUGIN, "guest", &owned_id(*kind, *vmid))?;
            upid
        }
        Action::CreateStorage { id, params: p } => {
            let mut form = vec![pair("storage", id.clone())];
            form.extend(params(p));
            c.post("/storage", &form).await.map_err(action_error)?;
            ownership.record(PLUGIN, "storage", id, None)?;
            None
        }
        Action::RemoveStorage { id } => {
            c.delete(&format!("/storage/{}", encode(id)), &[])
                .await
                .map_err(action_error)?;
            ownership.forget(PLUGIN, "storage", id)?;
            None
        }
        Action::UpdateStorage { id, set, digest } => {
            let mut form = params(set);
            if let Some(d) = digest {
                form.push(pair("digest", d.clone()));
            }
            c.put(&format!("/storage/{}", encode(id)), &form)
                .await
                .map_err(action_error)?;
            None
        }
        Action::CreateBackupJob { id, params: p } => {
            let mut form = vec![pair("id", id.clone())];
            form.extend(params(p));
            c.post("/cluster/backup", &form)
                .await
                .map_err(action_error)?;
            ownership.record(PLUGIN, "backup-job", id, None)?;
            None
        }
        Action::UpdateBackupJob { id, set } => {
            c.put(&format!("/cluster/backup/{}", encode(id)), &params(set))
                .await
                .map_err(action_error)?;
            None
        }
        Action::CreateHaResource { sid, params: p } => {
            let mut form = vec![pair("sid", sid.clone())];
            form.extend(params(p));
            c.post("/cluster/ha/resources", &form)
                .await
                .map_err(action_error)?;
            ownership.record(PLUGIN, "ha-resource", sid, None)?;
            None
        }
        Action::UpdateHaResource { sid, set, digest } => {
            let mut form = params(set);
            if let Some(d) = digest {
                form.push(pair("digest", d.clone()));
            }
            c.put(&format!("/cluster/ha/resources/{}", encode(sid)), &form)
                .await
                .map_err(action_error)?;
            None
        }
        Action::RemoveHaResource { sid } => {
            c.delete(&format!("/cluster/ha/resources/{}", encode(sid)), &[])
                .await
                .map_err(action_error)?;
            ownership.forget(PLUGIN, "ha-resource", sid)?;
            None
        }
        Action::JoinCluster {
            node,
            peer,
            fingerprint,
            password_file,
            link0,
            ..
        } => {
            let password = api::read_private(
                &under_root(root, password_file),
                "the peer's root password file (plugins.proxmox.cluster.join.password_file)",
            )
            .map_err(ActionError::fatal)?;
            let mut form = vec![
                pair("hostname", peer.clone()),
                pair("fingerprint", fingerprint.clone()),
                pair("password", password),
            ];
            if let Some(l) = link0 {
                form.push(pair("link0", l.clone()));
            }
            let r = c
                .post("/cluster/config/join", &form)
                .await
                .map_err(action_error)?;
            c.wait(node, r).await.map_err(action_error)?
        }
        Action::Refuse { why, .. } => {
            return Err(ActionError::conflict(anyhow::anyhow!("{why}")));
        }
    };
    Ok(note.map(|upid| format!("task {upid}")))
}

/// What a transaction's actions are about to change, as it was before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guests: Vec<GuestBefore>,
    /// Storage id to its options before (`None`: op-dbus defines it now).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// Backup job id to its options before (`None`: op-dbus creates it now).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backups: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// HA resource id to its options before (`None`: op-dbus adds it now).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ha: BTreeMap<String, Option<BTreeMap<String, String>>>,
    /// A cluster join the transaction sends (not undone: PVE has no leave).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestBefore {
    pub kind: GuestKind,
    pub node: String,
    pub vmid: u32,
    /// `None`: the guest did not exist (the transaction creates it).
    pub config: Option<BTreeMap<String, String>>,
    pub running: bool,
    /// The config keys the actions set.
    pub keys: Vec<String>,
    /// Disks the actions grow (PVE cannot shrink them back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grown: Vec<String>,
}

fn checkpoint(current: &Current, actions: &[Action]) -> Checkpoint {
    let mut cp = Checkpoint::default();
    for a in actions {
        match a {
            Action::CreateGuest {
                kind, node, vmid, ..
            }
            | Action::ConfigureGuest {
                kind, node, vmid, ..
            }
            | Action::ResizeDisk {
                kind, node, vmid, ..
            }
            | Action::StartGuest { kind, node, vmid }
            | Action::StopGuest { kind, node, vmid }
            | Action::DestroyGuest { kind, node, vmid } => {
                let at = match cp
                    .guests
                    .iter()
                    .position(|g| g.kind == *kind && g.vmid == *vmid)
                {
                    Some(i) => i,
                    None => {
                        let cur = current
                            .guests
                            .iter()
                            .find(|g| g.kind == *kind && g.vmid == *vmid);
                        cp.guests.push(GuestBefore {
                            kind: *kind,
                            node: node.clone(),
                            vmid: *vmid,
                            config: cur.and_then(|g| g.config.clone()),
                            running: cur.and_then(|g| g.status.as_deref()) == Some("running"),
                            keys: Vec::new(),
                            grown: Vec::new(),
                        });
                        cp.guests.len() - 1
                    }
                };
                let g = &mut cp.guests[at];
                match a {
                    Action::ConfigureGuest { set, delete, .. } => {
                        g.keys.extend(set.keys().cloned());
                        g.keys.extend(delete.iter().cloned());
                    }
                    Action::ResizeDisk { disk, .. } => g.grown.push(disk.clone()),
                    _ => {}
                }
            }
            Action::CreateStorage { id, .. }
            | Action::UpdateStorage { id, .. }
            | Action::RemoveStorage { id } => {
                cp.storage
                    .insert(id.clone(), current.storage.get(id).cloned().flatten());
            }
            Action::CreateBackupJob { id, .. } | Action::UpdateBackupJob { id, .. } => {
                cp.backups
                    .insert(id.clone(), current.backups.get(id).cloned().flatten());
            }
            Action::CreateHaResource { sid, .. }
            | Action::UpdateHaResource { sid, .. }
            | Action::RemoveHaResource { sid } => {
                cp.ha
                    .insert(sid.clone(), current.ha.get(sid).cloned().flatten());
            }
            Action::JoinCluster { cluster, .. } => cp.joined = Some(cluster.clone()),
            Action::Refuse { .. } => {}
        }
    }
    cp
}

/// Puts back what [`checkpoint`] recorded: guests the transaction created
/// are destroyed, config keys it set get their old values (or are
/// deleted), the power state is restored; storage and backup jobs alike.
/// A grown disk stays grown (PVE cannot shrink): the line says so.
async fn restore(c: &Client, ownership: &Ownership, cp: &Checkpoint) -> anyhow::Result<String> {
    let mut undone = 0;
    let mut kept = Vec::new();
    // HA resources first: a guest created now is destroyed below, and PVE
    // does not destroy an HA-managed guest.
    for (sid, before) in &cp.ha {
        let path = format!("/cluster/ha/resources/{}", encode(sid));
        let now = c.get_opt(&path).await?;
        match (before, now) {
            (None, Some(_)) => {
                c.delete(&path, &[]).await?;
                ownership.forget(PLUGIN, "ha-resource", sid)?;
                undone += 1;
            }
            (None, None) => {}
            (Some(b), None) => {
                let mut form = vec![pair("sid", sid.clone())];
                form.extend(
                    b.iter()
                        .filter(|(k, _)| model::HA_KEYS.contains(&k.as_str()))
                        .map(|(k, v)| pair(k, v.clone())),
                );
                match c.post("/cluster/ha/resources", &form).await {
                    Ok(_) => undone += 1,
                    // Its guest was destroyed, and is not recreated either.
                    Err(ApiError::Status { message, .. }) if message.contains("unable to find") => {
                        kept.push(format!("HA resource {sid} (its guest is gone)"));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (Some(b), Some(now)) => {
                let (now, digest) = config_map(&now);
                let mut form = Vec::new();
                let mut delete = Vec::new();
                for k in model::HA_KEYS {
                    match (b.get(*k), now.get(*k)) {
                        (Some(v), n) if n != Some(v) => form.push(pair(k, v.clone())),
                        (None, Some(_)) => delete.push(k.to_string()),
                        _ => {}
                    }
                }
                if !form.is_empty() || !delete.is_empty() {
                    if !delete.is_empty() {
                        form.push(pair("delete", delete.join(",")));
                    }
                    if let Some(d) = digest {
                        form.push(pair("digest", d));
                    }
                    c.put(&path, &form).await?;
                    undone += 1;
                }
            }
        }
    }
    if let Some(cluster) = &cp.joined {
        kept.push(format!(
            "the join to cluster {cluster} (a node leaves a cluster only by `pvecm delnode` on a member)"
        ));
    }
    for g in cp.guests.iter().rev() {
        let base = format!("/nodes/{}/{}/{}", g.node, g.kind.path(), g.vmid);
        let now = c.get_opt(&format!("{base}/config")).await?;
        let running = match &now {
            Some(_) => {
                c.get(&format!("{base}/status/current"))
                    .await?
                    .get("status")
                    .and_then(Value::as_str)
                    == Some("running")
            }
            None => false,
        };
        let Some(before) = &g.config else {
            if now.is_some() {
                if running {
                    let r = c.post(&format!("{base}/status/stop"), &[]).await?;
                    c.wait(&g.node, r).await?;
                }
                let r = c.delete(&base, &[pair("purge", "1")]).await?;
                c.wait(&g.node, r).await?;
                ownership.forget(PLUGIN, "guest", &owned_id(g.kind, g.vmid))?;
                undone += 1;
            }
            continue;
        };
        let Some(now) = now else {
            kept.push(format!(
                "{} {} is gone and is not recreated",
                g.kind.short(),
                g.vmid
            ));
            continue;
        };
        let (now, digest) = config_map(&now);
        let mut form = Vec::new();
        let mut delete = Vec::new();
        for k in &g.keys {
            match (before.get(k), now.get(k)) {
                (Some(b), n) if n != Some(b) => form.push(pair(k, b.clone())),
                (None, Some(_)) => delete.push(k.clone()),
                _ => {}
            }
        }
        if !form.is_empty() || !delete.is_empty() {
            undone += form.len() + delete.len();
            if !delete.is_empty() {
                form.push(pair("delete", delete.join(",")));
            }
            if let Some(d) = digest {
                form.push(pair("digest", d));
            }
            let r = c.put(&format!("{base}/config"), &form).await?;
            c.wait(&g.node, r).await?;
        }
        for d in &g.grown {
            kept.push(format!(
                "disk {d} of {} {} stays grown (PVE cannot shrink a disk)",
                g.kind.short(),
                g.vmid
            ));
        }
        if running != g.running {
            let verb = if g.running { "start" } else { "stop" };
            let r = c.post(&format!("{base}/status/{verb}"), &[]).await?;
            c.wait(&g.node, r).await?;
            undone += 1;
        }
    }
    for (id, before) in &cp.storage {
        let path = format!("/storage/{}", encode(id));
        match before {
            None => {
                c.delete(&path, &[]).await?;
                ownership.forget(PLUGIN, "storage", id)?;
                undone += 1;
            }
            Some(b) if c.get_opt(&path).await?.is_none() => {
                // Removed by the transaction: defined again as it was.
                let mut form = vec![pair("storage", id.clone())];
                form.extend(
                    b.iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "digest" | "storage"))
                        .map(|(k, v)| pair(k, v.clone())),
                );
                c.post("/storage", &form).await?;
                ownership.record(PLUGIN, "storage", id, None)?;
                undone += 1;
            }
            Some(b) => {
                let form: Vec<(String, String)> = b
                    .iter()
                    .filter(|(k, _)| k.as_str() == "content" || k.as_str() == "server")
                    .map(|(k, v)| pair(k, v.clone()))
                    .collect();
                if !form.is_empty() {
                    c.put(&path, &form).await?;
                    undone += 1;
                }
            }
        }
    }
    for (id, before) in &cp.backups {
        let path = format!("/cluster/backup/{}", encode(id));
        match before {
            None => {
                c.delete(&path, &[]).await?;
                ownership.forget(PLUGIN, "backup-job", id)?;
            }
            Some(b) => {
                let form: Vec<(String, String)> = b
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "id" | "type" | "next-run"))
                    .map(|(k, v)| pair(k, v.clone()))
                    .collect();
                c.put(&path, &form).await?;
            }
        }
        undone += 1;
    }
    let mut line = format!("{undone} change(s) undone");
    if !kept.is_empty() {
        line.push_str(&format!("; not undone: {}", kept.join("; ")));
    }
    Ok(line)
}

/// Which actions run one after another: a cluster join first, then one
/// lane for storage, then one lane per guest with its HA resource (PVE
/// locks a guest's config per write), then backup jobs and refusals.
fn lane(a: &Action) -> (u8, String) {
    match a {
        // PVE joins only a node without guests: before anything else.
        Action::JoinCluster { .. } => (0, String::new()),
        Action::CreateStorage { .. }
        | Action::UpdateStorage { .. }
        | Action::RemoveStorage { .. } => (1, String::new()),
        Action::CreateBackupJob { .. } | Action::UpdateBackupJob { .. } | Action::Refuse { .. } => {
            (3, String::new())
        }
        // An HA resource goes in its guest's lane (after a create, before a destroy).
        Action::CreateHaResource { sid, .. }
        | Action::UpdateHaResource { sid, .. }
        | Action::RemoveHaResource { sid } => (2, format!("pve-{sid}")),
        other => (2, other.resource()),
    }
}

impl Plugin for ProxmoxPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = Checkpoint;

    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        model::desired(state)
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let c = self.connect(ctx, desired)?;
        let (cluster, local) = query_cluster(&c).await?;
        let node = match (&desired.node, local) {
            (Some(n), _) => n.clone(),
            (None, Some(l)) => l,
            (None, None) => anyhow::bail!(
                "the PVE API at {} names no local node; set plugins.proxmox.node",
                desired.api.url
            ),
        };
        let mut out = Current {
            node: node.clone(),
            cluster,
            ..Current::default()
        };
        for g in &desired.guests {
            let gnode = g.node.clone().unwrap_or_else(|| node.clone());
            let base = format!("/nodes/{gnode}/{}/{}", g.kind.path(), g.vmid);
            let mut cur = GuestCurrent {
                kind: g.kind,
                vmid: g.vmid,
                node: gnode,
                config: None,
                digest: None,
                status: None,
            };
            if let Some(cfg) = c.get_opt(&format!("{base}/config")).await? {
                let (m, digest) = config_map(&cfg);
                cur.config = Some(m);
                cur.digest = digest;
                let st = c.get(&format!("{base}/status/current")).await?;
                cur.status = st.get("status").and_then(Value::as_str).map(str::to_string);
            }
            out.guests.push(cur);
        }
        for s in &desired.storage {
            let v = c.get_opt(&format!("/storage/{}", encode(&s.id))).await?;
            out.storage.insert(
                s.id.clone(),
                v.map(|v| {
                    let (mut m, digest) = config_map(&v);
                    if let Some(d) = digest {
                        m.insert("digest".to_string(), d);
                    }
                    m
                }),
            );
        }
        for b in &desired.backups {
            let v = c
                .get_opt(&format!("/cluster/backup/{}", encode(&b.id)))
                .await?;
            out.backups
                .insert(b.id.clone(), v.map(|v| config_map(&v).0));
        }
        for g in &desired.guests {
            if g.ha.is_none() && g.state != PveGuestState::Absent {
                continue;
            }
            let sid = g.sid();
            let v = c
                .get_opt(&format!("/cluster/ha/resources/{}", encode(&sid)))
                .await?;
            out.ha.insert(
                sid,
                v.map(|v| {
                    let (mut m, digest) = config_map(&v);
                    if let Some(d) = digest {
                        m.insert("digest".to_string(), d);
                    }
                    m
                }),
            );
        }
        let owned = Ownership::new(&ctx.state_dir);
        out.owned = owned
            .owned(PLUGIN, "guest")?
            .into_iter()
            .map(|o| o.id)
            .collect();
        out.owned_storage = owned
            .owned(PLUGIN, "storage")?
            .into_iter()
            .map(|o| o.id)
            .collect();
        out.owned_ha = owned
            .owned(PLUGIN, "ha-resource")?
            .into_iter()
            .map(|o| o.id)
            .collect();
        Ok(out)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        if let Some(c) = &desired.cluster {
            for line in model::cluster_report(&current.cluster, c) {
                tracing::info!("cluster {}: {line}", c.name);
            }
        }
        diff(current, desired)
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Current,
        actions: &[Action],
    ) -> anyhow::Result<Option<Checkpoint>> {
        Ok(Some(checkpoint(current, actions)))
    }

    async fn restore(&self, ctx: &Context, cp: &Checkpoint) -> anyhow::Result<String> {
        let c = self.client()?;
        restore(&c, &Ownership::new(&ctx.state_dir), cp).await
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        let c = match self.client() {
            Ok(c) => c,
            Err(e) => {
                let msg = format!("{e:#}");
                return actions
                    .iter()
                    .map(|_| Err(ActionError::fatal(anyhow::anyhow!("{msg}"))))
                    .collect();
            }
        };
        let ownership = Ownership::new(&ctx.state_dir);
        let mut results: Vec<Option<ActionResult>> = actions.iter().map(|_| None).collect();
        for phase in 0..=3u8 {
            let mut lanes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, a) in actions.iter().enumerate() {
                let (p, key) = lane(a);
                if p == phase {
                    lanes.entry(key).or_default().push(i);
                }
            }
            let runs = lanes.into_values().map(|idx| {
                let c = c.clone();
                let ownership = ownership.clone();
                async move {
                    let mut out = Vec::new();
                    let mut failed: Option<String> = None;
                    for i in idx {
                        let a = &actions[i];
                        if let Some(res) = &failed {
                            out.push((
                                i,
                                Err(ActionError::fatal(anyhow::anyhow!(
                                    "not applied: an earlier action on {res} failed"
                                ))),
                            ));
                            continue;
                        }
                        let r = apply_one(&c, &ownership, &ctx.root, a).await;
                        if r.is_err() && !matches!(a, Action::Refuse { .. }) {
                            failed = Some(a.resource());
                        }
                        out.push((i, r));
                    }
                    out
                }
            });
            for lane_results in futures::future::join_all(runs).await {
                for (i, r) in lane_results {
                    results[i] = Some(r);
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ActionError::fatal(anyhow::anyhow!(
                        "not applied (plugin bug)"
                    )))
                })
            })
            .collect()
    }

    fn redact(&self, v: &mut Value) {
        crate::engine::secret::redact_keys(v, SECRET_KEYS);
    }
}
