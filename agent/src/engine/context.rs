//! What every plugin call receives: where the agent keeps its files, the root
//! of the host it manages, the D-Bus connection (injected in tests, the system
//! bus otherwise) and the apply options the network plugin needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::OnceCell;

/// Flags of `apply` that plugins may honour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Only plan; the engine never calls `apply` when set.
    pub dry_run: bool,
    /// The engine takes no checkpoints: a failed transaction is not rolled back.
    pub no_rollback: bool,
    /// Keep the whole transaction only if `op-dbus-agent confirm` is run
    /// within this time; otherwise every checkpointed plugin is restored.
    pub confirm_timeout: Option<Duration>,
    /// Parts of the state this version does not apply are accepted: the run
    /// still lists them but is `ok` (`--allow-unapplied`).
    pub allow_unapplied: bool,
    /// Applied by the resident agent on its own (boot re-apply, drift
    /// repair), not by an operator: a state rolled back for want of
    /// `confirm` is not applied again, and a change still waiting for
    /// `confirm` is waited for instead of refused.
    pub resident: bool,
}

/// How often the actions that failed with a retryable error are tried
/// (the first try included) before the plugin fails, and the pause between
/// tries (multiplied by the attempt number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Shared by all plugins for one engine run (or the resident service).
pub struct Context {
    /// Audit database, status, markers, checkpoints.
    pub state_dir: PathBuf,
    /// Root of the managed system: `/` on a host, a temp dir in tests or the
    /// installer's target. Plugins that touch files resolve paths below it.
    pub root: PathBuf,
    /// OVSDB server socket (`unix:PATH`).
    pub ovsdb: String,
    pub options: ApplyOptions,
    pub retry: RetryPolicy,
    /// How long an apply waits for another one holding the state directory.
    pub lock_wait: Duration,
    /// `apt-get` program for the packages plugin's fallback path.
    pub apt_get: String,
    /// `dpkg-query` program for the packages plugin's fallback query.
    pub dpkg_query: String,
    /// Where container templates and containers live (lxc plugin).
    pub lxc: crate::lxc::Paths,
    /// Why this apply runs, kept in its audit block's engine record
    /// (`rollback --to-block N` says so).
    pub audit_note: Option<String>,
    bus_address: Option<String>,
    bus: OnceCell<zbus::Connection>,
}

impl Context {
    /// A context for the host itself (`root` = `/`, system bus on first use).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            root: PathBuf::from("/"),
            ovsdb: "unix:/run/openvswitch/db.sock".to_string(),
            options: ApplyOptions::default(),
            retry: RetryPolicy::default(),
            lock_wait: Duration::from_secs(30),
            apt_get: "apt-get".to_string(),
            dpkg_query: "dpkg-query".to_string(),
            lxc: crate::lxc::Paths::default(),
            audit_note: None,
            bus_address: None,
            bus: OnceCell::new(),
        }
    }

    pub fn with_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = root.into();
        self
    }

    /// Uses this connection for every D-Bus plugin (tests: a private bus).
    pub fn with_bus(self, conn: zbus::Connection) -> Self {
        let _ = self.bus.set(conn);
        self
    }

    /// Connects to this bus address instead of the system bus on first use.
    pub fn with_bus_address(mut self, address: Option<String>) -> Self {
        self.bus_address = address;
        self
    }

    pub fn with_options(mut self, options: ApplyOptions) -> Self {
        self.options = options;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn with_lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = wait;
        self
    }

    /// The D-Bus connection plugins use: the injected one, else the bus at
    /// the configured address, else the system bus.
    pub async fn bus(&self) -> anyhow::Result<zbus::Connection> {
        let conn = self
            .bus
            .get_or_try_init(|| async {
                match &self.bus_address {
                    Some(addr) => zbus::connection::Builder::address(addr.as_str())
                        .with_context(|| format!("parsing the D-Bus address '{addr}'"))?
                        .build()
                        .await
                        .with_context(|| format!("connecting to the D-Bus bus at {addr}")),
                    None => zbus::Connection::system().await.context(
                        "connecting to the system D-Bus (is dbus running? tests pass --bus ADDRESS)",
                    ),
                }
            })
            .await?;
        Ok(conn.clone())
    }

    /// What the agent created ([`super::ownership`]), kept in the state dir.
    pub fn ownership(&self) -> super::ownership::Ownership {
        super::ownership::Ownership::new(&self.state_dir)
    }

    /// `path` (absolute on the managed system) below [`Context::root`].
    pub fn host_path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}
