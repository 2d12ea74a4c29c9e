//! The network plugin's values: `Desired` (what the state names, flattened
//! into links with their master, addresses and routes), `Current` (what the
//! host has) and `NetAction`, the typed changes the pure diff produces.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::engine::PluginAction;
use crate::netlink::{BondMode, LinkKind, RouteSpec};
use crate::ovsdb::{PortKind, PortSpec};
use opdbus_state::model::OvsPortType;
use opdbus_state::normalize::{IfaceKind, NetworkSpec};

/// Plugin name and kinds under which created links and OVS objects are
/// recorded in the ownership registry.
pub const PLUGIN: &str = "network";
pub const LINK: &str = "link";
pub const OVS_BRIDGE: &str = "ovs-bridge";
/// Id `BRIDGE/PORT`.
pub const OVS_PORT: &str = "ovs-port";

/// The kind of link the state wants; `Existing` links (ethernet NICs, ports
/// the state only references) are never created, only configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum WantKind {
    Existing,
    Bridge,
    Bond {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<BondMode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        miimon: Option<u32>,
    },
    Vlan {
        id: u16,
        base: String,
    },
    Veth {
        peer: String,
    },
    Dummy,
    /// An Open vSwitch bridge (OVSDB); its kernel device appears only when
    /// ovs-vswitchd runs.
    OvsBridge {
        ports: Vec<PortSpec>,
    },
}

impl WantKind {
    /// The kernel link kind this creates, for kinds the agent creates.
    pub fn link_kind(&self) -> Option<LinkKind> {
        Some(match self {
            WantKind::Bridge => LinkKind::Bridge,
            WantKind::Bond { .. } => LinkKind::Bond,
            WantKind::Vlan { .. } => LinkKind::Vlan,
            WantKind::Veth { .. } => LinkKind::Veth,
            WantKind::Dummy => LinkKind::Dummy,
            WantKind::Existing | WantKind::OvsBridge { .. } => return None,
        })
    }
}

/// One link as the state wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkWant {
    pub name: String,
    pub kind: WantKind,
    /// Declared by the state (false: only referenced as a port, slave or peer).
    #[serde(default = "yes")]
    pub declared: bool,
    #[serde(default = "yes")]
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The Linux bridge or bond this link is a port of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// Static addresses, sorted; `None` leaves addresses alone (referenced links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<IpNet>>,
    /// DHCP (v4 or v6) runs on it: dynamic addresses are left alone.
    #[serde(default)]
    pub dhcp: bool,
    /// Hardware address, lowercase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Datapath of an OVS bridge (`netdev`, `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath_type: Option<String>,
}

fn yes() -> bool {
    true
}

/// DNS servers and search domains, and the link systemd-resolved gets them on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default)]
    pub servers: Vec<IpAddr>,
    #[serde(default)]
    pub search: Vec<String>,
}

/// The network slice of state.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Sorted by name.
    pub links: Vec<LinkWant>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConf>,
    /// `unix:PATH` from the state (overrides `--ovsdb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovsdb: Option<String>,
    #[serde(default)]
    pub prune: bool,
    /// Rendered /etc/network/interfaces (Proxmox hosts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces_file: Option<String>,
    /// systemd-networkd drop-ins keyed by link: `Unmanaged=yes`, or DHCP.
    #[serde(default)]
    pub networkd: BTreeMap<String, String>,
}

impl Desired {
    pub fn link(&self, name: &str) -> Option<&LinkWant> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Whether the state has any Open vSwitch bridge.
    pub fn uses_ovs(&self) -> bool {
        self.links
            .iter()
            .any(|l| matches!(l.kind, WantKind::OvsBridge { .. }))
    }

