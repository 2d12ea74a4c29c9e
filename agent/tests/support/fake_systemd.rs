//! Test-only fake of `org.freedesktop.systemd1`: a Manager and one Unit object
//! per loaded unit, in-memory unit state, jobs that finish after a delay with
//! JobRemoved, and a log of every method call and emitted signal.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use zbus::fdo::Properties;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};
use zbus::{interface, Connection, ObjectServer};

const MANAGER_PATH: &str = "/org/freedesktop/systemd1";

/// In-memory state of one fake unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeUnit {
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub unit_file_state: String,
}

#[derive(Default)]
struct State {
    units: BTreeMap<String, FakeUnit>,
    job_results: HashMap<String, String>,
    job_delay: Duration,
    next_job: u32,
    subscribers: BTreeSet<String>,
    log: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("fake systemd state poisoned")
    }

    fn record(&self, entry: String) {
        self.lock().log.push(entry);
    }
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum SdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
    AlreadySubscribed(String),
}

/// systemd's bus label escaping: every byte outside [A-Za-z0-9] becomes `_xx`.
fn unit_path(name: &str) -> String {
    let mut label = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            label.push(b as char);
        } else {
            label.push_str(&format!("_{b:02x}"));
        }
    }
    if label.is_empty() {
        label.push('_');
    }
    format!("{MANAGER_PATH}/unit/{label}")
}

fn owned_path(path: &str) -> Result<OwnedObjectPath, SdError> {
    OwnedObjectPath::try_from(path.to_string()).map_err(|e| SdError::ZBus(e.into()))
}

async fn export_unit(server: &ObjectServer, shared: &Shared, name: &str) -> zbus::Result<()> {
    server
        .at(
            unit_path(name),
            UnitObject {
                name: name.to_string(),
                shared: shared.clone(),
            },
        )
        .await
        .map(|_| ())
}

async fn emit_unit_state(conn: &Connection, name: &str, unit: &FakeUnit) -> zbus::Result<()> {
    let path = unit_path(name);
    let emitter = SignalEmitter::new(conn, path.as_str())?;
    let changed = HashMap::from([
        ("ActiveState", Value::from(unit.active_state.as_str())),
        ("SubState", Value::from(unit.sub_state.as_str())),
    ]);
    Properties::properties_changed(
        &emitter,
        "org.freedesktop.systemd1.Unit".try_into()?,
        changed,
        (&[] as &[&str]).into(),
    )
    .await
}

struct Manager {
    shared: Shared,
}

#[derive(Clone, Copy)]
enum JobKind {
    Start,
    Stop,
    Restart,
}

impl Manager {
    fn queue_job(
        &self,
        conn: &Connection,
        kind: JobKind,
        name: String,
    ) -> Result<OwnedObjectPath, SdError> {
        let (id, delay, result) = {
            let mut st = self.shared.lock();
            match st.units.get(&name) {
                Some(u) if u.load_state == "loaded" => {}
                _ => return Err(SdError::NoSuchUnit(format!("Unit {name} not found."))),
            }
            st.next_job += 1;
            let result = st
                .job_results
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "done".to_string());
            (st.next_job, st.job_delay, result)
        };
        let job = format!("{MANAGER_PATH}/job/{id}");
        let shared = self.shared.clone();
        let conn = conn.clone();
        let job_path = job.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let unit = {
                let mut st = shared.lock();
                let Some(unit) = st.units.get_mut(&name) else {
                    return;
                };
                let (active, sub) = match (result.as_str(), kind) {
                    ("done", JobKind::Start | JobKind::Restart) => ("active", "running"),
                    ("done", JobKind::Stop) => ("inactive", "dead"),
                    _ => ("failed", "failed"),
                };
                unit.active_state = active.to_string();
                unit.sub_state = sub.to_string();
                unit.clone()
            };
            let _ = emit_unit_state(&conn, &name, &unit).await;
            shared.record(format!(
                "signal JobRemoved({id}, {job_path}, {name}, {result})"
            ));
            if let (Ok(emitter), Ok(path)) = (
                SignalEmitter::new(&conn, MANAGER_PATH),
                ObjectPath::try_from(job_path.as_str()),
            ) {
                let _ = Manager::job_removed(&emitter, id, path, &name, &result).await;
            }
        });
        owned_path(&job)
    }

    fn unit_file_op(
        &self,
        files: &[String],
        apply: impl Fn(&str, &mut FakeUnit) -> (String, String, String),
    ) -> Result<Vec<(String, String, String)>, SdError> {
        let mut st = self.shared.lock();
        let mut changes = Vec::new();
        for file in files {
            let unit = st
                .units
                .get_mut(file)
                .ok_or_else(|| SdError::NoSuchUnit(format!("Unit file {file} does not exist.")))?;
            changes.push(apply(file, unit));
        }
        Ok(changes)
    }
}

