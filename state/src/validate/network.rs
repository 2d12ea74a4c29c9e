//! `plugins.network` and `plugins.net`: addresses, gateways, MTU, VLAN and
//! bond settings, links enslaved twice, interfaces declared in both forms.
//! Links a state only references (a physical port) need no declaration.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::Cx;
use crate::diag::{child, pointer};
use crate::model::{BondMode, InterfaceType, IpBlock, OvsPort, OvsPortType, Route, State};

/// One declared interface, from either form, in the shape the checks need.
struct Decl<'a> {
    name: &'a str,
    ptr: String,
    kind: InterfaceType,
    id: Option<u16>,
    base: Option<&'a str>,
    slaves: Vec<(&'a str, String)>,
    /// Bridge ports (Linux or OVS system ports, OVS bond members) with their pointers.
    ports: Vec<(&'a str, String)>,
    mode: Option<BondMode>,
    lacp: bool,
}

/// The ports of an OVS bridge: a bond port needs interfaces and an OVS
/// mode; the bond settings belong to bond ports only. Returns the system
/// ports and bond members (links enslaved to the bridge) with pointers.
fn check_ovs_ports<'a>(cx: &mut Cx, ptr: &str, ports: &'a [OvsPort]) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for (k, p) in ports.iter().enumerate() {
        let p = &p.0;
        let pptr = child(&child(ptr, "ports"), k);
        match p.kind {
            OvsPortType::System => out.push((p.name.as_str(), pptr.clone())),
            OvsPortType::Bond => {
                if p.interfaces.is_empty() {
                    cx.error(
                        pptr.clone(),
                        format!("OVS bond port {} has no interfaces", p.name),
                        "add \"interfaces\": [\"ens1\", \"ens2\"]: the links it bonds",
                    );
                }
                if let Some(m) = p.bond_mode.filter(|m| !m.on_ovs()) {
                    cx.error(
                        child(&pptr, "bond_mode"),
                        format!("an OVS bond has no mode {}", m.as_str()),
                        OVS_MODES,
                    );
                }
                for (j, m) in p.interfaces.iter().enumerate() {
                    out.push((m.as_str(), child(&child(&pptr, "interfaces"), j)));
                }
            }
            _ => {}
        }
        if p.kind != OvsPortType::Bond {
            let set = [
                ("interfaces", !p.interfaces.is_empty()),
                ("bond_mode", p.bond_mode.is_some()),
                ("lacp", p.lacp.is_some()),
                ("miimon", p.miimon.is_some()),
            ];
            for (field, _) in set.iter().filter(|(_, on)| *on) {
                cx.error(
                    child(&pptr, field),
                    format!("port {} is not a bond but sets {field}", p.name),
                    "set \"type\": \"bond\" on the port, or remove it",
                );
            }
        }
    }
    out
}

const OVS_MODES: &str =
    "use active-backup, balance-slb, balance-tcp or 802.3ad (balance-tcp with LACP)";

