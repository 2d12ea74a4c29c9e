//! Pure rendering of `plugins.firewall` into nftables: the typed table
//! (chains and rules as libnftables JSON expressions, in the form `nft -j
//! list` prints them back, so a re-query compares equal), the table as one
//! atomic batch, and a listing back to the typed table. Shared by the
//! agent's firewall plugin and the installer, which writes the boot file
//! into the target before first boot: one rendering, one table.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::model::{Firewall, FirewallRule, Proto, Verdict};
use crate::State;

pub const FAMILY: &str = "inet";
pub const TABLE: &str = "opdbus";
/// Every rule's comment starts with this tag; the rest is the rule's name.
pub const TAG: &str = "opdbus:";
/// The batch the agent last applied (the installer writes the first), which
/// `op-dbus-firewall.service` loads at boot; below the managed root.
pub const BOOT_FILE: &str = "/etc/op-dbus/firewall.json";

/// One base chain of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chain {
    pub name: String,
    /// `filter` or `nat`.
    #[serde(rename = "type")]
    pub kind: String,
    pub hook: String,
    pub prio: i64,
    pub policy: String,
    pub rules: Vec<Rule>,
}

/// One rule: its comment (the tag plus the rule's name) and expressions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub comment: String,
    pub expr: Vec<Value>,
    /// The kernel's handle (current rules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
}

impl Rule {
    /// What makes two rules the same: the comment and the expressions (set
    /// elements in any order), as one string.
    pub fn key(&self) -> String {
        let expr: Vec<Value> = self.expr.iter().map(normalized).collect();
        format!("{}\n{}", self.comment, Value::Array(expr))
    }
}

/// The whole table, chains in hook order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

/// A part of `plugins.firewall` that cannot be rendered (validation
/// reports the same with a hint).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {message}")]
pub struct RenderError {
    /// The JSON pointer of the offending value.
    pub pointer: String,
    pub message: String,
}

fn bad(pointer: String, message: impl Into<String>) -> RenderError {
    RenderError {
        pointer,
        message: message.into(),
    }
}

fn m(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn ct_state(states: &[&str]) -> Value {
    let right = if states.len() == 1 {
        json!(states[0])
    } else {
        json!(states)
    };
    json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": right}})
}

fn verdict_expr(v: Verdict) -> Value {
    match v {
        Verdict::Accept => json!({"accept": null}),
        Verdict::Drop => json!({"drop": null}),
        // icmpx: the matching ICMP or ICMPv6 error for either family.
        Verdict::Reject => json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}}),
    }
}

fn addr(n: &IpNet) -> Value {
    let n = n.trunc();
    if n.prefix_len() == n.max_prefix_len() {
        json!(n.addr().to_string())
    } else {
        json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix_len()}})
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        .ok_or_else(|| format!("{s:?} is not an IP address or CIDR"))
}

/// `ip saddr` / `ip6 saddr` for one family's list.
fn saddr(nets: &[IpNet]) -> Value {
    let proto = if matches!(nets[0], IpNet::V4(_)) {
        "ip"
    } else {
        "ip6"
    };
    let right = if nets.len() == 1 {
        addr(&nets[0])
    } else {
        json!({"set": nets.iter().map(addr).collect::<Vec<_>>()})
    };
    m(payload(proto, "saddr"), right)
}

fn tagged(name: &str, comment: Option<&str>) -> String {
    match comment {
        Some(c) if !c.is_empty() => format!("{TAG}{name} {c}"),
        _ => format!("{TAG}{name}"),
    }
}

fn tcp_port(port: u16) -> Vec<Value> {
    vec![m(payload("tcp", "dport"), json!(port))]
}

