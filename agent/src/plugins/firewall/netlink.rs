//! The table as one nf_tables netlink batch, sent from the agent's own
//! process: what `nft` would send for the same rules, without the process,
//! the JSON parse and the cache fetch that cost the plugin twice the time
//! of an `nft -f` (see the README's benchmark).
//!
//! [`encode`] turns the typed table (its rules are libnftables JSON
//! expressions, the form `nft -j list` prints) into the bytecode `nft`
//! emits for them (`nft --debug=netlink` shows it), so a listing of a table
//! loaded this way is the listing of the same table loaded through `nft -j
//! -f`; a privileged test compares the two for every rule shape the
//! rendering makes. An expression it does not know is [`Unsupported`], and
//! the plugin loads that table through `nft` instead. [`load`] sends the
//! batch (begin, add and delete the table, the table, chains, sets and
//! rules, end): the kernel checks and commits all of it or nothing, in the
//! sending thread's network namespace, before `sendmsg` returns.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use ipnet::IpNet;
use serde_json::Value;

use super::render::{self, Table};
use crate::engine::ActionError;

// linux/netfilter/nfnetlink.h and nf_tables.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;

const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_CMP_LTE: u32 = 3;
const NFT_CMP_GTE: u32 = 5;
const NFT_PAYLOAD_NETWORK: u32 = 1;
const NFT_PAYLOAD_TRANSPORT: u32 = 2;
const NFT_META_IIF: u32 = 4;
const NFT_META_OIF: u32 = 5;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_CT_STATE: u32 = 0;
const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
const NFT_REJECT_ICMPX_PORT_UNREACH: u8 = 1;
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const IFNAMSIZ: usize = 16;

/// nft's datatype numbers, kept in the set so `nft list` prints elements.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;

/// The user data `nft` 1.0 gives an anonymous set of each key (byte order,
/// auto-merge, the key's expression); `nft list` reads it back.
const UDATA_SET_IPADDR: &[u8] = &[
    0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x02, 0x04, 0x01, 0x00, 0x00, 0x00, 0x03, 0x14, 0x00, 0x04,
    0x07, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x04, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x04, 0x0b, 0x00,
    0x00, 0x00,
];
const UDATA_SET_IP6ADDR: &[u8] = &[
    0x00, 0x04, 0x02, 0x00, 0x00, 0x00, 0x02, 0x04, 0x01, 0x00, 0x00, 0x00, 0x03, 0x14, 0x00, 0x04,
    0x07, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x04, 0x08, 0x00,
    0x00, 0x00,
];
const UDATA_SET_L4PROTO: &[u8] = &[
    0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x03, 0x0e, 0x00, 0x04, 0x09, 0x00, 0x00, 0x00, 0x01, 0x06,
    0x00, 0x04, 0x10, 0x00, 0x00, 0x00,
];

/// An expression (or chain) this encoder does not make; the table goes
/// through `nft` instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not encoded natively: {0}")]
pub struct Unsupported(pub String);

fn unsupported<T>(what: impl std::fmt::Display) -> Result<T, Unsupported> {
    Err(Unsupported(what.to_string()))
}

/// The batch for one table: its messages and what each sequence number
/// carries (for the kernel's error).
#[derive(Debug, Clone)]
pub struct Batch {
    pub bytes: Vec<u8>,
    first_seq: u32,
    /// What message `first_seq + i` is, for errors.
    what: Vec<String>,
}

impl Batch {
    fn last_seq(&self) -> u32 {
        self.first_seq + self.what.len() as u32 - 1
    }

    fn describe(&self, seq: u32) -> &str {
        seq.checked_sub(self.first_seq)
            .and_then(|i| self.what.get(i as usize))
            .map_or("the batch", String::as_str)
    }

    /// How many messages (begin and end included).
    pub fn messages(&self) -> usize {
        self.what.len()
    }
}

/// An attribute buffer with nesting.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }
    fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }
    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(kind, &b)
    }
    fn nest(&mut self, kind: u16, inner: Attrs) -> &mut Self {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
    /// `NFTA_DATA_VALUE` inside `kind`.
    fn value(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let mut v = Attrs::default();
        v.put(1, data);
        self.nest(kind, v)
    }
}