pub(super) fn check(cx: &mut Cx, state: &State) {
    let mut decls: Vec<Decl> = Vec::new();
    let mut where_declared: HashMap<&str, String> = HashMap::new();

    if let Some(net) = &state.plugins.network {
        for (section, map) in [("interfaces", &net.interfaces), ("bonds", &net.bonds)] {
            for (name, i) in map {
                let ptr = pointer(&["plugins", "network", section, name]);
                let kind = if section == "bonds" {
                    InterfaceType::Bond
                } else {
                    i.kind
                };
                let mut v4 = Vec::new();
                let mut v6 = Vec::new();
                for (k, a) in i.address.iter().enumerate() {
                    // A scalar `address` has no /0 in the file; locating
                    // falls back to /address.
                    let aptr = child(&child(&ptr, "address"), k);
                    match parse_cidr(cx, &aptr, a) {
                        Some(IpNet::V4(n)) => v4.push(IpNet::V4(n)),
                        Some(n) => v6.push(n),
                        None => {}
                    }
                }
                if let Some(g) = &i.gateway {
                    check_gateway(cx, child(&ptr, "gateway"), g, &v4, i.dhcp, false);
                }
                if let Some(g) = &i.gateway6 {
                    check_gateway(cx, child(&ptr, "gateway6"), g, &v6, i.dhcp6, true);
                }
                check_dns(cx, &child(&ptr, "dns"), &i.dns);
                if let Some(mac) = &i.mac {
                    if !valid_mac(mac) {
                        cx.error(
                            child(&ptr, "mac"),
                            format!("invalid MAC address {mac:?}"),
                            "write six hex pairs separated by colons, such as 52:54:00:12:34:56",
                        );
                    }
                }
                let mut ports: Vec<(&str, String)> = i
                    .bridge_ports
                    .iter()
                    .enumerate()
                    .map(|(k, p)| (p.as_str(), child(&child(&ptr, "bridge_ports"), k)))
                    .collect();
                ports.extend(check_ovs_ports(cx, &ptr, &i.ports));
                check_mtu(cx, &ptr, i.mtu, !v6.is_empty());
                decls.push(Decl {
                    name,
                    kind,
                    id: i.id,
                    base: i.base.as_deref(),
                    slaves: i
                        .slaves
                        .iter()
                        .enumerate()
                        .map(|(k, s)| (s.as_str(), child(&child(&ptr, "slaves"), k)))
                        .collect(),
                    ports,
                    mode: i.mode,
                    lacp: i.lacp.is_some(),
                    ptr,
                });
            }
        }
        check_routes(cx, "/plugins/network/routes", &net.routes);
        if let Some(dns) = &net.dns {
            check_dns(cx, "/plugins/network/dns/servers", &dns.servers);
        }
    }
    if let Some(net) = &state.plugins.net {
        for (idx, i) in net.interfaces.iter().enumerate() {
            let ptr = pointer(&["plugins", "net", "interfaces", &idx.to_string()]);
            let mut has_v6 = false;
            for (family, block) in [("ipv4", &i.ipv4), ("ipv6", &i.ipv6)] {
                if let Some(block) = block {
                    has_v6 |= family == "ipv6" && block.enabled && !block.address.is_empty();
                    check_block(cx, &child(&ptr, family), block, family == "ipv6");
                }
            }
            check_mtu(cx, &ptr, i.mtu, has_v6);
            let ports = check_ovs_ports(cx, &ptr, &i.ports);
            decls.push(Decl {
                name: &i.name,
                kind: i.kind,
                id: i.id,
                base: i.base.as_deref(),
                slaves: i
                    .slaves
                    .iter()
                    .enumerate()
                    .map(|(k, s)| (s.as_str(), child(&child(&ptr, "slaves"), k)))
                    .collect(),
                ports,
                mode: i.mode,
                lacp: i.lacp.is_some(),
                ptr,
            });
        }
        check_routes(cx, "/plugins/net/routes", &net.routes);
        if let Some(dns) = &net.dns {
            check_dns(cx, "/plugins/net/dns/servers", &dns.servers);
        }
    }

    // Declared twice (in both forms, or as an interface and a bond).
    for d in &decls {
        if let Some(first) = where_declared.get(d.name) {
            let both =
                first.starts_with("/plugins/network") != d.ptr.starts_with("/plugins/network");
            cx.error(
                d.ptr.clone(),
                if both {
                    format!(
                        "interface {} is declared in both plugins.network and plugins.net",
                        d.name
                    )
                } else {
                    format!("interface {} is declared twice", d.name)
                },
                format!("keep one declaration; the other is at {first}"),
            );
        } else {
            where_declared.insert(d.name, d.ptr.clone());
        }
    }

    // A bond named as a port of an OVS bridge is an OVS bond: OVS modes
    // only; any other bond is a kernel bond: kernel modes, no lacp.
    let on_ovs: Vec<&str> = decls
        .iter()
        .filter(|d| d.kind == InterfaceType::OvsBridge)
        .flat_map(|d| d.ports.iter().map(|(p, _)| *p))
        .collect();
    for d in decls.iter().filter(|d| d.kind == InterfaceType::Bond) {
        let ovs = on_ovs.contains(&d.name);
        match d.mode {
            Some(m) if ovs && !m.on_ovs() => cx.error(
                child(&d.ptr, "mode"),
                format!(
                    "bond {} is a port of an OVS bridge, and an OVS bond has no mode {}",
                    d.name,
                    m.as_str()
                ),
                OVS_MODES,
            ),
            Some(m) if !ovs && !m.in_kernel() => cx.error(
                child(&d.ptr, "mode"),
                format!(
                    "{} is an Open vSwitch bond mode, and bond {} is a kernel bond (no OVS bridge names it as a port)",
                    m.as_str(),
                    d.name
                ),
                "use 802.3ad or another kernel mode, or name the bond in an ovs-bridge's ports",
            ),
            _ => {}
        }
        if d.lacp && !ovs {
            cx.error(
                child(&d.ptr, "lacp"),
                format!("lacp applies to a bond on an OVS bridge; {} is a kernel bond", d.name),
                "a kernel bond negotiates LACP in mode 802.3ad: remove lacp, or name the bond in an ovs-bridge's ports",
            );
        }
    }

    // Kind-specific settings and one master per link.
    let mut master: HashMap<&str, (&str, &'static str)> = HashMap::new();
    for d in &decls {
        match d.kind {
            InterfaceType::Vlan => match (d.id, d.base) {
                (Some(id), Some(_)) if (1..=4094).contains(&id) => {}
                (Some(id), Some(_)) => cx.error(
                    child(&d.ptr, "id"),
                    format!("VLAN id {id} of {} is out of range", d.name),
                    "use an id from 1 to 4094",
                ),
                (None, _) => cx.error(
                    d.ptr.clone(),
                    format!("VLAN {} has no id", d.name),
                    "add \"id\": 1..4094 and \"base\": the link it sits on",
                ),
                (_, None) => cx.error(
                    d.ptr.clone(),
                    format!("VLAN {} has no base link", d.name),
                    "add \"base\": the link it sits on, such as \"bond0\" or \"ens18\"",
                ),
            },
            InterfaceType::Bond if d.slaves.is_empty() => cx.error(
                d.ptr.clone(),
                format!("bond {} has no slaves", d.name),
                "add \"slaves\": [\"ens1\", \"ens2\"]",
            ),
            _ => {}
        }
        let role: &'static str = match d.kind {
            InterfaceType::Bond => "bond",
            InterfaceType::OvsBridge => "OVS bridge",
            _ => "bridge",
        };
        let members = if d.kind == InterfaceType::Bond {
            &d.slaves
        } else {
            &d.ports
        };
        if d.kind != InterfaceType::Bond && !d.slaves.is_empty() {
            // slaves on a non-bond are ignored by normalization; say so.
            cx.error(
                child(&d.ptr, "slaves"),
                format!("{} is not a bond but lists slaves", d.name),
                "set \"type\": \"bond\", or use bridge_ports/ports for a bridge",
            );
        }
        for (m, mptr) in members {
            if *m == d.name {
                cx.error(
                    mptr.clone(),
                    format!("{} {} lists itself as a member", role, d.name),
                    "remove it from its own member list",
                );
                continue;
            }
            match master.get(m) {
                Some((owner, owner_role)) => cx.error(
                    mptr.clone(),
                    format!("interface {m} is enslaved twice: to {owner_role} {owner} and to {role} {}", d.name),
                    "a link can have only one master; remove it from one of them (bridge a bond instead of its slaves)",
                ),
                None => {
                    master.insert(m, (d.name, role));
                }
            }
        }
    }
}

