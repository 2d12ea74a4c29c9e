//! `plugins.network` (interfaces keyed by name, roadmap form) and
//! `plugins.net` (a list with `ipv4`/`ipv6` blocks, deployment-guide form).
//! Both normalize to one interface model in `crate::normalize`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::OneOrMany;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub interfaces: BTreeMap<String, Interface>,
    /// Bonds keyed by name (same fields as an interface of type bond).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bonds: BTreeMap<String, Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Resolver settings for the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// OVSDB socket, as `unix:PATH` (default unix:/run/openvswitch/db.sock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovsdb: Option<String>,
    /// Delete links of managed kinds that the state does not name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum InterfaceType {
    #[default]
    Ethernet,
    Bridge,
    Bond,
    Vlan,
    OvsBridge,
    Veth,
    Dummy,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    #[default]
    Up,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Lacp,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
    /// Open vSwitch only: source-MAC load balancing, no switch support needed.
    #[serde(rename = "balance-slb")]
    BalanceSlb,
    /// Open vSwitch only: L4 hashing, needs LACP (`802.3ad` on an OVS bond).
    #[serde(rename = "balance-tcp")]
    BalanceTcp,
}

impl BondMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
            BondMode::BalanceSlb => "balance-slb",
            BondMode::BalanceTcp => "balance-tcp",
        }
    }

    /// The modes an Open vSwitch bond has (`802.3ad` is `balance-tcp` with LACP).
    pub fn on_ovs(self) -> bool {
        matches!(
            self,
            BondMode::ActiveBackup | BondMode::Lacp | BondMode::BalanceSlb | BondMode::BalanceTcp
        )
    }

    /// The modes a kernel bond has.
    pub fn in_kernel(self) -> bool {
        !matches!(self, BondMode::BalanceSlb | BondMode::BalanceTcp)
    }
}

/// LACP on an Open vSwitch bond: `active` sends LACPDUs, `passive` only
/// answers, `off` (the default) negotiates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lacp {
    Active,
    Passive,
    Off,
}

impl Lacp {
    pub fn as_str(self) -> &'static str {
        match self {
            Lacp::Active => "active",
            Lacp::Passive => "passive",
            Lacp::Off => "off",
        }
    }
}

/// One interface in the map form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    #[serde(rename = "type", default)]
    pub kind: InterfaceType,
    #[serde(default)]
    pub state: LinkState,
    /// Static addresses in CIDR form, IPv4 or IPv6.
    #[serde(
        default,
        alias = "addresses",
        skip_serializing_if = "OneOrMany::is_empty"
    )]
    pub address: OneOrMany<String>,
    /// IPv4 default gateway (must lie in one of the interface's subnets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp6: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Linux bridge ports (a name or a list).
    #[serde(default, skip_serializing_if = "OneOrMany::is_empty")]
    pub bridge_ports: OneOrMany<String>,
    /// Open vSwitch bridge ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<OvsPort>,
    /// Datapath of an ovs-bridge: `netdev` (user space) or `system` (kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath_type: Option<String>,
    /// OpenFlow table of an ovs-bridge, in `ovs-ofctl` flow syntax
    /// (`table=0,priority=100,tcp,tp_dst=80,actions=drop`); the agent owns
    /// only the flows it installs (they carry its cookie).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<String>,
    /// The short form of the local / mesh / normal classification of an
    /// ovs-bridge's traffic (flow tables 0, 10, 20 and 30), added to `flows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Paths>,
    /// Bond members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slaves: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BondMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miimon: Option<u32>,
    /// LACP of a bond on an Open vSwitch bridge (`active`, `passive`, `off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp: Option<Lacp>,
    /// VLAN id (1-4094).
    #[serde(default, alias = "vlan_id", skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    /// The link a VLAN sits on.
    #[serde(
        default,
        alias = "vlan_raw_device",
        skip_serializing_if = "Option::is_none"
    )]
    pub base: Option<String>,
    /// The other end of a veth pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An Open vSwitch port: a bare name (a system port) or a full description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OvsPortSpec {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: OvsPortType,
    /// Peer port name, for `patch` ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Access VLAN tag (1-4094): the port carries only this VLAN, untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    /// VLANs a trunk port carries (1-4094); empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunks: Vec<u16>,
    /// Members of a `bond` port (existing links, such as `["ens1", "ens2"]`).
    #[serde(default, alias = "slaves", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Mode of a `bond` port: `active-backup` (the default), `balance-slb`,
    /// `balance-tcp` or `802.3ad` (balance-tcp with LACP).
    #[serde(default, alias = "mode", skip_serializing_if = "Option::is_none")]
    pub bond_mode: Option<BondMode>,
    /// LACP of a `bond` port; `active` by default for balance-tcp and 802.3ad.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp: Option<Lacp>,
    /// Link monitoring of a `bond` port by MII every this many milliseconds
    /// (default: carrier detection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miimon: Option<u32>,
}

