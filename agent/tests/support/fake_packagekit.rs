//! Test-only fake of `org.freedesktop.PackageKit`: CreateTransaction exports a
//! transaction object whose RefreshCache/Resolve/InstallPackages/
//! RemovePackages emit Package, ErrorCode and Finished signals from an
//! in-memory package list; installs and removals also announce progress as
//! the real daemon does (PropertiesChanged of Percentage and Status,
//! ItemProgress), and can be held before Finished.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::{interface, Connection, ObjectServer};

const INFO_INSTALLED: u32 = 1;
const INFO_AVAILABLE: u32 = 2;
const INFO_INSTALLING: u32 = 12;
const INFO_REMOVING: u32 = 13;
const FILTER_INSTALLED: u64 = 1 << 2;
const FILTER_NOT_INSTALLED: u64 = 1 << 3;
const EXIT_SUCCESS: u32 = 1;
const EXIT_FAILED: u32 = 2;
/// `PkStatusEnum` values the fake announces.
pub const STATUS_REMOVE: u32 = 6;
pub const STATUS_REFRESH_CACHE: u32 = 7;
pub const STATUS_DOWNLOAD: u32 = 8;
pub const STATUS_INSTALL: u32 = 9;
/// `PkErrorEnum::PACKAGE_NOT_INSTALLED`.
pub const ERROR_PACKAGE_NOT_INSTALLED: u32 = 7;
/// `PkErrorEnum::PACKAGE_NOT_FOUND`.
pub const ERROR_PACKAGE_NOT_FOUND: u32 = 8;

/// One package in the fake repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePackage {
    pub version: String,
    pub summary: String,
    pub installed: bool,
}

#[derive(Default)]
struct State {
    packages: BTreeMap<String, FakePackage>,
    next_tid: u32,
    log: Vec<String>,
    /// Wait for [`FakePackageKit::release`] before Finished of an install
    /// or removal.
    hold: bool,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<State>>, Arc<tokio::sync::Notify>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("fake PackageKit state poisoned")
    }

    fn record(&self, entry: String) {
        self.lock().log.push(entry);
    }
}

fn package_id(name: &str, p: &FakePackage) -> String {
    let data = if p.installed {
        "installed"
    } else {
        "fake-main"
    };
    format!("{name};{};amd64;{data}", p.version)
}

/// A signal the fake transaction sends, in order.
enum Emit {
    Package(u32, String, String),
    ErrorCode(u32, String),
    /// PropertiesChanged of Percentage and Status.
    Progress(u32, u32),
    ItemProgress(String, u32, u32),
    /// Waits for a release when the fake holds.
    Hold,
    Finished(u32),
}

struct Daemon {
    shared: Shared,
}

#[interface(name = "org.freedesktop.PackageKit")]
impl Daemon {
    async fn create_transaction(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let tid = {
            let mut st = self.shared.lock();
            st.next_tid += 1;
            st.next_tid
        };
        self.shared.record("CreateTransaction()".to_string());
        let path = format!("/{tid}_fake");
        server
            .at(
                path.as_str(),
                Transaction {
                    shared: self.shared.clone(),
                },
            )
            .await?;
        OwnedObjectPath::try_from(path).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }
}

struct Transaction {
    shared: Shared,
}

impl Transaction {
    /// Sends `signals` from `path` shortly after the method returned, as the
    /// real daemon does from its backend thread.
    fn run(&self, emitter: &SignalEmitter<'_>, signals: Vec<Emit>) {
        let emitter = emitter.to_owned();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            for signal in signals {
                let sent = match signal {
                    Emit::Package(info, id, summary) => {
                        shared.record(format!("signal Package({info}, {id})"));
                        Transaction::package(&emitter, info, &id, &summary).await
                    }
                    Emit::ErrorCode(code, details) => {
                        shared.record(format!("signal ErrorCode({code}, {details})"));
                        Transaction::error_code(&emitter, code, &details).await
                    }
                    Emit::Progress(percentage, status) => {
                        shared.record(format!("signal Percentage({percentage}) Status({status})"));
                        let changed = HashMap::from([
                            ("Percentage", Value::from(percentage)),
                            ("Status", Value::from(status)),
                        ]);
                        emitter
                            .emit(
                                "org.freedesktop.DBus.Properties",
                                "PropertiesChanged",
                                &(
                                    "org.freedesktop.PackageKit.Transaction",
                                    changed,
                                    Vec::<&str>::new(),
                                ),
                            )
                            .await
                    }
                    Emit::ItemProgress(id, status, percentage) => {
                        shared.record(format!("signal ItemProgress({id}, {status}, {percentage})"));
                        Transaction::item_progress(&emitter, &id, status, percentage).await
                    }
                    Emit::Hold => {
                        let held = shared.lock().hold;
                        if held {
                            shared.1.notified().await;
                        }
                        Ok(())
                    }
                    Emit::Finished(exit) => {
                        shared.record(format!("signal Finished({exit})"));
                        Transaction::finished(&emitter, exit, 5).await
                    }
                };
                if sent.is_err() {
                    return;
                }
            }
        });
    }
}

#[interface(name = "org.freedesktop.PackageKit.Transaction")]
impl Transaction {
    async fn refresh_cache(&self, force: bool, #[zbus(signal_emitter)] emitter: SignalEmitter<'_>) {
        self.shared.record(format!("RefreshCache({force})"));
        self.run(
            &emitter,
            vec![
                Emit::Progress(50, STATUS_REFRESH_CACHE),
                Emit::Finished(EXIT_SUCCESS),
            ],
        );
    }