#[interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    async fn subscribe(&self, #[zbus(header)] hdr: Header<'_>) -> Result<(), SdError> {
        self.shared.record("Subscribe()".to_string());
        let sender = hdr.sender().map(|s| s.to_string()).unwrap_or_default();
        if !self.shared.lock().subscribers.insert(sender) {
            return Err(SdError::AlreadySubscribed(
                "Client is already subscribed.".to_string(),
            ));
        }
        Ok(())
    }

    async fn load_unit(
        &self,
        name: String,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> Result<OwnedObjectPath, SdError> {
        self.shared.record(format!("LoadUnit({name})"));
        self.shared
            .lock()
            .units
            .entry(name.clone())
            .or_insert_with(|| FakeUnit {
                load_state: "not-found".to_string(),
                active_state: "inactive".to_string(),
                sub_state: "dead".to_string(),
                unit_file_state: String::new(),
            });
        export_unit(server, &self.shared, &name).await?;
        owned_path(&unit_path(&name))
    }

    async fn get_unit_file_state(&self, file: String) -> Result<String, SdError> {
        self.shared.record(format!("GetUnitFileState({file})"));
        match self.shared.lock().units.get(&file) {
            Some(u) if !u.unit_file_state.is_empty() => Ok(u.unit_file_state.clone()),
            _ => Err(SdError::NoSuchUnit(format!(
                "Unit file {file} does not exist."
            ))),
        }
    }

    /// Every unit with a unit-file state, as if its file were in /etc/systemd/system.
    async fn list_unit_files(&self) -> Vec<(String, String)> {
        self.shared.record("ListUnitFiles()".to_string());
        self.shared
            .lock()
            .units
            .iter()
            .filter(|(_, u)| !u.unit_file_state.is_empty())
            .map(|(n, u)| {
                (
                    format!("/etc/systemd/system/{n}"),
                    u.unit_file_state.clone(),
                )
            })
            .collect()
    }

    async fn start_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, SdError> {
        self.shared.record(format!("StartUnit({name}, {mode})"));
        self.queue_job(conn, JobKind::Start, name)
    }

    async fn stop_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, SdError> {
        self.shared.record(format!("StopUnit({name}, {mode})"));
        self.queue_job(conn, JobKind::Stop, name)
    }

    async fn restart_unit(
        &self,
        name: String,
        mode: String,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<OwnedObjectPath, SdError> {
        self.shared.record(format!("RestartUnit({name}, {mode})"));
        self.queue_job(conn, JobKind::Restart, name)
    }

    async fn enable_unit_files(
        &self,
        files: Vec<String>,
        runtime: bool,
        force: bool,
    ) -> Result<(bool, Vec<(String, String, String)>), SdError> {
        self.shared
            .record(format!("EnableUnitFiles({files:?}, {runtime}, {force})"));
        let changes = self.unit_file_op(&files, |file, unit| {
            unit.unit_file_state = "enabled".to_string();
            (
                "symlink".to_string(),
                format!("/etc/systemd/system/multi-user.target.wants/{file}"),
                format!("/lib/systemd/system/{file}"),
            )
        })?;
        Ok((true, changes))
    }

    async fn disable_unit_files(
        &self,
        files: Vec<String>,
        runtime: bool,
    ) -> Result<Vec<(String, String, String)>, SdError> {
        self.shared
            .record(format!("DisableUnitFiles({files:?}, {runtime})"));
        self.unit_file_op(&files, |file, unit| {
            unit.unit_file_state = "disabled".to_string();
            (
                "unlink".to_string(),
                format!("/etc/systemd/system/multi-user.target.wants/{file}"),
                String::new(),
            )
        })
    }

    async fn mask_unit_files(
        &self,
        files: Vec<String>,
        runtime: bool,
        force: bool,
    ) -> Result<Vec<(String, String, String)>, SdError> {
        self.shared
            .record(format!("MaskUnitFiles({files:?}, {runtime}, {force})"));
        self.unit_file_op(&files, |file, unit| {
            unit.unit_file_state = "masked".to_string();
            unit.load_state = "masked".to_string();
            (
                "symlink".to_string(),
                format!("/etc/systemd/system/{file}"),
                "/dev/null".to_string(),
            )
        })
    }

    async fn unmask_unit_files(
        &self,
        files: Vec<String>,
        runtime: bool,
    ) -> Result<Vec<(String, String, String)>, SdError> {
        self.shared
            .record(format!("UnmaskUnitFiles({files:?}, {runtime})"));
        self.unit_file_op(&files, |file, unit| {
            unit.unit_file_state = "disabled".to_string();
            unit.load_state = "loaded".to_string();
            (
                "unlink".to_string(),
                format!("/etc/systemd/system/{file}"),
                String::new(),
            )
        })
    }

    async fn reload(&self) {
        self.shared.record("Reload()".to_string());
    }

    #[zbus(signal)]
    async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

struct UnitObject {
    name: String,
    shared: Shared,
}

impl UnitObject {
    fn field(&self, get: impl Fn(&FakeUnit) -> &String) -> String {
        self.shared
            .lock()
            .units
            .get(&self.name)
            .map(|u| get(u).clone())
            .unwrap_or_default()
    }
}

#[interface(name = "org.freedesktop.systemd1.Unit")]
impl UnitObject {
    #[zbus(property)]
    fn id(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    fn load_state(&self) -> String {
        self.field(|u| &u.load_state)
    }

    #[zbus(property)]
    fn active_state(&self) -> String {
        self.field(|u| &u.active_state)
    }

    #[zbus(property)]
    fn sub_state(&self) -> String {
        self.field(|u| &u.sub_state)
    }

    #[zbus(property)]
    fn unit_file_state(&self) -> String {
        self.field(|u| &u.unit_file_state)
    }
}

/// Handle on a running fake systemd; it owns `org.freedesktop.systemd1` on
/// the bus as long as the handle lives.
pub struct FakeSystemd {
    conn: Connection,
    shared: Shared,
}

impl FakeSystemd {
    /// Connects to the bus at `address`, exports the Manager and takes the name.
    pub async fn serve(address: &str) -> anyhow::Result<Self> {
        let shared = Shared::default();
        shared.lock().job_delay = Duration::from_millis(200);
        let conn = zbus::connection::Builder::address(address)?
            .serve_at(
                MANAGER_PATH,
                Manager {
                    shared: shared.clone(),
                },
            )?
            .name("org.freedesktop.systemd1")?
            .build()
            .await
            .context("starting the fake systemd1")?;
        Ok(Self { conn, shared })
    }

    /// Adds a loaded unit (as if its unit file existed) and exports its object.
    pub async fn add_unit(
        &self,
        name: &str,
        active_state: &str,
        sub_state: &str,
        unit_file_state: &str,
    ) -> anyhow::Result<()> {
        self.shared.lock().units.insert(
            name.to_string(),
            FakeUnit {
                load_state: "loaded".to_string(),
                active_state: active_state.to_string(),
                sub_state: sub_state.to_string(),
                unit_file_state: unit_file_state.to_string(),
            },
        );
        export_unit(self.conn.object_server(), &self.shared, name)
            .await
            .with_context(|| format!("exporting fake unit {name}"))
    }

    /// Makes every later job of `unit` finish with `result` ("failed", "timeout", ...).
    pub fn set_job_result(&self, unit: &str, result: &str) {
        self.shared
            .lock()
            .job_results
            .insert(unit.to_string(), result.to_string());
    }

    /// How long a job runs before JobRemoved (default 200 ms).
    pub fn set_job_delay(&self, delay: Duration) {
        self.shared.lock().job_delay = delay;
    }

    /// Changes a unit's state behind the adapter's back and emits
    /// PropertiesChanged, as systemd does when a service crashes.
    pub async fn set_active_state(
        &self,
        name: &str,
        active_state: &str,
        sub_state: &str,
    ) -> anyhow::Result<()> {
        let unit = {
            let mut st = self.shared.lock();
            let unit = st
                .units
                .get_mut(name)
                .with_context(|| format!("fake unit {name} does not exist"))?;
            unit.active_state = active_state.to_string();
            unit.sub_state = sub_state.to_string();
            unit.clone()
        };
        emit_unit_state(&self.conn, name, &unit)
            .await
            .context("emitting PropertiesChanged")
    }

    /// Emits a JobRemoved for a job the adapter did not queue (another
    /// client's job finishing), without touching any unit.
    pub async fn emit_job_removed(&self, id: u32, unit: &str, result: &str) -> anyhow::Result<()> {
        let job = format!("{MANAGER_PATH}/job/{id}");
        self.shared
            .record(format!("signal JobRemoved({id}, {job}, {unit}, {result})"));
        let emitter = SignalEmitter::new(&self.conn, MANAGER_PATH)?;
        Manager::job_removed(
            &emitter,
            id,
            ObjectPath::try_from(job.as_str())?,
            unit,
            result,
        )
        .await
        .context("emitting JobRemoved")
    }

    /// The current in-memory state of `name`.
    pub fn unit(&self, name: &str) -> Option<FakeUnit> {
        self.shared.lock().units.get(name).cloned()
    }

    /// Manager method calls in order, e.g. "StartUnit(x.service, replace)".
    pub fn calls(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|e| !e.starts_with("signal "))
            .collect()
    }

    /// Calls and emitted JobRemoved signals ("signal JobRemoved(1, <path>, x.service, done)").
    pub fn log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }

    /// Forgets the recorded calls.
    pub fn clear_log(&self) {
        self.shared.lock().log.clear();
    }
}
