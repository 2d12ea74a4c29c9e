//! lxc plugin: `plugins.lxc.containers` (name -> template, config, autostart,
//! state started/stopped/absent). Creates containers as btrfs snapshots of
//! their template (`crate::lxc`), rewrites the config of ones op-dbus made,
//! starts and stops them (systemd's `lxc@NAME.service` when systemd runs the
//! host, LXC's tools otherwise). A container op-dbus did not create is
//! started or stopped when the state names it, never reconfigured or deleted.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::engine::ownership::Ownership;
use crate::engine::{ActionError, ActionResult, Context, Plugin, PluginAction};
use crate::lxc::{container, runner, Container, Nic, Spec, Status};
use opdbus_state::model::{GuestState, MapOrList, Size};
use opdbus_state::State;

/// What the state wants of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wanted {
    Started,
    Stopped,
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub spec: Spec,
    pub state: Wanted,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub containers: BTreeMap<String, Want>,
}

/// What `query` found for each container the state names (`None`: missing).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub containers: BTreeMap<String, Option<Container>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    Create {
        spec: Spec,
        start: bool,
    },
    /// Rewrites the config; `restart` when it runs and should keep running.
    Reconfigure {
        spec: Spec,
        restart: bool,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Delete {
        name: String,
    },
}

fn describe(spec: &Spec) -> String {
    let mut parts = Vec::new();
    if let Some(n) = &spec.network {
        parts.push(format!("on {}", n.bridge));
        if let Some(ip) = &n.ip {
            parts.push(ip.clone());
        }
    }
    if let Some(m) = spec.memory {
        parts.push(format!("{} MiB", m >> 20));
    }
    if let Some(c) = spec.cpus {
        parts.push(format!("{c} CPU(s)"));
    }
    if spec.autostart {
        parts.push("autostart".into());
    }
    if spec.unprivileged {
        parts.push("unprivileged".into());
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create { spec, start } => write!(
                f,
                "create container {} from template {}{}{}",
                spec.name,
                spec.template,
                describe(spec),
                if *start { " and start it" } else { "" }
            ),
            Action::Reconfigure { spec, restart } => write!(
                f,
                "reconfigure container {}{}{}",
                spec.name,
                describe(spec),
                if *restart { " and restart it" } else { "" }
            ),
            Action::Start { name } => write!(f, "start container {name}"),
            Action::Stop { name } => write!(f, "stop container {name}"),
            Action::Delete { name } => write!(
                f,
                "delete container {name} (its rootfs snapshot and config)"
            ),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create-container",
            Action::Reconfigure { .. } => "reconfigure-container",
            Action::Start { .. } => "start-container",
            Action::Stop { .. } => "stop-container",
            Action::Delete { .. } => "delete-container",
        }
    }

    fn resource(&self) -> String {
        let name = match self {
            Action::Create { spec, .. } | Action::Reconfigure { spec, .. } => &spec.name,
            Action::Start { name } | Action::Stop { name } | Action::Delete { name } => name,
        };
        format!("container:{name}")
    }
}

/// Whether the configuration op-dbus manages differs (the template counts
/// only at creation: a container is not re-made from another template).
fn config_differs(c: &Container, spec: &Spec) -> bool {
    c.config.network != spec.network
        || c.config.memory != spec.memory
        || c.config.cpus != spec.cpus
        || c.config.autostart != spec.autostart
        || c.config.unprivileged != spec.unprivileged
}

/// The pure diff.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    for (name, want) in &desired.containers {
        let now = current.containers.get(name).and_then(Option::as_ref);
        let name = name.clone();
        match (now, want.state) {
            (None, Wanted::Absent) => {}
            (Some(_), Wanted::Absent) => out.push(Action::Delete { name }),
            (None, state) => out.push(Action::Create {
                spec: want.spec.clone(),
                start: state == Wanted::Started,
            }),
            (Some(c), state) => {
                let running = c.status == Status::Running;
                if config_differs(c, &want.spec) {
                    out.push(Action::Reconfigure {
                        spec: want.spec.clone(),
                        restart: running && state == Wanted::Started,
                    });
                }
                match (running, state) {
                    (false, Wanted::Started) => out.push(Action::Start { name }),
                    (true, Wanted::Stopped) => out.push(Action::Stop { name }),
                    _ => {}
                }
            }
        }
    }
    out
}

