//! host plugin: static hostname, time zone, locale and console keymap from
//! `bootstrap`, through org.freedesktop.hostname1, timedate1 and locale1.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::dbus::{Hostname, Locale, Timedate};
use crate::engine::{ActionResult, Context, Plugin, PluginAction};
use opdbus_state::State;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub hostname: String,
    pub timezone: String,
    /// Value of LANG.
    pub locale: String,
    pub keymap: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub hostname: String,
    pub timezone: String,
    /// localed's assignments ("LANG=C.UTF-8", ...).
    pub locale: Vec<String>,
    pub keymap: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    SetHostname {
        hostname: String,
    },
    SetTimezone {
        timezone: String,
    },
    /// The full assignment list (localed unsets variables not listed).
    SetLocale {
        assignments: Vec<String>,
    },
    SetKeymap {
        keymap: String,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::SetHostname { hostname } => {
                write!(f, "set the static hostname to '{hostname}'")
            }
            Action::SetTimezone { timezone } => write!(f, "set the time zone to '{timezone}'"),
            Action::SetLocale { assignments } => {
                write!(f, "set the locale to {}", assignments.join(" "))
            }
            Action::SetKeymap { keymap } => write!(f, "set the console keymap to '{keymap}'"),
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::SetHostname { .. } => "set-hostname",
            Action::SetTimezone { .. } => "set-timezone",
            Action::SetLocale { .. } => "set-locale",
            Action::SetKeymap { .. } => "set-keymap",
        }
    }

    fn resource(&self) -> String {
        match self {
            Action::SetHostname { .. } => "host:hostname",
            Action::SetTimezone { .. } => "host:timezone",
            Action::SetLocale { .. } => "host:locale",
            Action::SetKeymap { .. } => "host:keymap",
        }
        .to_string()
    }
}

fn same_zone(a: &str, b: &str) -> bool {
    let norm = |z: &str| match z {
        "Etc/UTC" | "UTC" | "Etc/Universal" | "Universal" | "Zulu" => "UTC".to_string(),
        z => z.to_string(),
    };
    norm(a) == norm(b)
}

/// The pure diff: one action per setting that differs; LANG replaces any
/// LANG assignment and keeps the other variables.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    if current.hostname != desired.hostname {
        out.push(Action::SetHostname {
            hostname: desired.hostname.clone(),
        });
    }
    if !same_zone(&current.timezone, &desired.timezone) {
        out.push(Action::SetTimezone {
            timezone: desired.timezone.clone(),
        });
    }
    let lang = format!("LANG={}", desired.locale);
    if !current.locale.contains(&lang) {
        let mut assignments = vec![lang];
        assignments.extend(
            current
                .locale
                .iter()
                .filter(|a| !a.starts_with("LANG="))
                .cloned(),
        );
        out.push(Action::SetLocale { assignments });
    }
    if current.keymap != desired.keymap {
        out.push(Action::SetKeymap {
            keymap: desired.keymap.clone(),
        });
    }
    out
}

pub struct HostPlugin;

impl Plugin for HostPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = ();

    fn name(&self) -> &'static str {
        "host"
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        Ok(state.bootstrap.as_ref().map(|b| Desired {
            hostname: b.hostname.clone(),
            timezone: b.timezone.clone(),
            locale: b.locale.clone(),
            keymap: b.keyboard.clone(),
        }))
    }

    async fn query(&self, ctx: &Context, _desired: &Desired) -> anyhow::Result<Current> {
        let conn = ctx.bus().await?;
        let (h, t, l) = futures::try_join!(
            Hostname::new(&conn),
            Timedate::new(&conn),
            Locale::new(&conn)
        )?;
        let (hostname, timezone, locale, keymap) = futures::try_join!(
            h.static_hostname(),
            t.timezone(),
            l.locale(),
            l.vconsole_keymap()
        )?;
        Ok(Current {
            hostname,
            timezone,
            locale,
            keymap,
        })
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        super::each(actions, |a| async move {
            let conn = ctx.bus().await?;
            match a {
                Action::SetHostname { hostname } => {
                    Hostname::new(&conn)
                        .await?
                        .set_static_hostname(hostname)
                        .await?
                }
                Action::SetTimezone { timezone } => {
                    Timedate::new(&conn).await?.set_timezone(timezone).await?
                }
                Action::SetLocale { assignments } => {
                    let refs: Vec<&str> = assignments.iter().map(String::as_str).collect();
                    Locale::new(&conn).await?.set_locale(&refs).await?
                }
                Action::SetKeymap { keymap } => {
                    Locale::new(&conn)
                        .await?
                        .set_vconsole_keyboard(keymap, "", true)
                        .await?
                }
            }
            Ok(None)
        })
        .await
    }
}
