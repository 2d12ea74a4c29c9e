//! Checks for answers as they are typed. Where state.json has a rule, the
//! answer is put into a scratch state and run through the same validator the
//! final file goes through, so the wizard and `validate` never disagree.

use std::net::IpAddr;
use std::path::Path;

use opdbus_state::model::{Account, Bootstrap, Distribution, Plugins, State, Users};

fn scratch_bootstrap() -> Bootstrap {
    serde_json::from_value(serde_json::json!({"hostname": "x"}))
        .expect("a bootstrap with only a hostname deserializes")
}

/// The validator's first error (or, with `warnings`, warning) at `pointer`.
fn finding(state: &State, pointer: &str, warnings: bool) -> Result<(), String> {
    match opdbus_state::validate(state)
        .into_iter()
        .find(|d| d.pointer == pointer && (warnings || d.is_error()))
    {
        Some(d) => Err(match d.hint {
            Some(h) => format!("{}; {h}", d.message),
            None => d.message,
        }),
        None => Ok(()),
    }
}

fn with_bootstrap(edit: impl FnOnce(&mut Bootstrap)) -> State {
    let mut b = scratch_bootstrap();
    edit(&mut b);
    State {
        version: 1,
        metadata: None,
        bootstrap: Some(b),
        plugins: Plugins::default(),
    }
}

pub fn hostname(s: &str) -> Result<(), String> {
    finding(
        &with_bootstrap(|b| b.hostname = s.to_string()),
        "/bootstrap/hostname",
        false,
    )
}

/// An empty domain means none.
pub fn domain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    finding(
        &with_bootstrap(|b| b.domain = Some(s.to_string())),
        "/bootstrap/domain",
        false,
    )
}

/// The validator's check (syntax and its embedded tz list, the same as
/// `validate`), then, when `zoneinfo` exists on this machine, that the zone
/// is one of its files.
pub fn timezone(s: &str, zoneinfo: &Path) -> Result<(), String> {
    finding(
        &with_bootstrap(|b| b.timezone = s.to_string()),
        "/bootstrap/timezone",
        false,
    )?;
    if zoneinfo.is_dir() && !zoneinfo.join(s).is_file() {
        return Err(format!(
            "timezone {s:?} is not in {}; use UTC or Area/Location, such as Europe/Berlin",
            zoneinfo.display()
        ));
    }
    Ok(())
}

pub fn locale(s: &str) -> Result<(), String> {
    finding(
        &with_bootstrap(|b| b.locale = s.to_string()),
        "/bootstrap/locale",
        false,
    )
}

/// Console keymaps are short names such as `us`, `de-latin1`, `fr_CH`.
pub fn keyboard(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphabetic();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "keymap {s:?} is not a keymap name; use one such as us, de-latin1 or fr"
        ))
    }
}

fn with_account(name: &str, edit: impl FnOnce(&mut Account)) -> State {
    let mut acc = Account::default();
    edit(&mut acc);
    let mut users = Users::default();
    users.accounts.insert(name.to_string(), acc);
    State {
        version: 1,
        metadata: None,
        bootstrap: None,
        plugins: Plugins {
            users: Some(users),
            ..Plugins::default()
        },
    }
}

/// A user name the validator accepts for a new regular account.
pub fn user_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let ok = s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
        && (s.as_bytes()[0].is_ascii_lowercase() || s.as_bytes()[0] == b'_');
    if !ok {
        return Err(format!(
            "user name {s:?} is not valid; use lowercase letters, digits, - and _, starting with a letter"
        ));
    }
    if s == "root" {
        return Err("root already exists; choose a name for an administrator account".into());
    }
    let state = with_account(s, |_| {});
    let pointer = opdbus_state::diag::pointer(&["plugins", "users", "accounts", s]);
    match opdbus_state::validate(&state)
        .into_iter()
        .find(|d| d.is_error() && d.pointer.starts_with(&pointer))
    {
        Some(d) => Err(d.message),
        None => Ok(()),
    }
}

/// An SSH public key line; its warnings count here, so a pasted key is whole.
pub fn ssh_key(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let state = with_account("admin", |a| a.ssh_authorized_keys = vec![s.to_string()]);
    finding(
        &state,
        "/plugins/users/accounts/admin/ssh_authorized_keys/0",
        true,
    )
}