fn parse_cidr(cx: &mut Cx, ptr: &str, text: &str) -> Option<IpNet> {
    match text.parse::<IpNet>() {
        Ok(n) => Some(n),
        Err(_) => {
            let bare = text.parse::<IpAddr>().is_ok();
            cx.error(
                ptr.to_string(),
                if bare {
                    format!("address {text} has no prefix length")
                } else {
                    format!("invalid CIDR address {text:?}")
                },
                "write address/prefix, such as 192.168.1.10/24 or 2001:db8::10/64",
            );
            None
        }
    }
}

fn check_gateway(cx: &mut Cx, ptr: String, gw: &str, nets: &[IpNet], dhcp: bool, v6: bool) {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let addr = match gw.parse::<IpAddr>() {
        Ok(a) if a.is_ipv6() == v6 => a,
        _ => {
            cx.error(
                ptr,
                format!("invalid {family} gateway {gw:?}"),
                if v6 {
                    "write an IPv6 address such as 2001:db8::1"
                } else {
                    "write an IPv4 address such as 192.168.1.1"
                },
            );
            return;
        }
    };
    if let IpAddr::V6(a) = addr {
        if a.segments()[0] & 0xffc0 == 0xfe80 {
            return; // link-local gateways are reachable on any link
        }
    }
    if nets.is_empty() && dhcp {
        return;
    }
    if !nets.iter().any(|n| n.contains(&addr)) {
        let list: Vec<String> = nets.iter().map(|n| n.trunc().to_string()).collect();
        cx.error(
            ptr,
            if list.is_empty() {
                format!("gateway {gw} is not inside any {family} subnet of the interface: it has no static {family} address")
            } else {
                format!("gateway {gw} is not inside any {family} subnet of the interface ({})", list.join(", "))
            },
            "use a gateway on one of the interface's subnets, or fix the address's prefix length",
        );
    }
}