fn nic(n: &opdbus_state::model::GuestNic) -> Nic {
    Nic {
        bridge: n.bridge.clone(),
        name: n.name.clone().filter(|n| n != "eth0"),
        ip: n.ip.clone().filter(|ip| !ip.eq_ignore_ascii_case("dhcp")),
        gateway: n.gateway.clone(),
    }
}

/// The desired slice of `state`: the map form of `plugins.lxc.containers`
/// (the list form describes OVS ports of containers made elsewhere and is
/// listed as not applied).
pub fn desired(state: &State) -> anyhow::Result<Option<Desired>> {
    let Some(lxc) = &state.plugins.lxc else {
        return Ok(None);
    };
    let MapOrList::Map(map) = &lxc.containers else {
        return Ok(None);
    };
    let mut out = Desired::default();
    for (name, c) in map {
        crate::lxc::validate_name("container", name)?;
        let memory = match c.config.memory {
            None => None,
            Some(Size::Bytes(b)) => Some(b),
            Some(Size::Remaining) => anyhow::bail!(
                "/plugins/lxc/containers/{name}/config/memory: \"remaining\" is not a memory limit; give a size such as 512M"
            ),
        };
        let spec = Spec {
            name: name.clone(),
            template: c.template.clone(),
            network: c.config.network.as_ref().map(nic),
            memory,
            cpus: c.config.cpus,
            autostart: c.autostart,
            unprivileged: c.unprivileged,
        };
        if let Some(n) = &spec.network {
            n.validate()
                .map_err(|e| e.context(format!("/plugins/lxc/containers/{name}/config/network")))?;
        }
        let state = match c.state {
            GuestState::Started | GuestState::Running => Wanted::Started,
            GuestState::Stopped => Wanted::Stopped,
            GuestState::Absent => Wanted::Absent,
        };
        out.containers.insert(name.clone(), Want { spec, state });
    }
    Ok(Some(out))
}

/// What [`LxcPlugin::restore`] undoes, in reverse order of the actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum Undo {
    /// Delete a container this transaction created.
    Delete {
        name: String,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    /// Put back the configuration it had.
    Configure {
        spec: Spec,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub undo: Vec<Undo>,
    /// Actions that cannot be undone (a deleted container).
    pub lost: Vec<String>,
}

pub struct LxcPlugin;

fn owners(ctx: &Context) -> Ownership {
    Ownership::new(&ctx.state_dir)
}

async fn act(ctx: &Context, a: &Action) -> ActionResult {
    let paths = &ctx.lxc;
    let owners = owners(ctx);
    let unowned = |name: &str, verb: &str| {
        ActionError::conflict(anyhow::anyhow!(
            "container {name:?} was not created by op-dbus; op-dbus does not {verb} it (remove it from the state, or recreate it with op-dbus)"
        ))
    };
    match a {
        Action::Create { spec, start } => {
            container::create(paths, &owners, spec)?;
            if *start {
                let how = runner::start(Some(ctx), paths, &spec.name).await?;
                return Ok(Some(format!("snapshot; started {how}")));
            }
            Ok(Some("snapshot".into()))
        }
        Action::Reconfigure { spec, restart } => {
            if !container::is_owned(&owners, &spec.name)? {
                return Err(unowned(&spec.name, "reconfigure"));
            }
            container::reconfigure(paths, &owners, spec)?;
            if *restart {
                runner::stop(Some(ctx), paths, &spec.name).await?;
                let how = runner::start(Some(ctx), paths, &spec.name).await?;
                return Ok(Some(format!("restarted {how}")));
            }
            Ok(None)
        }
        Action::Start { name } => Ok(Some(runner::start(Some(ctx), paths, name).await?)),
        Action::Stop { name } => Ok(Some(runner::stop(Some(ctx), paths, name).await?)),
        Action::Delete { name } => {
            if !container::is_owned(&owners, name)? {
                return Err(unowned(name, "delete"));
            }
            container::delete(paths, &owners, name)?;
            Ok(None)
        }
    }
}

impl Plugin for LxcPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = Checkpoint;

    fn name(&self) -> &'static str {
        "lxc"
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        desired(state)
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let owners = owners(ctx);
        let mut out = Current::default();
        for name in desired.containers.keys() {
            out.containers
                .insert(name.clone(), container::read(&ctx.lxc, &owners, name)?);
        }
        Ok(out)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Current,
        actions: &[Action],
    ) -> anyhow::Result<Option<Checkpoint>> {
        Ok(Some(checkpoint(current, actions)))
    }

    async fn restore(&self, ctx: &Context, cp: &Checkpoint) -> anyhow::Result<String> {
        let owners = owners(ctx);
        let paths = &ctx.lxc;
        let mut done = 0;
        for u in cp.undo.iter().rev() {
            match u {
                Undo::Delete { name } => {
                    if container::read(paths, &owners, name)?.is_some() {
                        container::delete(paths, &owners, name)?;
                    }
                }
                Undo::Start { name } => {
                    runner::start(Some(ctx), paths, name).await?;
                }
                Undo::Stop { name } => {
                    if runner::status(paths, name)? == Status::Running {
                        runner::stop(Some(ctx), paths, name).await?;
                    }
                }
                Undo::Configure { spec } => container::reconfigure(paths, &owners, spec)?,
            }
            done += 1;
        }
        let mut line = format!("{done} container change(s) undone");
        if !cp.lost.is_empty() {
            line.push_str(&format!("; cannot undo: {}", cp.lost.join(", ")));
        }
        Ok(line)
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        super::each(actions, |a| act(ctx, a)).await
    }

    /// The containers under `--lxc-path` that op-dbus wrote (their config
    /// names the template), with their configuration and running state.
    async fn discover(&self, ctx: &Context) -> anyhow::Result<Option<serde_json::Value>> {
        let containers = container::list(&ctx.lxc, &owners(ctx))?;
        for c in containers.iter().filter(|c| c.config.template.is_none()) {
            tracing::info!(
                "container {} was not made by op-dbus (no template recorded): left out",
                c.name
            );
        }
        Ok(discover_section(&containers).map(|l| serde_json::json!({ "lxc": l })))
    }
}

