//! wireguard plugin: `plugins.wireguard.interfaces.NAME`. Creates the link
//! (kernel module, else `wireguard-go`), keeps the private key in a
//! root-only file (generated when missing), configures key, port and peers
//! (UAPI socket for wireguard-go, `wg setconf` for the kernel), addresses,
//! MTU and up. Ephemeral; restores what it changed. Keys appear only as
//! fingerprints, public keys in full.

pub mod key;
pub mod uapi;

use std::fmt;
use std::net::SocketAddr;

use anyhow::Context as _;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::engine::secret::{fingerprint, redact_keys};
use crate::engine::{ActionResult, Context, Persistence, Plugin, PluginAction};
use crate::netlink::{LinkKind, Netlink};
use opdbus_common::Task;
use opdbus_state::model::{OneOrMany, WgInterface, WgPeer};
use opdbus_state::State;
use uapi::{DeviceConf, PeerConf, SetConf};

pub const PLUGIN: &str = "wireguard";

/// One interface as the state wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceWant {
    pub name: String,
    /// Sorted.
    pub addresses: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    pub key_file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Sorted by public key.
    pub peers: Vec<PeerConf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub interfaces: Vec<IfaceWant>,
}

/// The tunnel link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkNow {
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Sorted, link-local ones left out.
    pub addresses: Vec<IpNet>,
    /// Driven by wireguard-go (its control socket exists).
    pub userspace: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceNow {
    pub name: String,
    /// Fingerprint of the key in `key_file`; `None`: the file is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkNow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceConf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub interfaces: Vec<IfaceNow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    GenerateKey {
        name: String,
        key_file: String,
    },
    CreateLink {
        name: String,
    },
    /// Key (from its file), port and the whole peer list.
    Configure {
        name: String,
        key_file: String,
        /// Whether the device's key differs from the file's.
        set_key: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listen_port: Option<u16>,
        peers: Vec<PeerConf>,
    },
    SetMtu {
        name: String,
        mtu: u32,
    },
    SetAddresses {
        name: String,
        add: Vec<IpNet>,
        remove: Vec<IpNet>,
    },
    Up {
        name: String,
    },
}

impl Action {
    fn name(&self) -> &str {
        match self {
            Action::GenerateKey { name, .. }
            | Action::CreateLink { name }
            | Action::Configure { name, .. }
            | Action::SetMtu { name, .. }
            | Action::SetAddresses { name, .. }
            | Action::Up { name } => name,
        }
    }
}

fn list<T: fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::GenerateKey { name, key_file } => {
                write!(
                    f,
                    "generate the private key of {name} into {key_file} (0600)"
                )
            }
            Action::CreateLink { name } => write!(f, "create WireGuard link {name}"),
            Action::Configure {
                name,
                set_key,
                listen_port,
                peers,
                ..
            } => {
                write!(f, "configure {name}:")?;
                if *set_key {
                    write!(f, " private key from its file,")?;
                }
                if let Some(p) = listen_port {
                    write!(f, " listen port {p},")?;
                }
                write!(f, " {} peer(s)", peers.len())?;
                for p in peers {
                    write!(f, "; {}", p.public_key)?;
                    if let Some(e) = p.endpoint {
                        write!(f, " at {e}")?;
                    }
                    write!(f, " allowed {}", list(&p.allowed_ips))?;
                }
                Ok(())
            }
            Action::SetMtu { name, mtu } => write!(f, "set mtu {mtu} on {name}"),
            Action::SetAddresses { name, add, remove } => {
                write!(f, "addresses on {name}:")?;
                if !add.is_empty() {
                    write!(f, " add {}", list(add))?;
                }
                if !remove.is_empty() {
                    write!(f, " remove {}", list(remove))?;
                }
                Ok(())
            }
            Action::Up { name } => write!(f, "bring {name} up"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::GenerateKey { .. } => "generate-key",
            Action::CreateLink { .. } => "create-link",
            Action::Configure { .. } => "configure",
            Action::SetMtu { .. } => "set-mtu",
            Action::SetAddresses { .. } => "set-addresses",
            Action::Up { .. } => "up",
        }
    }
    fn resource(&self) -> String {
        format!("wireguard:{}", self.name())
    }
}