    /// Every link name the state names, veth peers and ports included.
    pub fn named(&self) -> Vec<String> {
        let mut out: Vec<String> = self.links.iter().map(|l| l.name.clone()).collect();
        for l in &self.links {
            match &l.kind {
                WantKind::Veth { peer } => out.push(peer.clone()),
                WantKind::OvsBridge { ports } => out.extend(ports.iter().map(|p| p.name.clone())),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// A link as the kernel reports it (the parts the plugin compares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkNow {
    pub name: String,
    pub kind: LinkKind,
    /// ifindex (tells a link the agent created from a later one of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    #[serde(default = "yes")]
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veth_peer: Option<String>,
    /// A veth whose peer is in another network namespace: a container's
    /// interface, which the network plugin never detaches or deletes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub peer_netns: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_id: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond_mode: Option<BondMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond_miimon: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl From<&crate::netlink::LinkInfo> for LinkNow {
    fn from(l: &crate::netlink::LinkInfo) -> Self {
        LinkNow {
            name: l.name.clone(),
            kind: l.kind.clone(),
            index: Some(l.index),
            up: l.up,
            mtu: l.mtu,
            master: l.master.clone(),
            veth_peer: l.veth_peer.clone(),
            peer_netns: l.peer_netns,
            vlan_id: l.vlan.as_ref().map(|v| v.id),
            vlan_base: l.vlan.as_ref().and_then(|v| v.base_name.clone()),
            bond_mode: l.bond.as_ref().and_then(|b| b.mode),
            bond_miimon: l.bond.as_ref().and_then(|b| b.miimon),
            mac: l.mac.clone(),
        }
    }
}

/// An address on a link (IPv6 link-local ones are not listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrNow {
    pub link: String,
    pub addr: IpNet,
    #[serde(default)]
    pub dynamic: bool,
}

/// A main-table route; `protocol` as iproute2 names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteNow {
    #[serde(flatten)]
    pub spec: RouteSpec,
    pub protocol: String,
}

/// An OVS bridge and its ports (the bridge's own internal port omitted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OvsBridgeNow {
    pub name: String,
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub datapath_type: String,
    /// `other_config:hwaddr` (lowercase): the MAC of the bridge's device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwaddr: Option<String>,
}

impl From<&crate::ovsdb::BridgeInfo> for OvsBridgeNow {
    fn from(b: &crate::ovsdb::BridgeInfo) -> Self {
        let ports = b
            .ports
            .iter()
            .filter(|p| p.name != b.name)
            .map(|p| {
                let iface = p.interfaces.first();
                let kind = match iface.map(|i| i.kind.as_str()) {
                    _ if p.is_bond() => p.bond_kind(),
                    Some("internal") => PortKind::Internal,
                    Some("patch") => PortKind::Patch {
                        peer: iface
                            .and_then(|i| i.options.get("peer").cloned())
                            .unwrap_or_default(),
                    },
                    _ => PortKind::System,
                };
                PortSpec::new(p.name.clone(), kind).with_vlans(p.tag, &p.trunks)
            })
            .collect();
        OvsBridgeNow {
            name: b.name.clone(),
            ports,
            datapath_type: b.datapath_type.clone(),
            hwaddr: b.hwaddr.clone(),
        }
    }
}

/// What the host has, for what the state names (links: all of them, so
/// `prune` can find unnamed ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub links: Vec<LinkNow>,
    #[serde(default)]
    pub addresses: Vec<AddrNow>,
    #[serde(default)]
    pub routes: Vec<RouteNow>,
    /// OVS bridges; `None` when the state has none (OVSDB not asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovs: Option<Vec<OvsBridgeNow>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces_file: Option<String>,
    /// Our networkd drop-ins (`10-opdbus-<link>.network`) keyed by link.
    #[serde(default)]
    pub networkd: BTreeMap<String, String>,
    /// Links the agent created (the ownership registry): `prune` deletes
    /// only these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_links: Vec<crate::engine::ownership::Owned>,
    /// OVS bridges and ports (`BRIDGE/PORT`) the agent created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_ovs: Vec<crate::engine::ownership::Owned>,
}

impl Current {
    pub fn link(&self, name: &str) -> Option<&LinkNow> {
        self.links.iter().find(|l| l.name == name)
    }

