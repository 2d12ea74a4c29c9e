//! Open vSwitch details on interface entries: OpenFlow tables (each flow
//! one `ovs-ofctl` flow `match,...,actions=...` without a cookie, listed
//! once; what OVS itself rejects is reported at apply, by pointer), VLAN
//! tags and trunks, datapath types, and MAC addresses.

use std::collections::HashMap;

use super::Cx;
use crate::diag::pointer;
use crate::model::{InterfaceType, OvsPort, Paths, State};

/// Why `flow` cannot be one of the agent's flows, if it cannot.
pub fn flow_problem(flow: &str) -> Option<(&'static str, &'static str)> {
    let f = flow.trim();
    if f.is_empty() {
        return Some(("empty flow", "remove the empty string"));
    }
    if f.contains(['\n', '\r']) {
        return Some(("a flow is one line", "give each flow as its own string"));
    }
    let first = f.split([' ', ',', '\t']).next().unwrap_or("");
    if matches!(
        first,
        "add" | "modify" | "modify_strict" | "delete" | "delete_strict"
    ) {
        return Some((
            "a flow is a match and actions, not a command",
            "drop the leading command word; the agent replaces its flows as a whole",
        ));
    }
    if f.split([' ', ','])
        .any(|t| t.trim_start().starts_with("cookie="))
    {
        return Some((
            "a flow in the state carries no cookie",
            "remove cookie=: the agent marks its flows with its own cookie",
        ));
    }
    if !f.contains("actions=") {
        return Some((
            "a flow needs actions=",
            "end the flow with actions=..., e.g. actions=normal or actions=drop",
        ));
    }
    None
}

/// The pointer of `rest` below the entry at `at`.
fn below(at: &[String], rest: &[&str]) -> String {
    let mut t: Vec<&str> = at.iter().map(String::as_str).collect();
    t.extend_from_slice(rest);
    pointer(&t)
}

/// A flow's text with whitespace collapsed (what "the same flow" means).
fn collapsed(flow: &str) -> String {
    flow.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn check_details(
    cx: &mut Cx,
    at: &[String],
    mac: Option<&str>,
    datapath: Option<&str>,
    ports: &[crate::model::OvsPort],
) {
    let ptr = |rest: &[&str]| below(at, rest);
    if let Some(m) = mac {
        if !valid_mac(m) {
            cx.error(
                ptr(&["mac"]),
                format!("'{m}' is not a MAC address"),
                "write six hex pairs separated by ':', e.g. \"52:54:00:12:34:56\"",
            );
        } else if u8::from_str_radix(&m[..2], 16).is_ok_and(|b| b & 1 == 1) {
            cx.error(
                ptr(&["mac"]),
                format!("'{m}' is a multicast address"),
                "use a unicast address: the first byte even, e.g. 02:...",
            );
        }
    }
    if let Some(d) = datapath {
        if !matches!(d, "netdev" | "system") {
            cx.error(
                ptr(&["datapath_type"]),
                format!("unknown datapath type '{d}'"),
                "use \"netdev\" (user space) or \"system\" (the kernel module)",
            );
        }
    }
    for (k, p) in ports.iter().enumerate() {
        let ks = k.to_string();
        if let Some(t) = p.0.tag {
            if !(1..=4094).contains(&t) {
                cx.error(
                    ptr(&["ports", &ks, "tag"]),
                    format!("VLAN {t} is out of range"),
                    "use a VLAN id from 1 to 4094",
                );
            }
        }
        for (n, t) in p.0.trunks.iter().enumerate() {
            if !(1..=4094).contains(t) {
                cx.error(
                    ptr(&["ports", &ks, "trunks", &n.to_string()]),
                    format!("VLAN {t} is out of range"),
                    "use VLAN ids from 1 to 4094",
                );
            }
        }
    }
}

pub(super) fn check(cx: &mut Cx, state: &State) {
    if let Some(net) = &state.plugins.network {
        for (section, map) in [("interfaces", &net.interfaces), ("bonds", &net.bonds)] {
            for (name, i) in map {
                let at: Vec<String> = vec![
                    "plugins".into(),
                    "network".into(),
                    section.into(),
                    name.clone(),
                ];
                check_details(
                    cx,
                    &at,
                    i.mac.as_deref(),
                    i.datapath_type.as_deref(),
                    &i.ports,
                );
            }
        }
    }
    if let Some(net) = &state.plugins.net {
        for (n, i) in net.interfaces.iter().enumerate() {
            let at: Vec<String> = vec![
                "plugins".into(),
                "net".into(),
                "interfaces".into(),
                n.to_string(),
            ];
            check_details(
                cx,
                &at,
                i.mac.as_deref(),
                i.datapath_type.as_deref(),
                &i.ports,
            );
        }
    }
    type Entry<'a> = (
        Vec<String>,
        &'a InterfaceType,
        &'a [OvsPort],
        &'a Vec<String>,
        Option<&'a Paths>,
    );
    let mut lists: Vec<Entry> = Vec::new();
    if let Some(net) = &state.plugins.network {
        for (name, i) in &net.interfaces {
            lists.push((
                vec![
                    "plugins".into(),
                    "network".into(),
                    "interfaces".into(),
                    name.clone(),
                ],
                &i.kind,
                &i.ports,
                &i.flows,
                i.paths.as_ref(),
            ));
        }
    }
    if let Some(net) = &state.plugins.net {
        for (n, i) in net.interfaces.iter().enumerate() {
            lists.push((
                vec![
                    "plugins".into(),
                    "net".into(),
                    "interfaces".into(),
                    n.to_string(),
                ],
                &i.kind,
                &i.ports,
                &i.flows,
                i.paths.as_ref(),
            ));
        }
    }
    for (at, kind, ports, flows, paths) in lists {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (k, f) in flows.iter().enumerate() {
            let ptr = below(&at, &["flows", &k.to_string()]);
            if let Some((msg, hint)) = flow_problem(f) {
                cx.error(ptr, msg, hint);
                continue;
            }
            if let Some(first) = seen.insert(collapsed(f), k) {
                cx.error(
                    ptr,
                    format!("the same flow as flows/{first}"),
                    "list each flow once",
                );
            }
        }
        if let Some(p) = paths {
            check_paths(cx, &at, kind, ports, p, &seen);
        }
    }
}

