//! `plugins.firewall`: ports (0, above 65535, reversed ranges, a port on
//! icmp), source addresses (syntax, one family per rule), interfaces the
//! state does not declare (a warning: a physical port needs no declaration),
//! comments nftables cannot hold, masquerade entries, and an input policy
//! that drops while nothing accepts the port sshd listens on (a warning).

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::Cx;
use crate::diag::{child, pointer};
use crate::model::{FirewallRule, Proto, State, Verdict};
use crate::normalize::IfaceKind;

/// nftables keeps at most 128 bytes of comment; the agent prefixes its tag.
pub const MAX_COMMENT: usize = 96;

pub(super) fn check(cx: &mut Cx, state: &State) {
    let Some(fw) = &state.plugins.firewall else {
        return;
    };
    let base = pointer(&["plugins", "firewall"]);
    let known = known_interfaces(state);
    let rules_ptr = child(&base, "rules");
    for (i, r) in fw.rules.iter().enumerate() {
        check_rule(cx, &child(&rules_ptr, i), r, known.as_ref());
    }
    let masq_ptr = child(&base, "masquerade");
    for (i, m) in fw.masquerade.iter().enumerate() {
        let ptr = child(&masq_ptr, i);
        check_net(cx, &child(&ptr, "source"), &m.source, None);
        check_iface(cx, &child(&ptr, "out_iface"), &m.out_iface, known.as_ref());
        if let Some(c) = &m.comment {
            check_comment(cx, &child(&ptr, "comment"), c);
        }
    }
    if let Some(p) = fw.ssh_port {
        if !(1..=65535).contains(&p) {
            cx.error(
                child(&base, "ssh_port"),
                format!("ssh_port {p} is out of range"),
                "use the port sshd listens on, 1-65535 (default 22)",
            );
        }
    }
    let input_drops = fw
        .default_policy
        .as_ref()
        .is_some_and(|p| p.input != Verdict::Accept);
    if input_drops && state.ssh_enabled() {
        let ssh = fw
            .ssh_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .unwrap_or(22);
        let floor = state.firewall_floor_ports().iter().any(|(p, _)| *p == ssh);
        if !floor && !fw.rules.iter().any(|r| accepts_tcp_port(r, ssh)) {
            cx.warn(
                pointer(&["plugins", "firewall", "default_policy", "input"]),
                format!("the input policy drops and no rule accepts sshd's port {ssh}/tcp"),
                format!(
                    "add {{\"port\": {ssh}, \"proto\": \"tcp\", \"action\": \"accept\"}} to rules (or keep management_floor on), or this host is reachable only from its console"
                ),
            );
        }
    }
}

/// A rule that accepts TCP to `port` (from some source: a restricted
/// source still counts, the operator chose it).
fn accepts_tcp_port(r: &FirewallRule, port: u16) -> bool {
    r.action == Verdict::Accept
        && matches!(r.proto, None | Some(Proto::Tcp))
        && match &r.port {
            None => true,
            Some(p) => p.range().is_ok_and(|(lo, hi)| lo <= port && port <= hi),
        }
}

fn check_rule(cx: &mut Cx, ptr: &str, r: &FirewallRule, known: Option<&BTreeSet<String>>) {
    if let Some(p) = &r.port {
        let pptr = child(ptr, "port");
        match p.range() {
            Err(msg) => cx.error(
                pptr,
                msg,
                "use a port 1-65535 or a range \"LOW-HIGH\" with LOW <= HIGH",
            ),
            Ok(_) if r.proto == Some(Proto::Icmp) => cx.error(
                pptr,
                "an icmp rule has no port",
                "drop \"port\", or set \"proto\" to tcp or udp",
            ),
            Ok(_) => {}
        }
    }
    if let Some(src) = &r.source {
        let sptr = child(ptr, "source");
        let items = src.items();
        if items.is_empty() {
            cx.error(
                sptr.clone(),
                "the source list is empty",
                "name at least one address or CIDR, or drop \"source\" to match any",
            );
        }
        let many = matches!(src, crate::model::Sources::Many(_));
        let mut first: Option<(bool, String)> = None;
        for (k, s) in items.iter().enumerate() {
            let iptr = if many { child(&sptr, k) } else { sptr.clone() };
            check_net(cx, &iptr, s, first.as_ref());
            if first.is_none() {
                if let Some(n) = parse_net(s) {
                    first = Some((matches!(n, IpNet::V4(_)), s.to_string()));
                }
            }
        }
    }
    if let Some(i) = &r.iface {
        check_iface(cx, &child(ptr, "iface"), i, known);
    }
    if let Some(c) = &r.comment {
        check_comment(cx, &child(ptr, "comment"), c);
    }
}

