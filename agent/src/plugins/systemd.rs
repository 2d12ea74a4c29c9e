//! systemd plugin: units in both seed forms (`services` with `state`, `units`
//! with `active_state`/`enabled`/`masked`), timers and custom unit files,
//! reconciled over org.freedesktop.systemd1 (LoadUnit, unit-file calls, jobs).

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::dbus::Systemd;
use crate::engine::{ActionResult, Context, Plugin, PluginAction};
use opdbus_state::model::ActiveState;
use opdbus_state::State;

/// Where unit files are written, below the context root.
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// What the state wants of one unit; `None` leaves that aspect alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub units: BTreeMap<String, UnitTarget>,
    /// Unit files to write (custom units and generated timers), by unit name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitCurrent {
    pub load_state: String,
    pub active_state: String,
    pub unit_file_state: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Current {
    pub units: BTreeMap<String, UnitCurrent>,
    /// Contents of the unit files the state names (`None`: no such file).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    WriteUnitFile { unit: String, content: String },
    Reload,
    Unmask { unit: String },
    Mask { unit: String },
    Enable { unit: String },
    Disable { unit: String },
    Stop { unit: String },
    Start { unit: String },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::WriteUnitFile { unit, .. } => write!(f, "write unit file {UNIT_DIR}/{unit}"),
            Action::Reload => f.write_str("reload the systemd manager (daemon-reload)"),
            Action::Unmask { unit } => write!(f, "unmask {unit}"),
            Action::Mask { unit } => write!(f, "mask {unit}"),
            Action::Enable { unit } => write!(f, "enable {unit}"),
            Action::Disable { unit } => write!(f, "disable {unit}"),
            Action::Stop { unit } => write!(f, "stop {unit}"),
            Action::Start { unit } => write!(f, "start {unit}"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::WriteUnitFile { .. } => "write-unit-file",
            Action::Reload => "reload",
            Action::Unmask { .. } => "unmask",
            Action::Mask { .. } => "mask",
            Action::Enable { .. } => "enable",
            Action::Disable { .. } => "disable",
            Action::Stop { .. } => "stop",
            Action::Start { .. } => "start",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::Reload => "manager".to_string(),
            Action::WriteUnitFile { unit, .. }
            | Action::Unmask { unit }
            | Action::Mask { unit }
            | Action::Enable { unit }
            | Action::Disable { unit }
            | Action::Stop { unit }
            | Action::Start { unit } => format!("unit:{unit}"),
        }
    }
}

/// Merges `services`, `units`, `timers` and `custom_units` into one map of
/// unit targets plus the unit files to write: the state crate's mapping
/// ([`opdbus_state::normalize::unit_specs_of`]), the one the golden files pin.
pub fn desired_from(sd: &opdbus_state::model::Systemd) -> Desired {
    let mut d = Desired::default();
    for (unit, t) in opdbus_state::normalize::unit_specs_of(sd) {
        if let Some(content) = t.content {
            d.files.insert(unit.clone(), content);
        }
        d.units.insert(
            unit,
            UnitTarget {
                enabled: t.enabled,
                active: t.active,
                masked: t.masked,
            },
        );
    }
    d
}

fn is_enabled(unit_file_state: &str) -> bool {
    // static/generated/alias/transient units cannot be enabled: they count as such.
    matches!(
        unit_file_state,
        "enabled" | "enabled-runtime" | "static" | "generated" | "alias" | "transient" | "linked"
    )
}

fn is_active(active_state: &str) -> bool {
    matches!(active_state, "active" | "reloading" | "activating")
}

/// The pure diff. Order: unit files, Reload, stop, unmask, mask, enable,
/// disable, Reload (after unit-file changes), start.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    for (unit, content) in &desired.files {
        if current.files.get(unit).and_then(|c| c.as_deref()) != Some(content.as_str()) {
            out.push(Action::WriteUnitFile {
                unit: unit.clone(),
                content: content.clone(),
            });
        }
    }
    if !out.is_empty() {
        out.push(Action::Reload);
    }
    let unknown = UnitCurrent {
        load_state: "not-found".into(),
        active_state: "inactive".into(),
        unit_file_state: String::new(),
    };
    let (mut files, mut jobs) = (Vec::new(), Vec::new());
    for (unit, t) in &desired.units {
        let cur = current.units.get(unit).unwrap_or(&unknown);
        let masked = cur.unit_file_state == "masked" || cur.load_state == "masked";
        let u = || unit.clone();
        let wants_running = t.active == Some(true) || t.enabled == Some(true);
        if masked && (t.masked == Some(false) || (t.masked.is_none() && wants_running)) {
            files.push(Action::Unmask { unit: u() });
        }
        if t.masked == Some(true) && !masked {
            files.push(Action::Mask { unit: u() });
        }
        if t.masked != Some(true) {
            match t.enabled {
                Some(true) if masked || !is_enabled(&cur.unit_file_state) => {
                    files.push(Action::Enable { unit: u() })
                }
                Some(false)
                    if matches!(cur.unit_file_state.as_str(), "enabled" | "enabled-runtime") =>
                {
                    files.push(Action::Disable { unit: u() })
                }
                _ => {}
            }
        }
        let active = is_active(&cur.active_state);
        let want_active = if t.masked == Some(true) {
            Some(false)
        } else {
            t.active
        };
        match want_active {
            Some(true) if !active => jobs.push(Action::Start { unit: u() }),
            Some(false) if active => jobs.push(Action::Stop { unit: u() }),
            _ => {}
        }
    }
    // Unmasks first, then masks, enables, disables: sort by kind, stable by unit.
    files.sort_by_key(|a| match a {
        Action::Unmask { .. } => 0,
        Action::Mask { .. } => 1,
        Action::Enable { .. } => 2,
        _ => 3,
    });
    // Stops first (a masked unit can no longer be stopped by name on every
    // systemd), then unit-file changes and their Reload, then starts.
    let (starts, stops): (Vec<Action>, Vec<Action>) = jobs
        .into_iter()
        .partition(|a| matches!(a, Action::Start { .. }));
    out.extend(stops);
    let file_changes = !files.is_empty();
    out.extend(files);
    if file_changes {
        out.push(Action::Reload);
    }
    out.extend(starts);
    out
}

