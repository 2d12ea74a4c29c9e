//! PackageKit adapter: one transaction per operation (RefreshCache, Resolve,
//! InstallPackages, RemovePackages), collecting Package signals until
//! Finished and handing progress (the `Percentage` and `Status` properties,
//! `ItemProgress` signals) to an optional observer. Callers check
//! [`PackageKit::is_available`] first and fall back to apt when it is absent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use zbus::message::Type as MessageType;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};
use zbus::{proxy, Connection, MatchRule, MessageStream};

use super::{call_err, Error, Result};

/// Bus name of the PackageKit daemon.
pub const SERVICE: &str = "org.freedesktop.PackageKit";
const TRANSACTION_INTERFACE: &str = "org.freedesktop.PackageKit.Transaction";
const PROPERTIES_INTERFACE: &str = "org.freedesktop.DBus.Properties";
/// Default time one transaction may take (installs download packages).
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Filter bitfield values for [`PackageKit::resolve`] (`1 << PkFilterEnum`).
pub mod filter {
    pub const NONE: u64 = 1 << 1;
    pub const INSTALLED: u64 = 1 << 2;
    pub const NOT_INSTALLED: u64 = 1 << 3;
    pub const NEWEST: u64 = 1 << 16;
    pub const ARCH: u64 = 1 << 18;
}

/// Transaction flag bitfield values (`1 << PkTransactionFlagEnum`); 0 is "none".
pub mod transaction_flag {
    pub const NONE: u64 = 0;
    pub const ONLY_TRUSTED: u64 = 1 << 1;
    pub const SIMULATE: u64 = 1 << 2;
    pub const ONLY_DOWNLOAD: u64 = 1 << 3;
}

/// `PkInfoEnum` values carried by Package signals.
pub mod info {
    pub const INSTALLED: u32 = 1;
    pub const AVAILABLE: u32 = 2;
    pub const INSTALLING: u32 = 12;
    pub const REMOVING: u32 = 13;
    pub const FINISHED: u32 = 18;
}

/// `PkStatusEnum`: what a transaction is doing (the `Status` property and
/// the status of `ItemProgress`).
pub mod status {
    /// The name PackageKit's tools print for a status value.
    pub fn name(status: u32) -> &'static str {
        const NAMES: [&str; 31] = [
            "unknown",
            "wait",
            "setup",
            "running",
            "query",
            "info",
            "remove",
            "refresh-cache",
            "download",
            "install",
            "update",
            "cleanup",
            "obsolete",
            "dep-resolve",
            "sig-check",
            "test-commit",
            "commit",
            "request",
            "finished",
            "cancel",
            "download-repository",
            "download-packagelist",
            "download-filelist",
            "download-changelog",
            "download-group",
            "download-updateinfo",
            "repackaging",
            "loading-cache",
            "scan-applications",
            "generate-package-list",
            "waiting-for-lock",
        ];
        NAMES.get(status as usize).copied().unwrap_or("unknown")
    }
    pub const REMOVE: u32 = 6;
    pub const DOWNLOAD: u32 = 8;
    pub const INSTALL: u32 = 9;
}

/// `Percentage` when the backend cannot tell.
pub const PERCENTAGE_UNKNOWN: u32 = 101;

/// What one progress report says about the running transaction: the overall
/// percentage and status as last announced, and the package the report is
/// about (an `ItemProgress` signal) when it is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The operation: `install`, `remove`, `refresh-cache`, `resolve`.
    pub op: &'static str,
    /// 0..=100; `None` while PackageKit says it cannot tell (101).
    pub percentage: Option<u32>,
    /// `PkStatusEnum` of the transaction ([`status::name`]).
    pub status: Option<u32>,
    /// Package id, status and percentage of the last `ItemProgress`.
    pub item: Option<(String, u32, Option<u32>)>,
}

/// Receives every progress report of every transaction, in order.
pub type ProgressObserver = Arc<dyn Fn(&Progress) + Send + Sync>;

fn known_percentage(p: u32) -> Option<u32> {
    (p < PERCENTAGE_UNKNOWN).then_some(p)
}

/// `PkExitEnum::SUCCESS`.
pub const EXIT_SUCCESS: u32 = 1;

#[proxy(
    interface = "org.freedesktop.PackageKit",
    default_service = "org.freedesktop.PackageKit",
    default_path = "/org/freedesktop/PackageKit"
)]
trait Daemon {
    fn create_transaction(&self) -> zbus::Result<OwnedObjectPath>;
}