/// An address or CIDR, canonical form.
pub fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// `first`: (is IPv4, text) of the rule's first source; the others must share its family.
fn check_net(cx: &mut Cx, ptr: &str, s: &str, first: Option<&(bool, String)>) {
    let Some(net) = parse_net(s) else {
        cx.error(
            ptr.to_string(),
            format!("{s:?} is not an IP address or CIDR"),
            "write an address (192.0.2.7, 2001:db8::7) or a network (10.0.0.0/24, 2001:db8::/32)",
        );
        return;
    };
    let v4 = matches!(net, IpNet::V4(_));
    if let Some((fv4, ftext)) = first {
        if *fv4 != v4 {
            cx.error(
                ptr.to_string(),
                format!(
                    "{s} is an IPv{} network but this rule's first source {ftext} is IPv{}",
                    if v4 { 4 } else { 6 },
                    if *fv4 { 4 } else { 6 }
                ),
                "one rule matches one address family: put the other family's sources in a rule of their own",
            );
        }
    }
    if net.trunc() != net {
        cx.warn(
            ptr.to_string(),
            format!(
                "{s} has host bits set; the firewall matches {}",
                net.trunc()
            ),
            format!("write the network address, {}", net.trunc()),
        );
    }
}

fn check_iface(cx: &mut Cx, ptr: &str, name: &str, known: Option<&BTreeSet<String>>) {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '"', '\'', '\\']) {
        cx.error(
            ptr.to_string(),
            format!("{name:?} is not a valid interface name"),
            "interface names are 1-15 characters without '/', quotes or spaces",
        );
        return;
    }
    if let Some(known) = known {
        if name != "lo" && !known.contains(name) {
            cx.warn(
                ptr.to_string(),
                format!("interface {name} is not declared in plugins.network"),
                "fine for a physical port or a link made outside op-dbus; otherwise check the name (the rule matches nothing until it exists)",
            );
        }
    }
}

fn check_comment(cx: &mut Cx, ptr: &str, c: &str) {
    if c.len() > MAX_COMMENT || c.chars().any(|ch| ch.is_control() || ch == '"') {
        cx.error(
            ptr.to_string(),
            format!(
                "the comment is {} bytes or holds quotes or control characters",
                c.len()
            ),
            format!("keep it to {MAX_COMMENT} bytes of plain text (nftables stores 128 with op-dbus's tag)"),
        );
    }
}