/// `paths`: on an ovs-bridge, each path leaving by one of its ports, to
/// IPv4 destinations no other path has, making no flow `flows` lists.
fn check_paths(
    cx: &mut Cx,
    at: &[String],
    kind: &InterfaceType,
    ports: &[OvsPort],
    paths: &Paths,
    explicit: &HashMap<String, usize>,
) {
    let ptr = |rest: &[&str]| below(at, rest);
    if *kind != InterfaceType::OvsBridge {
        cx.error(
            ptr(&["paths"]),
            "paths classify the traffic of an ovs-bridge",
            "move paths to the ovs-bridge entry, or remove it",
        );
        return;
    }
    let names: Vec<&str> = ports.iter().map(|p| p.0.name.as_str()).collect();
    let mut owner: HashMap<ipnet::Ipv4Net, &str> = HashMap::new();
    for (name, p) in paths.each() {
        if !names.contains(&p.port.as_str()) {
            cx.error(
                ptr(&["paths", name, "port"]),
                format!("'{}' is not a port of this bridge", p.port),
                if names.is_empty() {
                    "add the port to the bridge's ports".to_string()
                } else {
                    format!("use one of its ports ({}) or add it", names.join(", "))
                },
            );
        }
        if p.networks.is_empty() {
            cx.error(
                ptr(&["paths", name, "networks"]),
                "a path with no networks sends nothing its way",
                "list the destinations, e.g. [\"10.10.0.0/24\"], or remove the path",
            );
        }
        for (k, n) in p.networks.iter().enumerate() {
            let ks = k.to_string();
            let net = n.parse::<ipnet::Ipv4Net>().ok().or_else(|| {
                n.parse::<std::net::Ipv4Addr>()
                    .ok()
                    .map(ipnet::Ipv4Net::from)
            });
            let Some(net) = net else {
                cx.error(
                    ptr(&["paths", name, "networks", &ks]),
                    format!("'{n}' is not an IPv4 network or address"),
                    "write 10.10.0.0/24 or 10.10.0.5; IPv6 destinations need flows of their own",
                );
                continue;
            };
            if net.trunc() != net {
                cx.error(
                    ptr(&["paths", name, "networks", &ks]),
                    format!("'{n}' has host bits set"),
                    format!("write the network as {}", net.trunc()),
                );
            } else if let Some(other) = owner.insert(net, name) {
                cx.error(
                    ptr(&["paths", name, "networks", &ks]),
                    format!("'{n}' is already a network of the {other} path"),
                    "give each destination one path",
                );
            }
        }
    }
    for f in paths.flows() {
        if let Some(k) = explicit.get(&collapsed(&f.flow)) {
            let rest: Vec<&str> = f.at.trim_start_matches('/').split('/').collect();
            cx.error(
                below(at, &rest),
                format!("paths make the flow flows/{k} lists"),
                format!("remove flows/{k}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_errors as errors;

    /// The seed's bridge: an uplink, the socket and the mesh port.
    const SEED_PATHS: &str = r#"{"version": 1, "plugins": {"network": {"interfaces": {
        "ovsbr0": {"type": "ovs-bridge", "ports": ["eth0", "veth-socket", "veth-mesh"],
            "paths": {"socket": {"port": "veth-socket", "networks": ["10.10.0.0/24"]},
                      "mesh": {"port": "veth-mesh", "networks": ["10.100.0.0/16", "10.101.0.7"]}}}}}}}"#;

    #[test]
    fn the_seeds_paths_are_four_tables_of_flows() {
        assert_eq!(errors(SEED_PATHS), Vec::<(String, String)>::new());
        let st: crate::State = serde_json::from_str(SEED_PATHS).expect("parses");
        let net = st.plugins.network.as_ref().expect("network");
        let p = net.interfaces["ovsbr0"].paths.as_ref().expect("paths");
        let got: Vec<String> = p
            .flows()
            .into_iter()
            .map(|f| format!("{}  <- {}", f.flow, f.at))
            .collect();
        assert_eq!(
            got,
            [
                "table=0,priority=100,ip,nw_dst=10.10.0.0/24,actions=goto_table:10  <- /paths/socket/networks/0",
                "table=0,priority=100,arp,arp_tpa=10.10.0.0/24,actions=goto_table:10  <- /paths/socket/networks/0",
                "table=0,priority=100,ip,nw_dst=10.100.0.0/16,actions=goto_table:20  <- /paths/mesh/networks/0",
                "table=0,priority=100,arp,arp_tpa=10.100.0.0/16,actions=goto_table:20  <- /paths/mesh/networks/0",
                "table=0,priority=100,ip,nw_dst=10.101.0.7,actions=goto_table:20  <- /paths/mesh/networks/1",
                "table=0,priority=100,arp,arp_tpa=10.101.0.7,actions=goto_table:20  <- /paths/mesh/networks/1",
                "table=0,priority=50,actions=goto_table:30  <- /paths",
                "table=10,priority=100,actions=output:veth-socket  <- /paths/socket/port",
                "table=20,priority=100,actions=output:veth-mesh  <- /paths/mesh/port",
                "table=30,priority=50,actions=NORMAL  <- /paths",
            ]
        );
    }

    #[test]
    fn bad_paths_are_named_by_pointer() {
        let got = errors(
            r#"{"version": 1, "plugins": {"network": {"interfaces": {
                "br0": {"type": "ovs-bridge", "ports": ["p1", "p2"],
                    "flows": ["table=30,priority=50,actions=NORMAL"],
                    "paths": {"socket": {"port": "p9", "networks": ["10.10.0.1/24", "fd00::/64", "10.20.0.0/16"]},
                              "mesh": {"port": "p2", "networks": ["10.20.0.0/16"]}}},
                "eth0": {"type": "ethernet", "paths": {"mesh": {"port": "x", "networks": []}}}}}}}"#,
        );
        let at = |p: &str| got.iter().find(|(x, _)| x == p).map(|(_, m)| m.as_str());
        let br = "/plugins/network/interfaces/br0/paths";
        assert_eq!(
            at(&format!("{br}/socket/port")),
            Some("'p9' is not a port of this bridge")
        );
        assert_eq!(
            at(&format!("{br}/socket/networks/0")),
            Some("'10.10.0.1/24' has host bits set")
        );
        assert_eq!(
            at(&format!("{br}/socket/networks/1")),
            Some("'fd00::/64' is not an IPv4 network or address")
        );
        assert_eq!(
            at(&format!("{br}/mesh/networks/0")),
            Some("'10.20.0.0/16' is already a network of the socket path")
        );
        assert_eq!(at(br), Some("paths make the flow flows/0 lists"));
        assert_eq!(
            at("/plugins/network/interfaces/eth0/paths"),
            Some("paths classify the traffic of an ovs-bridge")
        );
        assert_eq!(got.len(), 6, "{got:?}");
    }

    #[test]
    fn flows_tags_macs_and_datapaths_are_checked_by_pointer() {
        let got = errors(
            r#"{"version": 1, "plugins": {"net": {"interfaces": [{"name": "br0", "type": "ovs-bridge",
                "datapath_type": "dpdk", "mac": "01:00:5e:00:00:01",
                "ports": [{"name": "p1", "tag": 4095}, {"name": "p2", "trunks": [10, 0]}],
                "flows": ["priority=1,actions=normal", "cookie=0x1,actions=drop", "priority=5", "priority=1,actions=normal"]}]}}}"#,
        );
        let at = |p: &str| got.iter().find(|(x, _)| x == p).map(|(_, m)| m.as_str());
        assert_eq!(
            at("/plugins/net/interfaces/0/mac"),
            Some("'01:00:5e:00:00:01' is a multicast address")
        );
        assert_eq!(
            at("/plugins/net/interfaces/0/datapath_type"),
            Some("unknown datapath type 'dpdk'")
        );
        assert_eq!(
            at("/plugins/net/interfaces/0/ports/0/tag"),
            Some("VLAN 4095 is out of range")
        );
        assert_eq!(
            at("/plugins/net/interfaces/0/ports/1/trunks/1"),
            Some("VLAN 0 is out of range")
        );
        assert_eq!(
            at("/plugins/net/interfaces/0/flows/1"),
            Some("a flow in the state carries no cookie")
        );
        assert_eq!(
            at("/plugins/net/interfaces/0/flows/2"),
            Some("a flow needs actions=")
        );
        assert_eq!(
            at("/plugins/net/interfaces/0/flows/3"),
            Some("the same flow as flows/0")
        );
        assert_eq!(got.len(), 7, "{got:?}");
    }
}