fn check_block(cx: &mut Cx, ptr: &str, block: &IpBlock, v6: bool) {
    let family = if v6 { "IPv6" } else { "IPv4" };
    let mut nets = Vec::new();
    for (k, a) in block.address.iter().enumerate() {
        let aptr = child(&child(ptr, "address"), k);
        match a.ip.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv6() == v6 => match IpNet::new(ip, a.prefix) {
                Ok(n) => nets.push(n),
                Err(_) => cx.error(
                    child(&aptr, "prefix"),
                    format!(
                        "invalid prefix length {} for {family} address {}",
                        a.prefix, a.ip
                    ),
                    if v6 { "use 0 to 128" } else { "use 0 to 32" },
                ),
            },
            _ => cx.error(
                child(&aptr, "ip"),
                format!("invalid {family} address {:?}", a.ip),
                if v6 {
                    "write an IPv6 address such as 2001:db8::10"
                } else {
                    "write an IPv4 address such as 10.0.1.10"
                },
            ),
        }
    }
    if let Some(g) = &block.gateway {
        check_gateway(cx, child(ptr, "gateway"), g, &nets, block.dhcp, v6);
    }
    check_dns(cx, &child(ptr, "dns"), &block.dns);
}

fn check_mtu(cx: &mut Cx, ptr: &str, mtu: Option<u32>, v6: bool) {
    let Some(mtu) = mtu else { return };
    let min = if v6 { 1280 } else { 68 };
    if mtu < min || mtu > 65535 {
        cx.error(
            child(ptr, "mtu"),
            format!("invalid MTU {mtu}"),
            if v6 {
                "use 1280 to 65535 (IPv6 needs at least 1280)"
            } else {
                "use 68 to 65535; Ethernet is usually 1500, jumbo frames 9000"
            },
        );
    }
}