    /// Whether the agent created the OVS bridge `name`.
    pub fn owns_ovs_bridge(&self, name: &str) -> bool {
        self.owned_ovs
            .iter()
            .any(|o| o.kind == OVS_BRIDGE && o.id == name)
    }

    /// Whether the agent added `port` to the OVS bridge `bridge`.
    pub fn owns_ovs_port(&self, bridge: &str, port: &str) -> bool {
        let id = format!("{bridge}/{port}");
        self.owned_ovs
            .iter()
            .any(|o| o.kind == OVS_PORT && o.id == id)
    }

    /// Whether a container's veth hangs on `bridge` (it is then never pruned).
    pub fn has_guest_port(&self, bridge: &str) -> bool {
        self.links
            .iter()
            .any(|l| l.peer_netns && l.master.as_deref() == Some(bridge))
    }

    /// Whether the agent created `l` (a veth counts when either end was recorded).
    pub fn owns(&self, l: &LinkNow) -> bool {
        let mine = |n: &LinkNow| self.owned_links.iter().any(|o| o.is(&n.name, n.index));
        mine(l)
            || l.veth_peer
                .as_deref()
                .and_then(|p| self.link(p))
                .is_some_and(mine)
    }
}

/// A link the agent creates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CreateKind {
    Bridge,
    Bond {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<BondMode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        miimon: Option<u32>,
    },
    Vlan {
        id: u16,
        base: String,
    },
    Veth {
        peer: String,
    },
    Dummy,
}

impl fmt::Display for CreateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateKind::Bridge => f.write_str("bridge"),
            CreateKind::Bond { mode, .. } => match mode {
                Some(m) => write!(f, "bond (mode {m})"),
                None => f.write_str("bond"),
            },
            CreateKind::Vlan { id, base } => write!(f, "vlan {id} on {base}"),
            CreateKind::Veth { peer } => write!(f, "veth (peer {peer})"),
            CreateKind::Dummy => f.write_str("dummy"),
        }
    }
}

/// One change to the host's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum NetAction {
    /// Writes/removes our systemd-networkd drop-ins, then reloads networkd.
    Networkd {
        write: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    DeleteRoute {
        route: RouteSpec,
    },
    DeleteAddress {
        link: String,
        addr: IpNet,
    },
    Detach {
        link: String,
    },
    DeleteOvsPort {
        bridge: String,
        port: String,
        /// The state's OVSDB address (`unix:PATH`); `--ovsdb` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ovsdb: Option<String>,
    },
    DeleteOvsBridge {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ovsdb: Option<String>,
    },
    DeleteLink {
        name: String,
    },
    CreateLink {
        name: String,
        kind: CreateKind,
    },
    SetMtu {
        link: String,
        mtu: u32,
    },
    Attach {
        link: String,
        master: String,
    },
    EnsureOvsBridge {
        name: String,
        ports: Vec<PortSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ovsdb: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        datapath_type: Option<String>,
        /// MAC of the bridge's own device (`other_config:hwaddr`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
    },
    SetMac {
        link: String,
        mac: String,
    },
    SetUp {
        link: String,
    },
    SetDown {
        link: String,
    },
    AddAddress {
        link: String,
        addr: IpNet,
    },
    SetRoute {
        route: RouteSpec,
    },
    SetDns {
        dns: DnsConf,
    },
    WriteInterfaces {
        content: String,
    },
}

