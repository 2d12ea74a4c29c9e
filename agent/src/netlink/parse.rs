//! Pure conversions from rtnetlink dump messages to the adapter's plain
//! values; kept apart from the socket so they are unit-tested without root.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    self as nl_link, InfoBond, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags,
    LinkLayerType, LinkMessage, State,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::packet_route::AddressFamily;

use super::types::{
    AddrInfo, BondInfo, BondMode, LinkInfo, LinkKind, OperState, RouteInfo, VlanInfo,
};

/// Converts a link dump; master, peer and VLAN base names are resolved
/// within the same dump.
pub(crate) fn links(msgs: &[LinkMessage]) -> Vec<LinkInfo> {
    let names: HashMap<u32, String> = msgs
        .iter()
        .filter_map(|m| link_name(m).map(|n| (m.header.index, n.to_string())))
        .collect();
    let mut out: Vec<LinkInfo> = msgs.iter().map(|m| link(m, &names)).collect();
    out.sort_by_key(|l| l.index);
    out
}

/// Converts one link message; `names` resolves the indices it refers to
/// (see [`referenced`]).
pub(crate) fn one_link(msg: &LinkMessage, names: &HashMap<u32, String>) -> LinkInfo {
    link(msg, names)
}

/// The other links a link message names by index: its master and its lower
/// link (veth peer, VLAN base) when that is in the same namespace.
pub(crate) fn referenced(msg: &LinkMessage) -> Vec<u32> {
    let elsewhere = msg
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
    msg.attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::Controller(i) => Some(*i),
            LinkAttribute::Link(i) if !elsewhere => Some(*i),
            _ => None,
        })
        .collect()
}