fn check_dns(cx: &mut Cx, ptr: &str, servers: &[String]) {
    for (k, s) in servers.iter().enumerate() {
        if s.parse::<IpAddr>().is_err() {
            cx.error(
                child(ptr, k),
                format!("invalid DNS server address {s:?}"),
                "write an IP address such as 1.1.1.1 or 2606:4700:4700::1111",
            );
        }
    }
}

fn check_routes(cx: &mut Cx, ptr: &str, routes: &[Route]) {
    for (k, r) in routes.iter().enumerate() {
        let rptr = child(ptr, k);
        if r.to != "default" && r.to.parse::<IpNet>().is_err() {
            cx.error(
                child(&rptr, "to"),
                format!("invalid route destination {:?}", r.to),
                "write a CIDR such as 10.1.0.0/16, or \"default\"",
            );
        }
        if let Some(via) = &r.via {
            if via.parse::<IpAddr>().is_err() {
                cx.error(
                    child(&rptr, "via"),
                    format!("invalid route gateway {via:?}"),
                    "write an IP address such as 10.0.0.1",
                );
            }
        }
    }
}

fn valid_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use crate::validate::test_errors as errors;

    #[test]
    fn ovs_and_kernel_bonds_take_only_their_own_modes() {
        let got = errors(
            r#"{"version": 1, "plugins": {"network": {
                "interfaces": {"ovs0": {"type": "ovs-bridge", "ports": ["bond0",
                    {"name": "bond1", "type": "bond", "bond_mode": "balance-rr"},
                    {"name": "p1", "lacp": "active"}]}},
                "bonds": {"bond0": {"slaves": ["e1", "e2"], "mode": "balance-xor"},
                          "bond2": {"slaves": ["e3"], "mode": "balance-slb", "lacp": "active"}}}}}"#,
        );
        let at = |p: &str| got.iter().find(|(x, _)| x == p).map(|(_, m)| m.as_str());
        assert_eq!(
            at("/plugins/network/bonds/bond0/mode"),
            Some("bond bond0 is a port of an OVS bridge, and an OVS bond has no mode balance-xor")
        );
        assert_eq!(
            at("/plugins/network/interfaces/ovs0/ports/1"),
            Some("OVS bond port bond1 has no interfaces")
        );
        assert_eq!(
            at("/plugins/network/interfaces/ovs0/ports/1/bond_mode"),
            Some("an OVS bond has no mode balance-rr")
        );
        assert_eq!(
            at("/plugins/network/interfaces/ovs0/ports/2/lacp"),
            Some("port p1 is not a bond but sets lacp")
        );
        assert!(at("/plugins/network/bonds/bond2/mode")
            .is_some_and(|m| m.starts_with("balance-slb is an Open vSwitch bond mode")));
        assert!(at("/plugins/network/bonds/bond2/lacp").is_some());
        assert_eq!(got.len(), 6, "{got:#?}");
    }

    #[test]
    fn a_bond_on_an_ovs_bridge_normalizes_to_an_ovs_bond_port() {
        let s = crate::parse::parse_only(
            r#"{"version": 1, "plugins": {"network": {
                "interfaces": {"ovs0": {"type": "ovs-bridge", "ports": ["bond0", "p1"]}},
                "bonds": {"bond0": {"slaves": ["e1", "e2"], "mode": "802.3ad"}}}}}"#,
        )
        .expect("parses");
        assert_eq!(crate::validate::validate(&s), []);
        let spec = s.network_spec();
        assert_eq!(spec.interfaces.len(), 1, "bond0 is no kernel bond");
        let crate::normalize::IfaceKind::OvsBridge { ports } = &spec.interfaces[0].kind else {
            panic!("{spec:?}")
        };
        assert_eq!(ports[0].kind, crate::model::OvsPortType::Bond);
        assert_eq!(ports[0].interfaces, ["e1", "e2"]);
        assert_eq!(ports[0].bond_mode, Some(crate::model::BondMode::Lacp));
    }
}