impl PluginAction for NetAction {
    fn kind(&self) -> &'static str {
        match self {
            NetAction::Networkd { .. } => "networkd-dropins",
            NetAction::DeleteRoute { .. } => "delete-route",
            NetAction::DeleteAddress { .. } => "delete-address",
            NetAction::Detach { .. } => "detach",
            NetAction::DeleteOvsPort { .. } => "delete-ovs-port",
            NetAction::DeleteOvsBridge { .. } => "delete-ovs-bridge",
            NetAction::DeleteLink { .. } => "delete-link",
            NetAction::CreateLink { .. } => "create-link",
            NetAction::SetMtu { .. } => "set-mtu",
            NetAction::SetMac { .. } => "set-mac",
            NetAction::Attach { .. } => "attach",
            NetAction::EnsureOvsBridge { .. } => "ensure-ovs-bridge",
            NetAction::SetUp { .. } => "set-up",
            NetAction::SetDown { .. } => "set-down",
            NetAction::AddAddress { .. } => "add-address",
            NetAction::SetRoute { .. } => "set-route",
            NetAction::SetDns { .. } => "set-dns",
            NetAction::WriteInterfaces { .. } => "write-interfaces",
        }
    }

    fn resource(&self) -> String {
        match self {
            NetAction::Networkd { .. } => "file:/run/systemd/network".into(),
            NetAction::DeleteRoute { route } | NetAction::SetRoute { route } => {
                format!("route:{route}")
            }
            NetAction::DeleteAddress { link, addr } | NetAction::AddAddress { link, addr } => {
                format!("address:{link}/{addr}")
            }
            NetAction::Detach { link }
            | NetAction::SetMtu { link, .. }
            | NetAction::SetMac { link, .. }
            | NetAction::Attach { link, .. }
            | NetAction::SetUp { link }
            | NetAction::SetDown { link } => format!("link:{link}"),
            NetAction::DeleteLink { name } | NetAction::CreateLink { name, .. } => {
                format!("link:{name}")
            }
            NetAction::DeleteOvsPort { bridge, port, .. } => format!("ovs-port:{bridge}/{port}"),
            NetAction::DeleteOvsBridge { name, .. } | NetAction::EnsureOvsBridge { name, .. } => {
                format!("ovs-bridge:{name}")
            }
            NetAction::SetDns { .. } => "dns".into(),
            NetAction::WriteInterfaces { .. } => "file:/etc/network/interfaces".into(),
        }
    }
}

impl NetAction {
    /// The OVSDB address an OVS action names, if it is one.
    pub fn ovsdb(&self) -> Option<Option<&str>> {
        match self {
            NetAction::DeleteOvsPort { ovsdb, .. }
            | NetAction::DeleteOvsBridge { ovsdb, .. }
            | NetAction::EnsureOvsBridge { ovsdb, .. } => Some(ovsdb.as_deref()),
            _ => None,
        }
    }
}

impl fmt::Display for NetAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetAction::Networkd { write, remove } => write!(
                f,
                "networkd drop-ins: write {} remove {}",
                list(write.keys()),
                list(remove.iter())
            ),
            NetAction::DeleteRoute { route } => write!(f, "delete route {route}"),
            NetAction::DeleteAddress { link, addr } => {
                write!(f, "delete address {addr} from {link}")
            }
            NetAction::Detach { link } => write!(f, "detach {link} from its master"),
            NetAction::DeleteOvsPort { bridge, port, .. } => {
                write!(f, "delete OVS port {port} from {bridge}")
            }
            NetAction::DeleteOvsBridge { name, .. } => write!(f, "delete OVS bridge {name}"),
            NetAction::DeleteLink { name } => write!(f, "delete link {name}"),
            NetAction::CreateLink { name, kind } => write!(f, "create {kind} {name}"),
            NetAction::SetMtu { link, mtu } => write!(f, "set mtu {mtu} on {link}"),
            NetAction::SetMac { link, mac } => write!(f, "set MAC address {mac} on {link}"),
            NetAction::Attach { link, master } => write!(f, "attach {link} to {master}"),
            NetAction::EnsureOvsBridge {
                name,
                ports,
                datapath_type,
                mac,
                ..
            } => {
                write!(
                    f,
                    "ensure OVS bridge {name} with ports {}",
                    list(ports.iter().map(|p| {
                        let mut s = p.name.clone();
                        if let PortKind::Bond {
                            interfaces,
                            bond_mode,
                            lacp,
                            miimon,
                        } = &p.kind
                        {
                            s += &format!(" (bond {} {bond_mode}", interfaces.join("+"));
                            if let Some(l) = lacp {
                                s += &format!(" lacp {l}");
                            }
                            if let Some(ms) = miimon {
                                s += &format!(" miimon {ms}");
                            }
                            s += ")";
                        }
                        if let Some(t) = p.tag {
                            s += &format!(" (tag {t})");
                        }
                        if !p.trunks.is_empty() {
                            let t: Vec<String> = p.trunks.iter().map(u16::to_string).collect();
                            s += &format!(" (trunks {})", t.join(","));
                        }
                        s
                    }))
                )?;
                if let Some(dp) = datapath_type {
                    write!(f, ", datapath {dp}")?;
                }
                if let Some(mac) = mac {
                    write!(f, ", MAC address {mac}")?;
                }
                Ok(())
            }
            NetAction::SetUp { link } => write!(f, "set {link} up"),
            NetAction::SetDown { link } => write!(f, "set {link} down"),
            NetAction::AddAddress { link, addr } => write!(f, "add address {addr} to {link}"),
            NetAction::SetRoute { route } => write!(f, "set route {route}"),
            NetAction::SetDns { dns } => write!(
                f,
                "set DNS servers {} search {}",
                list(dns.servers.iter()),
                list(dns.search.iter())
            ),
            NetAction::WriteInterfaces { .. } => f.write_str("write /etc/network/interfaces"),
        }
    }
}

