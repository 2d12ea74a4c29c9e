//! systemd1 Manager adapter: unit status through LoadUnit and the Unit
//! properties, start/stop/restart that wait for the job's JobRemoved signal,
//! unit-file enablement, daemon reload and a stream of ActiveState changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use tokio::sync::OnceCell;
use zbus::message::Type as MessageType;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{proxy, Connection, MatchRule, MessageStream};

use super::{call_err, Error, Result};

/// Bus name of the systemd manager.
pub const SERVICE: &str = "org.freedesktop.systemd1";
/// Object path prefix under which systemd exports one object per unit.
pub const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit";
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";
/// Default time a start/stop/restart job may take (systemd's own default
/// start timeout is 90 s).
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn get_unit_file_state(&self, file: &str) -> zbus::Result<String>;
    fn list_unit_files(&self) -> zbus::Result<Vec<(String, String)>>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn unmask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn reload(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
}

/// What systemd reports about one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitStatus {
    pub name: String,
    /// "loaded", "not-found", "masked", "bad-setting", "error".
    pub load_state: String,
    /// "active", "inactive", "failed", "activating", "deactivating", "reloading".
    pub active_state: String,
    /// Type-specific state, e.g. "running", "dead", "exited".
    pub sub_state: String,
    /// "enabled", "disabled", "static", "masked", ... or "" when there is no unit file.
    pub unit_file_state: String,
}

/// One change reported by EnableUnitFiles and friends: ("symlink" or
/// "unlink", file, destination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFileChange {
    pub kind: String,
    pub file: String,
    pub destination: String,
}

impl From<(String, String, String)> for UnitFileChange {
    fn from((kind, file, destination): (String, String, String)) -> Self {
        Self {
            kind,
            file,
            destination,
        }
    }
}

/// A unit's ActiveState changed (drift detection input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitChange {
    pub unit: String,
    pub active_state: String,
    /// Present when systemd sent SubState in the same signal.
    pub sub_state: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum JobOp {
    Start,
    Stop,
    Restart,
}

impl JobOp {
    fn name(self) -> &'static str {
        match self {
            JobOp::Start => "start",
            JobOp::Stop => "stop",
            JobOp::Restart => "restart",
        }
    }

    fn method(self) -> &'static str {
        match self {
            JobOp::Start => "StartUnit",
            JobOp::Stop => "StopUnit",
            JobOp::Restart => "RestartUnit",
        }
    }
}

/// Client of `org.freedesktop.systemd1.Manager`. Cheap to clone.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    subscribed: Arc<OnceCell<()>>,
    job_timeout: Duration,
}