pub(crate) fn link_name(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn link(msg: &LinkMessage, names: &HashMap<u32, String>) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: link_name(msg).unwrap_or_default().to_string(),
        kind: LinkKind::Other(String::new()),
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        oper_state: OperState::Unknown,
        mac: None,
        master_index: None,
        master: None,
        veth_peer: None,
        peer_netns: false,
        vlan: None,
        bond: None,
    };
    let mut kind = None;
    let mut lower = None;
    let mut peer_elsewhere = false;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(mtu) => info.mtu = Some(*mtu),
            LinkAttribute::OperState(state) => info.oper_state = oper_state(*state),
            LinkAttribute::Address(bytes) => info.mac = Some(format_mac(bytes)),
            LinkAttribute::Controller(idx) => info.master_index = Some(*idx),
            LinkAttribute::Link(idx) => lower = Some(*idx),
            LinkAttribute::LinkNetNsId(_) => peer_elsewhere = true,
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        nl_link::LinkInfo::Kind(k) => kind = Some(k.clone()),
                        nl_link::LinkInfo::Data(InfoData::Bond(opts)) => {
                            info.bond = Some(bond_info(opts))
                        }
                        nl_link::LinkInfo::Data(InfoData::Vlan(opts)) => {
                            if let Some(id) = opts.iter().find_map(|o| match o {
                                InfoVlan::Id(id) => Some(*id),
                                _ => None,
                            }) {
                                info.vlan = Some(VlanInfo {
                                    id,
                                    base_index: 0,
                                    base_name: None,
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    info.master = info.master_index.and_then(|i| names.get(&i).cloned());
    info.kind = link_kind(kind.as_ref(), msg.header.link_layer_type);
    let lower_name = lower
        .filter(|_| !peer_elsewhere)
        .and_then(|i| names.get(&i).cloned());
    match info.kind {
        LinkKind::Veth => {
            info.veth_peer = lower_name;
            info.peer_netns = peer_elsewhere;
        }
        LinkKind::Vlan => {
            if let (Some(vlan), Some(idx)) = (info.vlan.as_mut(), lower) {
                vlan.base_index = idx;
                vlan.base_name = lower_name;
            }
        }
        _ => {}
    }
    info
}

fn link_kind(kind: Option<&InfoKind>, hw: LinkLayerType) -> LinkKind {
    match kind {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Bond) => LinkKind::Bond,
        Some(InfoKind::Vlan) => LinkKind::Vlan,
        Some(InfoKind::Veth) => LinkKind::Veth,
        Some(InfoKind::Dummy) => LinkKind::Dummy,
        Some(InfoKind::Other(k)) if k == "openvswitch" => LinkKind::Openvswitch,
        Some(other) => LinkKind::Other(other.to_string()),
        None => match hw {
            LinkLayerType::Ether => LinkKind::Ethernet,
            LinkLayerType::Loopback => LinkKind::Loopback,
            other => LinkKind::Other(other.to_string().to_ascii_lowercase()),
        },
    }
}

fn bond_info(opts: &[InfoBond]) -> BondInfo {
    let mut bond = BondInfo {
        mode: None,
        miimon: None,
    };
    for o in opts {
        match o {
            InfoBond::Mode(m) => bond.mode = bond_mode(*m),
            InfoBond::MiiMon(ms) => bond.miimon = Some(*ms),
            _ => {}
        }
    }
    bond
}

pub(crate) fn bond_mode(m: nl_link::BondMode) -> Option<BondMode> {
    use nl_link::BondMode as K;
    Some(match m {
        K::BalanceRr => BondMode::BalanceRr,
        K::ActiveBackup => BondMode::ActiveBackup,
        K::BalanceXor => BondMode::BalanceXor,
        K::Broadcast => BondMode::Broadcast,
        K::Ieee8023Ad => BondMode::Ieee8023ad,
        K::BalanceTlb => BondMode::BalanceTlb,
        K::BalanceAlb => BondMode::BalanceAlb,
        _ => return None,
    })
}

pub(crate) fn kernel_bond_mode(m: BondMode) -> nl_link::BondMode {
    use nl_link::BondMode as K;
    match m {
        BondMode::BalanceRr => K::BalanceRr,
        BondMode::ActiveBackup => K::ActiveBackup,
        BondMode::BalanceXor => K::BalanceXor,
        BondMode::Broadcast => K::Broadcast,
        BondMode::Ieee8023ad => K::Ieee8023Ad,
        BondMode::BalanceTlb => K::BalanceTlb,
        BondMode::BalanceAlb => K::BalanceAlb,
    }
}

fn oper_state(s: State) -> OperState {
    match s {
        State::Up => OperState::Up,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Dormant => OperState::Dormant,
        State::Testing => OperState::Testing,
        State::NotPresent => OperState::NotPresent,
        _ => OperState::Unknown,
    }
}

pub(crate) fn format_mac(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Converts an address dump; `names` maps ifindex to link name.
pub(crate) fn addresses(msgs: &[AddressMessage], names: &HashMap<u32, String>) -> Vec<AddrInfo> {
    msgs.iter().filter_map(|m| address(m, names)).collect()
}

fn address(msg: &AddressMessage, names: &HashMap<u32, String>) -> Option<AddrInfo> {
    let mut local = None;
    let mut addr = None;
    let mut permanent = msg
        .header
        .flags
        .contains(rtnetlink::packet_route::address::AddressHeaderFlags::Permanent);
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            AddressAttribute::Flags(f) => permanent = f.contains(AddressFlags::Permanent),
            _ => {}
        }
    }
    // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
    // peer on point-to-point links); IPv6 only sends IFA_ADDRESS.
    let ip = match msg.header.family {
        AddressFamily::Inet => local.or(addr)?,
        AddressFamily::Inet6 => addr.or(local)?,
        _ => return None,
    };
    let addr = IpNet::new(ip, msg.header.prefix_len).ok()?;
    let link_local = matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
    Some(AddrInfo {
        ifname: names.get(&msg.header.index).cloned().unwrap_or_default(),
        index: msg.header.index,
        addr,
        link_local,
        dynamic: !permanent,
    })
}

/// Converts a route dump to the unicast routes of the main table.
pub(crate) fn routes(msgs: &[RouteMessage], names: &HashMap<u32, String>) -> Vec<RouteInfo> {
    msgs.iter().filter_map(|m| route(m, names)).collect()
}

fn route(msg: &RouteMessage, names: &HashMap<u32, String>) -> Option<RouteInfo> {
    if msg.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut dst = None;
    let mut gateway = None;
    let mut oif_index = None;
    let mut metric = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Oif(i) => oif_index = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let dst_ip = match (dst, msg.header.address_family) {
        (Some(ip), _) => ip,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    Some(RouteInfo {
        dst: IpNet::new(dst_ip, msg.header.destination_prefix_length).ok()?,
        gateway,
        oif_index,
        oif: oif_index.and_then(|i| names.get(&i).cloned()),
        metric,
        protocol: msg.header.protocol.to_string(),
    })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::{LinkBond, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan};

    fn with_index(mut msg: LinkMessage, index: u32) -> LinkMessage {
        msg.header.index = index;
        msg
    }

    #[test]
    fn bond_message_reports_mode_and_miimon() {
        let msg = LinkBond::new("bond0")
            .mode(nl_link::BondMode::Ieee8023Ad)
            .miimon(100)
            .controller(7)
            .build();
        let bridge = with_index(LinkBridge::new("br0").build(), 7);
        let got = links(&[with_index(msg, 3), bridge]);
        let bond = &got[0];
        assert_eq!(bond.name, "bond0");
        assert_eq!(bond.kind, LinkKind::Bond);
        assert_eq!(
            bond.bond,
            Some(BondInfo {
                mode: Some(BondMode::Ieee8023ad),
                miimon: Some(100)
            })
        );
        assert_eq!(bond.master.as_deref(), Some("br0"));
        assert_eq!(got[1].kind, LinkKind::Bridge);
        assert!(got[1].up, "LinkBridge::new sets IFF_UP");
    }

    #[test]
    fn vlan_message_reports_id_and_base() {
        let base = with_index(
            LinkMessageBuilder::<LinkUnspec>::new()
                .name("eth0")
                .mtu(9000)
                .address(vec![0x52, 0x54, 0, 0x12, 0x34, 0xab])
                .build(),
            2,
        );
        let vlan = with_index(LinkVlan::new("eth0.100", 2, 100).build(), 5);
        let got = links(&[vlan, base]);
        assert_eq!(
            got[0].kind,
            LinkKind::Other("netrom".into()),
            "no kind, default hw type"
        );
        assert_eq!(got[0].mac.as_deref(), Some("52:54:00:12:34:ab"));
        assert_eq!(got[0].mtu, Some(9000));
        assert_eq!(got[1].kind, LinkKind::Vlan);
        assert_eq!(
            got[1].vlan,
            Some(VlanInfo {
                id: 100,
                base_index: 2,
                base_name: Some("eth0".into())
            })
        );
    }

    #[test]
    fn ethernet_and_openvswitch_kinds() {
        let mut eth = LinkUnspec::new_with_name("eno1").build();
        eth.header.link_layer_type = LinkLayerType::Ether;
        let ovs = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Other(
            "openvswitch".into(),
        ))
        .name("ovs-system")
        .build();
        let veth = LinkVeth::new("v0", "v1").build();
        let got = links(&[with_index(eth, 1), with_index(ovs, 2), with_index(veth, 3)]);
        assert_eq!(got[0].kind, LinkKind::Ethernet);
        assert_eq!(got[1].kind, LinkKind::Openvswitch);
        assert_eq!(got[2].kind, LinkKind::Veth);
        assert_eq!(got[2].veth_peer, None, "no IFLA_LINK in a create message");
    }

    #[test]
    fn addresses_prefer_local_for_v4_and_mark_link_local() {
        use rtnetlink::AddressMessageBuilder;
        let names = HashMap::from([(4, "br0".to_string())]);
        let v4 = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(4)
            .address("10.0.0.1".parse().expect("ip"), 24)
            .build();
        let ll = AddressMessageBuilder::<Ipv6Addr>::new()
            .index(4)
            .address("fe80::1".parse().expect("ip"), 64)
            .build();
        let got = addresses(&[v4, ll], &names);
        assert_eq!(got[0].addr.to_string(), "10.0.0.1/24");
        assert_eq!(got[0].ifname, "br0");
        assert!(!got[0].link_local);
        assert_eq!(got[1].addr.to_string(), "fe80::1/64");
        assert!(got[1].link_local);
    }

    #[test]
    fn routes_keep_main_table_unicast_only() {
        use rtnetlink::RouteMessageBuilder;
        let names = HashMap::from([(4, "br0".to_string())]);
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway("10.0.0.254".parse().expect("ip"))
            .output_interface(4)
            .priority(100)
            .build();
        let local = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix("10.0.0.1".parse().expect("ip"), 32)
            .table_id(255)
            .build();
        let v6 = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix("fd01::".parse().expect("ip"), 64)
            .build();
        let got = routes(&[default, local, v6], &names);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(got[0].gateway, Some("10.0.0.254".parse().expect("ip")));
        assert_eq!(got[0].oif.as_deref(), Some("br0"));
        assert_eq!(got[0].metric, Some(100));
        assert_eq!(got[0].protocol, "static");
        assert_eq!(got[1].dst.to_string(), "fd01::/64");
    }
}