/// The expressions of one user rule; `at` is its pointer for errors.
pub fn rule_expr(r: &FirewallRule, at: &str) -> Result<Vec<Value>, RenderError> {
    let mut e = Vec::new();
    if let Some(i) = &r.iface {
        e.push(m(meta("iifname"), json!(i)));
    }
    if let Some(src) = &r.source {
        let nets = src
            .items()
            .iter()
            .map(|s| parse_net(s))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|err| bad(format!("{at}/source"), err))?;
        let Some(first) = nets.first() else {
            return Err(bad(format!("{at}/source"), "the list is empty"));
        };
        let v4 = matches!(first, IpNet::V4(_));
        if !nets.iter().all(|n| matches!(n, IpNet::V4(_)) == v4) {
            return Err(bad(
                format!("{at}/source"),
                "mixes IPv4 and IPv6 (one family per rule)",
            ));
        }
        e.push(saddr(&nets));
    }
    let port = match &r.port {
        Some(p) => {
            let (lo, hi) = p.range().map_err(|err| bad(format!("{at}/port"), err))?;
            Some(if lo == hi {
                json!(lo)
            } else {
                json!({"range": [lo, hi]})
            })
        }
        None => None,
    };
    match (r.proto, port) {
        (Some(Proto::Icmp), Some(_)) => {
            return Err(bad(format!("{at}/port"), "an icmp rule has no port"))
        }
        (Some(Proto::Icmp), None) => {
            e.push(m(meta("l4proto"), json!({"set": ["icmp", "ipv6-icmp"]})));
        }
        (Some(p), Some(port)) => {
            let name = if p == Proto::Tcp { "tcp" } else { "udp" };
            e.push(m(payload(name, "dport"), port));
        }
        (Some(p), None) => {
            let name = if p == Proto::Tcp { "tcp" } else { "udp" };
            e.push(m(meta("l4proto"), json!(name)));
        }
        (None, Some(port)) => {
            e.push(m(meta("l4proto"), json!({"set": ["tcp", "udp"]})));
            e.push(m(payload("th", "dport"), port));
        }
        (None, None) => {}
    }
    e.push(verdict_expr(r.action));
    Ok(e)
}

/// The table `state` asks for; `None` without a firewall section.
pub fn desired_table(state: &State) -> Result<Option<Table>, RenderError> {
    let Some(fw) = &state.plugins.firewall else {
        return Ok(None);
    };
    Ok(Some(table(fw, &state.firewall_floor_ports())?))
}

/// The table for `fw` with the management floor `floor` (port, name).
pub fn table(fw: &Firewall, floor: &[(u16, &str)]) -> Result<Table, RenderError> {
    let policy = fw
        .default_policy
        .clone()
        .unwrap_or(crate::model::DefaultPolicy {
            input: Verdict::Accept,
            forward: Verdict::Accept,
            output: Verdict::Accept,
        });
    let base = |name: &str, policy: Verdict| Chain {
        name: name.to_string(),
        kind: "filter".to_string(),
        hook: name.to_string(),
        prio: 0,
        // A base chain's policy is accept or drop; reject drops.
        policy: if policy == Verdict::Accept {
            "accept"
        } else {
            "drop"
        }
        .to_string(),
        rules: Vec::new(),
    };
    let rule = |name: &str, comment: Option<&str>, expr: Vec<Value>| Rule {
        comment: tagged(name, comment),
        expr,
        handle: None,
    };
    let mut input = base("input", policy.input);
    input.rules.push(rule(
        "loopback",
        None,
        vec![m(meta("iif"), json!("lo")), verdict_expr(Verdict::Accept)],
    ));
    input.rules.push(rule(
        "established",
        None,
        vec![
            ct_state(&["established", "related"]),
            verdict_expr(Verdict::Accept),
        ],
    ));
    input.rules.push(rule(
        "invalid",
        None,
        vec![ct_state(&["invalid"]), verdict_expr(Verdict::Drop)],
    ));
    for (port, what) in floor {
        let mut e = tcp_port(*port);
        e.push(verdict_expr(Verdict::Accept));
        input.rules.push(rule(&format!("floor-{what}"), None, e));
    }
    for (i, r) in fw.rules.iter().enumerate() {
        let at = format!("/plugins/firewall/rules/{i}");
        input.rules.push(rule(
            &format!("rule-{i}"),
            r.comment.as_deref(),
            rule_expr(r, &at)?,
        ));
    }

    let mut forward = base("forward", policy.forward);
    forward.rules.push(rule(
        "established",
        None,
        vec![
            ct_state(&["established", "related"]),
            verdict_expr(Verdict::Accept),
        ],
    ));
    forward.rules.push(rule(
        "invalid",
        None,
        vec![ct_state(&["invalid"]), verdict_expr(Verdict::Drop)],
    ));
    let mut post = Chain {
        name: "postrouting".to_string(),
        kind: "nat".to_string(),
        hook: "postrouting".to_string(),
        prio: 100,
        policy: "accept".to_string(),
        rules: Vec::new(),
    };
    for (i, mq) in fw.masquerade.iter().enumerate() {
        let at = format!("/plugins/firewall/masquerade/{i}");
        let net = parse_net(&mq.source).map_err(|e| bad(format!("{at}/source"), e))?;
        // The translated traffic is forwarded: let it out whatever the
        // forward policy is.
        forward.rules.push(rule(
            &format!("masquerade-{i}"),
            mq.comment.as_deref(),
            vec![
                saddr(&[net]),
                m(meta("oifname"), json!(mq.out_iface)),
                verdict_expr(Verdict::Accept),
            ],
        ));
        post.rules.push(rule(
            &format!("masquerade-{i}"),
            mq.comment.as_deref(),
            vec![
                saddr(&[net]),
                m(meta("oifname"), json!(mq.out_iface)),
                json!({"masquerade": null}),
            ],
        ));
    }

    let mut output = base("output", policy.output);
    output.rules.push(rule(
        "loopback",
        None,
        vec![m(meta("oif"), json!("lo")), verdict_expr(Verdict::Accept)],
    ));
    output.rules.push(rule(
        "established",
        None,
        vec![
            ct_state(&["established", "related"]),
            verdict_expr(Verdict::Accept),
        ],
    ));

    let mut chains = vec![input, forward, output];
    if !post.rules.is_empty() {
        chains.push(post);
    }
    Ok(Table { chains })
}

