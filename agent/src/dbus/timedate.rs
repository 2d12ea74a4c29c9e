//! timedate1 adapter: reads and sets the system time zone through
//! `org.freedesktop.timedate1` (systemd-timedated), which updates /etc/localtime.

use zbus::proxy::CacheProperties;
use zbus::{proxy, Connection};

use super::{call_err, Result};

#[proxy(
    interface = "org.freedesktop.timedate1",
    default_service = "org.freedesktop.timedate1",
    default_path = "/org/freedesktop/timedate1"
)]
trait Timedate1 {
    fn set_timezone(&self, timezone: &str, interactive: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn timezone(&self) -> zbus::Result<String>;
}

/// Client of `org.freedesktop.timedate1`.
#[derive(Clone)]
pub struct Timedate {
    proxy: Timedate1Proxy<'static>,
}

impl Timedate {
    pub async fn new(conn: &Connection) -> Result<Self> {
        let proxy = Timedate1Proxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("creating the timedate1 proxy"))?;
        Ok(Self { proxy })
    }

    /// The `Timezone` property, e.g. "Europe/Berlin".
    pub async fn timezone(&self) -> Result<String> {
        self.proxy
            .timezone()
            .await
            .map_err(call_err("reading org.freedesktop.timedate1.Timezone"))
    }

    /// SetTimezone(timezone, interactive=false).
    pub async fn set_timezone(&self, timezone: &str) -> Result<()> {
        self.proxy
            .set_timezone(timezone, false)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.timedate1.SetTimezone('{timezone}')"
            )))
    }
}