/// What undoes `actions` from `current` (pure).
pub fn checkpoint(current: &Current, actions: &[Action]) -> Checkpoint {
    let mut cp = Checkpoint::default();
    let now = |n: &str| current.containers.get(n).and_then(Option::as_ref);
    for a in actions {
        match a {
            Action::Create { spec, .. } => cp.undo.push(Undo::Delete {
                name: spec.name.clone(),
            }),
            Action::Reconfigure { spec, restart } => {
                if let Some(c) = now(&spec.name) {
                    // Undone in reverse: stop, put the old config back, start.
                    if *restart {
                        cp.undo.push(Undo::Start {
                            name: spec.name.clone(),
                        });
                    }
                    cp.undo.push(Undo::Configure {
                        spec: Spec {
                            name: spec.name.clone(),
                            template: c
                                .config
                                .template
                                .clone()
                                .unwrap_or_else(|| spec.template.clone()),
                            network: c.config.network.clone(),
                            memory: c.config.memory,
                            cpus: c.config.cpus,
                            autostart: c.config.autostart,
                            unprivileged: c.config.unprivileged,
                        },
                    });
                    if *restart {
                        cp.undo.push(Undo::Stop {
                            name: spec.name.clone(),
                        });
                    }
                }
            }
            Action::Start { name } => cp.undo.push(Undo::Stop { name: name.clone() }),
            Action::Stop { name } => cp.undo.push(Undo::Start { name: name.clone() }),
            Action::Delete { name } => cp.lost.push(format!("deleted container {name}")),
        }
    }
    cp
}