fn table_obj() -> Value {
    json!({"table": {"family": FAMILY, "name": TABLE}})
}

/// The start of every batch: make sure the table exists, then delete it
/// (nftables 1.0 has no "delete if it exists").
fn replace_prefix() -> Vec<Value> {
    vec![json!({"add": table_obj()}), json!({"delete": table_obj()})]
}

/// One `add` command of a batch, serialized straight from the table (a
/// `Value` of the whole batch first took most of an apply's time).
#[derive(Serialize)]
enum AddCmd<'a> {
    #[serde(rename = "add")]
    Add(AddObj<'a>),
}

#[derive(Serialize)]
enum AddObj<'a> {
    #[serde(rename = "chain")]
    Chain {
        family: &'a str,
        table: &'a str,
        name: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        hook: &'a str,
        prio: i64,
        policy: &'a str,
    },
    #[serde(rename = "rule")]
    Rule {
        family: &'a str,
        table: &'a str,
        chain: &'a str,
        comment: &'a str,
        expr: &'a [Value],
    },
}

/// The chains, then the rules, of `t` as `add` commands.
fn add_commands(t: &Table) -> impl Iterator<Item = AddCmd<'_>> {
    let chains = t.chains.iter().map(|c| {
        AddCmd::Add(AddObj::Chain {
            family: FAMILY,
            table: TABLE,
            name: &c.name,
            kind: &c.kind,
            hook: &c.hook,
            prio: c.prio,
            policy: &c.policy,
        })
    });
    let rules = t.chains.iter().flat_map(|c| {
        c.rules.iter().map(move |r| {
            AddCmd::Add(AddObj::Rule {
                family: FAMILY,
                table: TABLE,
                chain: &c.name,
                comment: &r.comment,
                expr: &r.expr,
            })
        })
    });
    chains.chain(rules)
}

/// The commands before the chains: replace the table by an empty one.
fn head_commands() -> Vec<Value> {
    let mut cmds = replace_prefix();
    cmds.push(json!({"add": table_obj()}));
    cmds
}

/// One batch that replaces the table with `t`: what `apply` loads and what
/// the boot unit loads (`nft -j -f`).
pub fn batch(t: &Table) -> Value {
    let mut cmds = head_commands();
    cmds.extend(add_commands(t).map(|c| serde_json::to_value(c).unwrap_or_default()));
    json!({ "nftables": cmds })
}

/// [`batch`] as text, one command per line: the boot file.
pub fn batch_text(t: &Table) -> String {
    let mut lines: Vec<String> = head_commands().iter().map(Value::to_string).collect();
    lines.extend(add_commands(t).map(|c| serde_json::to_string(&c).unwrap_or_default()));
    format!("{{\"nftables\": [\n{}\n]}}\n", lines.join(",\n"))
}

/// One batch that puts back the objects of a listing (`None`: the table
/// did not exist, so it is removed).
pub fn restore_batch(previous: Option<&[Value]>) -> Value {
    let mut cmds = replace_prefix();
    for obj in previous.unwrap_or_default() {
        let mut obj = obj.clone();
        if let Some(map) = obj.as_object_mut() {
            for (_, inner) in map.iter_mut() {
                if let Some(inner) = inner.as_object_mut() {
                    inner.remove("handle");
                }
            }
        }
        cmds.push(json!({ "add": obj }));
    }
    json!({ "nftables": cmds })
}

