//! `bootstrap`: hostname and domain syntax, timezone (syntax, then the zone
//! list embedded from tzdata, so every machine judges a state alike), locale
//! syntax, the kernel command line, the mirror URL and the payload source.

use super::Cx;
use crate::model::{Bootstrap, Distribution, PayloadKind, State};

/// Proxmox VE major versions and the Debian suite each is built on.
pub const PROXMOX_SUITES: [(u8, &str); 2] = [(8, "bookworm"), (9, "trixie")];

pub(super) fn check(cx: &mut Cx, b: &Bootstrap, state: &State) {
    if b.distribution == Distribution::Proxmox {
        check_proxmox(cx, b, state);
    } else if b.proxmox_version.is_some() {
        cx.warn(
            "/bootstrap/proxmox_version",
            "proxmox_version is set but the distribution is debian: it has no effect",
            "set \"distribution\": \"proxmox\" to install Proxmox VE, or remove proxmox_version",
        );
    }
    if !valid_label(&b.hostname) {
        cx.error(
            "/bootstrap/hostname",
            format!("hostname {:?} is not a valid RFC 1123 label", b.hostname),
            "use 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen; put the rest in \"domain\"",
        );
    }
    if let Some(d) = &b.domain {
        if d.len() > 253 || !d.split('.').all(valid_label) {
            cx.error(
                "/bootstrap/domain",
                format!("domain {d:?} is not a valid DNS name"),
                "use dot-separated labels of letters, digits and hyphens, such as example.com",
            );
        }
    }
    if !valid_timezone(&b.timezone) {
        cx.error(
            "/bootstrap/timezone",
            format!("timezone {:?} is not a valid tz database name", b.timezone),
            "use UTC or Area/Location, such as Europe/Berlin (see /usr/share/zoneinfo)",
        );
    } else if !known_timezone(&b.timezone) {
        cx.error(
            "/bootstrap/timezone",
            format!(
                "timezone {:?} is not in the tz database ({TZ_VERSION})",
                b.timezone
            ),
            "use a name that `timedatectl list-timezones` prints, such as Europe/Berlin or UTC",
        );
    }
    if !valid_locale(&b.locale) {
        cx.error(
            "/bootstrap/locale",
            format!("locale {:?} is not a valid locale name", b.locale),
            "use C.UTF-8 or language_TERRITORY.CODESET, such as en_US.UTF-8",
        );
    }
    if b.kernel_cmdline.contains(['\n', '\r']) {
        cx.error(
            "/bootstrap/kernel_cmdline",
            "kernel_cmdline contains a line break",
            "the kernel command line is one line: separate arguments with spaces",
        );
    } else if b.kernel_cmdline.chars().any(char::is_control) {
        cx.error(
            "/bootstrap/kernel_cmdline",
            "kernel_cmdline contains a control character",
            "separate arguments with plain spaces",
        );
    }
    if let Some(m) = &b.mirror {
        let rest = m
            .strip_prefix("http://")
            .or_else(|| m.strip_prefix("https://"))
            .or_else(|| m.strip_prefix("file://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            cx.error(
                "/bootstrap/mirror",
                format!("mirror {m:?} is not an http(s):// or file:// URL"),
                "write a full URL such as https://deb.debian.org/debian, or leave mirror out to use the build host's apt sources",
            );
        }
    }
    if let Some(p) = &b.payload {
        if p.source == PayloadKind::File && p.path.is_none() {
            cx.error(
                "/bootstrap/payload",
                "payload source \"file\" has no path",
                "add \"path\": the tar.zst built by `op-dbus-install payload`",
            );
        }
        if let Some(h) = &p.sha256 {
            if h.len() != 64 || !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                cx.error(
                    "/bootstrap/payload/sha256",
                    format!("payload sha256 {h:?} is not 64 hex digits"),
                    "copy the first field of the payload's .sha256 file",
                );
            }
        }
    }
    for (k, p) in b.packages.iter().enumerate() {
        if !valid_package(p) {
            cx.error(
                format!("/bootstrap/packages/{k}"),
                format!("{p:?} is not a Debian package name"),
                "package names use lowercase letters, digits and + - . and start with a letter or digit",
            );
        }
    }
}

