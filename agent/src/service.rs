//! Resident mode: owns `org.opdbus` on the system bus (ApplyState, QueryState,
//! Status; root only) and repairs drift: a unit the state wants active that
//! goes inactive is started again, audited as `drift-repair` with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use tokio::sync::Mutex;
use zbus::message::Header;
use zbus::{fdo, interface, Connection};

use crate::dbus::Systemd;
use crate::engine::{ActionView, Context, DesiredState, Engine, Repair, Status};
use crate::plugins::systemd::desired_from;

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
