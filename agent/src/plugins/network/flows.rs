//! flows plugin: the OpenFlow table of each ovs-bridge entry that lists
//! `flows`. The agent's flows carry a cookie in its range ([`TAG`] under
//! [`MASK`]; the low 48 bits are a hash of the flow's text, so the table
//! read back tells which flows are there); flows of anyone else are never
//! touched. Apply replaces the agent's flows of a bridge in one OpenFlow
//! bundle (`ovs-ofctl --bundle`: all or nothing). Ephemeral: a restarted
//! ovs-vswitchd forgets flows, which shows as drift and is repaired.

use std::fmt;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{ActionError, ActionResult, Context, Persistence, Plugin, PluginAction};
use opdbus_common::Task;
use opdbus_state::model::{InterfaceType, Paths};
use opdbus_state::State;

pub const PLUGIN: &str = "flows";
/// The agent's cookies: "op" in the top 16 bits.
pub const TAG: u64 = 0x6f70 << 48;
pub const MASK: u64 = 0xffff << 48;

/// One flow as the state names it, with the cookie the agent gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowWant {
    pub cookie: u64,
    /// Whitespace collapsed.
    pub text: String,
    /// JSON pointer of the flow in the state.
    pub pointer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeWant {
    pub bridge: String,
    /// OVSDB address from the state; its directory holds `BRIDGE.mgmt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ovsdb: Option<String>,
    pub flows: Vec<FlowWant>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub bridges: Vec<BridgeWant>,
}

/// One of the agent's flows as `dump-flows --no-stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowNow {
    pub cookie: u64,
    pub dump: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeNow {
    pub bridge: String,
    /// The agent's flows only, sorted.
    pub flows: Vec<FlowNow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub bridges: Vec<BridgeNow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Deletes the agent's flows of the bridge and adds `flows`, one bundle.
    ReplaceFlows {
        bridge: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ovsdb: Option<String>,
        flows: Vec<FlowWant>,
        /// How many of the agent's flows the bridge has now.
        had: usize,
        /// How many of `flows` are missing from it.
        missing: usize,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Action::ReplaceFlows {
            bridge,
            flows,
            had,
            missing,
            ..
        } = self;
        write!(
            f,
            "replace the op-dbus flows of OVS bridge {bridge} in one bundle: \
             {missing} of {} missing, {had} installed",
            flows.len()
        )
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        "replace-flows"
    }
    fn resource(&self) -> String {
        let Action::ReplaceFlows { bridge, .. } = self;
        format!("ovs-flows:{bridge}")
    }
}

/// The flows of each bridge before the apply (dump form, reloadable).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub bridges: Vec<(String, Option<String>, Vec<FlowNow>)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FlowsPlugin;

