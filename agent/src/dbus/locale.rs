//! locale1 adapter: system locale variables and the virtual console keymap
//! through `org.freedesktop.locale1` (systemd-localed).

use zbus::proxy::CacheProperties;
use zbus::{proxy, Connection};

use super::{call_err, Result};

#[proxy(
    interface = "org.freedesktop.locale1",
    default_service = "org.freedesktop.locale1",
    default_path = "/org/freedesktop/locale1"
)]
trait Locale1 {
    fn set_locale(&self, locale: &[&str], interactive: bool) -> zbus::Result<()>;
    #[zbus(name = "SetVConsoleKeyboard")]
    fn set_vconsole_keyboard(
        &self,
        keymap: &str,
        keymap_toggle: &str,
        convert: bool,
        interactive: bool,
    ) -> zbus::Result<()>;
    #[zbus(property)]
    fn locale(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property, name = "VConsoleKeymap")]
    fn vconsole_keymap(&self) -> zbus::Result<String>;
}

/// Client of `org.freedesktop.locale1`.
#[derive(Clone)]
pub struct Locale {
    proxy: Locale1Proxy<'static>,
}

impl Locale {
    pub async fn new(conn: &Connection) -> Result<Self> {
        let proxy = Locale1Proxy::builder(conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("creating the locale1 proxy"))?;
        Ok(Self { proxy })
    }

    /// The `Locale` property: assignments such as "LANG=en_US.UTF-8".
    pub async fn locale(&self) -> Result<Vec<String>> {
        self.proxy
            .locale()
            .await
            .map_err(call_err("reading org.freedesktop.locale1.Locale"))
    }

    /// SetLocale(assignments, interactive=false); `assignments` are
    /// "VAR=value" strings, variables not listed are unset by localed.
    pub async fn set_locale(&self, assignments: &[&str]) -> Result<()> {
        self.proxy
            .set_locale(assignments, false)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.locale1.SetLocale({assignments:?})"
            )))
    }

    /// The `VConsoleKeymap` property, e.g. "de" ("" when unset).
    pub async fn vconsole_keymap(&self) -> Result<String> {
        self.proxy
            .vconsole_keymap()
            .await
            .map_err(call_err("reading org.freedesktop.locale1.VConsoleKeymap"))
    }

    /// SetVConsoleKeyboard(keymap, keymap_toggle, convert, interactive=false).
    /// `convert` also derives the X11 layout from the console keymap.
    pub async fn set_vconsole_keyboard(
        &self,
        keymap: &str,
        keymap_toggle: &str,
        convert: bool,
    ) -> Result<()> {
        self.proxy
            .set_vconsole_keyboard(keymap, keymap_toggle, convert, false)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.locale1.SetVConsoleKeyboard('{keymap}', '{keymap_toggle}')"
            )))
    }
}