/// `plugins.lxc` (map form) for the containers whose config records their
/// template (written by op-dbus); `None` when there is none.
pub fn discover_section(containers: &[Container]) -> Option<opdbus_state::model::Lxc> {
    use opdbus_state::model::{GuestNic, LxcConfig, LxcContainer};
    let mut map = BTreeMap::new();
    for c in containers {
        let Some(template) = &c.config.template else {
            continue;
        };
        let network = c.config.network.as_ref().map(|n| GuestNic {
            name: n.name.clone(),
            bridge: n.bridge.clone(),
            ip: n.ip.clone(),
            gateway: n.gateway.clone(),
            model: None,
        });
        map.insert(
            c.name.clone(),
            LxcContainer {
                template: template.clone(),
                storage: None,
                config: LxcConfig {
                    memory: c.config.memory.map(Size::Bytes),
                    cpus: c.config.cpus,
                    rootfs: None,
                    network,
                },
                autostart: c.config.autostart,
                unprivileged: c.config.unprivileged,
                state: match c.status {
                    Status::Running => GuestState::Started,
                    Status::Stopped => GuestState::Stopped,
                },
            },
        );
    }
    (!map.is_empty()).then_some(opdbus_state::model::Lxc {
        containers: MapOrList::Map(map),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn desired_from_the_seed_shape_of_state_json() {
        let state = opdbus_state::parse::parse_only(
            r#"{"version": 1, "plugins": {"lxc": {"containers": {
                "web-server": {"template": "debian-12", "config": {"memory": "2G", "cpus": 2,
                    "network": {"bridge": "vmbr0", "ip": "192.168.1.101/24", "gateway": "192.168.1.1"}},
                    "autostart": true, "state": "started"},
                "old": {"template": "debian-12", "state": "absent"},
                "dhcp": {"template": "t", "config": {"network": {"bridge": "vmbr0", "ip": "dhcp", "name": "eth0"}}, "state": "stopped"}
            }}}}"#,
        )
        .unwrap();
        let d = desired(&state).unwrap().unwrap();
        let web = &d.containers["web-server"];
        assert_eq!(web.state, Wanted::Started);
        assert_eq!(web.spec.memory, Some(2 << 30));
        assert_eq!(web.spec.cpus, Some(2));
        assert!(web.spec.autostart);
        let n = web.spec.network.as_ref().unwrap();
        assert_eq!(
            (n.bridge.as_str(), n.ip.as_deref(), n.gateway.as_deref()),
            ("vmbr0", Some("192.168.1.101/24"), Some("192.168.1.1"))
        );
        assert_eq!(d.containers["old"].state, Wanted::Absent);
        let dhcp = d.containers["dhcp"].spec.network.as_ref().unwrap();
        assert_eq!((dhcp.ip.as_deref(), dhcp.name.as_deref()), (None, None));
    }

    #[test]
    fn desired_refuses_a_bad_name_or_address_with_its_pointer() {
        let bad = |json: &str| {
            let s = opdbus_state::parse::parse_only(json).unwrap();
            format!("{:#}", desired(&s).unwrap_err())
        };
        let e = bad(
            r#"{"version": 1, "plugins": {"lxc": {"containers": {"a/b": {"template": "t"}}}}}"#,
        );
        assert!(e.contains("invalid container name"), "{e}");
        let e = bad(
            r#"{"version": 1, "plugins": {"lxc": {"containers": {"c": {"template": "t",
            "config": {"network": {"bridge": "br0", "ip": "10.0.0.1"}}}}}}}"#,
        );
        assert!(
            e.contains("/plugins/lxc/containers/c/config/network"),
            "{e}"
        );
    }

    #[test]
    fn checkpoint_undoes_in_reverse_and_names_what_it_cannot() {
        let spec = |name: &str| Spec {
            name: name.into(),
            template: "t".into(),
            network: None,
            memory: Some(1 << 30),
            cpus: None,
            autostart: false,
            unprivileged: false,
        };
        let running: Container = serde_json::from_value(serde_json::json!({
            "name": "r", "status": "running", "owned": true, "template": "t",
            "memory": 536870912, "autostart": false
        }))
        .unwrap();
        let current = Current {
            containers: [("r".to_string(), Some(running))].into_iter().collect(),
        };
        let cp = checkpoint(
            &current,
            &[
                Action::Create {
                    spec: spec("n"),
                    start: true,
                },
                Action::Reconfigure {
                    spec: spec("r"),
                    restart: true,
                },
                Action::Delete { name: "d".into() },
            ],
        );
        let undo: Vec<String> = cp.undo.iter().rev().map(|u| format!("{u:?}")).collect();
        assert!(undo[0].starts_with("Stop { name: \"r\""), "{undo:?}");
        assert!(undo[1].contains("memory: Some(536870912)"), "{undo:?}");
        assert!(undo[2].starts_with("Start { name: \"r\""), "{undo:?}");
        assert!(undo[3].starts_with("Delete { name: \"n\""), "{undo:?}");
        assert_eq!(cp.lost, ["deleted container d"]);
    }
}