/// The whitespace-collapsed text of a flow.
pub fn normalize(flow: &str) -> String {
    flow.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The agent's cookie for `flow`: [`TAG`] and 48 bits of its SHA-256.
pub fn cookie_of(flow: &str) -> u64 {
    let d = Sha256::digest(normalize(flow).as_bytes());
    let mut low = 0u64;
    for b in &d[..6] {
        low = (low << 8) | u64::from(*b);
    }
    TAG | low
}

/// An entry's flows with their pointers: its `flows`, then what its
/// `paths` stand for.
fn entry_flows(at: &str, flows: &[String], paths: Option<&Paths>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = flows
        .iter()
        .enumerate()
        .map(|(k, f)| (f.clone(), format!("{at}/flows/{k}")))
        .collect();
    if let Some(p) = paths {
        out.extend(
            p.flows()
                .into_iter()
                .map(|f| (f.flow, format!("{at}{}", f.at))),
        );
    }
    out
}

fn want(bridge: &str, ovsdb: Option<String>, flows: Vec<(String, String)>) -> BridgeWant {
    let mut out: Vec<FlowWant> = flows
        .into_iter()
        .map(|(f, pointer)| FlowWant {
            cookie: cookie_of(&f),
            text: normalize(&f),
            pointer,
        })
        .collect();
    out.sort_by_key(|f| f.cookie);
    out.dedup_by_key(|f| f.cookie);
    BridgeWant {
        bridge: bridge.to_string(),
        ovsdb,
        flows: out,
    }
}

pub fn desired_of(state: &State) -> Option<Desired> {
    let mut d = Desired::default();
    if let Some(net) = &state.plugins.network {
        for (name, i) in &net.interfaces {
            let at = opdbus_state::diag::pointer(&["plugins", "network", "interfaces", name]);
            let flows = entry_flows(&at, &i.flows, i.paths.as_ref());
            if i.kind == InterfaceType::OvsBridge && !flows.is_empty() {
                d.bridges.push(want(name, net.ovsdb.clone(), flows));
            }
        }
    }
    if let Some(net) = &state.plugins.net {
        for (n, i) in net.interfaces.iter().enumerate() {
            let at = format!("/plugins/net/interfaces/{n}");
            let flows = entry_flows(&at, &i.flows, i.paths.as_ref());
            if i.kind == InterfaceType::OvsBridge && !flows.is_empty() {
                d.bridges.push(want(&i.name, net.ovsdb.clone(), flows));
            }
        }
    }
    (!d.bridges.is_empty()).then_some(d)
}

/// `unix:DIR/BRIDGE.mgmt`, DIR being where the OVSDB socket lives (the OVS
/// run directory).
pub fn mgmt_target(ctx: &Context, ovsdb: Option<&str>, bridge: &str) -> String {
    let db = ovsdb.unwrap_or(&ctx.ovsdb);
    let path = db.strip_prefix("unix:").unwrap_or(db);
    let dir = std::path::Path::new(path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/run/openvswitch".into());
    format!("unix:{dir}/{bridge}.mgmt")
}

/// Parses `dump-flows --no-stats` lines into the agent's flows.
pub fn parse_dump(text: &str) -> Vec<FlowNow> {
    let mut out: Vec<FlowNow> = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("cookie=0x")?;
            let hex = rest.split([',', ' ']).next()?;
            let cookie = u64::from_str_radix(hex, 16).ok()?;
            (cookie & MASK == TAG).then(|| FlowNow {
                cookie,
                dump: l.to_string(),
            })
        })
        .collect();
    out.sort();
    out
}

fn dump(target: &str) -> anyhow::Result<Vec<FlowNow>> {
    let out = Task::new("ovs-ofctl")
        .args(["dump-flows", "--no-stats", target])
        .arg(format!("cookie={TAG:#x}/{MASK:#x}"))
        .output()
        .with_context(|| {
            format!("reading the flows at {target} (is ovs-vswitchd running with this bridge?)")
        })?;
    Ok(parse_dump(&String::from_utf8_lossy(&out.stdout)))
}

/// The bundle: delete the agent's flows, add `adds` (lines with cookie).
fn bundle(target: &str, adds: &[String]) -> Result<(), (Option<usize>, String)> {
    let mut text = format!("delete cookie={TAG:#x}/{MASK:#x}\n");
    for a in adds {
        text += &format!("add {a}\n");
    }
    match Task::new("ovs-ofctl")
        .args(["--bundle", "add-flows", target, "-"])
        .stdin(text)
        .output()
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let msg = e.to_string();
            // "ovs-ofctl: -:3: reason": line 3 is adds[1].
            let line = msg
                .split("-:")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(2));
            Err((line, msg))
        }
    }
}

