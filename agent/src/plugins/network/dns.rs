//! DNS and systemd-networkd side of the network plugin: per-link DNS through
//! systemd-resolved (`org.freedesktop.resolve1`) when it runs, else
//! `<root>/etc/resolv.conf`; and our `10-opdbus-<link>.network` drop-ins.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;

use super::model::DnsConf;
use crate::dbus::resolve::{DnsServer, Domain, Resolved};
use crate::engine::Context;

const RESOLVE1: &str = "org.freedesktop.resolve1";
const NETWORK1: &str = "org.freedesktop.network1";
/// Directory of our networkd drop-ins, below the managed root.
pub const NETWORKD_DIR: &str = "run/systemd/network";
const DROPIN_PREFIX: &str = "10-opdbus-";

/// The drop-in for `link`: DHCP through networkd for DHCP links, otherwise
/// `Unmanaged=yes` so networkd's first-boot config leaves the link to us.
pub fn networkd_dropin(link: &str, dhcp: bool) -> String {
    let head = format!(
        "# Written by op-dbus-agent: this link is configured from state.json.\n\
         [Match]\nName={link}\n\n"
    );
    if dhcp {
        format!("{head}[Network]\nDHCP=yes\n")
    } else {
        format!("{head}[Link]\nUnmanaged=yes\n")
    }
}

/// Our drop-ins under `root`, keyed by link name.
pub fn read_networkd(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let dir = root.join(NETWORKD_DIR);
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in entries {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(link) = name
            .strip_prefix(DROPIN_PREFIX)
            .and_then(|n| n.strip_suffix(".network"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(e.path())
            .with_context(|| format!("reading {}", e.path().display()))?;
        out.insert(link.to_string(), text);
    }
    Ok(out)
}

/// Writes and removes drop-ins under `root`.
pub fn write_networkd(
    root: &Path,
    write: &BTreeMap<String, String>,
    remove: &[String],
) -> anyhow::Result<()> {
    let dir = root.join(NETWORKD_DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (link, text) in write {
        let path = dir.join(format!("{DROPIN_PREFIX}{link}.network"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    for link in remove {
        let path = dir.join(format!("{DROPIN_PREFIX}{link}.network"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
    Ok(())
}

/// The D-Bus connection when `service` is on it; `None` when there is no bus
/// or the service does not run.
async fn service_bus(ctx: &Context, service: &str) -> Option<zbus::Connection> {
    let conn = ctx.bus().await.ok()?;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
    let name = zbus::names::BusName::try_from(service).ok()?;
    dbus.name_has_owner(name).await.ok()?.then_some(conn)
}

/// Asks systemd-networkd to reload its configuration; returns a note on
/// what happened (best effort: networkd may not run).
pub async fn reload_networkd(ctx: &Context) -> String {
    let Some(conn) = service_bus(ctx, NETWORK1).await else {
        return "systemd-networkd not running: drop-ins take effect when it starts".into();
    };
    match crate::dbus::resolve::reload_networkd(&conn).await {
        Ok(()) => "networkd reloaded".into(),
        Err(e) => format!("reloading systemd-networkd failed (ignored): {e:#}"),
    }
}

fn ip_bytes(ip: &IpAddr) -> (i32, Vec<u8>) {
    match ip {
        IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec()),
    }
}

fn bytes_ip(family: i32, b: &[u8]) -> Option<IpAddr> {
    match family {
        libc::AF_INET => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        libc::AF_INET6 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// Where DNS goes on this host.
pub enum DnsBackend {
    Resolved(zbus::Connection),
    ResolvConf,
}

pub async fn backend(ctx: &Context) -> DnsBackend {
    match service_bus(ctx, RESOLVE1).await {
        Some(c) => DnsBackend::Resolved(c),
        None => DnsBackend::ResolvConf,
    }
}

/// Parses `nameserver` and `search` lines of a resolv.conf.
pub fn parse_resolv_conf(text: &str) -> DnsConf {
    let mut dns = DnsConf::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(ip) = words.next().and_then(|w| w.parse().ok()) {
                    dns.servers.push(ip);
                }
            }
            Some("search") => dns.search = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    dns
}

/// The DNS settings now in effect: on `link` through resolved, or from resolv.conf.
pub async fn read_dns(
    ctx: &Context,
    link: Option<&str>,
    ifindex: Option<u32>,
) -> anyhow::Result<DnsConf> {
    match backend(ctx).await {
        DnsBackend::Resolved(conn) => {
            let Some(index) = ifindex else {
                return Ok(DnsConf::default());
            };
            let (servers, domains) = Resolved::new(&conn)
                .await?
                .link_dns(index, link.unwrap_or("?"))
                .await
                .context("asking systemd-resolved for the link's DNS")?;
            Ok(DnsConf {
                link: link.map(str::to_string),
                servers: servers
                    .iter()
                    .filter_map(|(f, b)| bytes_ip(*f, b))
                    .collect(),
                search: domains
                    .into_iter()
                    .filter(|(_, route_only)| !route_only)
                    .map(|(d, _)| d)
                    .collect(),
            })
        }
        DnsBackend::ResolvConf => {
            let path = ctx.host_path("/etc/resolv.conf");
            match std::fs::read_to_string(&path) {
                Ok(t) => Ok(parse_resolv_conf(&t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DnsConf::default()),
                Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
    }
}

/// Applies `dns`; returns a note saying how.
pub async fn set_dns(ctx: &Context, dns: &DnsConf, ifindex: Option<u32>) -> anyhow::Result<String> {
    match backend(ctx).await {
        DnsBackend::Resolved(conn) => {
            let (Some(link), Some(index)) = (&dns.link, ifindex) else {
                anyhow::bail!(
                    "systemd-resolved runs but no link carries the DNS servers: \
                     give an interface a gateway or an address in the state"
                );
            };
            let resolved = Resolved::new(&conn).await?;
            let servers: Vec<DnsServer> = dns.servers.iter().map(ip_bytes).collect();
            resolved.set_link_dns(index, link, &servers).await?;
            let domains: Vec<Domain> = dns.search.iter().map(|d| (d.clone(), false)).collect();
            resolved.set_link_domains(index, link, &domains).await?;
            Ok(format!("via systemd-resolved on {link}"))
        }
        DnsBackend::ResolvConf => {
            crate::netlink::write_resolv_conf(&ctx.root, &dns.servers, &dns.search)
                .context("writing resolv.conf")?;
            Ok(format!(
                "wrote {}",
                ctx.host_path("/etc/resolv.conf").display()
            ))
        }
    }
}