/// What a Proxmox VE install cannot survive, found before any disk is
/// touched: a suite no PVE release is built on, a version that does not
/// match the suite, no static IPv4 address for the node (PVE's cluster
/// filesystem resolves the hostname to it through /etc/hosts).
fn check_proxmox(cx: &mut Cx, b: &Bootstrap, state: &State) {
    let pairs = || {
        PROXMOX_SUITES
            .iter()
            .map(|(v, s)| format!("PVE {v} = {s}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match PROXMOX_SUITES.iter().find(|(_, s)| *s == b.suite) {
        None => cx.error(
            "/bootstrap/suite",
            format!("Proxmox VE is not built on Debian {:?}", b.suite),
            format!("use the suite of the PVE release you want ({})", pairs()),
        ),
        Some((major, _)) => {
            if let Some(v) = b.proxmox_version.filter(|v| v != major) {
                let want = PROXMOX_SUITES.iter().find(|(m, _)| *m == v);
                cx.error(
                    "/bootstrap/proxmox_version",
                    format!(
                        "Proxmox VE {v} does not run on Debian {} (that suite carries PVE {major})",
                        b.suite
                    ),
                    match want {
                        Some((_, s)) => format!(
                            "set \"suite\": \"{s}\" for PVE {v}, or proxmox_version {major}"
                        ),
                        None => format!("op-dbus installs {}", pairs()),
                    },
                );
            }
        }
    }
    let has_static_v4 = state
        .network_spec()
        .interfaces
        .iter()
        .any(|i| i.addresses.iter().any(|a| a.addr().is_ipv4()));
    if !has_static_v4 {
        let at = if state.plugins.network.is_some() {
            "/plugins/network"
        } else if state.plugins.net.is_some() {
            "/plugins/net"
        } else {
            "/plugins"
        };
        cx.error(
            at,
            "a Proxmox VE node needs a static IPv4 address, and the state gives none",
            "give the management interface or bridge (vmbr0) an \"address\" such as 192.0.2.10/24 and a gateway; the installer maps the hostname to it in /etc/hosts",
        );
    }
}

/// RFC 1123 host name label.
pub(crate) fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn valid_timezone(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'+'))
        })
        && s.as_bytes()[0].is_ascii_alphabetic()
}

/// Zone and Link names of the tz database, sorted, after `#` comment lines.
const ZONES: &str = include_str!("zones.txt");
/// The tzdata release `ZONES` was taken from.
const TZ_VERSION: &str = "tzdata 2025b";

fn zone_names() -> impl Iterator<Item = &'static str> {
    ZONES
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn known_timezone(s: &str) -> bool {
    zone_names().any(|z| z == s)
}

fn valid_locale(s: &str) -> bool {
    if matches!(s, "C" | "POSIX") {
        return true;
    }
    let (rest, modifier) = match s.split_once('@') {
        Some((r, m)) => (r, Some(m)),
        None => (s, None),
    };
    if modifier.is_some_and(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphanumeric())) {
        return false;
    }
    let (lang_terr, codeset) = match rest.split_once('.') {
        Some((l, c)) => (l, Some(c)),
        None => (rest, None),
    };
    if codeset
        .is_some_and(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return false;
    }
    let (lang, terr) = match lang_terr.split_once('_') {
        Some((l, t)) => (l, Some(t)),
        None => (lang_terr, None),
    };
    let lang_ok = lang == "C"
        || ((2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase()));
    let terr_ok = terr.is_none_or(|t| {
        (2..=3).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    lang_ok && terr_ok
}

pub(crate) fn valid_package(p: &str) -> bool {
    p.len() >= 2
        && p.as_bytes()[0].is_ascii_alphanumeric()
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b':')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_are_known() {
        for z in [
            "UTC",
            "Etc/UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "US/Eastern",
        ] {
            assert!(known_timezone(z), "{z}");
        }
        for z in [
            "Europe/Nowhere",
            "posix/UTC",
            "right/UTC",
            "zone.tab",
            "utc",
        ] {
            assert!(!known_timezone(z), "{z}");
        }
        let names: Vec<&str> = zone_names().collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted, "zones.txt is sorted and without repeats");
        assert!(
            ZONES.contains(&format!("of {TZ_VERSION} ")),
            "TZ_VERSION matches zones.txt"
        );
    }

    /// The embedded list equals this machine's tz database when both are the
    /// same release (skipped otherwise); `UPDATE_ZONES=1` rewrites it from
    /// this machine's `/usr/share/zoneinfo/tzdata.zi` (then update TZ_VERSION).
    #[test]
    fn zone_list_matches_the_host_tzdata() {
        let Ok(zi) = std::fs::read_to_string("/usr/share/zoneinfo/tzdata.zi") else {
            eprintln!("no /usr/share/zoneinfo/tzdata.zi: skipped");
            return;
        };
        let version = zi
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# version "))
            .unwrap_or("?")
            .to_string();
        let mut host: Vec<&str> = zi
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                match f.as_slice() {
                    ["Z", name, ..] => Some(*name),
                    ["L", _, name, ..] => Some(*name),
                    _ => None,
                }
            })
            .collect();
        host.sort_unstable();
        host.dedup();
        if std::env::var_os("UPDATE_ZONES").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/validate/zones.txt");
            let head: Vec<&str> = ZONES.lines().take_while(|l| l.starts_with('#')).collect();
            let text = format!("{}\n{}\n", head.join("\n"), host.join("\n"));
            std::fs::write(path, text).expect("writing zones.txt");
            return;
        }
        if format!("tzdata {version}") != TZ_VERSION {
            eprintln!("host tzdata {version}, list {TZ_VERSION}: skipped");
            return;
        }
        assert_eq!(zone_names().collect::<Vec<_>>(), host);
    }
}