impl Systemd {
    /// Creates the adapter on `conn` (the system bus in production).
    pub async fn new(conn: &Connection) -> Result<Self> {
        let manager = ManagerProxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("creating the systemd1 Manager proxy"))?;
        Ok(Self {
            conn: conn.clone(),
            manager,
            subscribed: Arc::new(OnceCell::new()),
            job_timeout: DEFAULT_JOB_TIMEOUT,
        })
    }

    /// Sets how long start/stop/restart wait for their job to finish.
    pub fn with_job_timeout(mut self, timeout: Duration) -> Self {
        self.job_timeout = timeout;
        self
    }

    /// Calls Manager.Subscribe once per adapter, so systemd emits JobRemoved
    /// and unit PropertiesChanged signals. "Already subscribed" counts as success.
    pub async fn subscribe(&self) -> Result<()> {
        self.subscribed
            .get_or_try_init(|| async {
                match self.manager.subscribe().await {
                    Ok(()) => Ok(()),
                    Err(zbus::Error::MethodError(name, _, _)) if name == ALREADY_SUBSCRIBED => {
                        Ok(())
                    }
                    Err(e) => Err(call_err(
                        "calling org.freedesktop.systemd1.Manager.Subscribe",
                    )(e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Loads `name` (LoadUnit works for units that are not loaded yet, unlike
    /// GetUnit) and reads its state properties.
    pub async fn unit(&self, name: &str) -> Result<UnitStatus> {
        let path = self.load_unit(name).await?;
        let unit = self.unit_proxy(name, path).await?;
        let read = |prop: &str| format!("reading {prop} of unit '{name}'");
        Ok(UnitStatus {
            name: name.to_string(),
            load_state: unit
                .load_state()
                .await
                .map_err(call_err(read("LoadState")))?,
            active_state: unit
                .active_state()
                .await
                .map_err(call_err(read("ActiveState")))?,
            sub_state: unit.sub_state().await.map_err(call_err(read("SubState")))?,
            unit_file_state: unit
                .unit_file_state()
                .await
                .map_err(call_err(read("UnitFileState")))?,
        })
    }

    /// Manager.ListUnitFiles: every unit file systemd knows, as (path, state).
    pub async fn unit_files(&self) -> Result<Vec<(String, String)>> {
        self.manager.list_unit_files().await.map_err(call_err(
            "calling org.freedesktop.systemd1.Manager.ListUnitFiles".to_string(),
        ))
    }

    /// Manager.GetUnitFileState for a unit name or path (fails when no unit file exists).
    pub async fn unit_file_state(&self, name: &str) -> Result<String> {
        self.manager
            .get_unit_file_state(name)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.systemd1.Manager.GetUnitFileState('{name}')"
            )))
    }

    /// Starts `name` in "replace" mode and waits for its job to finish with "done".
    pub async fn start(&self, name: &str) -> Result<()> {
        self.run_job(JobOp::Start, name).await
    }

    /// Stops `name` in "replace" mode and waits for its job to finish with "done".
    pub async fn stop(&self, name: &str) -> Result<()> {
        self.run_job(JobOp::Stop, name).await
    }

    /// Restarts `name` in "replace" mode and waits for its job to finish with "done".
    pub async fn restart(&self, name: &str) -> Result<()> {
        self.run_job(JobOp::Restart, name).await
    }

    /// EnableUnitFiles(names, runtime=false, force=true). Returns the
    /// symlinks systemd created; call [`Systemd::reload`] afterwards.
    pub async fn enable(&self, names: &[&str]) -> Result<Vec<UnitFileChange>> {
        let (_carries_install_info, changes) = self
            .manager
            .enable_unit_files(names, false, true)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.systemd1.Manager.EnableUnitFiles({names:?})"
            )))?;
        Ok(changes.into_iter().map(UnitFileChange::from).collect())
    }

    /// DisableUnitFiles(names, runtime=false).
    pub async fn disable(&self, names: &[&str]) -> Result<Vec<UnitFileChange>> {
        let changes = self
            .manager
            .disable_unit_files(names, false)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.systemd1.Manager.DisableUnitFiles({names:?})"
            )))?;
        Ok(changes.into_iter().map(UnitFileChange::from).collect())
    }

    /// MaskUnitFiles(names, runtime=false, force=true).
    pub async fn mask(&self, names: &[&str]) -> Result<Vec<UnitFileChange>> {
        let changes = self
            .manager
            .mask_unit_files(names, false, true)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.systemd1.Manager.MaskUnitFiles({names:?})"
            )))?;
        Ok(changes.into_iter().map(UnitFileChange::from).collect())
    }

    /// UnmaskUnitFiles(names, runtime=false).
    pub async fn unmask(&self, names: &[&str]) -> Result<Vec<UnitFileChange>> {
        let changes = self
            .manager
            .unmask_unit_files(names, false)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.systemd1.Manager.UnmaskUnitFiles({names:?})"
            )))?;
        Ok(changes.into_iter().map(UnitFileChange::from).collect())
    }

    /// Manager.Reload (daemon-reload).
    pub async fn reload(&self) -> Result<()> {
        self.manager
            .reload()
            .await
            .map_err(call_err("calling org.freedesktop.systemd1.Manager.Reload"))
    }

    /// Subscribes (Manager.Subscribe) and returns a stream of ActiveState
    /// changes of any unit, taken from PropertiesChanged signals of the unit
    /// objects. Signals that only invalidate ActiveState are resolved with a
    /// property read; signals without it are skipped.
    pub async fn changes(&self) -> Result<BoxStream<'static, UnitChange>> {
        let rule = unit_properties_rule()
            .map_err(call_err("building the PropertiesChanged match rule"))?;
        let stream = MessageStream::for_match_rule(rule, &self.conn, None)
            .await
            .map_err(call_err(
                "subscribing to PropertiesChanged of systemd units",
            ))?;
        self.subscribe().await?;
        let conn = self.conn.clone();
        Ok(stream
            .filter_map(move |msg| {
                let conn = conn.clone();
                async move {
                    let msg = msg.ok()?;
                    unit_change(&conn, &msg).await
                }
            })
            .boxed())
    }

    async fn load_unit(&self, name: &str) -> Result<OwnedObjectPath> {
        self.manager.load_unit(name).await.map_err(call_err(format!(
            "calling org.freedesktop.systemd1.Manager.LoadUnit('{name}')"
        )))
    }

    async fn unit_proxy(&self, name: &str, path: OwnedObjectPath) -> Result<UnitProxy<'static>> {
        UnitProxy::builder(&self.conn)
            .path(path)
            .map_err(call_err(format!("addressing the object of unit '{name}'")))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err(format!("creating a proxy for unit '{name}'")))
    }

    async fn run_job(&self, op: JobOp, name: &str) -> Result<()> {
        self.subscribe().await?;
        let path = self.load_unit(name).await?;
        let load_state = self
            .unit_proxy(name, path)
            .await?
            .load_state()
            .await
            .map_err(call_err(format!("reading LoadState of unit '{name}'")))?;
        if load_state == "not-found" {
            return Err(Error::UnitNotFound {
                unit: name.to_string(),
            });
        }
        // Subscribe to JobRemoved before queuing the job, so a job that
        // finishes before the method reply arrives is not missed.
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_err("subscribing to systemd1 JobRemoved"))?;
        let call = match op {
            JobOp::Start => self.manager.start_unit(name, "replace").await,
            JobOp::Stop => self.manager.stop_unit(name, "replace").await,
            JobOp::Restart => self.manager.restart_unit(name, "replace").await,
        };
        let job = call.map_err(call_err(format!(
            "calling org.freedesktop.systemd1.Manager.{}('{name}', 'replace')",
            op.method()
        )))?;
        tracing::debug!(unit = name, job = %job.as_str(), "waiting for systemd {} job", op.name());
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return Ok(args.result);
                }
            }
            Err(Error::StreamEnded {
                what: format!("waiting for the {} job of unit '{name}'", op.name()),
            })
        };
        let result = tokio::time::timeout(self.job_timeout, wait)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("{} job {} of unit '{name}'", op.name(), job.as_str()),
                timeout: self.job_timeout,
            })??;
        if result == "done" {
            Ok(())
        } else {
            Err(Error::JobFailed {
                op: op.name(),
                unit: name.to_string(),
                result,
            })
        }
    }
}

