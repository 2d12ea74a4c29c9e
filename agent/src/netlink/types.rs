//! Plain values the netlink adapter reports and accepts: links, addresses,
//! routes and bond modes, independent of the rtnetlink message types.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::NetlinkError;

/// What kind of device a link is, from its `IFLA_INFO_KIND` (or its
/// hardware type when the kernel reports no kind, as for physical NICs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Ethernet,
    Loopback,
    Bridge,
    Bond,
    Vlan,
    Veth,
    Dummy,
    Openvswitch,
    /// Any other kind, named as the kernel names it (`vxlan`, `tun`, ...).
    Other(String),
}

/// RFC 2863 operational state (`IFLA_OPERSTATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OperState {
    Up,
    Down,
    LowerLayerDown,
    Dormant,
    Testing,
    NotPresent,
    Unknown,
}

/// Bonding mode. Parses the kernel's names (`802.3ad`, `active-backup`, ...)
/// and their numbers `0`..`6`; displays the kernel's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondMode {
    BalanceRr,
    ActiveBackup,
    BalanceXor,
    Broadcast,
    Ieee8023ad,
    BalanceTlb,
    BalanceAlb,
}

impl BondMode {
    pub const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Ieee8023ad,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    /// The name the kernel and iproute2 use.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Ieee8023ad => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }
}

impl fmt::Display for BondMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BondMode {
    type Err = NetlinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        let by_number = wanted
            .parse::<usize>()
            .ok()
            .and_then(|n| BondMode::ALL.get(n).copied());
        by_number
            .or_else(|| {
                BondMode::ALL.into_iter().find(|m| {
                    m.as_str() == wanted || (wanted == "lacp" && *m == BondMode::Ieee8023ad)
                })
            })
            .ok_or_else(|| NetlinkError::InvalidBondMode(s.to_string()))
    }
}

impl Serialize for BondMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BondMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Settings of a VLAN link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanInfo {
    pub id: u16,
    pub base_index: u32,
    /// `None` when the base link is in another namespace.
    pub base_name: Option<String>,
}

/// Settings of a bond link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondInfo {
    /// `None` when the kernel reports a mode this adapter does not know.
    pub mode: Option<BondMode>,
    pub miimon: Option<u32>,
}

/// One network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub mtu: Option<u32>,
    /// Administrative state (`IFF_UP`, what `set_up`/`set_down` change).
    pub up: bool,
    pub oper_state: OperState,
    /// Hardware address as lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: Option<String>,
    pub master_index: Option<u32>,
    pub master: Option<String>,
    /// For a veth: the peer's name, when the peer is in the same namespace.
    pub veth_peer: Option<String>,
    /// For a veth: its peer is in another network namespace (a container's
    /// end, made by LXC or another runtime).
    #[serde(default)]
    pub peer_netns: bool,
    pub vlan: Option<VlanInfo>,
    pub bond: Option<BondInfo>,
}

/// One IP address on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrInfo {
    pub ifname: String,
    pub index: u32,
    /// Host address with its prefix length, e.g. `10.0.0.1/24`.
    pub addr: IpNet,
    /// An IPv6 link-local (`fe80::/10`) address the kernel made itself.
    pub link_local: bool,
    /// Has a lifetime (DHCP, SLAAC) instead of being permanent.
    pub dynamic: bool,
}

/// One unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Destination prefix; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    pub oif_index: Option<u32>,
    pub oif: Option<String>,
    pub metric: Option<u32>,
    /// Who installed it, as iproute2 names it: `kernel`, `boot`, `static`, `dhcp`, `ra`, ...
    pub protocol: String,
}

impl RouteInfo {
    /// The spec that adds or deletes this route.
    pub fn spec(&self) -> RouteSpec {
        RouteSpec {
            dst: self.dst,
            gateway: self.gateway,
            dev: self.oif.clone(),
            metric: self.metric,
        }
    }
}

/// Links, addresses (link-local ones included, marked) and main-table
/// routes read together, sharing one link dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSnapshot {
    pub links: Vec<LinkInfo>,
    pub addresses: Vec<AddrInfo>,
    pub routes: Vec<RouteInfo>,
}

/// A route to add, replace or delete in the main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    /// Destination network (host bits must be zero); `0.0.0.0/0` for default.
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output interface name.
    pub dev: Option<String>,
    pub metric: Option<u32>,
}

impl RouteSpec {
    /// A default route (v4 or v6 by the gateway's family) via `gateway`.
    pub fn default_via(gateway: IpAddr) -> Self {
        let dst = match gateway {
            IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
            IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
        };
        RouteSpec {
            dst,
            gateway: Some(gateway),
            dev: None,
            metric: None,
        }
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dst.prefix_len() == 0 {
            f.write_str("default")?;
        } else {
            write!(f, "{}", self.dst)?;
        }
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        Ok(())
    }
}

/// Checks a name the kernel would accept for a new link (IFNAMSIZ = 16).
pub(crate) fn check_link_name(name: &str) -> Result<(), NetlinkError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(NetlinkError::InvalidLinkName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bond_mode_parses_kernel_names_and_numbers() {
        for mode in BondMode::ALL {
            assert_eq!(mode.as_str().parse::<BondMode>().ok(), Some(mode));
        }
        assert_eq!("4".parse::<BondMode>().ok(), Some(BondMode::Ieee8023ad));
        assert_eq!(
            "Active-Backup".parse::<BondMode>().ok(),
            Some(BondMode::ActiveBackup)
        );
        assert_eq!("lacp".parse::<BondMode>().ok(), Some(BondMode::Ieee8023ad));
        let err = "7".parse::<BondMode>().expect_err("7 is no bond mode");
        assert!(err
            .to_string()
            .starts_with("unknown bond mode '7': expected balance-rr"));
        assert!("round-robin".parse::<BondMode>().is_err());
    }

    #[test]
    fn bond_mode_serializes_as_kernel_name() {
        let json = serde_json::to_string(&BondMode::Ieee8023ad).expect("serialize");
        assert_eq!(json, "\"802.3ad\"");
        let back: BondMode = serde_json::from_str("\"balance-alb\"").expect("deserialize");
        assert_eq!(back, BondMode::BalanceAlb);
    }

    #[test]
    fn link_names_follow_kernel_rules() {
        for good in ["br0", "vmbr0.100", "a-b_c", "exactly15chars_"] {
            assert!(check_link_name(good).is_ok(), "{good}");
        }
        for bad in ["", "sixteen_chars_xx", "a/b", "a:b", "a b", ".", ".."] {
            assert!(check_link_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_spec_displays_like_ip_route() {
        let gw: IpAddr = "10.0.0.254".parse().expect("ip");
        assert_eq!(
            RouteSpec::default_via(gw).to_string(),
            "default via 10.0.0.254"
        );
        let spec = RouteSpec {
            dst: "10.1.0.0/16".parse().expect("net"),
            gateway: None,
            dev: Some("br0".into()),
            metric: Some(100),
        };
        assert_eq!(spec.to_string(), "10.1.0.0/16 dev br0 metric 100");
    }
}
