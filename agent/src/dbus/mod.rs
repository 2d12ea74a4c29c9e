//! D-Bus adapters: thin, typed clients for systemd1, hostname1, timedate1,
//! locale1, resolve1, network1 and PackageKit. They carry no policy: the plugins decide what to
//! change, these modules only read and write one service each.

pub mod hostname;
pub mod locale;
pub mod packagekit;
pub mod resolve;
pub mod systemd;
pub mod timedate;

pub use hostname::Hostname;
pub use locale::Locale;
pub use packagekit::{Package, PackageKit};
pub use resolve::Resolved;
pub use systemd::{Systemd, UnitChange, UnitFileChange, UnitStatus};
pub use timedate::Timedate;

use std::time::Duration;

/// Errors of the D-Bus adapters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A method call, property read or signal subscription failed.
    #[error("{what} failed")]
    Call {
        /// The call, e.g. "calling org.freedesktop.systemd1.Manager.StartUnit('x.service')".
        what: String,
        #[source]
        source: zbus::Error,
    },
    /// `LoadUnit` reported that no unit file exists for the name.
    #[error("unit '{unit}' not found (LoadState=not-found): check the unit name or install the package that ships it")]
    UnitNotFound { unit: String },
    /// A systemd job finished with a result other than "done".
    #[error(
        "{op} job for unit '{unit}' finished with result '{result}': see `journalctl -u {unit}`"
    )]
    JobFailed {
        op: &'static str,
        unit: String,
        result: String,
    },
    /// A systemd job or PackageKit transaction did not finish in time.
    #[error(
        "{what} did not finish within {timeout:?}: the operation may still be running on the host"
    )]
    Timeout { what: String, timeout: Duration },
    /// The service stopped sending signals before the operation finished.
    #[error("signal stream ended while {what}: did the service exit or restart?")]
    StreamEnded { what: String },
    /// PackageKit reported an error code for a transaction.
    #[error("PackageKit {op} failed with error code {code}: {details}")]
    PackageKit {
        op: &'static str,
        code: u32,
        details: String,
    },
    /// A PackageKit transaction finished without success and without an error code.
    #[error("PackageKit {op} finished with exit code {exit} (1 means success): check the PackageKit journal")]
    PackageKitExit { op: &'static str, exit: u32 },
}

/// Result alias for the D-Bus adapters.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns a closure that wraps a zbus error with the call that failed.
pub(crate) fn call_err(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> Error {
    let what = what.into();
    move |source| Error::Call { what, source }
}