fn attrs(f: impl FnOnce(&mut Attrs)) -> Attrs {
    let mut a = Attrs::default();
    f(&mut a);
    a
}

/// Builds the messages of one batch.
struct Builder {
    bytes: Vec<u8>,
    seq: u32,
    first_seq: u32,
    what: Vec<String>,
    set_id: u32,
    /// Where the last nf_tables command starts.
    last_cmd: usize,
}

impl Builder {
    fn new(first_seq: u32) -> Self {
        Builder {
            bytes: Vec::new(),
            seq: first_seq,
            first_seq,
            what: Vec::new(),
            set_id: 0,
            last_cmd: 0,
        }
    }

    fn msg(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, body: Attrs, what: String) {
        let len = 16 + 4 + body.0.len();
        self.bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        self.bytes.extend_from_slice(&self.seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.push(family);
        self.bytes.push(0);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        self.bytes.extend_from_slice(&body.0);
        self.seq += 1;
        self.what.push(what);
    }

    fn nft(&mut self, kind: u16, flags: u16, body: Attrs, what: String) {
        self.last_cmd = self.bytes.len();
        self.msg(
            (NFNL_SUBSYS_NFTABLES << 8) | kind,
            flags,
            NFPROTO_INET,
            0,
            body,
            what,
        );
    }
}

/// One expression: `name` and its attributes.
fn expr(name: &str, data: Attrs) -> Attrs {
    attrs(|a| {
        a.str(1, name);
        a.nest(2, data);
    })
}

fn meta_load(key: u32) -> Attrs {
    expr(
        "meta",
        attrs(|a| {
            a.u32(2, key).u32(1, NFT_REG_1);
        }),
    )
}

fn cmp(op: u32, data: &[u8]) -> Attrs {
    expr(
        "cmp",
        attrs(|a| {
            a.u32(1, NFT_REG_1).u32(2, op).value(3, data);
        }),
    )
}

fn payload_load(base: u32, offset: u32, len: u32) -> Attrs {
    expr(
        "payload",
        attrs(|a| {
            a.u32(1, NFT_REG_1).u32(2, base).u32(3, offset).u32(4, len);
        }),
    )
}

fn bitwise(mask: &[u8]) -> Attrs {
    expr(
        "bitwise",
        attrs(|a| {
            a.u32(1, NFT_REG_1)
                .u32(2, NFT_REG_1)
                .u32(3, mask.len() as u32)
                .value(4, mask)
                .value(5, &vec![0; mask.len()]);
        }),
    )
}

fn lookup(set_id: u32) -> Attrs {
    expr(
        "lookup",
        attrs(|a| {
            a.str(1, "__set%d").u32(2, NFT_REG_1).u32(4, set_id);
        }),
    )
}

fn verdict(code: i32) -> Attrs {
    expr(
        "immediate",
        attrs(|a| {
            a.u32(1, NFT_REG_VERDICT);
            let mut v = Attrs::default();
            v.u32(1, code as u32);
            let mut d = Attrs::default();
            d.nest(2, v);
            a.nest(2, d);
        }),
    )
}

/// An anonymous set a rule looks up, sent before the rule.
struct AnonSet {
    key_type: u32,
    key_len: u32,
    interval: bool,
    udata: &'static [u8],
    /// (key, interval end) in the order `nft` sends them.
    elements: Vec<(Vec<u8>, bool)>,
}

/// The expressions of one rule, and the sets they need.
#[derive(Default)]
struct RuleCode {
    exprs: Vec<Attrs>,
    sets: Vec<AnonSet>,
    /// The batch's number of the last set before this rule's.
    base_id: u32,
}

impl RuleCode {
    /// The batch id the next set of this rule gets.
    fn next_set_id(&self) -> u32 {
        self.base_id + self.sets.len() as u32 + 1
    }
}

fn proto_number(name: &str) -> Result<u8, Unsupported> {
    Ok(match name {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" => 58,
        "sctp" => 132,
        other => return unsupported(format!("protocol {other}")),
    })
}

fn ifname(v: &Value) -> Result<[u8; IFNAMSIZ], Unsupported> {
    let Some(s) = v.as_str() else {
        return unsupported(format!("interface {v}"));
    };
    if s.is_empty() || s.len() >= IFNAMSIZ || s.contains('*') || s.contains('\0') {
        return unsupported(format!("interface name {s:?}"));
    }
    let mut b = [0u8; IFNAMSIZ];
    b[..s.len()].copy_from_slice(s.as_bytes());
    Ok(b)
}

/// The ifindex of `name` in the calling thread's namespace (what `nft`
/// resolves `iif lo` to when it loads the rule).
fn ifindex(v: &Value) -> Result<u32, Unsupported> {
    let b = ifname(v)?;
    let name = &b[..b.iter().position(|c| *c == 0).unwrap_or(IFNAMSIZ)];
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) if i != 0 => Ok(i),
        _ => unsupported(format!("interface {v} does not exist")),
    }
}