impl OvsPortSpec {
    /// A port of `kind` with nothing else set.
    pub fn plain(name: impl Into<String>, kind: OvsPortType) -> Self {
        OvsPortSpec {
            name: name.into(),
            kind,
            peer: None,
            tag: None,
            trunks: Vec::new(),
            interfaces: Vec::new(),
            bond_mode: None,
            lacp: None,
            miimon: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OvsPortType {
    #[default]
    System,
    Internal,
    Patch,
    /// Several existing links as one port (an OVS bond).
    Bond,
}

/// `"ens1"` or `{"name": "ens1", "type": "system"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OvsPort(pub OvsPortSpec);

/// The seed's classification of an ovs-bridge's traffic: table 0 sends IPv4
/// (and ARP) for the `socket` path's networks to table 10 and for the
/// `mesh` path's networks to table 20, everything else to table 30; tables
/// 10 and 20 output to their path's port, table 30 switches normally.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// The local path (same-host containers), table 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathSpec>,
    /// The mesh path (other hosts, over WireGuard), table 20.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<PathSpec>,
}

/// One path: the bridge port it leaves by and the destinations sent to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// One of the bridge's ports.
    pub port: String,
    /// IPv4 networks or addresses (`10.10.0.0/24`, `10.10.0.5`).
    pub networks: Vec<String>,
}

/// One flow a [`Paths`] stands for, with what in `paths` made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFlow {
    pub flow: String,
    /// JSON pointer below the interface entry (`/paths/socket/networks/0`).
    pub at: String,
}

impl Paths {
    /// The OpenFlow table of each path (`None` for an unknown name).
    pub fn table_of(name: &str) -> Option<u8> {
        match name {
            "socket" => Some(10),
            "mesh" => Some(20),
            _ => None,
        }
    }

    /// The paths that are set, with their names.
    pub fn each(&self) -> Vec<(&'static str, &PathSpec)> {
        [("socket", &self.socket), ("mesh", &self.mesh)]
            .into_iter()
            .filter_map(|(n, p)| p.as_ref().map(|p| (n, p)))
            .collect()
    }

    /// The flows (`ovs-ofctl` syntax, no cookie), in table order. A network
    /// is written as given (validation checks it is IPv4).
    pub fn flows(&self) -> Vec<PathFlow> {
        let mut out = Vec::new();
        let flow = |flow: String, at: String| PathFlow { flow, at };
        for (name, p) in self.each() {
            let table = Self::table_of(name).unwrap_or(30);
            for (k, n) in p.networks.iter().enumerate() {
                let at = format!("/paths/{name}/networks/{k}");
                out.push(flow(
                    format!("table=0,priority=100,ip,nw_dst={n},actions=goto_table:{table}"),
                    at.clone(),
                ));
                out.push(flow(
                    format!("table=0,priority=100,arp,arp_tpa={n},actions=goto_table:{table}"),
                    at,
                ));
            }
        }
        out.push(flow(
            "table=0,priority=50,actions=goto_table:30".into(),
            "/paths".into(),
        ));
        for (name, p) in self.each() {
            let table = Self::table_of(name).unwrap_or(30);
            out.push(flow(
                format!("table={table},priority=100,actions=output:{}", p.port),
                format!("/paths/{name}/port"),
            ));
        }
        out.push(flow(
            "table=30,priority=50,actions=NORMAL".into(),
            "/paths".into(),
        ));
        out
    }
}

impl Serialize for OvsPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = &self.0;
        if *p == OvsPortSpec::plain(p.name.clone(), OvsPortType::System) {
            s.serialize_str(&p.name)
        } else {
            p.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for OvsPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OvsPort;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port name or {\"name\", \"type\", \"peer\", \"tag\", \"trunks\", \"interfaces\", \"bond_mode\", \"lacp\", \"miimon\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OvsPort, E> {
                Ok(OvsPort(OvsPortSpec::plain(v, OvsPortType::System)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OvsPort, A::Error> {
                OvsPortSpec::deserialize(MapAccessDeserializer::new(map)).map(OvsPort)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for OvsPort {
    fn schema_name() -> Cow<'static, str> {
        "OvsPort".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let spec = g.subschema_for::<OvsPortSpec>();
        json_schema!({ "anyOf": [{ "type": "string" }, spec] })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination in CIDR form, or `default`.
    #[serde(alias = "destination")]
    pub to: String,
    #[serde(default, alias = "gateway", skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// `plugins.net`: the list form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetList {
    #[serde(default)]
    pub interfaces: Vec<NetInterface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovsdb: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetInterface {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: InterfaceType,
    #[serde(default)]
    pub state: LinkState,
    /// Ports of an ovs-bridge, or of a Linux bridge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<OvsPort>,
    /// Datapath of an ovs-bridge: `netdev` (user space) or `system` (kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath_type: Option<String>,
    /// Hardware address, `aa:bb:cc:dd:ee:ff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// OpenFlow table of an ovs-bridge (see `Interface::flows`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<String>,
    /// The short form of the traffic classification (see `Interface::paths`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Paths>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<IpBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<IpBlock>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slaves: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BondMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miimon: Option<u32>,
    /// LACP of a bond on an Open vSwitch bridge (`active`, `passive`, `off`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp: Option<Lacp>,
    #[serde(default, alias = "vlan_id", skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpBlock {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub dhcp: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address: Vec<IpPrefix>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpPrefix {
    pub ip: String,
    pub prefix: u8,
}
