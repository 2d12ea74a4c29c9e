//! `plugins.systemd`: a unit named in both `services` and `units`, unit
//! names without a type suffix, custom unit files without a section header,
//! timers that activate themselves (an error) or a unit the state does not
//! declare (a warning: a package may ship it).

use super::Cx;
use crate::diag::pointer;
use crate::model::State;
use crate::normalize::{service_unit_name, timer_target, timer_unit_name, UNIT_SUFFIXES};

const SECTIONS: &[&str] = &[
    "Unit",
    "Service",
    "Socket",
    "Timer",
    "Mount",
    "Automount",
    "Swap",
    "Path",
    "Slice",
    "Scope",
    "Install",
];

pub(super) fn check(cx: &mut Cx, state: &State) {
    let Some(sd) = &state.plugins.systemd else {
        return;
    };
    let declared = |unit: &str| {
        sd.services.keys().any(|s| service_unit_name(s) == unit)
            || sd.units.contains_key(unit)
            || sd.custom_units.contains_key(unit)
    };
    for name in sd.units.keys() {
        let ptr = pointer(&["plugins", "systemd", "units", name]);
        if !has_suffix(name) {
            cx.error(
                ptr.clone(),
                format!("unit name {name} has no type suffix"),
                format!("write the full unit name, such as {name}.service"),
            );
        }
        if let Some(svc) = sd.services.keys().find(|s| service_unit_name(s) == *name) {
            cx.error(
                ptr,
                format!("unit {name} is declared in both systemd.services ({svc}) and systemd.units"),
                "keep one declaration: services takes a \"state\", units takes active_state/enabled/masked",
            );
        }
    }
    for (name, unit) in &sd.custom_units {
        let ptr = pointer(&["plugins", "systemd", "custom_units", name]);
        if !has_suffix(name) {
            cx.error(
                ptr.clone(),
                format!("custom unit name {name} has no type suffix"),
                format!("write the full unit file name, such as {name}.service"),
            );
        }
        let first = unit
            .content
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'));
        let header_ok = first.is_some_and(|l| {
            l.strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .is_some_and(|s| SECTIONS.contains(&s))
        });
        if !header_ok {
            cx.error(
                format!("{ptr}/content"),
                format!("custom unit {name} does not start with a section header"),
                "unit files are INI files: begin with [Unit] (then [Service], [Install], ...) before any Key=value line",
            );
        }
    }
    for (name, timer) in &sd.timers {
        let ptr = pointer(&["plugins", "systemd", "timers", name]);
        if timer.on_calendar.trim().is_empty() {
            cx.error(
                format!("{ptr}/on_calendar"),
                format!("timer {name} has an empty on_calendar"),
                "use a systemd.time calendar expression such as \"daily\" or \"*-*-* 02:00:00\"",
            );
        }
        let target = timer_target(name, timer);
        let uptr = if timer.unit.is_some() {
            format!("{ptr}/unit")
        } else {
            ptr.clone()
        };
        if target == timer_unit_name(name) {
            cx.error(
                uptr,
                format!("timer {name} activates itself"),
                "set \"unit\" to the unit it should start, such as a .service",
            );
        } else if !declared(&target) {
            // A package may ship the unit (apt-daily.service, logrotate.service).
            cx.warn(
                uptr,
                format!("timer {name} activates {target}, which plugins.systemd does not declare"),
                "fine if a package installs it; otherwise declare it in custom_units (or units/services)",
            );
        }
    }
}

fn has_suffix(name: &str) -> bool {
    UNIT_SUFFIXES
        .iter()
        .any(|s| name.ends_with(s) && name.len() > s.len())
}