fn ct_states(v: &Value) -> Result<u32, Unsupported> {
    let one = |s: &Value| -> Result<u32, Unsupported> {
        Ok(match s.as_str() {
            Some("invalid") => 1,
            Some("established") => 2,
            Some("related") => 4,
            Some("new") => 8,
            Some("untracked") => 64,
            _ => return unsupported(format!("ct state {s}")),
        })
    };
    match v {
        Value::Array(items) => items.iter().try_fold(0, |acc, s| Ok(acc | one(s)?)),
        s => one(s),
    }
}

/// An address, a `{"prefix": …}` or a plain address string, as a network.
fn net_of(v: &Value) -> Result<IpNet, Unsupported> {
    if let Some(s) = v.as_str() {
        return s
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| Unsupported(format!("address {s}")));
    }
    if let Some(p) = v.get("prefix") {
        let addr = p["addr"]
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .ok_or_else(|| Unsupported(format!("prefix {v}")))?;
        let len = p["len"]
            .as_u64()
            .and_then(|l| u8::try_from(l).ok())
            .ok_or_else(|| Unsupported(format!("prefix {v}")))?;
        return IpNet::new(addr, len).map_err(|_| Unsupported(format!("prefix {v}")));
    }
    unsupported(format!("address {v}"))
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The address one past the end of `n`, `None` past the top.
fn after(n: &IpNet) -> Option<Vec<u8>> {
    let mut b = addr_bytes(n.broadcast());
    for byte in b.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(b);
        }
    }
    None
}

/// `ip saddr`/`ip6 saddr` against one address, prefix or set of them.
fn saddr(code: &mut RuleCode, v6: bool, right: &Value) -> Result<(), Unsupported> {
    let (nfproto, offset, width) = if v6 {
        (NFPROTO_IPV6, 8, 16)
    } else {
        (NFPROTO_IPV4, 12, 4)
    };
    code.exprs.push(meta_load(NFT_META_NFPROTO));
    code.exprs.push(cmp(NFT_CMP_EQ, &[nfproto]));
    if let Some(items) = right.get("set").and_then(Value::as_array) {
        let mut nets = items.iter().map(net_of).collect::<Result<Vec<_>, _>>()?;
        if nets.iter().any(|n| n.addr().is_ipv6() != v6) || nets.is_empty() {
            return unsupported("a set of the other family");
        }
        nets.sort_by_key(|n| addr_bytes(n.network()));
        let mut elements = Vec::new();
        let zero = vec![0u8; width];
        if addr_bytes(nets[0].network()) != zero {
            elements.push((zero, true));
        }
        let mut prev_end: Option<Vec<u8>> = None;
        for n in &nets {
            let start = addr_bytes(n.network());
            if prev_end.as_ref().is_some_and(|e| start < *e) {
                return unsupported("overlapping set elements");
            }
            elements.push((start, false));
            let end = after(n);
            if let Some(e) = &end {
                elements.push((e.clone(), true));
            }
            prev_end = end.or(Some(vec![0xff; width + 1]));
        }
        code.exprs
            .push(payload_load(NFT_PAYLOAD_NETWORK, offset, width as u32));
        code.exprs.push(lookup(code.next_set_id()));
        code.sets.push(AnonSet {
            key_type: if v6 { TYPE_IP6ADDR } else { TYPE_IPADDR },
            key_len: width as u32,
            interval: true,
            udata: if v6 {
                UDATA_SET_IP6ADDR
            } else {
                UDATA_SET_IPADDR
            },
            elements,
        });
        return Ok(());
    }
    let n = net_of(right)?;
    if n.addr().is_ipv6() != v6 || n.prefix_len() == 0 {
        return unsupported(format!("address {right}"));
    }
    let bytes = addr_bytes(n.network());
    let len = usize::from(n.prefix_len());
    if len % 8 == 0 {
        code.exprs
            .push(payload_load(NFT_PAYLOAD_NETWORK, offset, (len / 8) as u32));
        code.exprs.push(cmp(NFT_CMP_EQ, &bytes[..len / 8]));
    } else {
        code.exprs
            .push(payload_load(NFT_PAYLOAD_NETWORK, offset, width as u32));
        code.exprs.push(bitwise(&addr_bytes(n.netmask())));
        code.exprs.push(cmp(NFT_CMP_EQ, &bytes));
    }
    Ok(())
}