pub struct SystemdPlugin;

async fn adapter(ctx: &Context) -> anyhow::Result<Systemd> {
    let conn = ctx.bus().await?;
    Ok(Systemd::new(&conn).await?)
}

impl Plugin for SystemdPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = ();

    fn name(&self) -> &'static str {
        "systemd"
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        Ok(state.plugins.systemd.as_ref().map(desired_from))
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let mut cur = Current::default();
        for unit in desired.files.keys() {
            let path = ctx.host_path(UNIT_DIR).join(unit);
            let content = match std::fs::read_to_string(&path) {
                Ok(c) => Some(c),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            cur.files.insert(unit.clone(), content);
        }
        if desired.units.is_empty() {
            return Ok(cur);
        }
        let sd = adapter(ctx).await?;
        // One LoadUnit + property reads per unit, all units concurrently.
        let statuses = futures::future::try_join_all(desired.units.keys().map(|unit| {
            let sd = &sd;
            async move {
                sd.unit(unit)
                    .await
                    .with_context(|| format!("querying unit '{unit}'"))
            }
        }))
        .await?;
        for st in statuses {
            cur.units.insert(
                st.name,
                UnitCurrent {
                    load_state: st.load_state,
                    active_state: st.active_state,
                    unit_file_state: st.unit_file_state,
                },
            );
        }
        Ok(cur)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    /// Unit files in state `enabled` or `masked` (what an administrator or
    /// a package's preset set; static and generated units are left out),
    /// with their active state. `None` when systemd is not on the bus.
    async fn discover(&self, ctx: &Context) -> anyhow::Result<Option<serde_json::Value>> {
        let sd = match adapter(ctx).await {
            Ok(sd) => sd,
            Err(e) => {
                tracing::info!("systemd not reachable ({e:#}): plugins.systemd left out");
                return Ok(None);
            }
        };
        let files = sd.unit_files().await?;
        let mut units = Vec::new();
        for (name, file_state) in discoverable_units(&files) {
            let st = sd
                .unit(&name)
                .await
                .with_context(|| format!("querying unit '{name}'"))?;
            units.push((name, file_state, st.active_state));
        }
        let section = discover_section(&units);
        if section.units.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::json!({ "systemd": section })))
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        let sd = match adapter(ctx).await {
            Ok(sd) => sd,
            Err(e) => {
                let msg = format!("{e:#}");
                return actions
                    .iter()
                    .map(|_| Err(anyhow::anyhow!("{msg}").into()))
                    .collect();
            }
        };
        let sd = &sd;
        super::each(actions, |a| async move {
            match a {
                Action::WriteUnitFile { unit, content } => {
                    write_unit_file(ctx, unit, content)?;
                }
                Action::Reload => sd.reload().await?,
                Action::Unmask { unit } => drop(sd.unmask(&[unit.as_str()]).await?),
                Action::Mask { unit } => drop(sd.mask(&[unit.as_str()]).await?),
                Action::Enable { unit } => drop(sd.enable(&[unit.as_str()]).await?),
                Action::Disable { unit } => drop(sd.disable(&[unit.as_str()]).await?),
                Action::Stop { unit } => sd.stop(unit).await?,
                Action::Start { unit } => sd.start(unit).await?,
            }
            Ok(None)
        })
        .await
    }
}

/// The unit types `discover` describes (devices, scopes, slices and
/// swaps come and go with the hardware and the sessions).
const DISCOVERED_TYPES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".path",
    ".target",
    ".mount",
    ".automount",
];

/// Names and unit-file states of the units `discover` describes, from
/// ListUnitFiles' (path, state): enabled or masked, no templates
/// (`name@.service` cannot be loaded by that name), sorted.
pub fn discoverable_units(files: &[(String, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = files
        .iter()
        .filter(|(_, st)| st == "enabled" || st == "masked")
        .filter_map(|(path, st)| {
            let name = path.rsplit('/').next()?.to_string();
            let typed = DISCOVERED_TYPES.iter().any(|t| name.ends_with(t));
            (typed && !name.contains("@.")).then(|| (name, st.clone()))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `plugins.systemd` for (unit, unit-file state, active state): enabled
/// units with `enabled: true` and their active state, masked ones with
/// `masked: true`.
pub fn discover_section(units: &[(String, String, String)]) -> opdbus_state::model::Systemd {
    use opdbus_state::model::UnitSpec;
    let mut sd = opdbus_state::model::Systemd::default();
    for (name, file_state, active) in units {
        let spec = if file_state == "masked" {
            UnitSpec {
                masked: Some(true),
                ..UnitSpec::default()
            }
        } else {
            UnitSpec {
                enabled: Some(true),
                active_state: Some(if is_active(active) {
                    ActiveState::Active
                } else {
                    ActiveState::Inactive
                }),
                masked: None,
            }
        };
        sd.units.insert(name.clone(), spec);
    }
    sd
}

fn write_unit_file(ctx: &Context, unit: &str, content: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !unit.contains('/') && !unit.starts_with('.'),
        "refusing unit name '{unit}': it must be a plain file name"
    );
    let dir = ctx.host_path(UNIT_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(unit);
    let tmp = dir.join(format!(".{unit}.opdbus-tmp"));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))
}
