//! The questions, one function per step, with dialoguer. Each step starts at
//! the current answer and leaves a valid answer behind; the theme is plain
//! ASCII without colours on a Linux console (`TERM=linux`) or with NO_COLOR.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use dialoguer::theme::{ColorfulTheme, SimpleTheme, Theme};
use dialoguer::{Confirm, Input, Password, Select};
use opdbus_state::model::{Distribution, Firmware};

use super::answers::{Answers, Layout, NetMode, RootPassword};
use super::checks;
use super::machine::Candidate;

/// Plain output: serial or Linux console, dumb terminals, NO_COLOR.
pub fn plain_terminal() -> bool {
    std::env::var_os("NO_COLOR").is_some()
        || matches!(
            std::env::var("TERM").as_deref(),
            Ok("linux") | Ok("dumb") | Ok("vt100") | Ok("vt220") | Err(_)
        )
}

pub fn theme() -> Box<dyn Theme> {
    if plain_terminal() {
        dialoguer::console::set_colors_enabled(false);
        dialoguer::console::set_colors_enabled_stderr(false);
        Box::new(SimpleTheme)
    } else {
        Box::new(ColorfulTheme::default())
    }
}

/// Runs `f` with a spinner on stderr (drawn only on a terminal).
pub fn spin<T>(msg: &str, f: impl FnOnce() -> T) -> T {
    let pb = indicatif::ProgressBar::new_spinner();
    let style = indicatif::ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
        .tick_chars("|/-\\ ");
    pb.set_style(style);
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(100));
    let r = f();
    pb.finish_and_clear();
    r
}

pub fn heading(text: &str) {
    eprintln!();
    eprintln!("== {text} ==");
}