/// A port, `{"range": [lo, hi]}`, compared with the loaded port.
fn port_cmp(code: &mut RuleCode, right: &Value) -> Result<(), Unsupported> {
    let port = |v: &Value| {
        v.as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| Unsupported(format!("port {v}")))
    };
    if let Some(r) = right.get("range").and_then(Value::as_array) {
        let [lo, hi] = r.as_slice() else {
            return unsupported(format!("range {right}"));
        };
        code.exprs.push(cmp(NFT_CMP_GTE, &port(lo)?.to_be_bytes()));
        code.exprs.push(cmp(NFT_CMP_LTE, &port(hi)?.to_be_bytes()));
    } else {
        code.exprs
            .push(cmp(NFT_CMP_EQ, &port(right)?.to_be_bytes()));
    }
    Ok(())
}

fn one_match(code: &mut RuleCode, m: &Value) -> Result<(), Unsupported> {
    let (op, left, right) = (m["op"].as_str().unwrap_or(""), &m["left"], &m["right"]);
    if let Some(meta) = left.get("meta") {
        if op != "==" {
            return unsupported(format!("meta {op}"));
        }
        match meta["key"].as_str().unwrap_or("") {
            k @ ("iif" | "oif") => {
                let i = ifindex(right)?;
                code.exprs.push(meta_load(if k == "iif" {
                    NFT_META_IIF
                } else {
                    NFT_META_OIF
                }));
                code.exprs.push(cmp(NFT_CMP_EQ, &i.to_ne_bytes()));
            }
            k @ ("iifname" | "oifname") => {
                let name = ifname(right)?;
                code.exprs.push(meta_load(if k == "iifname" {
                    NFT_META_IIFNAME
                } else {
                    NFT_META_OIFNAME
                }));
                code.exprs.push(cmp(NFT_CMP_EQ, &name));
            }
            "l4proto" => {
                code.exprs.push(meta_load(NFT_META_L4PROTO));
                if let Some(items) = right.get("set").and_then(Value::as_array) {
                    let mut protos = items
                        .iter()
                        .map(|p| proto_number(p.as_str().unwrap_or("?")))
                        .collect::<Result<Vec<_>, _>>()?;
                    protos.sort_unstable();
                    protos.dedup();
                    code.exprs.push(lookup(code.next_set_id()));
                    code.sets.push(AnonSet {
                        key_type: TYPE_INET_PROTOCOL,
                        key_len: 1,
                        interval: false,
                        udata: UDATA_SET_L4PROTO,
                        elements: protos.into_iter().map(|p| (vec![p], false)).collect(),
                    });
                } else {
                    let p = proto_number(right.as_str().unwrap_or("?"))?;
                    code.exprs.push(cmp(NFT_CMP_EQ, &[p]));
                }
            }
            k => return unsupported(format!("meta {k}")),
        }
        return Ok(());
    }
    if let Some(p) = left.get("payload") {
        if op != "==" {
            return unsupported(format!("payload {op}"));
        }
        match (
            p["protocol"].as_str().unwrap_or(""),
            p["field"].as_str().unwrap_or(""),
        ) {
            ("ip", "saddr") => saddr(code, false, right)?,
            ("ip6", "saddr") => saddr(code, true, right)?,
            (proto @ ("tcp" | "udp"), "dport") => {
                code.exprs.push(meta_load(NFT_META_L4PROTO));
                code.exprs.push(cmp(NFT_CMP_EQ, &[proto_number(proto)?]));
                code.exprs.push(payload_load(NFT_PAYLOAD_TRANSPORT, 2, 2));
                port_cmp(code, right)?;
            }
            ("th", "dport") => {
                code.exprs.push(payload_load(NFT_PAYLOAD_TRANSPORT, 2, 2));
                port_cmp(code, right)?;
            }
            (proto, field) => return unsupported(format!("{proto} {field}")),
        }
        return Ok(());
    }
    if left.get("ct").and_then(|c| c["key"].as_str()) == Some("state") && op == "in" {
        let mask = ct_states(right)?;
        code.exprs.push(expr(
            "ct",
            attrs(|a| {
                a.u32(2, NFT_CT_STATE).u32(1, NFT_REG_1);
            }),
        ));
        code.exprs.push(bitwise(&mask.to_ne_bytes()));
        code.exprs.push(cmp(NFT_CMP_NEQ, &0u32.to_ne_bytes()));
        return Ok(());
    }
    unsupported(format!("match {m}"))
}

