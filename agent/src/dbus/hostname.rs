//! hostname1 adapter: reads and sets the static hostname through
//! `org.freedesktop.hostname1` (systemd-hostnamed), which also writes /etc/hostname.

use zbus::proxy::CacheProperties;
use zbus::{proxy, Connection};

use super::{call_err, Result};

#[proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1"
)]
trait Hostname1 {
    fn set_static_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn static_hostname(&self) -> zbus::Result<String>;
}

/// Client of `org.freedesktop.hostname1`.
#[derive(Clone)]
pub struct Hostname {
    proxy: Hostname1Proxy<'static>,
}

impl Hostname {
    pub async fn new(conn: &Connection) -> Result<Self> {
        let proxy = Hostname1Proxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("creating the hostname1 proxy"))?;
        Ok(Self { proxy })
    }

    /// The `StaticHostname` property ("" when none is set).
    pub async fn static_hostname(&self) -> Result<String> {
        self.proxy
            .static_hostname()
            .await
            .map_err(call_err("reading org.freedesktop.hostname1.StaticHostname"))
    }

    /// SetStaticHostname(hostname, interactive=false).
    pub async fn set_static_hostname(&self, hostname: &str) -> Result<()> {
        self.proxy
            .set_static_hostname(hostname, false)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.hostname1.SetStaticHostname('{hostname}')"
            )))
    }
}