/// `ADDRESS/PREFIX`, IPv4 or IPv6.
pub fn cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let bad = || format!("{s:?} is not an address with a prefix length, such as 192.168.1.10/24");
    let (ip, len) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len == 0 || len > max {
        return Err(bad());
    }
    Ok((ip, len))
}

/// A gateway inside the subnet of `address` (empty means none).
pub fn gateway(s: &str, address: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    let gw: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address, such as 192.168.1.1"))?;
    let (ip, len) = cidr(address)?;
    let inside = match (ip, gw) {
        (IpAddr::V4(a), IpAddr::V4(g)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(g) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(g)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(g) & mask
        }
        _ => false,
    };
    if inside {
        Ok(())
    } else {
        Err(format!(
            "gateway {s} is not in the subnet of {address}; use an address inside it"
        ))
    }
}

/// DNS servers separated by spaces or commas (empty means none).
pub fn dns(s: &str) -> Result<(), String> {
    for part in split_list(s) {
        part.parse::<IpAddr>()
            .map_err(|_| format!("{part:?} is not an IP address; separate servers with spaces"))?;
    }
    Ok(())
}

pub fn split_list(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Interface names the kernel accepts (1-15 bytes, no `/`, space or `:`).
pub fn ifname(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 || s.contains(['/', ' ', ':']) || s == "." || s == ".." {
        return Err(format!(
            "{s:?} is not an interface name; use 1-15 characters such as vmbr0"
        ));
    }
    Ok(())
}

/// A distribution choice: label, distribution and Debian suite.
pub const DISTRIBUTIONS: [(&str, Distribution, &str); 4] = [
    ("Debian 12 (bookworm)", Distribution::Debian, "bookworm"),
    ("Debian 13 (trixie)", Distribution::Debian, "trixie"),
    (
        "Proxmox VE 8 (on Debian bookworm)",
        Distribution::Proxmox,
        "bookworm",
    ),
    (
        "Proxmox VE 9 (on Debian trixie)",
        Distribution::Proxmox,
        "trixie",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_follows_the_validator() {
        assert!(hostname("pve-node1").is_ok());
        let e = hostname("bad_host!").expect_err("underscore and ! are not RFC 1123");
        assert!(e.contains("not a valid RFC 1123 label"), "{e}");
        assert!(hostname("-x").is_err());
        assert!(hostname("a.b").is_err());
    }

    #[test]
    fn fields_syntax() {
        assert!(domain("").is_ok());
        assert!(domain("example.com").is_ok());
        assert!(domain("exa mple.com").is_err());
        assert!(locale("en_US.UTF-8").is_ok());
        assert!(locale("english").is_err());
        assert!(keyboard("de-latin1").is_ok());
        assert!(keyboard("1x").is_err());
        let none = Path::new("/nonexistent-zoneinfo");
        assert!(timezone("Europe/Berlin", none).is_ok());
        assert!(timezone("../etc", none).is_err());
        // Unknown zones are refused by the validator, with or without a zoneinfo.
        assert!(timezone("Europe/Nowhere", none).is_err());
        assert!(user_name("admin").is_ok());
        assert!(user_name("Admin").is_err());
        assert!(user_name("root").is_err());
    }

    #[test]
    fn timezone_checked_against_zoneinfo_when_present() {
        let t = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(t.path().join("Europe")).expect("mkdir");
        std::fs::write(t.path().join("Europe/Berlin"), "TZif").expect("write");
        assert!(timezone("Europe/Berlin", t.path()).is_ok());
        assert!(timezone("Europe/Nowhere", t.path()).is_err());
    }

    #[test]
    fn addresses() {
        assert!(cidr("192.168.1.10/24").is_ok());
        assert!(cidr("192.168.1.10").is_err());
        assert!(cidr("10.0.0.1/33").is_err());
        assert!(gateway("192.168.1.1", "192.168.1.10/24").is_ok());
        assert!(gateway("10.0.0.1", "192.168.1.10/24").is_err());
        assert!(dns("8.8.8.8, 1.1.1.1").is_ok());
        assert!(dns("dns.google").is_err());
        assert!(ssh_key("ssh-ed25519 AAAA...").is_err());
    }
}