fn rule_code(exprs: &[Value], base_id: u32) -> Result<RuleCode, Unsupported> {
    let mut code = RuleCode {
        base_id,
        ..RuleCode::default()
    };
    for e in exprs {
        let Some((k, v)) = e.as_object().and_then(|o| o.iter().next()) else {
            return unsupported(format!("expression {e}"));
        };
        match k.as_str() {
            "match" => one_match(&mut code, v)?,
            "accept" => code.exprs.push(verdict(1)),
            "drop" => code.exprs.push(verdict(0)),
            "reject" if v["type"] == "icmpx" && v["expr"] == "port-unreachable" => {
                code.exprs.push(expr(
                    "reject",
                    attrs(|a| {
                        a.u32(1, NFT_REJECT_ICMPX_UNREACH)
                            .put(2, &[NFT_REJECT_ICMPX_PORT_UNREACH]);
                    }),
                ))
            }
            "masquerade" if v.is_null() => code.exprs.push(expr("masq", Attrs::default())),
            _ => return unsupported(format!("expression {e}")),
        }
    }
    Ok(code)
}

fn hook_number(hook: &str) -> Result<u32, Unsupported> {
    Ok(match hook {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        "postrouting" => 4,
        h => return unsupported(format!("hook {h}")),
    })
}

