//! Test-only fakes of systemd's settings daemons: `org.freedesktop.hostname1`,
//! `timedate1` and `locale1`, served from one connection with in-memory
//! values and a log of every setter call.
#![allow(dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use zbus::{interface, Connection};

/// The values the fake daemons hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub static_hostname: String,
    pub timezone: String,
    pub locale: Vec<String>,
    pub vconsole_keymap: String,
    pub vconsole_keymap_toggle: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            static_hostname: "localhost".to_string(),
            timezone: "Etc/UTC".to_string(),
            locale: vec!["LANG=C.UTF-8".to_string()],
            vconsole_keymap: "us".to_string(),
            vconsole_keymap_toggle: String::new(),
        }
    }
}

#[derive(Default)]
struct State {
    settings: Settings,
    log: Vec<String>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<State>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("fake settings state poisoned")
    }
}

struct Hostname1(Shared);

#[interface(name = "org.freedesktop.hostname1")]
impl Hostname1 {
    async fn set_static_hostname(&self, hostname: String, interactive: bool) {
        let mut st = self.0.lock();
        st.log
            .push(format!("SetStaticHostname({hostname}, {interactive})"));
        st.settings.static_hostname = hostname;
    }

    #[zbus(property)]
    fn static_hostname(&self) -> String {
        self.0.lock().settings.static_hostname.clone()
    }
}

struct Timedate1(Shared);

#[interface(name = "org.freedesktop.timedate1")]
impl Timedate1 {
    async fn set_timezone(&self, timezone: String, interactive: bool) -> zbus::fdo::Result<()> {
        let mut st = self.0.lock();
        st.log
            .push(format!("SetTimezone({timezone}, {interactive})"));
        if !timezone.contains('/') && timezone != "UTC" {
            return Err(zbus::fdo::Error::InvalidArgs(format!(
                "Invalid or not installed time zone '{timezone}'"
            )));
        }
        st.settings.timezone = timezone;
        Ok(())
    }

    #[zbus(property)]
    fn timezone(&self) -> String {
        self.0.lock().settings.timezone.clone()
    }
}

struct Locale1(Shared);

#[interface(name = "org.freedesktop.locale1")]
impl Locale1 {
    async fn set_locale(&self, locale: Vec<String>, interactive: bool) {
        let mut st = self.0.lock();
        st.log.push(format!("SetLocale({locale:?}, {interactive})"));
        st.settings.locale = locale;
    }

    #[zbus(name = "SetVConsoleKeyboard")]
    async fn set_vconsole_keyboard(
        &self,
        keymap: String,
        keymap_toggle: String,
        convert: bool,
        interactive: bool,
    ) {
        let mut st = self.0.lock();
        st.log.push(format!(
            "SetVConsoleKeyboard({keymap}, {keymap_toggle}, {convert}, {interactive})"
        ));
        st.settings.vconsole_keymap = keymap;
        st.settings.vconsole_keymap_toggle = keymap_toggle;
    }

    #[zbus(property)]
    fn locale(&self) -> Vec<String> {
        self.0.lock().settings.locale.clone()
    }

    #[zbus(property, name = "VConsoleKeymap")]
    fn vconsole_keymap(&self) -> String {
        self.0.lock().settings.vconsole_keymap.clone()
    }

    #[zbus(property, name = "VConsoleKeymapToggle")]
    fn vconsole_keymap_toggle(&self) -> String {
        self.0.lock().settings.vconsole_keymap_toggle.clone()
    }
}

/// Handle on the running fakes; they own their bus names while it lives.
pub struct FakeSettings {
    conn: Connection,
    shared: Shared,
}

impl FakeSettings {
    /// Serves hostname1, timedate1 and locale1 on the bus at `address`.
    pub async fn serve(address: &str, initial: Settings) -> anyhow::Result<Self> {
        let shared = Shared::default();
        shared.lock().settings = initial;
        let conn = zbus::connection::Builder::address(address)?
            .serve_at("/org/freedesktop/hostname1", Hostname1(shared.clone()))?
            .serve_at("/org/freedesktop/timedate1", Timedate1(shared.clone()))?
            .serve_at("/org/freedesktop/locale1", Locale1(shared.clone()))?
            .name("org.freedesktop.hostname1")?
            .name("org.freedesktop.timedate1")?
            .name("org.freedesktop.locale1")?
            .build()
            .await
            .context("starting the fake hostname1/timedate1/locale1")?;
        Ok(Self { conn, shared })
    }

    /// The current values.
    pub fn settings(&self) -> Settings {
        self.shared.lock().settings.clone()
    }

    /// Setter calls in order, e.g. "SetStaticHostname(web1, false)".
    pub fn calls(&self) -> Vec<String> {
        self.shared.lock().log.clone()
    }
}
