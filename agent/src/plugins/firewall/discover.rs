//! `discover` for the firewall: the live table `inet opdbus` read back into
//! a `plugins.firewall` section, the inverse of [`super::render::table`].
//! Rules are recognised by their tags (`opdbus:rule-N`, `masquerade-N`,
//! `floor-ssh`); a table that the section does not render again exactly
//! (rules added by hand) is not described.

use serde_json::Value;

use super::render::{Table, TAG};
use opdbus_state::model::{
    DefaultPolicy, Firewall, FirewallRule, Masquerade, PortSpec, Proto, Sources, Verdict,
};

fn verdict(policy: &str) -> Verdict {
    if policy == "drop" {
        Verdict::Drop
    } else {
        Verdict::Accept
    }
}

/// `addr` or `{"prefix": {"addr", "len"}}` as a CIDR string.
fn net(v: &Value) -> Option<String> {
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    let p = v.get("prefix")?;
    Some(format!(
        "{}/{}",
        p.get("addr")?.as_str()?,
        p.get("len")?.as_u64()?
    ))
}

fn port(v: &Value) -> Option<PortSpec> {
    if let Some(n) = v.as_i64() {
        return Some(PortSpec::Number(n));
    }
    let r = v.get("range")?.as_array()?;
    Some(PortSpec::Text(format!(
        "{}-{}",
        r.first()?.as_i64()?,
        r.get(1)?.as_i64()?
    )))
}

/// The tag's name and the comment after it: `opdbus:rule-3 web` → (`rule-3`, `web`).
fn split_comment(comment: &str) -> Option<(&str, Option<String>)> {
    let rest = comment.strip_prefix(TAG)?;
    Some(match rest.split_once(' ') {
        Some((name, c)) => (name, Some(c.to_string())),
        None => (rest, None),
    })
}

/// One user rule from its expressions; `None` when they are not a shape
/// the renderer writes.
fn rule(expr: &[Value], comment: Option<String>) -> Option<FirewallRule> {
    let mut r = FirewallRule {
        port: None,
        proto: None,
        action: Verdict::Accept,
        source: None,
        iface: None,
        comment,
    };
    let mut verdict_seen = false;
    for e in expr {
        if let Some(m) = e.get("match") {
            let left = &m["left"];
            let right = &m["right"];
            let meta = left.get("meta").and_then(|x| x["key"].as_str());
            let payload = left
                .get("payload")
                .map(|p| (p["protocol"].as_str(), p["field"].as_str()));
            match (meta, payload) {
                (Some("iifname"), _) => r.iface = Some(right.as_str()?.to_string()),
                (Some("l4proto"), _) => match right {
                    Value::String(s) if s == "tcp" => r.proto = Some(Proto::Tcp),
                    Value::String(s) if s == "udp" => r.proto = Some(Proto::Udp),
                    _ => {
                        let mut set: Vec<&str> = right
                            .get("set")?
                            .as_array()?
                            .iter()
                            .filter_map(Value::as_str)
                            .collect();
                        set.sort();
                        match set.as_slice() {
                            ["icmp", "ipv6-icmp"] => r.proto = Some(Proto::Icmp),
                            ["tcp", "udp"] => {}
                            _ => return None,
                        }
                    }
                },
                (_, Some((Some("ip" | "ip6"), Some("saddr")))) => {
                    r.source = Some(match right.get("set") {
                        Some(set) => {
                            Sources::Many(set.as_array()?.iter().map(net).collect::<Option<_>>()?)
                        }
                        None => Sources::One(net(right)?),
                    });
                }
                (_, Some((Some(proto), Some("dport")))) => {
                    r.proto = match proto {
                        "tcp" => Some(Proto::Tcp),
                        "udp" => Some(Proto::Udp),
                        "th" => None,
                        _ => return None,
                    };
                    r.port = Some(port(right)?);
                }
                _ => return None,
            }
        } else if e.get("accept").is_some() {
            (r.action, verdict_seen) = (Verdict::Accept, true);
        } else if e.get("drop").is_some() {
            (r.action, verdict_seen) = (Verdict::Drop, true);
        } else if e.get("reject").is_some() {
            (r.action, verdict_seen) = (Verdict::Reject, true);
        } else {
            return None;
        }
    }
    verdict_seen.then_some(r)
}

/// The section for `table`, and the floor ports it was rendered with;
/// `None` when a rule is not one the renderer writes.
pub fn section(table: &Table) -> Option<(Firewall, Vec<(u16, &'static str)>)> {
    let chain = |name: &str| table.chains.iter().find(|c| c.name == name);
    let policy = |name: &str| {
        chain(name)
            .map(|c| verdict(&c.policy))
            .unwrap_or(Verdict::Accept)
    };
    let mut fw = Firewall {
        default_policy: Some(DefaultPolicy {
            input: policy("input"),
            forward: policy("forward"),
            output: policy("output"),
        }),
        management_floor: false,
        ..Firewall::default()
    };
    let mut floor = Vec::new();
    let mut rules: Vec<(usize, FirewallRule)> = Vec::new();
    for r in chain("input")
        .map(|c| c.rules.as_slice())
        .unwrap_or_default()
    {
        let (name, comment) = split_comment(&r.comment)?;
        if let Some(i) = name.strip_prefix("rule-") {
            rules.push((i.parse().ok()?, rule(&r.expr, comment)?));
        } else if name == "floor-ssh" {
            let p = rule(&r.expr, None)?.port?;
            let PortSpec::Number(n) = p else { return None };
            fw.management_floor = true;
            fw.ssh_port = Some(n as u32).filter(|p| *p != 22);
            floor.push((n as u16, "ssh"));
        } else if name == "floor-proxmox-web" {
            fw.management_floor = true;
            floor.push((8006, "proxmox-web"));
        }
    }
    rules.sort_by_key(|(i, _)| *i);
    if rules.iter().enumerate().any(|(k, (i, _))| k != *i) {
        return None;
    }
    fw.rules = rules.into_iter().map(|(_, r)| r).collect();
    let mut masq: Vec<(usize, Masquerade)> = Vec::new();
    for r in chain("postrouting")
        .map(|c| c.rules.as_slice())
        .unwrap_or_default()
    {
        let (name, comment) = split_comment(&r.comment)?;
        let i: usize = name.strip_prefix("masquerade-")?.parse().ok()?;
        let mut source = None;
        let mut out_iface = None;
        for e in &r.expr {
            let Some(m) = e.get("match") else { continue };
            if m["left"].get("meta").and_then(|x| x["key"].as_str()) == Some("oifname") {
                out_iface = m["right"].as_str().map(str::to_string);
            } else if m["left"].get("payload").is_some() {
                source = net(&m["right"]);
            }
        }
        masq.push((
            i,
            Masquerade {
                source: source?,
                out_iface: out_iface?,
                comment,
            },
        ));
    }
    masq.sort_by_key(|(i, _)| *i);
    fw.masquerade = masq.into_iter().map(|(_, m)| m).collect();
    Some((fw, floor))
}
