//! Reads the host's network into a [`Current`]: links, addresses and routes
//! over netlink, OVS bridges over OVSDB, DNS, and the files the plugin
//! writes. A [`Probe`] says which of the optional parts to read.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::dns;
use super::model::{AddrNow, Current, Desired, LinkNow, NetAction, OvsBridgeNow, RouteNow};
use crate::engine::Context;
use crate::netlink::{LinkKind, Netlink};
use crate::ovsdb;

/// Which optional parts of the host to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// OVSDB address (`unix:PATH`) to list bridges from; `None`: skip OVSDB.
    pub ovsdb: Option<String>,
    /// Read DNS; `Some(link)` names the link resolved keeps it on.
    pub dns: Option<Option<String>>,
    /// Read /etc/network/interfaces.
    pub interfaces: bool,
}

impl Probe {
    pub fn for_desired(ctx: &Context, desired: &Desired) -> Self {
        Probe {
            // Pruning OVS needs OVSDB even when the state names no bridge.
            ovsdb: (desired.uses_ovs() || (desired.prune && desired.ovsdb.is_some()))
                .then(|| desired.ovsdb.clone().unwrap_or_else(|| ctx.ovsdb.clone())),
            dns: desired.dns.as_ref().map(|d| d.link.clone()),
            interfaces: desired.interfaces_file.is_some(),
        }
    }

    pub fn for_actions(ctx: &Context, actions: &[NetAction]) -> Self {
        let mut p = Probe::default();
        for a in actions {
            if let Some(addr) = a.ovsdb() {
                p.ovsdb = Some(
                    addr.map(str::to_string)
                        .unwrap_or_else(|| ctx.ovsdb.clone()),
                );
            }
            match a {
                NetAction::SetDns { dns } => p.dns = Some(dns.link.clone()),
                NetAction::WriteInterfaces { .. } => p.interfaces = true,
                _ => {}
            }
        }
        p
    }
}

/// Reads what `probe` asks for.
pub async fn read_current(ctx: &Context, nl: &Netlink, probe: &Probe) -> anyhow::Result<Current> {
    let snap = nl
        .snapshot()
        .await
        .context("reading links, addresses and routes")?;
    let links = snap
        .links
        .iter()
        .filter(|l| l.kind != LinkKind::Loopback)
        .map(LinkNow::from)
        .collect();
    let addresses = snap
        .addresses
        .iter()
        .filter(|a| !a.link_local)
        .map(|a| AddrNow {
            link: a.ifname.clone(),
            addr: a.addr,
            dynamic: a.dynamic,
        })
        .collect();
    let routes = snap
        .routes
        .iter()
        .map(|r| RouteNow {
            spec: r.spec(),
            protocol: r.protocol.clone(),
        })
        .collect();
    let ovs = match &probe.ovsdb {
        Some(addr) => {
            let client = ovsdb::Client::connect(addr).await.with_context(|| {
                format!("connecting to OVSDB at {addr} (the state has OVS bridges)")
            })?;
            let bridges = ovsdb::vswitch::list_bridges(&client)
                .await
                .with_context(|| format!("listing OVS bridges at {addr}"))?;
            Some(bridges.iter().map(OvsBridgeNow::from).collect())
        }
        None => None,
    };
    let dns = match &probe.dns {
        Some(link) => {
            let index = link
                .as_deref()
                .and_then(|l| snap.links.iter().find(|x| x.name == l))
                .map(|l| l.index);
            Some(dns::read_dns(ctx, link.as_deref(), index).await?)
        }
        None => None,
    };
    let interfaces_file = if probe.interfaces {
        let path = ctx.host_path("/etc/network/interfaces");
        match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    } else {
        None
    };
    Ok(Current {
        links,
        addresses,
        routes,
        ovs,
        dns,
        interfaces_file,
        networkd: dns::read_networkd(&ctx.root)?,
        owned_links: ctx.ownership().owned(super::PLUGIN, super::LINK)?,
        owned_ovs: if probe.ovsdb.is_some() {
            let reg = ctx.ownership();
            let mut v = reg.owned(super::PLUGIN, super::OVS_BRIDGE)?;
            v.extend(reg.owned(super::PLUGIN, super::OVS_PORT)?);
            v
        } else {
            Vec::new()
        },
    })
}
