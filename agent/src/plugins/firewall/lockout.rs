//! The SSH lock-out guard: an operator's `apply` run over SSH that turns
//! the input policy to drop, or stops accepting a new connection to the
//! port the session came in on, is kept only when `op-dbus-agent confirm`
//! runs in time (from a new login: the proof that one still gets in).
//! Detecting the session and deciding are here; `cli::apply` acts on them.

use std::net::IpAddr;
use std::path::Path;

use serde_json::Value;

use super::render::{Chain, Table};

/// How long an implied confirmation window lasts.
pub const IMPLIED_CONFIRM_SECS: u64 = 120;

/// An SSH session the agent runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSession {
    /// The client's address (from `SSH_CONNECTION` or `SSH_CLIENT`).
    pub client: Option<IpAddr>,
    /// The port sshd accepted the session on, when known.
    pub port: Option<u16>,
    /// What gave it away, for the operator's message.
    pub evidence: String,
}

/// The session this process runs in: `SSH_CONNECTION` (`client cport
/// server sport`) or `SSH_CLIENT` (`client cport sport`) in the
/// environment, or else an `sshd` (or `sshd-session`) process among the
/// ancestors (`sudo` clears the environment; the ancestry stays). `env`
/// reads a variable, `ancestors` are (pid, command name) from the parent up.
pub fn detect(
    env: &dyn Fn(&str) -> Option<String>,
    ancestors: &[(u32, String)],
) -> Option<SshSession> {
    if let Some(v) = env("SSH_CONNECTION").filter(|v| !v.trim().is_empty()) {
        let f: Vec<&str> = v.split_whitespace().collect();
        return Some(SshSession {
            client: f.first().and_then(|a| a.parse().ok()),
            port: f.get(3).and_then(|p| p.parse().ok()),
            evidence: format!("SSH_CONNECTION={v:?} in the environment"),
        });
    }
    if let Some(v) = env("SSH_CLIENT").filter(|v| !v.trim().is_empty()) {
        let f: Vec<&str> = v.split_whitespace().collect();
        return Some(SshSession {
            client: f.first().and_then(|a| a.parse().ok()),
            port: f.get(2).and_then(|p| p.parse().ok()),
            evidence: format!("SSH_CLIENT={v:?} in the environment"),
        });
    }
    ancestors
        .iter()
        .find(|(_, comm)| comm == "sshd" || comm.starts_with("sshd-"))
        .map(|(pid, comm)| SshSession {
            client: None,
            port: None,
            evidence: format!("process {pid} ({comm}) is an ancestor of this one"),
        })
}

/// [`detect`] for this process: its environment and `/proc`.
pub fn detect_here() -> Option<SshSession> {
    let env = |k: &str| std::env::var(k).ok();
    detect(&env, &ancestors(Path::new("/proc"), std::process::id()))
}

/// (pid, comm) of `pid`'s parent, its parent and so on up to pid 1, read
/// from `proc` (at most 64 levels).
pub fn ancestors(proc: &Path, pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut pid = pid;
    for _ in 0..64 {
        let Some(ppid) = std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
            .ok()
            .and_then(|s| parent_of(&s))
        else {
            break;
        };
        if ppid == 0 {
            break;
        }
        let comm = std::fs::read_to_string(proc.join(ppid.to_string()).join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push((ppid, comm));
        if ppid == 1 {
            break;
        }
        pid = ppid;
    }
    out
}

/// The parent pid in a `/proc/PID/stat` line (`pid (comm) state ppid ...`;
/// comm may hold spaces and parentheses).
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// What the input chain does with a new TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Accepted,
    Refused,
    /// A rule that decides depends on what is unknown here (the input
    /// interface, the client's address).
    Unsure,
}

impl Fate {
    fn word(self) -> &'static str {
        match self {
            Fate::Accepted => "accepted",
            Fate::Refused => "refused",
            Fate::Unsure => "perhaps refused",
        }
    }
}

/// Does one match of a rule hold for the connection?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    Yes,
    No,
    Maybe,
}

/// A new TCP connection (ct state new) from `client` (when known) to `port`
/// on the input chain of `table` (no table or no input chain: accepted).
/// First matching rule decides, as in the kernel.
pub fn new_connection(table: Option<&Table>, client: Option<IpAddr>, port: u16) -> Fate {
    let Some(input) = table.and_then(|t| t.chains.iter().find(|c| c.hook == "input")) else {
        return Fate::Accepted;
    };
    fate_in(input, client, port)
}