/// Interface names the state declares (and the ports, slaves and bases
/// they reference), or `None` when it has no network section to judge by.
fn known_interfaces(state: &State) -> Option<BTreeSet<String>> {
    if state.plugins.network.is_none() && state.plugins.net.is_none() {
        return None;
    }
    let spec = state.network_spec();
    let mut out = BTreeSet::new();
    for i in &spec.interfaces {
        out.insert(i.name.clone());
        match &i.kind {
            IfaceKind::Bridge { ports } => out.extend(ports.iter().cloned()),
            IfaceKind::Bond { slaves, .. } => out.extend(slaves.iter().cloned()),
            IfaceKind::Vlan { base, .. } => {
                out.insert(base.clone());
            }
            IfaceKind::OvsBridge { ports } => out.extend(ports.iter().map(|p| p.name.clone())),
            IfaceKind::Veth { peer } => out.extend(peer.iter().cloned()),
            IfaceKind::Ethernet | IfaceKind::Dummy => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::diag::Severity;

    fn diags(json: &str) -> Vec<(Severity, String, String)> {
        let s = crate::parse::parse_only(json).expect("parses");
        super::super::validate(&s)
            .into_iter()
            .filter(|d| d.pointer.starts_with("/plugins/firewall"))
            .filter(|d| d.message != crate::coverage::NOT_APPLIED)
            .map(|d| (d.severity, d.pointer, d.message))
            .collect()
    }

    #[test]
    fn bad_ports_sources_and_interfaces_have_pointers() {
        let got = diags(
            r#"{"version": 1, "plugins": {
              "network": {"interfaces": {"vmbr0": {"type": "bridge", "bridge_ports": ["eth0"]}}},
              "firewall": {"rules": [
                {"port": 0, "proto": "tcp", "action": "accept"},
                {"port": 70000, "proto": "tcp", "action": "accept"},
                {"port": "9000-8000", "proto": "udp", "action": "accept"},
                {"port": 22, "proto": "icmp", "action": "accept"},
                {"port": 22, "proto": "tcp", "action": "accept", "source": ["10.0.0.0/8", "2001:db8::/32"]},
                {"proto": "tcp", "action": "accept", "source": "10.0.0.300"},
                {"port": "80-90", "proto": "tcp", "action": "accept", "iface": "eth9"},
                {"port": 443, "proto": "tcp", "action": "accept", "iface": "eth0", "source": "10.1.2.3/16"}
              ],
              "masquerade": [{"source": "10.0.0.0/33", "out_iface": "vmbr0"}]}
            }}"#,
        );
        let want: Vec<(Severity, &str, &str)> =
            vec![
            (Severity::Error, "/plugins/firewall/rules/0/port", "port 0 is out of range"),
            (Severity::Error, "/plugins/firewall/rules/1/port", "port 70000 is out of range"),
            (Severity::Error, "/plugins/firewall/rules/2/port", "port range 9000-8000 is reversed"),
            (Severity::Error, "/plugins/firewall/rules/3/port", "an icmp rule has no port"),
            (
                Severity::Error,
                "/plugins/firewall/rules/4/source/1",
                "2001:db8::/32 is an IPv6 network but this rule's first source 10.0.0.0/8 is IPv4",
            ),
            (
                Severity::Error,
                "/plugins/firewall/rules/5/source",
                "\"10.0.0.300\" is not an IP address or CIDR",
            ),
            (
                Severity::Warning,
                "/plugins/firewall/rules/6/iface",
                "interface eth9 is not declared in plugins.network",
            ),
            (
                Severity::Warning,
                "/plugins/firewall/rules/7/source",
                "10.1.2.3/16 has host bits set; the firewall matches 10.1.0.0/16",
            ),
            (
                Severity::Error,
                "/plugins/firewall/masquerade/0/source",
                "\"10.0.0.0/33\" is not an IP address or CIDR",
            ),
        ];
        let got: Vec<(Severity, &str, &str)> = got
            .iter()
            .map(|(s, p, m)| (*s, p.as_str(), m.as_str()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn input_drop_without_ssh_warns() {
        let off = r#"{"version": 1, "plugins": {"firewall": {"management_floor": false,
            "default_policy": {"input": "drop"}, "rules": [{"port": 8006, "proto": "tcp", "action": "accept"}]}}}"#;
        assert_eq!(
            diags(off),
            [(
                Severity::Warning,
                "/plugins/firewall/default_policy/input".to_string(),
                "the input policy drops and no rule accepts sshd's port 22/tcp".to_string()
            )]
        );
        // The floor accepts ssh; a rule does too; ssh disabled needs nothing.
        let floor =
            r#"{"version": 1, "plugins": {"firewall": {"default_policy": {"input": "drop"}}}}"#;
        assert_eq!(diags(floor), []);
        let rule = r#"{"version": 1, "plugins": {"firewall": {"management_floor": false, "ssh_port": 2222,
            "default_policy": {"input": "drop"}, "rules": [{"port": "2000-3000", "proto": "tcp", "action": "accept", "source": "10.0.0.0/8"}]}}}"#;
        assert_eq!(diags(rule), []);
        let no_ssh = r#"{"version": 1, "plugins": {"systemd": {"services": {"ssh": {"state": "disabled"}}},
            "firewall": {"management_floor": false, "default_policy": {"input": "drop"}}}}"#;
        assert_eq!(diags(no_ssh), []);
    }
}