fn unit_properties_rule() -> zbus::Result<MatchRule<'static>> {
    Ok(MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SERVICE)?
        .interface("org.freedesktop.DBus.Properties")?
        .member("PropertiesChanged")?
        .path_namespace(UNIT_PATH_PREFIX)?
        .arg(0, UNIT_INTERFACE)?
        .build())
}

async fn unit_change(conn: &Connection, msg: &zbus::Message) -> Option<UnitChange> {
    let header = msg.header();
    let path = header.path()?;
    let unit = unit_name_from_path(path.as_str())?;
    let (iface, changed, invalidated): (String, HashMap<String, OwnedValue>, Vec<String>) =
        msg.body().deserialize().ok()?;
    if iface != UNIT_INTERFACE {
        return None;
    }
    let text = |key: &str| {
        changed
            .get(key)
            .and_then(|v| v.downcast_ref::<&str>().ok())
            .map(str::to_string)
    };
    let active_state = match text("ActiveState") {
        Some(state) => state,
        None if invalidated.iter().any(|p| p == "ActiveState") => {
            let proxy = UnitProxy::builder(conn)
                .path(path.to_owned())
                .ok()?
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .ok()?;
            proxy.active_state().await.ok()?
        }
        None => return None,
    };
    Some(UnitChange {
        unit,
        active_state,
        sub_state: text("SubState"),
    })
}

/// Recovers a unit name from its systemd object path
/// (`/org/freedesktop/systemd1/unit/getty_40tty1_2eservice` -> `getty@tty1.service`).
/// systemd escapes every byte that is not `[A-Za-z0-9]` as `_xx` (lowercase hex).
pub fn unit_name_from_path(path: &str) -> Option<String> {
    let label = path.strip_prefix(UNIT_PATH_PREFIX)?.strip_prefix('/')?;
    if label.is_empty() || label.contains('/') {
        return None;
    }
    if label == "_" {
        return Some(String::new());
    }
    let bytes = label.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_unescape_like_systemd() {
        let cases = [
            (
                "/org/freedesktop/systemd1/unit/dbus_2eservice",
                "dbus.service",
            ),
            (
                "/org/freedesktop/systemd1/unit/getty_40tty1_2eservice",
                "getty@tty1.service",
            ),
            (
                "/org/freedesktop/systemd1/unit/systemd_2dnetworkd_2eservice",
                "systemd-networkd.service",
            ),
            ("/org/freedesktop/systemd1/unit/_2d_2eslice", "-.slice"),
        ];
        for (path, name) in cases {
            assert_eq!(unit_name_from_path(path).as_deref(), Some(name), "{path}");
        }
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/job/12"),
            None
        );
        assert_eq!(
            unit_name_from_path("/org/freedesktop/systemd1/unit/bad_2"),
            None
        );
    }
}
