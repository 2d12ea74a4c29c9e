//! Resident mode: owns `org.opdbus` on the system bus (ApplyState, QueryState,
//! Status; root only), applies each new valid version of the state file
//! (an invalid one is refused and the held state stays in force), and
//! repairs drift: every plugin is re-checked on an interval, and a unit the
//! state wants active that goes inactive is started again at once; repairs
//! are audited as `drift-repair` with the reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::Mutex;
use zbus::message::Header;
use zbus::{fdo, interface, Connection};

use crate::dbus::Systemd;
use crate::engine::{
    ActionView, Context, DesiredState, Engine, InvalidState, PluginReport, Refused, Repair, Status,
};
use crate::plugins::systemd::desired_from;
use crate::watch::StateWatch;

pub const BUS_NAME: &str = "org.opdbus";
pub const OBJECT_PATH: &str = "/org/opdbus";

/// The resident agent: engine, context and the state it keeps the host at.
#[derive(Clone)]
pub struct Agent {
    engine: Arc<Engine>,
    ctx: Arc<Context>,
    /// Also serializes applies and drift repairs.
    state: Arc<Mutex<DesiredState>>,
}

impl Agent {
    pub fn new(engine: Arc<Engine>, ctx: Arc<Context>, state: DesiredState) -> Self {
        Self {
            engine,
            ctx,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Exports the object at [`OBJECT_PATH`] and takes [`BUS_NAME`] on `conn`.
    pub async fn serve(&self, conn: &Connection) -> anyhow::Result<()> {
        conn.object_server()
            .at(OBJECT_PATH, self.clone())
            .await
            .context("exporting /org/opdbus")?;
        conn.request_name(BUS_NAME)
            .await
            .context("taking the bus name org.opdbus (is another agent running? is templates/dbus/org.opdbus.conf installed?)")?;
        Ok(())
    }

    /// The hash of the state the agent keeps the host at.
    pub async fn state_hash(&self) -> String {
        self.state.lock().await.hash.clone()
    }

    /// Watches `file` and applies each new valid version of it as one
    /// apply; see [`Agent::state_file_changed`]. Runs until the watch fails.
    ///
    /// The file is read once more as soon as the watch exists: an edit
    /// saved while the first reconcile ran, before anything watched, would
    /// otherwise wait for the next one (an unchanged file is a no-op).
    pub async fn watch_state(&self, file: PathBuf) -> anyhow::Result<()> {
        let mut watch = StateWatch::new(&file)?;
        self.state_file_changed(&file).await?;
        loop {
            watch.changed().await?;
            self.state_file_changed(&file).await?;
        }
    }

    /// Reads `file` again. A version that does not validate (or cannot be
    /// read) is refused: its error lines go to the log and to the status
    /// file's `refused`, and the held state stays in force. A valid new
    /// version is applied; it becomes the held state unless a plugin failed
    /// (the host was then rolled back to, or is repaired towards, the old one).
    pub async fn state_file_changed(&self, file: &Path) -> anyhow::Result<()> {
        let loaded = DesiredState::load(file);
        let mut held = self.state.lock().await;
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                let errors = match e.downcast_ref::<InvalidState>() {
                    Some(invalid) => invalid.lines.clone(),
                    None => vec![format!("{e:#}")],
                };
                tracing::error!(
                    file = %file.display(),
                    "refusing the changed state file; the state {} stays in force:\n{}",
                    held.hash,
                    errors.join("\n")
                );
                let mut status = Status::read(&self.ctx.state_dir)?
                    .unwrap_or_else(|| Status::fatal("the state file was refused".into()));
                status.refused = Some(Refused {
                    file: file.display().to_string(),
                    at: crate::engine::status::now(),
                    errors,
                    in_force: held.hash.clone(),
                });
                return status.write(&self.ctx.state_dir);
            }
        };
        if new.hash == held.hash {
            tracing::debug!(file = %file.display(), "state file touched, content unchanged");
            // A refused version was reverted: nothing is refused any more.
            if let Some(mut status) = Status::read(&self.ctx.state_dir)? {
                if status.refused.take().is_some() {
                    status.write(&self.ctx.state_dir)?;
                }
            }
            return Ok(());
        }
        tracing::info!(file = %file.display(), state = %new.hash, "state file changed: applying");
        Status::running(Some(new.hash.clone())).write(&self.ctx.state_dir)?;
        let report = self.engine.apply(&self.ctx, &new).await;
        crate::cli::apply::print_report(&report);
        let failed = report.any_failed();
        if failed {
            tracing::error!(
                "the changed state failed to apply; the state {} stays in force: {}",
                held.hash,
                report.failures().join("; ")
            );
        }
        Status::finished(report).write(&self.ctx.state_dir)?;
        if !failed {
            *held = new;
        }
        Ok(())
    }

    /// Every `interval`, checks every plugin for drift and repairs it; the
    /// first check comes after `first` (sooner when the start-up apply
    /// failed: a boot whose network was rolled back waits no full interval).
    pub async fn check_drift_every(
        &self,
        interval: Duration,
        first: Duration,
    ) -> anyhow::Result<()> {
        let start = tokio::time::Instant::now() + first.min(interval);
        let mut tick = tokio::time::interval_at(start, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let repaired = self.repair_drift().await;
            for r in repaired.iter().filter(|r| r.failed()) {
                tracing::error!(plugin = %r.plugin, "drift repair failed: {}", r.error.as_deref().unwrap_or("unknown error"));
            }
        }
    }