#[proxy(
    interface = "org.freedesktop.PackageKit.Transaction",
    default_service = "org.freedesktop.PackageKit"
)]
trait Transaction {
    fn refresh_cache(&self, force: bool) -> zbus::Result<()>;
    fn resolve(&self, filter: u64, packages: &[&str]) -> zbus::Result<()>;
    fn install_packages(&self, transaction_flags: u64, package_ids: &[&str]) -> zbus::Result<()>;
    fn remove_packages(
        &self,
        transaction_flags: u64,
        package_ids: &[&str],
        allow_deps: bool,
        autoremove: bool,
    ) -> zbus::Result<()>;
}

/// One Package signal: `package_id` is "name;version;arch;data".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    /// A `PkInfoEnum` value, see [`info`].
    pub info: u32,
    pub package_id: String,
    pub summary: String,
}

impl Package {
    fn id_field(&self, index: usize) -> &str {
        self.package_id.split(';').nth(index).unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.id_field(0)
    }

    pub fn version(&self) -> &str {
        self.id_field(1)
    }

    pub fn arch(&self) -> &str {
        self.id_field(2)
    }

    /// Repository or "installed"/"auto:..."/"manual:..." depending on the backend.
    pub fn data(&self) -> &str {
        self.id_field(3)
    }

    /// True when PackageKit reported the package as installed.
    pub fn is_installed(&self) -> bool {
        self.info == info::INSTALLED
    }
}

/// Client of the PackageKit daemon. Cheap to clone.
#[derive(Clone)]
pub struct PackageKit {
    conn: Connection,
    daemon: DaemonProxy<'static>,
    timeout: Duration,
    progress: Option<ProgressObserver>,
}

impl PackageKit {
    /// True when `org.freedesktop.PackageKit` has an owner on the bus or can
    /// be started by D-Bus activation.
    pub async fn is_available(conn: &Connection) -> Result<bool> {
        let dbus = zbus::fdo::DBusProxy::new(conn)
            .await
            .map_err(call_err("creating the org.freedesktop.DBus proxy"))?;
        let name = zbus::names::BusName::try_from(SERVICE)
            .map_err(|e| call_err("parsing the PackageKit bus name")(e.into()))?;
        let owned = dbus
            .name_has_owner(name)
            .await
            .map_err(|e| call_err("calling org.freedesktop.DBus.NameHasOwner")(e.into()))?;
        if owned {
            return Ok(true);
        }
        let activatable = dbus
            .list_activatable_names()
            .await
            .map_err(|e| call_err("calling org.freedesktop.DBus.ListActivatableNames")(e.into()))?;
        Ok(activatable.iter().any(|n| n.as_str() == SERVICE))
    }