/// The batch that replaces table `inet opdbus` with `t`: the same commands
/// as [`render::batch`], in the bytecode `nft` makes of them.
pub fn encode(t: &Table, first_seq: u32) -> Result<Batch, Unsupported> {
    let table = render::TABLE;
    let mut b = Builder::new(first_seq);
    b.msg(
        NFNL_MSG_BATCH_BEGIN,
        0,
        0,
        NFNL_SUBSYS_NFTABLES,
        Attrs::default(),
        "the batch".into(),
    );
    let table_attrs = || {
        attrs(|a| {
            a.str(1, table).u32(2, 0);
        })
    };
    let what = format!("table inet {table}");
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, table_attrs(), what.clone());
    b.nft(NFT_MSG_DELTABLE, 0, table_attrs(), what.clone());
    b.nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, table_attrs(), what);
    for c in &t.chains {
        if !matches!(c.kind.as_str(), "filter" | "nat") {
            return unsupported(format!("chain type {}", c.kind));
        }
        let hook = hook_number(&c.hook)?;
        let policy: u32 = match c.policy.as_str() {
            "accept" => 1,
            "drop" => 0,
            p => return unsupported(format!("policy {p}")),
        };
        let prio = i32::try_from(c.prio).map_err(|_| Unsupported("priority".into()))?;
        let body = attrs(|a| {
            a.str(1, table)
                .str(3, &c.name)
                .str(7, &c.kind)
                .u32(5, policy);
            let mut h = Attrs::default();
            h.u32(1, hook).u32(2, prio as u32);
            a.nest(4, h);
        });
        b.nft(
            NFT_MSG_NEWCHAIN,
            NLM_F_CREATE,
            body,
            format!("chain {}", c.name),
        );
    }
    for c in &t.chains {
        for r in &c.rules {
            let code = rule_code(&r.expr, b.set_id)?;
            let what = format!("rule {:?} in chain {}", r.comment, c.name);
            for s in &code.sets {
                b.set_id += 1;
                let flags = NFT_SET_ANONYMOUS
                    | NFT_SET_CONSTANT
                    | if s.interval { NFT_SET_INTERVAL } else { 0 };
                let body = attrs(|a| {
                    a.str(1, table)
                        .str(2, "__set%d")
                        .u32(3, flags)
                        .u32(4, s.key_type)
                        .u32(5, s.key_len)
                        .u32(10, b.set_id);
                    let mut d = Attrs::default();
                    d.u32(1, s.elements.len() as u32);
                    a.nest(9, d).put(13, s.udata);
                });
                b.nft(
                    NFT_MSG_NEWSET,
                    NLM_F_CREATE,
                    body,
                    format!("a set of {what}"),
                );
                let mut list = Attrs::default();
                for (key, end) in &s.elements {
                    let mut el = Attrs::default();
                    if *end {
                        el.u32(3, NFT_SET_ELEM_INTERVAL_END);
                    }
                    el.value(1, key);
                    list.nest(1, el);
                }
                let body = attrs(|a| {
                    a.str(1, table)
                        .str(2, "__set%d")
                        .u32(4, b.set_id)
                        .nest(3, list);
                });
                b.nft(
                    NFT_MSG_NEWSETELEM,
                    NLM_F_CREATE,
                    body,
                    format!("the set elements of {what}"),
                );
            }
            let mut list = Attrs::default();
            for e in code.exprs {
                list.nest(1, e);
            }
            let mut udata = vec![0u8, 0];
            let comment = r.comment.as_bytes();
            if comment.len() + 1 > 255 || comment.contains(&0) {
                return unsupported("a comment of 255 bytes or more");
            }
            udata[1] = (comment.len() + 1) as u8;
            udata.extend_from_slice(comment);
            udata.push(0);
            let body = attrs(|a| {
                a.str(1, table).str(2, &c.name).nest(4, list).put(7, &udata);
            });
            b.nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, body, what);
        }
    }
    // The one acknowledgement asked for, on the last command: the kernel
    // answers it (0 or its error) whether the batch commits or aborts, so
    // its answer ends the wait.
    let at = b.last_cmd + 6;
    let flags = u16::from_ne_bytes([b.bytes[at], b.bytes[at + 1]]) | NLM_F_ACK;
    b.bytes[at..at + 2].copy_from_slice(&flags.to_ne_bytes());
    b.msg(
        NFNL_MSG_BATCH_END,
        0,
        0,
        NFNL_SUBSYS_NFTABLES,
        Attrs::default(),
        "the end of the batch".into(),
    );
    Ok(Batch {
        bytes: b.bytes,
        first_seq: b.first_seq,
        what: b.what,
    })
}

/// A refusal by the kernel, with what was refused.
fn refused(batch: &Batch, seq: u32, errno: i32, ext: Option<String>) -> ActionError {
    // strerror's words, without std's " (os error N)".
    let err = std::io::Error::from_raw_os_error(errno).to_string();
    let err = err.split(" (os error").next().unwrap_or(&err);
    let what = batch.describe(seq);
    let detail = ext.map(|m| format!(" ({m})")).unwrap_or_default();
    let msg = format!(
        "nftables refused the rule set at {what}: {err}{detail}; the transaction was not committed and the previous rules stay"
    );
    match errno {
        libc::EAGAIN | libc::EBUSY | libc::EINTR => ActionError::retryable(anyhow::anyhow!(msg)),
        libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT if seq == batch.first_seq => {
            ActionError::fatal(anyhow::anyhow!(
                "this kernel has no nftables support ({err}); load the nf_tables module (modprobe nf_tables) or use a kernel with CONFIG_NF_TABLES"
            ))
        }
        _ => ActionError::fatal(anyhow::anyhow!(msg)),
    }
}

fn sys(what: &str, e: nix::Error) -> ActionError {
    let hint = if e == nix::Error::EPROTONOSUPPORT {
        "; this kernel has no nfnetlink: load the nf_tables module (modprobe nf_tables)"
    } else {
        ""
    };
    ActionError::fatal(anyhow::anyhow!("{what}: {e}{hint}"))
}