    /// Queries and diffs every plugin against the held state; each plugin
    /// whose diff is not empty is reconciled, audited as `drift-repair`
    /// with what differed. A plugin whose query fails is logged and the
    /// others are still checked. Returns the repairs made.
    pub async fn repair_drift(&self) -> Vec<PluginReport> {
        let held = self.state.lock().await;
        let mut out = Vec::new();
        for name in self.engine.plugin_names() {
            let Some(p) = self.engine.plugin(name) else {
                continue;
            };
            let drift = async {
                let Some(desired) = p.desired_typed(&held.state)? else {
                    return anyhow::Ok(Vec::new());
                };
                let current = p.query_typed(&self.ctx, &desired).await?;
                let actions = p.diff_typed(&current, &desired)?;
                anyhow::Ok(actions.into_iter().map(|a| a.view).collect::<Vec<_>>())
            };
            let actions = match drift.await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(plugin = name, "drift check: querying failed: {e:#}");
                    continue;
                }
            };
            if actions.is_empty() {
                continue;
            }
            let lines: Vec<String> = actions.iter().map(|a| a.description.clone()).collect();
            let reason = format!(
                "periodic drift check: {} change(s) needed to match the state: {}",
                lines.len(),
                lines.join("; ")
            );
            tracing::info!(plugin = name, "{reason}: repairing");
            let all = |_: &ActionView| true;
            let repair = Repair {
                reason,
                filter: &all,
            };
            match self.engine.repair(&self.ctx, &held, name, repair).await {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(plugin = name, "drift repair failed: {e:#}"),
            }
        }
        out
    }

    /// Watches systemd's unit signals and starts again every unit the state
    /// wants active that goes inactive or failed; at most once per
    /// `min_interval` per unit. Runs until the signal stream ends.
    pub async fn watch_drift(&self, min_interval: Duration) -> anyhow::Result<()> {
        let conn = self.ctx.bus().await?;
        let sd = Systemd::new(&conn).await?;
        let mut changes = sd
            .changes()
            .await
            .context("subscribing to systemd unit changes")?;
        let mut last: HashMap<String, Instant> = HashMap::new();
        while let Some(change) = changes.next().await {
            if !matches!(change.active_state.as_str(), "inactive" | "failed") {
                continue;
            }
            let state = self.state.lock().await;
            let Some(sd_state) = &state.state.plugins.systemd else {
                continue;
            };
            let wanted = desired_from(sd_state)
                .units
                .get(&change.unit)
                .is_some_and(|t| t.active == Some(true) && t.masked != Some(true));
            if !wanted {
                continue;
            }
            if last
                .get(&change.unit)
                .is_some_and(|t| t.elapsed() < min_interval)
            {
                tracing::warn!(unit = %change.unit, "unit went down again within {min_interval:?}; not repairing yet");
                continue;
            }
            last.insert(change.unit.clone(), Instant::now());
            let reason = format!(
                "unit {} became {}{} outside the agent; the state wants it active",
                change.unit,
                change.active_state,
                change
                    .sub_state
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            );
            tracing::info!(unit = %change.unit, "{reason}: repairing");
            let resource = format!("unit:{}", change.unit);
            let filter = move |a: &ActionView| a.resource == resource && a.action == "start";
            let repair = Repair {
                reason,
                filter: &filter,
            };
            match self
                .engine
                .repair(&self.ctx, &state, "systemd", repair)
                .await
            {
                Ok(r) if r.failed() => {
                    tracing::error!(unit = %change.unit, "drift repair failed: {}", r.error.unwrap_or_default())
                }
                Ok(_) => {}
                Err(e) => tracing::error!(unit = %change.unit, "drift repair failed: {e:#}"),
            }
        }
        Ok(())
    }
}

/// Refuses callers that are not uid 0 (the bus policy says so too).
async fn require_root(conn: &Connection, hdr: &Header<'_>) -> fdo::Result<()> {
    let sender = hdr
        .sender()
        .ok_or_else(|| fdo::Error::AccessDenied("caller without a bus name".into()))?;
    let dbus = fdo::DBusProxy::new(conn).await?;
    let uid = dbus.get_connection_unix_user(sender.clone().into()).await?;
    if uid != 0 {
        return Err(fdo::Error::AccessDenied(format!(
            "org.opdbus answers only root; caller {sender} has uid {uid}"
        )));
    }
    Ok(())
}

fn failed(e: impl std::fmt::Display) -> fdo::Error {
    fdo::Error::Failed(e.to_string())
}

#[interface(name = "org.opdbus")]
impl Agent {
    /// Applies a whole state.json (text); returns the run report as JSON.
    /// The state becomes the one drift repair keeps the host at.
    async fn apply_state(
        &self,
        state: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<String> {
        require_root(conn, &hdr).await?;
        let desired = DesiredState::from_json(&state, "ApplyState")
            .map_err(|e| fdo::Error::InvalidArgs(format!("{e:#}")))?;
        let mut guard = self.state.lock().await;
        // An operator's apply: it also clears a state rolled back for want of `confirm`.
        let report = self.engine.apply_as(&self.ctx, &desired, false).await;
        *guard = desired;
        serde_json::to_string(&report).map_err(failed)
    }

    /// The current state of what the held state names, per plugin, as JSON.
    async fn query_state(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<String> {
        require_root(conn, &hdr).await?;
        let guard = self.state.lock().await;
        let current = self
            .engine
            .query(&self.ctx, &guard, None)
            .await
            .map_err(|e| failed(format!("{e:#}")))?;
        serde_json::to_string(&current).map_err(failed)
    }

    /// The status file's content (`{"status":"none"}` before the first run).
    async fn status(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> fdo::Result<String> {
        require_root(conn, &hdr).await?;
        match Status::read(&self.ctx.state_dir).map_err(|e| failed(format!("{e:#}")))? {
            Some(s) => serde_json::to_string(&s).map_err(failed),
            None => Ok(r#"{"status":"none"}"#.to_string()),
        }
    }
}