    pub async fn new(conn: &Connection) -> Result<Self> {
        let daemon = DaemonProxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("creating the PackageKit proxy"))?;
        Ok(Self {
            conn: conn.clone(),
            daemon,
            timeout: DEFAULT_TRANSACTION_TIMEOUT,
            progress: None,
        })
    }

    /// Hands every progress report of later transactions to `observer`.
    pub fn with_progress(mut self, observer: ProgressObserver) -> Self {
        self.progress = Some(observer);
        self
    }

    /// RefreshCache(force): downloads the package lists of every apt source.
    pub async fn refresh_cache(&self, force: bool) -> Result<()> {
        self.transaction("refresh-cache", |tx| async move {
            tx.refresh_cache(force).await
        })
        .await
        .map(drop)
    }

    /// Sets how long one transaction may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Resolve(filter, names): the packages PackageKit knows by these names,
    /// one entry per matching package id (see [`filter`]).
    pub async fn resolve(&self, filter: u64, names: &[&str]) -> Result<Vec<Package>> {
        self.transaction(
            "resolve",
            |tx| async move { tx.resolve(filter, names).await },
        )
        .await
    }

    /// InstallPackages(flags, package_ids); returns the Package signals
    /// (progress: installing, finished, ...).
    pub async fn install(&self, flags: u64, package_ids: &[&str]) -> Result<Vec<Package>> {
        self.transaction("install", |tx| async move {
            tx.install_packages(flags, package_ids).await
        })
        .await
    }

    /// RemovePackages(flags, package_ids, allow_deps, autoremove).
    pub async fn remove(
        &self,
        flags: u64,
        package_ids: &[&str],
        allow_deps: bool,
        autoremove: bool,
    ) -> Result<Vec<Package>> {
        self.transaction("remove", |tx| async move {
            tx.remove_packages(flags, package_ids, allow_deps, autoremove)
                .await
        })
        .await
    }

    /// Creates a transaction, subscribes to its signals, runs `start` on it
    /// and collects Package signals until Finished.
    async fn transaction<F, Fut>(&self, op: &'static str, start: F) -> Result<Vec<Package>>
    where
        F: FnOnce(TransactionProxy<'static>) -> Fut,
        Fut: std::future::Future<Output = zbus::Result<()>>,
    {
        let path = self.daemon.create_transaction().await.map_err(call_err(
            "calling org.freedesktop.PackageKit.CreateTransaction",
        ))?;
        // Transaction signals and PropertiesChanged (Percentage, Status)
        // of this transaction's object.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(SERVICE)
            .and_then(|b| b.path(path.clone()))
            .map(|b| b.build())
            .map_err(call_err("building the PackageKit transaction match rule"))?;
        // One ordered stream for all transaction signals, opened before the
        // operation starts so no early signal is lost.
        let mut signals = MessageStream::for_match_rule(rule, &self.conn, None)
            .await
            .map_err(call_err(format!(
                "subscribing to signals of PackageKit transaction {}",
                path.as_str()
            )))?;
        let tx = TransactionProxy::builder(&self.conn)
            .path(path.clone())
            .map_err(call_err("addressing the PackageKit transaction"))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("creating the PackageKit transaction proxy"))?;
        start(tx).await.map_err(call_err(format!(
            "calling org.freedesktop.PackageKit.Transaction {op} on {}",
            path.as_str()
        )))?;

        let collect = async {
            let mut packages = Vec::new();
            let mut error: Option<(u32, String)> = None;
            let mut progress = Progress {
                op,
                ..Progress::default()
            };
            while let Some(msg) = signals.next().await {
                let Ok(msg) = msg else { continue };
                let header = msg.header();
                let Some(member) = header.member() else {
                    continue;
                };
                let interface = header.interface().map(|i| i.as_str().to_string());
                if interface.as_deref() == Some(PROPERTIES_INTERFACE) {
                    if member.as_str() == "PropertiesChanged" {
                        if let Ok((iface, changed, _)) =
                            msg.body()
                                .deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
                        {
                            if iface == TRANSACTION_INTERFACE
                                && self.properties_changed(&mut progress, &changed)
                            {
                                self.report(&progress);
                            }
                        }
                    }
                    continue;
                }
                if interface.as_deref() != Some(TRANSACTION_INTERFACE) {
                    continue;
                }
                match member.as_str() {
                    "ItemProgress" => {
                        if let Ok((id, st, pct)) = msg.body().deserialize::<(String, u32, u32)>() {
                            progress.item = Some((id, st, known_percentage(pct)));
                            self.report(&progress);
                        }
                    }
                    "Package" => {
                        if let Ok((info, package_id, summary)) =
                            msg.body().deserialize::<(u32, String, String)>()
                        {
                            packages.push(Package {
                                info,
                                package_id,
                                summary,
                            });
                        }
                    }
                    "ErrorCode" => {
                        if let Ok(code) = msg.body().deserialize::<(u32, String)>() {
                            error.get_or_insert(code);
                        }
                    }
                    "Finished" => {
                        let (exit, _runtime) = msg
                            .body()
                            .deserialize::<(u32, u32)>()
                            .map_err(call_err("decoding PackageKit Finished"))?;
                        return match (error, exit) {
                            (Some((code, details)), _) => {
                                Err(Error::PackageKit { op, code, details })
                            }
                            (None, EXIT_SUCCESS) => Ok(packages),
                            (None, exit) => Err(Error::PackageKitExit { op, exit }),
                        };
                    }
                    _ => {}
                }
            }
            Err(Error::StreamEnded {
                what: format!("waiting for PackageKit {op} to finish"),
            })
        };
        tokio::time::timeout(self.timeout, collect)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("PackageKit {op} transaction {}", path.as_str()),
                timeout: self.timeout,
            })?
    }
}

impl PackageKit {
    /// Takes `Percentage` and `Status` from a PropertiesChanged; true when
    /// either changed.
    fn properties_changed(
        &self,
        progress: &mut Progress,
        changed: &HashMap<String, OwnedValue>,
    ) -> bool {
        let mut any = false;
        if let Some(p) = changed
            .get("Percentage")
            .and_then(|v| v.downcast_ref::<u32>().ok())
        {
            let p = known_percentage(p);
            any |= progress.percentage != p;
            progress.percentage = p;
        }
        if let Some(s) = changed
            .get("Status")
            .and_then(|v| v.downcast_ref::<u32>().ok())
        {
            any |= progress.status != Some(s);
            progress.status = Some(s);
        }
        any
    }

    fn report(&self, progress: &Progress) {
        if let Some(observer) = &self.progress {
            observer(progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_id_fields() {
        let p = Package {
            info: info::INSTALLED,
            package_id: "curl;7.88.1-10;amd64;installed:debian-bookworm-main".into(),
            summary: "command line tool".into(),
        };
        assert_eq!(p.name(), "curl");
        assert_eq!(p.version(), "7.88.1-10");
        assert_eq!(p.arch(), "amd64");
        assert_eq!(p.data(), "installed:debian-bookworm-main");
        assert!(p.is_installed());
    }
}