fn input(
    theme: &dyn Theme,
    prompt: &str,
    default: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<String> {
    let mut q = Input::<String>::with_theme(theme).with_prompt(prompt);
    if !default.is_empty() {
        q = q.default(default.to_string());
    }
    let v: String = q
        .validate_with(|s: &String| check(s.trim()))
        .interact_text()
        .with_context(|| format!("reading the answer to {prompt:?}"))?;
    Ok(v.trim().to_string())
}

/// An optional value: Enter keeps `default`, `-` clears it.
fn optional(
    theme: &dyn Theme,
    prompt: &str,
    default: &str,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<String> {
    let prompt = if default.is_empty() {
        format!("{prompt} (Enter for none)")
    } else {
        format!("{prompt} (- for none)")
    };
    let mut q = Input::<String>::with_theme(theme)
        .with_prompt(&prompt)
        .allow_empty(true);
    if !default.is_empty() {
        q = q.default(default.to_string());
    }
    let v: String = q
        .validate_with(|s: &String| {
            let s = s.trim();
            if s == "-" || s.is_empty() {
                Ok(())
            } else {
                check(s)
            }
        })
        .interact_text()
        .with_context(|| format!("reading the answer to {prompt:?}"))?;
    let v = v.trim();
    Ok(if v == "-" {
        String::new()
    } else {
        v.to_string()
    })
}

fn select(theme: &dyn Theme, prompt: &str, items: &[String], default: usize) -> Result<usize> {
    Select::with_theme(theme)
        .with_prompt(prompt)
        .items(items)
        .default(default.min(items.len().saturating_sub(1)))
        .max_length(12)
        .interact()
        .with_context(|| format!("reading the answer to {prompt:?}"))
}

pub fn confirm(theme: &dyn Theme, prompt: &str, default: bool) -> Result<bool> {
    Confirm::with_theme(theme)
        .with_prompt(prompt)
        .default(default)
        .interact()
        .with_context(|| format!("reading the answer to {prompt:?}"))
}

/// Target disk: every disk listed, the blocked ones marked and refused.
pub fn disk(theme: &dyn Theme, a: &mut Answers, disks: &[Candidate]) -> Result<()> {
    heading("Target disk (the chosen disk will be erased)");
    let items: Vec<String> = disks.iter().map(Candidate::line).collect();
    let mut default = disks
        .iter()
        .position(|c| c.disk.name == a.disk)
        .unwrap_or(0);
    loop {
        let i = select(theme, "Install on", &items, default)?;
        match &disks[i].blocked {
            Some(why) => {
                eprintln!(
                    "error: /dev/{} cannot be used ({why}); choose another disk",
                    disks[i].disk.name
                );
                default = i;
            }
            None => {
                a.disk = disks[i].disk.name.clone();
                return Ok(());
            }
        }
    }
}

/// Distribution, suite and firmware.
pub fn system(theme: &dyn Theme, a: &mut Answers) -> Result<()> {
    heading("System");
    let mut items: Vec<String> = checks::DISTRIBUTIONS
        .iter()
        .map(|d| d.0.to_string())
        .collect();
    let mut default = checks::DISTRIBUTIONS
        .iter()
        .position(|(_, d, s)| *d == a.distribution && *s == a.suite);
    if default.is_none() {
        items.push(format!("{:?} {} (from the file)", a.distribution, a.suite));
        default = Some(items.len() - 1);
    }
    let i = select(theme, "Distribution", &items, default.unwrap_or(0))?;
    if let Some((_, d, s)) = checks::DISTRIBUTIONS.get(i) {
        a.distribution = *d;
        a.suite = s.to_string();
    }
    let fw = [
        (Firmware::Uefi, "UEFI (systemd-boot)"),
        (Firmware::Bios, "BIOS (GRUB)"),
        (Firmware::Both, "UEFI and BIOS (bootable either way)"),
    ];
    let items: Vec<String> = fw.iter().map(|f| f.1.to_string()).collect();
    let default = fw.iter().position(|f| f.0 == a.firmware).unwrap_or(2);
    a.firmware = fw[select(theme, "Firmware", &items, default)?].0;
    Ok(())
}

/// The layout preset; `preview` renders the resulting plan for confirmation.
pub fn layout(
    theme: &dyn Theme,
    a: &mut Answers,
    keep_key: Option<&str>,
    preview: &dyn Fn(&Answers) -> String,
) -> Result<()> {
    heading("Disk layout");
    let mut options: Vec<(Layout, String)> = Vec::new();
    if keep_key.is_some() {
        options.push((Layout::Keep, "Keep the layout of the file".into()));
    }
    options.push((
        Layout::Btrfs,
        "btrfs with subvolumes @ /, @home, @var_log, @op-dbus".into(),
    ));
    options.push((Layout::Ext4, "plain ext4 root".into()));
    let items: Vec<String> = options.iter().map(|o| o.1.clone()).collect();
    loop {
        let default = options.iter().position(|o| o.0 == a.layout).unwrap_or(0);
        a.layout = options[select(theme, "Layout", &items, default)?].0;
        a.device_key = match (a.layout, keep_key) {
            (Layout::Keep, Some(k)) => k.to_string(),
            _ => format!("/dev/{}", a.disk),
        };
        eprintln!("{}", preview(a));
        if confirm(theme, "Use this layout?", true)? {
            return Ok(());
        }
    }
}

/// Hostname, domain, timezone, locale, keyboard.
pub fn identity(theme: &dyn Theme, a: &mut Answers, zoneinfo: &Path) -> Result<()> {
    heading("Identity and locale");
    a.hostname = input(theme, "Hostname", &a.hostname, checks::hostname)?;
    a.domain = optional(theme, "Domain", &a.domain, checks::domain)?;
    a.timezone = input(theme, "Timezone", &a.timezone, |s| {
        checks::timezone(s, zoneinfo)
    })?;
    a.locale = input(theme, "Locale", &a.locale, checks::locale)?;
    a.keyboard = input(theme, "Keyboard", &a.keyboard, checks::keyboard)?;
    Ok(())
}

/// DHCP or static on a NIC, optionally behind a bridge.
pub fn network(theme: &dyn Theme, a: &mut Answers, nics: &[String], can_keep: bool) -> Result<()> {
    heading("Network");
    let mut modes = vec![
        (NetMode::Dhcp, "DHCP"),
        (NetMode::Static, "Static address"),
        (
            NetMode::Unmanaged,
            "Leave unconfigured (no network section)",
        ),
    ];
    if can_keep {
        modes.insert(0, (NetMode::Keep, "Keep the network section of the file"));
    }
    let items: Vec<String> = modes.iter().map(|m| m.1.to_string()).collect();
    let default = modes.iter().position(|m| m.0 == a.net.mode).unwrap_or(0);
    a.net.mode = modes[select(theme, "Network", &items, default)?].0;
    if matches!(a.net.mode, NetMode::Keep | NetMode::Unmanaged) {
        return Ok(());
    }
    let mut items: Vec<String> = nics.to_vec();
    if !a.net.nic.is_empty() && !items.contains(&a.net.nic) {
        items.push(a.net.nic.clone());
    }
    let labels: Vec<String> = items
        .iter()
        .map(|n| {
            if nics.contains(n) {
                n.clone()
            } else {
                format!("{n} (not present on this machine)")
            }
        })
        .chain(std::iter::once("Other (type a name)".to_string()))
        .collect();
    let default = items.iter().position(|n| *n == a.net.nic).unwrap_or(0);
    let i = select(theme, "Interface", &labels, default)?;
    a.net.nic = match items.get(i) {
        Some(n) => n.clone(),
        None => input(theme, "Interface name", &a.net.nic, checks::ifname)?,
    };
    if a.net.mode == NetMode::Static {
        a.net.address = input(theme, "Address/prefix", &a.net.address, |s| {
            checks::cidr(s).map(|_| ())
        })?;
        let addr = a.net.address.clone();
        a.net.gateway = optional(theme, "Gateway", &a.net.gateway, |s| {
            checks::gateway(s, &addr)
        })?;
        a.net.dns = optional(theme, "DNS servers", &a.net.dns, checks::dns)?;
    } else {
        a.net.address.clear();
        a.net.gateway.clear();
    }
    if a.net.bridge.is_empty() && a.distribution == Distribution::Proxmox {
        a.net.bridge = "vmbr0".into();
    }
    a.net.bridge = optional(theme, "Bridge", &a.net.bridge, checks::ifname)?;
    Ok(())
}

/// The root password, asked twice, kept only as a SHA-512 crypt hash.
pub fn root_password(theme: &dyn Theme, a: &mut Answers, editing: bool) -> Result<()> {
    heading("Root password");
    if let RootPassword::Hash(_) = a.root_password {
        if confirm(theme, "Keep the root password entered before?", true)? {
            return Ok(());
        }
    } else if editing {
        let keep = if a.has_root_password {
            confirm(theme, "Keep the root password of the file?", true)?
        } else {
            !confirm(theme, "Set a root password?", false)?
        };
        if keep {
            a.root_password = RootPassword::Keep;
            return Ok(());
        }
    }
    let pw = Password::with_theme(theme)
        .with_prompt("Root password")
        .with_confirmation(
            "Repeat the root password",
            "error: the passwords do not match",
        )
        .interact()
        .context("reading the root password")?;
    let hash = spin("Hashing the password", || {
        sha_crypt::sha512_simple(&pw, &sha_crypt::Sha512Params::default())
    })
    .map_err(|e| anyhow::anyhow!("hashing the root password: {e:?}"))?;
    a.root_password = RootPassword::Hash(hash);
    Ok(())
}

/// The administrator account and its SSH key.
pub fn admin(theme: &dyn Theme, a: &mut Answers) -> Result<()> {
    heading("Administrator");
    a.admin = optional(
        theme,
        "Admin user (group sudo)",
        &a.admin,
        checks::user_name,
    )?;
    if a.admin.is_empty() {
        return Ok(());
    }
    let current = a.ssh_key.clone();
    a.ssh_key = optional(theme, "SSH public key", &a.ssh_key, |s| {
        if s == current {
            Ok(())
        } else {
            checks::ssh_key(s)
        }
    })?;
    Ok(())
}

/// What to do after the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Write,
    Install,
    Back,
}

pub fn next(theme: &dyn Theme, output: &Path) -> Result<Next> {
    let items = vec![
        format!("Write {}", output.display()),
        "Install now".to_string(),
        "Go back".to_string(),
    ];
    Ok(match select(theme, "Next", &items, 0)? {
        0 => Next::Write,
        1 => Next::Install,
        _ => Next::Back,
    })
}