fn fate_in(chain: &Chain, client: Option<IpAddr>, port: u16) -> Fate {
    for r in &chain.rules {
        let verdict = r.expr.iter().rev().find_map(|e| {
            let o = e.as_object()?;
            [
                "accept", "drop", "reject", "jump", "goto", "return", "queue",
            ]
            .into_iter()
            .find(|k| o.contains_key(*k))
        });
        let Some(verdict) = verdict else {
            continue;
        };
        let mut holds = Holds::Yes;
        for e in &r.expr {
            match match_holds(e, client, port) {
                Holds::No => {
                    holds = Holds::No;
                    break;
                }
                Holds::Maybe => holds = Holds::Maybe,
                Holds::Yes => {}
            }
        }
        let decided = match verdict {
            "accept" => Fate::Accepted,
            "drop" | "reject" => Fate::Refused,
            _ => Fate::Unsure,
        };
        match holds {
            Holds::No => continue,
            Holds::Yes => return decided,
            Holds::Maybe => return Fate::Unsure,
        }
    }
    if chain.policy == "accept" {
        Fate::Accepted
    } else {
        Fate::Refused
    }
}

/// One expression of a rule against the connection; non-matches (verdicts,
/// counters, comments) hold.
fn match_holds(e: &Value, client: Option<IpAddr>, port: u16) -> Holds {
    let Some(m) = e.get("match") else {
        return Holds::Yes;
    };
    let (left, right) = (&m["left"], &m["right"]);
    let negated = m["op"].as_str() == Some("!=");
    let h = if let Some(key) = left.pointer("/meta/key").and_then(Value::as_str) {
        match key {
            "l4proto" => contains(right, &|v| v.as_str() == Some("tcp")),
            "iif" | "iifname" => match client {
                Some(c) if c.is_loopback() => contains(right, &|v| v.as_str() == Some("lo")),
                _ if contains(right, &|v| v.as_str() == Some("lo")) == Holds::Yes => Holds::No,
                _ => Holds::Maybe,
            },
            "nfproto" => Holds::Maybe,
            _ => Holds::Maybe,
        }
    } else if left.pointer("/ct/key").and_then(Value::as_str) == Some("state") {
        contains(right, &|v| v.as_str() == Some("new"))
    } else if let Some(p) = left.get("payload") {
        let proto = p["protocol"].as_str().unwrap_or("");
        match (proto, p["field"].as_str().unwrap_or("")) {
            ("tcp" | "th", "dport") => contains(right, &|v| port_in(v, port)),
            ("udp" | "icmp" | "icmpv6" | "sctp", _) => Holds::No,
            ("ip" | "ip6", "saddr") => match client {
                None => Holds::Maybe,
                Some(c) if (proto == "ip") != c.is_ipv4() => Holds::No,
                Some(c) => contains(right, &|v| addr_in(v, c)),
            },
            _ => Holds::Maybe,
        }
    } else {
        Holds::Maybe
    };
    match (h, negated) {
        (Holds::Yes, true) => Holds::No,
        (Holds::No, true) => Holds::Yes,
        (h, _) => h,
    }
}