fn list<T: fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let v: Vec<String> = items.map(|i| i.to_string()).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

fn port_spec(p: &opdbus_state::model::OvsPortSpec) -> PortSpec {
    use opdbus_state::model::{BondMode as Mode, Lacp};
    let kind = match p.kind {
        OvsPortType::System => PortKind::System,
        OvsPortType::Internal => PortKind::Internal,
        OvsPortType::Patch => PortKind::Patch {
            peer: p.peer.clone().unwrap_or_default(),
        },
        OvsPortType::Bond => {
            // 802.3ad is OVS's balance-tcp, which needs LACP: active unless
            // the state says otherwise.
            let (mode, lacp_default) = match p.bond_mode {
                None | Some(Mode::ActiveBackup) => ("active-backup", None),
                Some(Mode::BalanceSlb) => ("balance-slb", None),
                Some(_) => ("balance-tcp", Some(Lacp::Active)),
            };
            let mut interfaces = p.interfaces.clone();
            interfaces.sort();
            interfaces.dedup();
            PortKind::Bond {
                interfaces,
                bond_mode: mode.to_string(),
                lacp: p
                    .lacp
                    .or(lacp_default)
                    .filter(|l| *l != Lacp::Off)
                    .map(|l| l.as_str().to_string()),
                miimon: p.miimon,
            }
        }
    };
    PortSpec::new(p.name.clone(), kind).with_vlans(p.tag, &p.trunks)
}

fn bond_mode(m: opdbus_state::model::BondMode) -> Option<BondMode> {
    m.as_str().parse().ok()
}

