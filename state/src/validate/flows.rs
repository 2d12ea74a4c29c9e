//! OpenFlow tables on ovs-bridge entries: each flow is one `ovs-ofctl` flow
//! (`match,...,actions=...`) without a cookie (the agent sets its own) and
//! listed once. What OVS itself rejects is reported at apply, by pointer.

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
    if f.split([' ', ',']).any(|t| t.trim_start().starts_with("cookie=")) {
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

pub(super) fn check(cx: &mut Cx, state: &State) {
    let mut lists: Vec<(Vec<String>, &Vec<String>)> = Vec::new();
    if let Some(net) = &state.plugins.network {
        for (name, i) in &net.interfaces {
            lists.push((
                vec!["plugins".into(), "network".into(), "interfaces".into(), name.clone()],
                &i.flows,
            ));
        }
    }
    if let Some(net) = &state.plugins.net {
        for (n, i) in net.interfaces.iter().enumerate() {
            lists.push((
                vec!["plugins".into(), "net".into(), "interfaces".into(), n.to_string()],
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