/// `setsockopt(SOL_NETLINK, opt, 1)` for the two flags nix has no name for.
#[allow(unsafe_code)]
fn netlink_flag(sock: &OwnedFd, opt: libc::c_int) -> bool {
    let one: libc::c_int = 1;
    // SAFETY: an int option, passed by pointer and size, on a socket that
    // `sock` keeps open for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_NETLINK,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Sends `batch` to nf_tables in the calling thread's network namespace and
/// waits for its answer: Ok when the kernel committed it, otherwise the
/// first refusal (nothing committed). The kernel runs the batch inside the
/// `sendto`; the answer is then already queued.
pub fn load(batch: &Batch) -> Result<(), ActionError> {
    use nix::sys::socket::{
        recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
        SockProtocol, SockType,
    };
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(|e| sys("opening a netfilter netlink socket", e))?;
    let want = batch.bytes.len() + 4096;
    if setsockopt(&sock, sockopt::SndBufForce, &want).is_err() {
        let _ = setsockopt(&sock, sockopt::SndBuf, &want);
    }
    // Short acknowledgements, with the kernel's message on an error.
    let capped = netlink_flag(&sock, NETLINK_CAP_ACK);
    netlink_flag(&sock, NETLINK_EXT_ACK);
    let _ = setsockopt(
        &sock,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(10, 0),
    );
    sendto(
        sock.as_raw_fd(),
        &batch.bytes,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|e| sys("sending the nftables batch", e))?;
    let ack_seq = batch.last_seq() - 1;
    let mut first_error: Option<ActionError> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                return Err(ActionError::retryable(anyhow::anyhow!(
                    "waiting for nftables to answer the batch: {e}"
                )))
            }
        };
        let mut done = false;
        for msg in messages(&buf[..n]) {
            let kind = u16::from_ne_bytes([msg[4], msg[5]]);
            let seq = u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]]);
            if kind != NLMSG_ERROR || msg.len() < 20 {
                continue;
            }
            let errno = -i32::from_ne_bytes([msg[16], msg[17], msg[18], msg[19]]);
            if errno != 0 && first_error.is_none() {
                first_error = Some(refused(batch, seq, errno, ext_ack_msg(msg, capped)));
            }
            if seq == ack_seq || (errno != 0 && seq == batch.first_seq) {
                done = true;
            }
        }
        if done {
            break;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The netlink messages in one datagram.
fn messages(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 16 > data.len() {
            return None;
        }
        let len =
            u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]) as usize;
        if len < 16 || off + len > data.len() {
            return None;
        }
        let msg = &data[off..off + len];
        off += len.next_multiple_of(4);
        Some(msg)
    })
}

