//! Open vSwitch details on interface entries: OpenFlow tables (each flow
//! one `ovs-ofctl` flow `match,...,actions=...` without a cookie, listed
//! once; what OVS itself rejects is reported at apply, by pointer), VLAN
//! tags and trunks, datapath types, and MAC addresses.

use std::collections::HashMap;

use super::Cx;
use crate::diag::pointer;
use crate::model::State;

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
    let ptr = |rest: &[&str]| {
        let mut t: Vec<&str> = at.iter().map(String::as_str).collect();
        t.extend_from_slice(rest);
        pointer(&t)
    };
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
    let mut lists: Vec<(Vec<String>, &Vec<String>)> = Vec::new();
    if let Some(net) = &state.plugins.network {
        for (name, i) in &net.interfaces {
            lists.push((
                vec![
                    "plugins".into(),
                    "network".into(),
                    "interfaces".into(),
                    name.clone(),
                ],
                &i.flows,
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
                &i.flows,
            ));
        }
    }
    for (at, flows) in lists {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (k, f) in flows.iter().enumerate() {
            let mut t: Vec<&str> = at.iter().map(String::as_str).collect();
            let ks = k.to_string();
            t.extend(["flows", &ks]);
            let ptr = pointer(&t);
            if let Some((msg, hint)) = flow_problem(f) {
                cx.error(ptr, msg, hint);
                continue;
            }
            let norm: String = f.split_whitespace().collect::<Vec<_>>().join(" ");
            if let Some(first) = seen.insert(norm, k) {
                cx.error(
                    ptr,
                    format!("the same flow as flows/{first}"),
                    "list each flow once",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_errors as errors;

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