    async fn resolve(
        &self,
        filter: u64,
        packages: Vec<String>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        self.shared
            .record(format!("Resolve({filter}, {packages:?})"));
        let mut signals = Vec::new();
        {
            let st = self.shared.lock();
            for name in &packages {
                let Some(p) = st.packages.get(name) else {
                    continue;
                };
                if (filter & FILTER_INSTALLED != 0 && !p.installed)
                    || (filter & FILTER_NOT_INSTALLED != 0 && p.installed)
                {
                    continue;
                }
                let info = if p.installed {
                    INFO_INSTALLED
                } else {
                    INFO_AVAILABLE
                };
                signals.push(Emit::Package(info, package_id(name, p), p.summary.clone()));
            }
        }
        signals.push(Emit::Finished(EXIT_SUCCESS));
        self.run(&emitter, signals);
    }

    async fn install_packages(
        &self,
        transaction_flags: u64,
        package_ids: Vec<String>,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        self.shared.record(format!(
            "InstallPackages({transaction_flags}, {package_ids:?})"
        ));
        let signals = self.change(&package_ids, true);
        self.run(&emitter, signals);
    }

    async fn remove_packages(
        &self,
        transaction_flags: u64,
        package_ids: Vec<String>,
        allow_deps: bool,
        autoremove: bool,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        self.shared.record(format!(
            "RemovePackages({transaction_flags}, {package_ids:?}, {allow_deps}, {autoremove})"
        ));
        let signals = self.change(&package_ids, false);
        self.run(&emitter, signals);
    }

    #[zbus(signal)]
    async fn package(
        emitter: &SignalEmitter<'_>,
        info: u32,
        package_id: &str,
        summary: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn item_progress(
        emitter: &SignalEmitter<'_>,
        id: &str,
        status: u32,
        percentage: u32,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn error_code(emitter: &SignalEmitter<'_>, code: u32, details: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn finished(emitter: &SignalEmitter<'_>, exit: u32, runtime: u32) -> zbus::Result<()>;
}

impl Transaction {
    /// Installs (`install`) or removes every package id, or fails the whole
    /// transaction on the first unknown or wrong-state package.
    fn change(&self, package_ids: &[String], install: bool) -> Vec<Emit> {
        let mut st = self.shared.lock();
        for id in package_ids {
            let name = id.split(';').next().unwrap_or_default();
            match st.packages.get(name) {
                None => {
                    return vec![
                        Emit::ErrorCode(ERROR_PACKAGE_NOT_FOUND, format!("{id} not found")),
                        Emit::Finished(EXIT_FAILED),
                    ]
                }
                Some(p) if !install && !p.installed => {
                    return vec![
                        Emit::ErrorCode(
                            ERROR_PACKAGE_NOT_INSTALLED,
                            format!("{name} is not installed"),
                        ),
                        Emit::Finished(EXIT_FAILED),
                    ]
                }
                Some(_) => {}
            }
        }
        let mut signals = Vec::new();
        let stage = if install {
            STATUS_INSTALL
        } else {
            STATUS_REMOVE
        };
        signals.push(Emit::Progress(0, stage));
        let n = package_ids.len() as u32;
        for (k, id) in package_ids.iter().enumerate() {
            let name = id.split(';').next().unwrap_or_default().to_string();
            if let Some(p) = st.packages.get_mut(&name) {
                let info = if install {
                    INFO_INSTALLING
                } else {
                    INFO_REMOVING
                };
                if install {
                    signals.push(Emit::ItemProgress(id.clone(), STATUS_DOWNLOAD, 100));
                }
                signals.push(Emit::ItemProgress(id.clone(), stage, 50));
                signals.push(Emit::Package(info, id.clone(), p.summary.clone()));
                signals.push(Emit::Progress((k as u32 + 1) * 100 / n.max(1) / 2, stage));
                p.installed = install;
            }
        }
        // Half way in the last package's stage while held.
        signals.push(Emit::Hold);
        signals.push(Emit::Progress(100, stage));
        signals.push(Emit::Finished(EXIT_SUCCESS));
        signals
    }
}

/// Handle on a running fake PackageKit; it owns the name while it lives.
pub struct FakePackageKit {
    conn: Connection,
    shared: Shared,
}

impl FakePackageKit {
    /// Serves the daemon on the bus at `address` with an empty repository.
    pub async fn serve(address: &str) -> anyhow::Result<Self> {
        let shared = Shared::default();
        let conn = zbus::connection::Builder::address(address)?
            .serve_at(
                "/org/freedesktop/PackageKit",
                Daemon {
                    shared: shared.clone(),
                },
            )?
            .name("org.freedesktop.PackageKit")?
            .build()
            .await
            .context("starting the fake PackageKit")?;
        Ok(Self { conn, shared })
    }

    /// Adds a package to the fake repository.
    pub fn add_package(&self, name: &str, version: &str, installed: bool) {
        self.shared.lock().packages.insert(
            name.to_string(),
            FakePackage {
                version: version.to_string(),
                summary: format!("{name} summary"),
                installed,
            },
        );
    }

    /// Holds installs and removals before they finish, until [`release`].
    ///
    /// [`release`]: FakePackageKit::release
    pub fn hold(&self) {
        self.shared.lock().hold = true;
    }

    /// Lets a held transaction finish (and later ones run through).
    pub fn release(&self) {
        self.shared.lock().hold = false;
        self.shared.1.notify_one();
    }

    /// The package's current state.
    pub fn package(&self, name: &str) -> Option<FakePackage> {
        self.shared.lock().packages.get(name).cloned()
    }

    /// Method calls in order, e.g. "Resolve(4, [\"curl\"])".
    pub fn calls(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|e| !e.starts_with("signal "))
            .collect()
    }

    /// Calls and emitted signals in order.
    pub fn log(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }
}
