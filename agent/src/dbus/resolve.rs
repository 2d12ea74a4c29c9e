//! resolve1 and network1 adapters: per-link DNS servers and search domains
//! through `org.freedesktop.resolve1` (systemd-resolved), and
//! `org.freedesktop.network1.Manager.Reload` (systemd-networkd).

use zbus::proxy::CacheProperties;
use zbus::zvariant::OwnedObjectPath;
use zbus::{proxy, Connection};

use super::{call_err, Result};

/// A DNS server as resolved carries it: (address family, address bytes).
pub type DnsServer = (i32, Vec<u8>);
/// A search domain: (domain, route-only).
pub type Domain = (String, bool);

#[proxy(
    interface = "org.freedesktop.resolve1.Manager",
    default_service = "org.freedesktop.resolve1",
    default_path = "/org/freedesktop/resolve1"
)]
trait Resolve1Manager {
    fn get_link(&self, ifindex: i32) -> zbus::Result<OwnedObjectPath>;
    #[zbus(name = "SetLinkDNS")]
    fn set_link_dns(&self, ifindex: i32, addresses: &[DnsServer]) -> zbus::Result<()>;
    fn set_link_domains(&self, ifindex: i32, domains: &[Domain]) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.resolve1.Link",
    default_service = "org.freedesktop.resolve1"
)]
trait Resolve1Link {
    #[zbus(property, name = "DNS")]
    fn dns(&self) -> zbus::Result<Vec<DnsServer>>;
    #[zbus(property)]
    fn domains(&self) -> zbus::Result<Vec<Domain>>;
}

#[proxy(
    interface = "org.freedesktop.network1.Manager",
    default_service = "org.freedesktop.network1",
    default_path = "/org/freedesktop/network1"
)]
trait Network1Manager {
    fn reload(&self) -> zbus::Result<()>;
}

/// Client of `org.freedesktop.resolve1`.
#[derive(Clone)]
pub struct Resolved {
    conn: Connection,
    manager: Resolve1ManagerProxy<'static>,
}

impl Resolved {
    pub async fn new(conn: &Connection) -> Result<Self> {
        let manager = Resolve1ManagerProxy::new(conn)
            .await
            .map_err(call_err("creating the resolve1 manager proxy"))?;
        Ok(Self {
            conn: conn.clone(),
            manager,
        })
    }

    /// The DNS servers and search domains resolved has for link `ifindex`
    /// (`link` names it in errors).
    pub async fn link_dns(
        &self,
        ifindex: u32,
        link: &str,
    ) -> Result<(Vec<DnsServer>, Vec<Domain>)> {
        let path = self
            .manager
            .get_link(ifindex as i32)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.resolve1.Manager.GetLink for {link}"
            )))?;
        let l = Resolve1LinkProxy::builder(&self.conn)
            .path(path)
            .map_err(call_err("creating the resolve1 link proxy"))?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("creating the resolve1 link proxy"))?;
        let servers = l.dns().await.map_err(call_err(format!(
            "reading org.freedesktop.resolve1.Link.DNS of {link}"
        )))?;
        let domains = l.domains().await.map_err(call_err(format!(
            "reading org.freedesktop.resolve1.Link.Domains of {link}"
        )))?;
        Ok((servers, domains))
    }

    /// SetLinkDNS(ifindex, servers).
    pub async fn set_link_dns(
        &self,
        ifindex: u32,
        link: &str,
        servers: &[DnsServer],
    ) -> Result<()> {
        self.manager
            .set_link_dns(ifindex as i32, servers)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.resolve1.Manager.SetLinkDNS for {link}"
            )))
    }

    /// SetLinkDomains(ifindex, domains).
    pub async fn set_link_domains(
        &self,
        ifindex: u32,
        link: &str,
        domains: &[Domain],
    ) -> Result<()> {
        self.manager
            .set_link_domains(ifindex as i32, domains)
            .await
            .map_err(call_err(format!(
                "calling org.freedesktop.resolve1.Manager.SetLinkDomains for {link}"
            )))
    }
}

/// `org.freedesktop.network1.Manager.Reload`: networkd re-reads its files.
pub async fn reload_networkd(conn: &Connection) -> Result<()> {
    let p = Network1ManagerProxy::new(conn)
        .await
        .map_err(call_err("creating the network1 manager proxy"))?;
    p.reload()
        .await
        .map_err(call_err("calling org.freedesktop.network1.Manager.Reload"))
}