/// The extended ack's message (`NLMSGERR_ATTR_MSG`) of one error message:
/// after the header and the error, the request's header (`capped`) or the
/// whole request.
fn ext_ack_msg(msg: &[u8], capped: bool) -> Option<String> {
    let request_len = if capped {
        16
    } else {
        msg.get(20..24)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)?
    };
    let mut p = (16 + 4 + request_len).next_multiple_of(4);
    while p + 4 <= msg.len() {
        let l = u16::from_ne_bytes([msg[p], msg[p + 1]]) as usize;
        let t = u16::from_ne_bytes([msg[p + 2], msg[p + 3]]);
        if l < 4 || p + l > msg.len() {
            break;
        }
        if t == NLMSGERR_ATTR_MSG {
            let s = &msg[p + 4..p + l];
            let s = s.split(|b| *b == 0).next().unwrap_or(s);
            return Some(String::from_utf8_lossy(s).into_owned());
        }
        p += l.next_multiple_of(4);
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(rules: Vec<Value>) -> Table {
        Table {
            chains: vec![render::Chain {
                name: "input".into(),
                kind: "filter".into(),
                hook: "input".into(),
                prio: 0,
                policy: "drop".into(),
                rules: rules
                    .into_iter()
                    .enumerate()
                    .map(|(i, e)| render::Rule {
                        comment: format!("opdbus:rule-{i}"),
                        expr: e.as_array().unwrap().clone(),
                        handle: None,
                    })
                    .collect(),
            }],
        }
    }

    /// The messages of a batch: (type, flags, seq).
    fn headers(b: &Batch) -> Vec<(u16, u16, u32)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < b.bytes.len() {
            let len = u32::from_ne_bytes(b.bytes[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([b.bytes[off + 4], b.bytes[off + 5]]);
            let flags = u16::from_ne_bytes([b.bytes[off + 6], b.bytes[off + 7]]);
            let seq = u32::from_ne_bytes(b.bytes[off + 8..off + 12].try_into().unwrap());
            out.push((kind, flags, seq));
            off += len;
        }
        out
    }

    #[test]
    fn a_batch_is_begin_table_chains_sets_rules_end_with_one_ack() {
        let t = table(vec![
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"accept": null}]),
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"set": ["10.0.0.1", {"prefix": {"addr": "10.1.0.0", "len": 16}}]}}}, {"drop": null}]),
        ]);
        let b = encode(&t, 100).unwrap();
        let h = headers(&b);
        let kinds: Vec<u16> = h.iter().map(|(k, _, _)| *k).collect();
        let nft = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
        assert_eq!(
            kinds,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_DELTABLE),
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_NEWCHAIN),
                nft(NFT_MSG_NEWRULE),
                nft(NFT_MSG_NEWSET),
                nft(NFT_MSG_NEWSETELEM),
                nft(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END,
            ]
        );
        let seqs: Vec<u32> = h.iter().map(|(_, _, s)| *s).collect();
        assert_eq!(seqs, (100..110).collect::<Vec<_>>());
        let acked: Vec<u32> = h
            .iter()
            .filter(|(_, f, _)| f & NLM_F_ACK != 0)
            .map(|(_, _, s)| *s)
            .collect();
        assert_eq!(acked, vec![108], "only the last command is acknowledged");
        assert_eq!(b.describe(108), "rule \"opdbus:rule-1\" in chain input");
        assert_eq!(b.messages(), 10);
    }

    #[test]
    fn interval_sets_start_with_an_end_at_zero_and_close_every_range() {
        let mut code = RuleCode::default();
        saddr(
            &mut code,
            false,
            &json!({"set": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "192.168.1.7"]}),
        )
        .unwrap();
        let els = &code.sets[0].elements;
        assert_eq!(
            els,
            &vec![
                (vec![0, 0, 0, 0], true),
                (vec![10, 0, 0, 0], false),
                (vec![10, 0, 1, 0], true),
                (vec![192, 168, 1, 7], false),
                (vec![192, 168, 1, 8], true),
            ]
        );
        // The top of the space has no end element.
        let mut code = RuleCode::default();
        saddr(
            &mut code,
            false,
            &json!({"set": ["0.0.0.0", "255.255.255.255"]}),
        )
        .unwrap();
        assert_eq!(
            code.sets[0].elements,
            vec![
                (vec![0, 0, 0, 0], false),
                (vec![0, 0, 0, 1], true),
                (vec![255, 255, 255, 255], false),
            ]
        );
    }

    #[test]
    fn what_it_does_not_know_goes_through_nft() {
        for e in [
            json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth*"}}, {"accept": null}]),
            json!([{"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"accept": null}]),
            json!([{"counter": null}, {"accept": null}]),
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "0.0.0.0", "len": 0}}}}, {"accept": null}]),
        ] {
            assert!(encode(&table(vec![e.clone()]), 1).is_err(), "{e}");
        }
    }

    #[test]
    fn every_rule_of_the_rendering_is_encoded() {
        // The seeds' complete server, and every rule form of the model.
        let state: opdbus_state::State = serde_json::from_value(json!({
            "version": 1,
            "plugins": {"firewall": {
                "default_policy": {"input": "drop", "forward": "drop", "output": "accept"},
                "rules": [
                    {"port": 22, "proto": "tcp", "action": "accept"},
                    {"port": "1000-2000", "proto": "udp", "action": "reject", "source": "10.0.16.0/20"},
                    {"port": 8006, "action": "accept", "source": ["10.0.0.0/24", "10.9.0.7"], "iface": "eth0"},
                    {"proto": "icmp", "action": "accept", "source": "fd00::/64"},
                    {"proto": "tcp", "action": "drop"},
                    {"action": "drop", "source": ["fd00:1::/48", "fd02::1"]}
                ],
                "masquerade": [{"source": "10.0.0.0/24", "out_iface": "eth0"}]
            }}
        }))
        .unwrap();
        let t = render::desired_table(&state).unwrap().unwrap();
        let b = encode(&t, 1).unwrap();
        assert!(b.messages() > t.rule_count());
    }
}