impl Plugin for FlowsPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = Checkpoint;

    fn name(&self) -> &'static str {
        PLUGIN
    }

    fn persistence(&self) -> Persistence {
        Persistence::Ephemeral
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        Ok(desired_of(state))
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let mut c = Current::default();
        for b in &desired.bridges {
            let target = mgmt_target(ctx, b.ovsdb.as_deref(), &b.bridge);
            c.bridges.push(BridgeNow {
                bridge: b.bridge.clone(),
                flows: dump(&target)?,
            });
        }
        Ok(c)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        let mut out = Vec::new();
        for b in &desired.bridges {
            let have: &[FlowNow] = current
                .bridges
                .iter()
                .find(|c| c.bridge == b.bridge)
                .map(|c| c.flows.as_slice())
                .unwrap_or(&[]);
            let mut now: Vec<u64> = have.iter().map(|f| f.cookie).collect();
            now.sort();
            let want: Vec<u64> = b.flows.iter().map(|f| f.cookie).collect();
            if now != want {
                out.push(Action::ReplaceFlows {
                    bridge: b.bridge.clone(),
                    ovsdb: b.ovsdb.clone(),
                    flows: b.flows.clone(),
                    had: have.len(),
                    missing: want.iter().filter(|c| !now.contains(c)).count(),
                });
            }
        }
        out
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Current,
        actions: &[Action],
    ) -> anyhow::Result<Option<Checkpoint>> {
        let mut cp = Checkpoint::default();
        for Action::ReplaceFlows { bridge, ovsdb, .. } in actions {
            let flows = current
                .bridges
                .iter()
                .find(|c| &c.bridge == bridge)
                .map(|c| c.flows.clone())
                .unwrap_or_default();
            cp.bridges.push((bridge.clone(), ovsdb.clone(), flows));
        }
        Ok(Some(cp))
    }

    async fn restore(&self, ctx: &Context, cp: &Checkpoint) -> anyhow::Result<String> {
        let mut done = Vec::new();
        for (bridge, ovsdb, flows) in cp.bridges.iter().rev() {
            let target = mgmt_target(ctx, ovsdb.as_deref(), bridge);
            let adds: Vec<String> = flows.iter().map(|f| f.dump.clone()).collect();
            bundle(&target, &adds).map_err(|(_, m)| {
                anyhow::anyhow!("restoring the op-dbus flows of {bridge}: {m}")
            })?;
            done.push(format!("{} flow(s) of {bridge} put back", flows.len()));
        }
        Ok(done.join("; "))
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        let mut out = Vec::new();
        for Action::ReplaceFlows {
            bridge,
            ovsdb,
            flows,
            ..
        } in actions
        {
            let target = mgmt_target(ctx, ovsdb.as_deref(), bridge);
            let adds: Vec<String> = flows
                .iter()
                .map(|f| format!("cookie={:#x},{}", f.cookie, f.text))
                .collect();
            out.push(match bundle(&target, &adds) {
                Ok(()) => Ok(Some(format!("{} flow(s) in one bundle", flows.len()))),
                Err((Some(k), msg)) if k < flows.len() => Err(ActionError::fatal(anyhow::anyhow!(
                    "{}: OVS rejected the flow '{}', so the table of {bridge} was left as it was: {msg}",
                    flows[k].pointer,
                    flows[k].text
                ))),
                Err((_, msg)) => Err(ActionError::fatal(anyhow::anyhow!(
                    "replacing the op-dbus flows of {bridge} (the table was left as it was): {msg}"
                ))),
            });
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dump_lines_are_parsed_and_foreign_cookies_left_out() {
        let c = cookie_of("table=0, priority=100,tcp,tp_dst=80,actions=drop");
        assert_eq!(c & MASK, TAG);
        assert_eq!(
            c,
            cookie_of("table=0,  priority=100,tcp,tp_dst=80,actions=drop")
        );
        let text = format!(
            " cookie={c:#x}, priority=100,tcp,tp_dst=80 actions=drop\n \
             priority=0 actions=NORMAL\n cookie=0x99, priority=5,udp actions=drop\n"
        );
        let got = parse_dump(&text);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].cookie, c);
    }

    #[test]
    fn missing_flows_are_drift_and_matching_ones_are_not() {
        let s: State = opdbus_state::parse::parse_only(
            r#"{"version": 1, "plugins": {"net": {"interfaces": [{"name": "br0",
                "type": "ovs-bridge", "flows": ["priority=10,actions=normal", "table=0,priority=100,tcp,actions=drop"]}]}}}"#,
        )
        .unwrap();
        let d = desired_of(&s).unwrap();
        let cur = |flows: Vec<u64>| Current {
            bridges: vec![BridgeNow {
                bridge: "br0".into(),
                flows: flows
                    .into_iter()
                    .map(|cookie| FlowNow {
                        cookie,
                        dump: String::new(),
                    })
                    .collect(),
            }],
        };
        let all: Vec<u64> = d.bridges[0].flows.iter().map(|f| f.cookie).collect();
        assert_eq!(FlowsPlugin.diff(&cur(all.clone()), &d), []);
        let a = FlowsPlugin.diff(&cur(vec![]), &d);
        assert_eq!(a.len(), 1);
        assert!(
            a[0].to_string().contains("2 of 2 missing, 0 installed"),
            "{}",
            a[0]
        );
        assert_eq!(FlowsPlugin.diff(&cur(all[..1].to_vec()), &d).len(), 1);
    }
}