/// `right` is one value or a set (`{"set": [...]}` or a plain list); `hit`
/// tests one element.
fn contains(right: &Value, hit: &dyn Fn(&Value) -> bool) -> Holds {
    let items: Vec<&Value> = match right {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("set") => o["set"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        v => vec![v],
    };
    if items.iter().any(|v| hit(v)) {
        Holds::Yes
    } else {
        Holds::No
    }
}

fn port_in(v: &Value, port: u16) -> bool {
    if let Some(p) = v.as_u64() {
        return p == u64::from(port);
    }
    match v.get("range").and_then(Value::as_array) {
        Some(r) if r.len() == 2 => {
            let (lo, hi) = (r[0].as_u64(), r[1].as_u64());
            matches!((lo, hi), (Some(lo), Some(hi)) if lo <= u64::from(port) && u64::from(port) <= hi)
        }
        _ => false,
    }
}

fn addr_in(v: &Value, c: IpAddr) -> bool {
    if let Some(s) = v.as_str() {
        return s.parse::<IpAddr>().is_ok_and(|a| a == c);
    }
    let Some(p) = v.get("prefix") else {
        return false;
    };
    let net = format!(
        "{}/{}",
        p["addr"].as_str().unwrap_or(""),
        p["len"].as_u64().unwrap_or(0)
    );
    net.parse::<ipnet::IpNet>().is_ok_and(|n| n.contains(&c))
}

/// Why a change from `current` to `desired` may cut the operator off, with
/// `port` the port sshd listens on (the session's own when known): empty
/// when it cannot.
pub fn risks(
    current: Option<&Table>,
    desired: &Table,
    session: &SshSession,
    port: u16,
) -> Vec<String> {
    let mut out = Vec::new();
    let policy = |t: Option<&Table>| {
        t.and_then(|t| t.chains.iter().find(|c| c.hook == "input"))
            .map(|c| c.policy.clone())
            .unwrap_or_else(|| "accept".to_string())
    };
    let (before, after) = (policy(current), policy(Some(desired)));
    if before != after && after != "accept" {
        out.push(format!("the input policy changes from {before} to {after}"));
    }
    let port = session.port.unwrap_or(port);
    let now = new_connection(current, session.client, port);
    let then = new_connection(Some(desired), session.client, port);
    if then != Fate::Accepted && then != now {
        let from = session
            .client
            .map(|c| format!(" from {c}"))
            .unwrap_or_default();
        out.push(format!(
            "a new connection{from} to port {port}/tcp (sshd) is {} now and would be {}",
            now.word(),
            then.word()
        ));
    }
    out
}

/// Why applying `state` from `session` may cut it off, judged against the
/// live table `nft` lists; empty when the state has no firewall or the
/// change keeps sshd reachable. A table that cannot be read counts as a
/// risk (the apply will say why it fails).
pub async fn check(
    nft: &super::Nft,
    state: &opdbus_state::State,
    session: &SshSession,
) -> Vec<String> {
    let desired = match super::render::desired_table(state) {
        Ok(Some(t)) => t,
        // No firewall section: the plugin leaves the table alone. A state
        // that does not render fails in the plugin with its pointer.
        Ok(None) | Err(_) => return Vec::new(),
    };
    let port = state
        .plugins
        .firewall
        .as_ref()
        .and_then(|f| f.ssh_port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or(22);
    match nft
        .list_table(super::render::FAMILY, super::render::TABLE)
        .await
    {
        Ok(listing) => {
            let current = listing.map(|objs| super::render::parse_listing(&objs).0);
            risks(current.as_ref(), &desired, session, port)
        }
        Err(e) => vec![format!(
            "the current table inet opdbus cannot be read ({e:#})"
        )],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use opdbus_state::model::Firewall;

    fn table(fw: serde_json::Value, floor: &[(u16, &str)]) -> Table {
        let fw: Firewall = serde_json::from_value(fw).unwrap();
        super::super::render::table(&fw, floor).unwrap()
    }

    fn session(conn: &str) -> SshSession {
        let env = |k: &str| (k == "SSH_CONNECTION").then(|| conn.to_string());
        detect(&env, &[]).unwrap()
    }

    #[test]
    fn the_session_is_found_in_the_environment_or_the_ancestry() {
        let s = session("192.0.2.9 50022 192.0.2.1 2222");
        assert_eq!(s.client, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(s.port, Some(2222));
        let env = |k: &str| (k == "SSH_CLIENT").then(|| "2001:db8::9 50022 22".to_string());
        let s = detect(&env, &[]).unwrap();
        assert_eq!(s.client, Some("2001:db8::9".parse().unwrap()));
        assert_eq!(s.port, Some(22));
        // sudo cleared the environment: sshd is still an ancestor.
        let none = |_: &str| None;
        let chain = [
            (900, "sudo".to_string()),
            (800, "bash".to_string()),
            (700, "sshd".to_string()),
            (1, "systemd".to_string()),
        ];
        let s = detect(&none, &chain).unwrap();
        assert_eq!((s.client, s.port), (None, None));
        assert!(s.evidence.contains("700 (sshd)"), "{}", s.evidence);
        let newer = [(700, "sshd-session".to_string())];
        assert!(detect(&none, &newer).is_some());
        // A console or the resident agent (systemd's child): no session.
        let console = [(800, "bash".to_string()), (1, "systemd".to_string())];
        assert_eq!(detect(&none, &console), None);
        let empty = |_: &str| Some(String::new());
        assert_eq!(detect(&empty, &console), None);
    }

    #[test]
    fn the_ancestry_is_read_from_proc() {
        let me = ancestors(Path::new("/proc"), std::process::id());
        assert!(!me.is_empty(), "a test process has a parent");
        assert_eq!(me[0].0, std::os::unix::process::parent_id());
        assert_eq!(parent_of("42 (a (b) c) S 7 42 42"), Some(7));
    }

    #[test]
    fn a_first_apply_that_drops_input_needs_a_confirmation_even_with_the_floor() {
        let s = session("192.0.2.9 50022 192.0.2.1 22");
        let t = table(
            serde_json::json!({"default_policy": {"input": "drop"}}),
            &[(22, "ssh")],
        );
        assert_eq!(new_connection(Some(&t), s.client, 22), Fate::Accepted);
        assert_eq!(
            risks(None, &t, &s, 22),
            ["the input policy changes from accept to drop"]
        );
        // Re-applying the same table over SSH: nothing to confirm.
        assert!(risks(Some(&t), &t, &s, 22).is_empty());
    }

    #[test]
    fn removing_what_accepts_sshds_port_needs_a_confirmation() {
        let s = session("192.0.2.9 50022 192.0.2.1 22");
        let drop = serde_json::json!({"input": "drop"});
        let with = table(
            serde_json::json!({"default_policy": drop,
                "rules": [{"port": 22, "proto": "tcp", "action": "accept"}]}),
            &[],
        );
        let without = table(
            serde_json::json!({"default_policy": drop,
                "rules": [{"port": 8006, "proto": "tcp", "action": "accept"}]}),
            &[],
        );
        assert_eq!(new_connection(Some(&without), s.client, 22), Fate::Refused);
        assert_eq!(
            risks(Some(&with), &without, &s, 22),
            ["a new connection from 192.0.2.9 to port 22/tcp (sshd) is accepted now and would be refused"]
        );
        // The other way round opens the port: no risk.
        assert!(risks(Some(&without), &with, &s, 22).is_empty());
        // The session's own port counts, not the state's.
        let s2222 = session("192.0.2.9 50022 192.0.2.1 2222");
        assert!(risks(Some(&with), &without, &s2222, 22).is_empty());
    }

    #[test]
    fn sources_ranges_and_interfaces_are_judged_for_the_client() {
        let drop = serde_json::json!({"input": "drop"});
        let from = |src: serde_json::Value| {
            table(
                serde_json::json!({"default_policy": drop, "rules": [
                    {"port": "20-30", "action": "accept", "source": src}]}),
                &[],
            )
        };
        let lan = from(serde_json::json!(["10.0.0.0/8", "192.0.2.0/24"]));
        let other = from(serde_json::json!("10.0.0.0/8"));
        let inside = session("192.0.2.9 50022 192.0.2.1 22");
        assert_eq!(
            new_connection(Some(&lan), inside.client, 22),
            Fate::Accepted
        );
        assert_eq!(
            new_connection(Some(&other), inside.client, 22),
            Fate::Refused
        );
        assert_eq!(
            risks(Some(&lan), &other, &inside, 22),
            ["a new connection from 192.0.2.9 to port 22/tcp (sshd) is accepted now and would be refused"]
        );
        // Client unknown (found through the ancestry): a source rule is uncertain.
        let none = |_: &str| None;
        let blind = detect(&none, &[(7, "sshd".to_string())]).unwrap();
        assert_eq!(new_connection(Some(&other), None, 22), Fate::Unsure);
        assert_eq!(risks(Some(&lan), &other, &blind, 22), Vec::<String>::new());
        assert_eq!(
            risks(None, &other, &blind, 22),
            [
                "the input policy changes from accept to drop",
                "a new connection to port 22/tcp (sshd) is accepted now and would be perhaps refused"
            ]
        );
        // An interface the agent cannot tie to the session is uncertain too;
        // a drop rule for the port before the accept refuses.
        let iface = table(
            serde_json::json!({"default_policy": drop, "rules": [
                {"port": 22, "proto": "tcp", "action": "accept", "iface": "eth0"}]}),
            &[],
        );
        assert_eq!(
            new_connection(Some(&iface), inside.client, 22),
            Fate::Unsure
        );
        let shadowed = table(
            serde_json::json!({"default_policy": drop, "rules": [
                {"port": 22, "proto": "tcp", "action": "reject"},
                {"port": 22, "proto": "tcp", "action": "accept"}]}),
            &[],
        );
        assert_eq!(
            new_connection(Some(&shadowed), inside.client, 22),
            Fate::Refused
        );
        // udp and icmp rules do not concern sshd.
        let udp = table(
            serde_json::json!({"default_policy": {"input": "accept"}, "rules": [
                {"port": 22, "proto": "udp", "action": "drop"},
                {"proto": "icmp", "action": "drop"}]}),
            &[],
        );
        assert_eq!(
            new_connection(Some(&udp), inside.client, 22),
            Fate::Accepted
        );
    }
}