/// Builds the desired links, routes and DNS from the normalized state; the
/// files rendered from them (networkd drop-ins, /etc/network/interfaces) are
/// added by the plugin's `desired_of`.
pub fn desired_from_spec(spec: &NetworkSpec) -> Desired {
    let mut links: BTreeMap<String, LinkWant> = BTreeMap::new();
    let mut masters: BTreeMap<String, String> = BTreeMap::new();
    let mut routes = Vec::new();
    let mut dns = DnsConf::default();
    for i in &spec.interfaces {
        let kind = match &i.kind {
            IfaceKind::Ethernet => WantKind::Existing,
            IfaceKind::Bridge { ports } => {
                for p in ports {
                    masters.insert(p.clone(), i.name.clone());
                }
                WantKind::Bridge
            }
            IfaceKind::Bond {
                mode,
                miimon,
                slaves,
                ..
            } => {
                for s in slaves {
                    masters.insert(s.clone(), i.name.clone());
                }
                WantKind::Bond {
                    mode: mode.and_then(bond_mode),
                    miimon: *miimon,
                }
            }
            IfaceKind::Vlan { id, base } => WantKind::Vlan {
                id: *id,
                base: base.clone(),
            },
            IfaceKind::OvsBridge { ports } => WantKind::OvsBridge {
                ports: ports.iter().map(port_spec).collect(),
            },
            IfaceKind::Veth { peer } => WantKind::Veth {
                peer: peer.clone().unwrap_or_else(|| format!("{}p", i.name)),
            },
            IfaceKind::Dummy => WantKind::Dummy,
        };
        let mut addresses = i.addresses.clone();
        addresses.sort();
        addresses.dedup();
        if let Some(gw) = i.gateway4 {
            let mut r = RouteSpec::default_via(IpAddr::V4(gw));
            r.dev = Some(i.name.clone());
            routes.push(r);
        }
        if let Some(gw) = i.gateway6 {
            let mut r = RouteSpec::default_via(IpAddr::V6(gw));
            r.dev = Some(i.name.clone());
            routes.push(r);
        }
        for s in &i.dns {
            if !dns.servers.contains(s) {
                dns.servers.push(*s);
            }
        }
        if dns.link.is_none() && (i.gateway4.is_some() || i.gateway6.is_some()) {
            dns.link = Some(i.name.clone());
        }
        links.insert(
            i.name.clone(),
            LinkWant {
                name: i.name.clone(),
                kind,
                declared: true,
                up: i.up,
                mtu: i.mtu,
                master: None,
                addresses: Some(addresses),
                dhcp: i.dhcp4 || i.dhcp6,
                mac: i.mac.as_ref().map(|m| m.to_ascii_lowercase()),
                datapath_type: i.datapath_type.clone(),
            },
        );
    }
    // Members of OVS bonds: existing links the state only references (up,
    // and checked to exist), with no kernel master.
    let members: Vec<String> = links
        .values()
        .flat_map(|l| match &l.kind {
            WantKind::OvsBridge { ports } => ports
                .iter()
                .flat_map(|p| match &p.kind {
                    PortKind::Bond { interfaces, .. } => interfaces.clone(),
                    _ => Vec::new(),
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    for m in members {
        links.entry(m.clone()).or_insert_with(|| LinkWant {
            name: m,
            kind: WantKind::Existing,
            declared: false,
            up: true,
            mtu: None,
            master: None,
            addresses: None,
            dhcp: false,
            mac: None,
            datapath_type: None,
        });
    }
    // Ports and slaves the state only references: configured, never created.
    for (port, master) in &masters {
        let l = links.entry(port.clone()).or_insert_with(|| LinkWant {
            name: port.clone(),
            kind: WantKind::Existing,
            declared: false,
            up: true,
            mtu: None,
            master: None,
            addresses: None,
            dhcp: false,
            mac: None,
            datapath_type: None,
        });
        l.master = Some(master.clone());
    }
    for r in &spec.routes {
        let dst = if r.to == "default" {
            match r.via.as_deref().and_then(|v| v.parse::<IpAddr>().ok()) {
                Some(IpAddr::V6(_)) => "::/0".parse().ok(),
                _ => "0.0.0.0/0".parse().ok(),
            }
        } else {
            r.to.parse::<IpNet>().ok().map(|n| n.trunc())
        };
        if let Some(dst) = dst {
            routes.push(RouteSpec {
                dst,
                gateway: r.via.as_deref().and_then(|v| v.parse().ok()),
                dev: r.dev.clone(),
                metric: r.metric,
            });
        }
    }
    for s in &spec.dns.servers {
        if let Ok(ip) = s.parse::<IpAddr>() {
            if !dns.servers.contains(&ip) {
                dns.servers.push(ip);
            }
        }
    }
    dns.search = spec.dns.search.clone();
    if dns.link.is_none() {
        dns.link = links
            .values()
            .find(|l| l.addresses.as_ref().is_some_and(|a| !a.is_empty()))
            .map(|l| l.name.clone());
    }
    Desired {
        links: links.into_values().collect(),
        routes,
        dns: (!dns.servers.is_empty() || !dns.search.is_empty()).then_some(dns),
        ovsdb: spec.ovsdb.clone(),
        prune: spec.prune,
        interfaces_file: None,
        networkd: BTreeMap::new(),
    }
}