/// What a listing of the table holds, typed; objects that are neither
/// chains nor rules (sets, maps, counters someone added) are named in the
/// second value.
pub fn parse_listing(objects: &[Value]) -> (Table, Vec<String>) {
    let mut t = Table::default();
    let mut other = Vec::new();
    for o in objects {
        if let Some(c) = o.get("chain") {
            t.chains.push(Chain {
                name: str_of(c, "name"),
                kind: str_of(c, "type"),
                hook: str_of(c, "hook"),
                prio: c.get("prio").and_then(Value::as_i64).unwrap_or(0),
                policy: str_of(c, "policy"),
                rules: Vec::new(),
            });
        } else if let Some(r) = o.get("rule") {
            let chain = str_of(r, "chain");
            let rule = Rule {
                comment: str_of(r, "comment"),
                expr: r
                    .get("expr")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                handle: r.get("handle").and_then(Value::as_u64),
            };
            match t.chains.iter_mut().find(|c| c.name == chain) {
                Some(c) => c.rules.push(rule),
                None => other.push(format!("rule in unknown chain {chain}")),
            }
        } else if o.get("table").is_none() {
            let kind = o
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            let name = o.get(&kind).map(|v| str_of(v, "name")).unwrap_or_default();
            other.push(format!("{kind} {name}"));
        }
    }
    (t, other)
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// `v` with every set's elements in a fixed order.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, val) in map {
                let mut val = normalized(val);
                if k == "set" {
                    if let Value::Array(items) = &mut val {
                        items.sort_by_key(|a| a.to_string());
                    }
                }
                out.insert(k.clone(), val);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// The rule in nft's own words, for diff lines: `tcp dport 22 accept`.
pub fn describe(expr: &[Value]) -> String {
    let mut parts = Vec::new();
    for e in expr {
        if let Some(mt) = e.get("match") {
            parts.push(format!(
                "{} {}",
                describe_left(&mt["left"]),
                describe_right(&mt["right"])
            ));
        } else if let Some(map) = e.as_object() {
            for k in map.keys() {
                parts.push(k.clone());
            }
        }
    }
    parts.join(" ")
}

fn describe_left(l: &Value) -> String {
    if let Some(k) = l.pointer("/meta/key").and_then(Value::as_str) {
        return match k {
            "iif" | "oif" | "iifname" | "oifname" => k.to_string(),
            k => format!("meta {k}"),
        };
    }
    if let Some(k) = l.pointer("/ct/key").and_then(Value::as_str) {
        return format!("ct {k}");
    }
    if let Some(p) = l.get("payload") {
        return format!("{} {}", str_of(p, "protocol"), str_of(p, "field"));
    }
    l.to_string()
}

fn describe_right(r: &Value) -> String {
    match r {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => a.iter().map(describe_right).collect::<Vec<_>>().join(","),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!("{}/{}", str_of(p, "addr"), p["len"])
            } else if let Some(Value::Array(r)) = o.get("range") {
                format!("{}-{}", describe_right(&r[0]), describe_right(&r[1]))
            } else if let Some(Value::Array(s)) = o.get("set") {
                format!(
                    "{{ {} }}",
                    s.iter().map(describe_right).collect::<Vec<_>>().join(", ")
                )
            } else {
                r.to_string()
            }
        }
        other => other.to_string(),
    }
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod text_tests {
    #[test]
    fn batch_text_is_the_batch_one_command_per_line() {
        let st: crate::State = serde_json::from_value(serde_json::json!({"version": 1, "plugins": {"firewall": {
            "default_policy": {"input": "drop", "forward": "drop", "output": "accept"},
            "rules": [
                {"port": 22, "proto": "tcp", "action": "accept", "comment": "ssh \"admin\""},
                {"port": "1000-2000", "proto": "udp", "action": "reject", "source": ["10.0.0.0/24", "10.9.0.7"]},
                {"proto": "icmp", "action": "accept", "iface": "eth0"}
            ],
            "masquerade": [{"source": "10.0.0.0/24", "out_iface": "eth0"}]
        }}}))
        .unwrap();
        let t = super::desired_table(&st).unwrap().unwrap();
        let lines: Vec<String> = super::batch(&t)["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(serde_json::Value::to_string)
            .collect();
        assert_eq!(
            super::batch_text(&t),
            format!("{{\"nftables\": [\n{}\n]}}\n", lines.join(",\n"))
        );
    }
}