/// What restore puts back for one interface the actions touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceCheckpoint {
    pub name: String,
    /// The link as it was; `None`: the apply created it, restore deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkNow>,
    /// Port and peers as they were (the old private key is never recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceConf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub interfaces: Vec<IfaceCheckpoint>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct WireGuardPlugin;

fn desired_of(state: &State) -> anyhow::Result<Option<Desired>> {
    let Some(wg) = &state.plugins.wireguard else {
        return Ok(None);
    };
    let mut out = Desired::default();
    for (name, i) in &wg.interfaces {
        let at = format!("/plugins/wireguard/interfaces/{name}");
        let mut addresses = i
            .address
            .0
            .iter()
            .map(|a| {
                a.parse::<IpNet>()
                    .with_context(|| format!("{at}/address: '{a}'"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        addresses.sort();
        let mut peers = Vec::new();
        for (n, p) in i.peers.iter().enumerate() {
            let mut allowed = p
                .allowed_ips
                .iter()
                .map(|a| {
                    a.parse::<IpNet>()
                        .map(|x| x.trunc())
                        .with_context(|| format!("{at}/peers/{n}/allowed_ips: '{a}'"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            allowed.sort();
            allowed.dedup();
            peers.push(PeerConf {
                public_key: p.public_key.clone(),
                endpoint: p
                    .endpoint
                    .as_deref()
                    .map(|e| e.parse::<SocketAddr>())
                    .transpose()
                    .with_context(|| format!("{at}/peers/{n}/endpoint"))?,
                allowed_ips: allowed,
                keepalive: p.persistent_keepalive.unwrap_or(0),
            });
        }
        peers.sort();
        out.interfaces.push(IfaceWant {
            name: name.clone(),
            addresses,
            listen_port: i.listen_port,
            key_file: i
                .private_key_file
                .clone()
                .unwrap_or_else(|| default_key_file(name)),
            mtu: i.mtu,
            peers,
        });
    }
    Ok(Some(out))
}

/// The pure diff of one interface.
pub fn diff_iface(now: &IfaceNow, want: &IfaceWant) -> Vec<Action> {
    let name = want.name.clone();
    let mut out = Vec::new();
    if now.key_file.is_none() {
        out.push(Action::GenerateKey {
            name: name.clone(),
            key_file: want.key_file.clone(),
        });
    }
    if now.link.is_none() {
        out.push(Action::CreateLink { name: name.clone() });
    }
    let dev = now.device.clone().unwrap_or_default();
    let set_key = now.key_file.is_none() || dev.key_fingerprint != now.key_file;
    let port_differs = want.listen_port.is_some_and(|p| p != dev.listen_port);
    if set_key || port_differs || dev.peers != want.peers {
        out.push(Action::Configure {
            name: name.clone(),
            key_file: want.key_file.clone(),
            set_key,
            listen_port: want.listen_port,
            peers: want.peers.clone(),
        });
    }
    let link = now.link.as_ref();
    if let Some(mtu) = want.mtu {
        if link.and_then(|l| l.mtu) != Some(mtu) {
            out.push(Action::SetMtu {
                name: name.clone(),
                mtu,
            });
        }
    }
    let have: &[IpNet] = link.map(|l| l.addresses.as_slice()).unwrap_or(&[]);
    let add: Vec<IpNet> = want
        .addresses
        .iter()
        .filter(|a| !have.contains(a))
        .copied()
        .collect();
    let remove: Vec<IpNet> = have
        .iter()
        .filter(|a| !want.addresses.contains(a))
        .copied()
        .collect();
    if !add.is_empty() || !remove.is_empty() {
        out.push(Action::SetAddresses {
            name: name.clone(),
            add,
            remove,
        });
    }
    if !link.is_some_and(|l| l.up) {
        out.push(Action::Up { name });
    }
    out
}

async fn query_iface(ctx: &Context, nl: &Netlink, want: &IfaceWant) -> anyhow::Result<IfaceNow> {
    let key_file = key::read_private(&ctx.root, &want.key_file)?.map(|k| fingerprint(&k));
    let link = nl
        .link(&want.name)
        .await
        .with_context(|| format!("reading link {}", want.name))?;
    let (link, device) = match link {
        None => (None, None),
        Some(l) => {
            let userspace = uapi::socket_path(&want.name).exists();
            let mut addresses: Vec<IpNet> = nl
                .addresses()
                .await
                .context("reading addresses")?
                .into_iter()
                .filter(|a| a.ifname == want.name && !a.link_local)
                .map(|a| a.addr)
                .collect();
            addresses.sort();
            let device = if userspace {
                uapi::get(&want.name).await?
            } else {
                let out = Task::new("wg")
                    .args(["showconf", &want.name])
                    .output()
                    .with_context(|| {
                        format!("reading the WireGuard configuration of {}", want.name)
                    })?;
                uapi::parse_ini(&String::from_utf8_lossy(&out.stdout))?
            };
            (
                Some(LinkNow {
                    up: l.up,
                    mtu: l.mtu,
                    addresses,
                    userspace,
                }),
                Some(device),
            )
        }
    };
    Ok(IfaceNow {
        name: want.name.clone(),
        key_file,
        link,
        device,
    })
}

/// A WireGuard tunnel: the kernel's `wireguard` kind, or a `tun` device
/// driven by `wireguard-go` (its control socket exists).
pub fn is_tunnel(kind: &LinkKind, name: &str) -> bool {
    match kind {
        LinkKind::Other(k) if k == "wireguard" => true,
        LinkKind::Other(k) if k == "tun" => uapi::socket_path(name).exists(),
        _ => false,
    }
}

/// The `plugins.wireguard` entry describing `now` (a tunnel read back
/// whole), or `None` when it has no device configuration. The key file is
/// left out when the default file holds the running key; otherwise the
/// running key is in no file this plugin knows, and applying the entry
/// would give the tunnel a new key: said as a warning.
fn discover_iface(now: &IfaceNow, default_key_file: &str) -> Option<WgInterface> {
    let (link, dev) = (now.link.as_ref()?, now.device.as_ref()?);
    if now.key_file.is_none() || now.key_file != dev.key_fingerprint {
        tracing::warn!(
            "{}: its private key is not the one in {default_key_file}; applying the discovered \
             state would give the tunnel a new key (set private_key_file to the file that holds it)",
            now.name
        );
    }
    Some(WgInterface {
        address: OneOrMany(link.addresses.iter().map(ToString::to_string).collect()),
        listen_port: Some(dev.listen_port).filter(|p| *p != 0),
        private_key_file: None,
        mtu: link.mtu.filter(|m| *m != DEFAULT_MTU),
        peers: dev
            .peers
            .iter()
            .map(|p| WgPeer {
                public_key: p.public_key.clone(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                allowed_ips: p.allowed_ips.iter().map(ToString::to_string).collect(),
                persistent_keepalive: Some(p.keepalive).filter(|k| *k != 0),
            })
            .collect(),
    })
}

/// The MTU a new WireGuard link gets.
const DEFAULT_MTU: u32 = 1420;

fn default_key_file(name: &str) -> String {
    format!("/etc/wireguard/{name}.key")
}

/// Creates the link: the kernel's `wireguard` kind when the kernel has it,
/// else a `wireguard-go` process (which daemonizes once its socket is up).
async fn create_link(name: &str) -> anyhow::Result<String> {
    let kernel = Task::new("ip")
        .args(["link", "add", "dev", name, "type", "wireguard"])
        .output();
    match kernel {
        Ok(_) => Ok("kernel module".into()),
        Err(kerr) => {
            Task::new("wireguard-go").arg(name).output().map_err(|e| {
                anyhow::anyhow!(
                    "creating WireGuard link {name}: the kernel has no WireGuard ({kerr}) \
                     and wireguard-go failed: {e}; install wireguard-go or load the module"
                )
            })?;
            for _ in 0..50 {
                if uapi::socket_path(name).exists() {
                    return Ok("wireguard-go".into());
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            anyhow::bail!(
                "wireguard-go started for {name} but {} did not appear",
                uapi::socket_path(name).display()
            )
        }
    }
}

async fn configure(name: &str, conf: &SetConf<'_>) -> anyhow::Result<()> {
    if uapi::socket_path(name).exists() {
        uapi::set(name, conf).await
    } else {
        // `wg syncconf` would keep keys not named; setconf replaces all.
        Task::new("wg")
            .args(["setconf", name, "/dev/stdin"])
            .stdin(uapi::render_ini(conf))
            .output()
            .with_context(|| format!("configuring WireGuard link {name}"))?;
        Ok(())
    }
}

async fn apply_one(ctx: &Context, nl: &Netlink, a: &Action) -> ActionResult {
    match a {
        Action::GenerateKey { key_file, .. } => {
            let k = key::generate(&ctx.root, key_file)?;
            Ok(Some(match key::public_of(&k) {
                Some(p) => format!("public key {p}"),
                None => "public key: run `wg pubkey` on the file (wg is not installed)".into(),
            }))
        }
        Action::CreateLink { name } => {
            let how = create_link(name).await?;
            ctx.ownership()
                .record(PLUGIN, "link", name, None)
                .context("recording the link as created by op-dbus")?;
            Ok(Some(format!("via {how}")))
        }
        Action::Configure {
            name,
            key_file,
            set_key,
            listen_port,
            peers,
        } => {
            let k = key::read_private(&ctx.root, key_file)?.ok_or_else(|| {
                anyhow::anyhow!("{key_file} vanished before {name} was configured")
            })?;
            configure(
                name,
                &SetConf {
                    private_key: set_key.then_some(k.as_str()),
                    listen_port: *listen_port,
                    peers,
                },
            )
            .await?;
            Ok(key::public_of(&k).map(|p| format!("public key {p}")))
        }
        Action::SetMtu { name, mtu } => {
            nl.set_mtu(name, *mtu).await?;
            Ok(None)
        }
        Action::SetAddresses { name, add, remove } => {
            for r in remove {
                nl.delete_address(name, *r).await?;
            }
            for x in add {
                match nl.add_address(name, *x).await {
                    Err(e) if e.is_already_exists() => {}
                    r => r?,
                }
            }
            Ok(None)
        }
        Action::Up { name } => {
            nl.set_up(name).await?;
            Ok(None)
        }
    }
}

impl Plugin for WireGuardPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = Checkpoint;

    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn persistence(&self) -> Persistence {
        Persistence::Ephemeral
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        desired_of(state)
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let nl = Netlink::new().context("opening netlink")?;
        let mut out = Current::default();
        for w in &desired.interfaces {
            out.interfaces.push(query_iface(ctx, &nl, w).await?);
        }
        Ok(out)
    }

    /// Every tunnel on the host, as `plugins.wireguard.interfaces`.
    async fn discover(&self, ctx: &Context) -> anyhow::Result<Option<serde_json::Value>> {
        let nl = Netlink::new().context("opening netlink")?;
        let mut interfaces = std::collections::BTreeMap::new();
        for l in nl.links().await.context("reading links")? {
            if !is_tunnel(&l.kind, &l.name) {
                continue;
            }
            let want = IfaceWant {
                name: l.name.clone(),
                addresses: Vec::new(),
                listen_port: None,
                key_file: default_key_file(&l.name),
                mtu: None,
                peers: Vec::new(),
            };
            let now = query_iface(ctx, &nl, &want).await?;
            if let Some(i) = discover_iface(&now, &want.key_file) {
                interfaces.insert(l.name, i);
            }
        }
        if interfaces.is_empty() {
            return Ok(None);
        }
        let section = opdbus_state::model::WireGuard { interfaces };
        Ok(Some(serde_json::json!({ PLUGIN: section })))
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        let mut out = Vec::new();
        for w in &desired.interfaces {
            let now = current
                .interfaces
                .iter()
                .find(|c| c.name == w.name)
                .cloned()
                .unwrap_or(IfaceNow {
                    name: w.name.clone(),
                    key_file: None,
                    link: None,
                    device: None,
                });
            out.extend(diff_iface(&now, w));
        }
        out
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Current,
        actions: &[Action],
    ) -> anyhow::Result<Option<Checkpoint>> {
        let mut cp = Checkpoint::default();
        for c in &current.interfaces {
            if actions.iter().any(|a| a.name() == c.name) {
                cp.interfaces.push(IfaceCheckpoint {
                    name: c.name.clone(),
                    link: c.link.clone(),
                    device: c.device.clone(),
                });
            }
        }
        Ok(Some(cp))
    }

    async fn restore(&self, ctx: &Context, cp: &Checkpoint) -> anyhow::Result<String> {
        let nl = Netlink::new().context("opening netlink")?;
        let mut done = Vec::new();
        for i in cp.interfaces.iter().rev() {
            let Some(link) = &i.link else {
                match nl.delete_link(&i.name).await {
                    Err(e) if !e.is_missing() => {
                        return Err(e).with_context(|| format!("deleting {}", i.name))
                    }
                    _ => {}
                }
                let _ = ctx.ownership().forget(PLUGIN, "link", &i.name);
                done.push(format!("deleted {}", i.name));
                continue;
            };
            if let Some(d) = &i.device {
                configure(
                    &i.name,
                    &SetConf {
                        private_key: None,
                        listen_port: Some(d.listen_port),
                        peers: &d.peers,
                    },
                )
                .await
                .with_context(|| format!("restoring the peers of {}", i.name))?;
            }
            let now: Vec<IpNet> = nl
                .addresses()
                .await?
                .into_iter()
                .filter(|a| a.ifname == i.name && !a.link_local)
                .map(|a| a.addr)
                .collect();
            for a in now.iter().filter(|a| !link.addresses.contains(a)) {
                nl.delete_address(&i.name, *a).await?;
            }
            for a in link.addresses.iter().filter(|a| !now.contains(a)) {
                nl.add_address(&i.name, *a).await?;
            }
            if let Some(m) = link.mtu {
                nl.set_mtu(&i.name, m).await?;
            }
            if !link.up {
                nl.set_down(&i.name).await?;
            }
            done.push(format!(
                "restored port, peers and addresses of {} (its private key stays)",
                i.name
            ));
        }
        Ok(done.join("; "))
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        let nl = match Netlink::new() {
            Ok(nl) => nl,
            Err(e) => {
                let msg = format!("opening netlink: {e}");
                return actions
                    .iter()
                    .map(|_| Err(anyhow::anyhow!("{msg}").into()))
                    .collect();
            }
        };
        let mut out = Vec::with_capacity(actions.len());
        let mut failed: Option<String> = None;
        for a in actions {
            // After a failure on an interface its later steps cannot work.
            if failed.as_deref() == Some(a.name()) {
                out.push(Err(anyhow::anyhow!(
                    "not applied: an earlier step on {} failed",
                    a.name()
                )
                .into()));
                continue;
            }
            let r = apply_one(ctx, &nl, a).await;
            if r.is_err() {
                failed = Some(a.name().to_string());
            }
            out.push(r);
        }
        out
    }

    fn redact(&self, v: &mut serde_json::Value) {
        redact_keys(v, &["private_key", "preshared_key"]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn want() -> IfaceWant {
        IfaceWant {
            name: "wg0".into(),
            addresses: vec!["10.10.0.1/24".parse().unwrap()],
            listen_port: Some(51820),
            key_file: "/etc/wireguard/wg0.key".into(),
            mtu: None,
            peers: vec![PeerConf {
                public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
                endpoint: Some("192.0.2.2:51820".parse().unwrap()),
                allowed_ips: vec!["10.10.0.2/32".parse().unwrap()],
                keepalive: 25,
            }],
        }
    }

    #[test]
    fn fresh_host_gets_every_step_and_a_matching_one_none() {
        let w = want();
        let none = IfaceNow {
            name: "wg0".into(),
            key_file: None,
            link: None,
            device: None,
        };
        let kinds: Vec<&str> = diff_iface(&none, &w).iter().map(|a| a.kind()).collect();
        assert_eq!(
            kinds,
            [
                "generate-key",
                "create-link",
                "configure",
                "set-addresses",
                "up"
            ]
        );
        let fp = fingerprint("k");
        let same = IfaceNow {
            name: "wg0".into(),
            key_file: Some(fp.clone()),
            link: Some(LinkNow {
                up: true,
                mtu: Some(1420),
                addresses: w.addresses.clone(),
                userspace: true,
            }),
            device: Some(DeviceConf {
                key_fingerprint: Some(fp),
                listen_port: 51820,
                peers: w.peers.clone(),
            }),
        };
        assert_eq!(diff_iface(&same, &w), []);
        // a peer removed by hand is drift
        let mut drift = same.clone();
        drift.device.as_mut().unwrap().peers.clear();
        assert_eq!(diff_iface(&drift, &w)[0].kind(), "configure");
        // a key changed by hand is drift, shown without the key
        let mut rekeyed = same;
        rekeyed.device.as_mut().unwrap().key_fingerprint = Some(fingerprint("other"));
        let a = diff_iface(&rekeyed, &w);
        assert!(a[0].to_string().contains("private key from its file"));
    }
}
