//! The network plugin's checkpoint and restore: the current state the
//! engine queried before applying (links, addresses, routes, OVS bridges)
//! plus the files the plugin writes; restore puts back exactly that,
//! undoing only what the actions touched. The engine keeps it in its
//! journal and calls restore when the transaction is rolled back.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::model::{AddrNow, CreateKind, Current, LinkNow, NetAction};
use super::query::{read_current, Probe};
use crate::engine::Context;
use crate::netlink::{BondMode, LinkKind, Netlink};
use crate::ovsdb::{self, BridgeSpec};

/// Files the plugin may write, relative to the managed root.
const FILES: [&str; 2] = ["etc/resolv.conf", "etc/network/interfaces"];

/// The state before an apply, and the actions the apply was about to take.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub before: Current,
    /// (path below root, content; `None`: the file did not exist).
    pub files: Vec<(String, Option<String>)>,
    pub actions: Vec<NetAction>,
    pub probe: Probe,
}

fn read_file(root: &Path, rel: &str) -> anyhow::Result<Option<String>> {
    let path = root.join(rel);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn restore_file(root: &Path, rel: &str, content: &Option<String>) -> anyhow::Result<()> {
    let path = root.join(rel);
    match content {
        Some(text) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            // resolv.conf may have been a symlink replaced by a file: remove first.
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, text).with_context(|| format!("restoring {}", path.display()))
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        },
    }
}

/// Link names the actions create (veth peers included).
fn created(actions: &[NetAction]) -> Vec<String> {
    let mut out = Vec::new();
    for a in actions {
        if let NetAction::CreateLink { name, kind } = a {
            out.push(name.clone());
            if let CreateKind::Veth { peer } = kind {
                out.push(peer.clone());
            }
        }
    }
    out
}

fn is_restorable_route(protocol: &str) -> bool {
    !matches!(protocol, "kernel" | "ra" | "redirect")
}

/// Counts restore steps done and collects the ones that failed.
#[derive(Default)]
struct Tally {
    changes: usize,
    errors: Vec<String>,
}

impl Tally {
    fn note(&mut self, r: anyhow::Result<()>) {
        match r {
            Ok(()) => self.changes += 1,
            Err(e) => self.errors.push(format!("{e:#}")),
        }
    }
}

impl Checkpoint {
    /// The checkpoint before `actions`: `current` as the engine just
    /// queried it, and the files the plugin may write (the only reads).
    pub fn from_current(
        ctx: &Context,
        current: &Current,
        actions: &[NetAction],
    ) -> anyhow::Result<Self> {
        let before = current.clone();
        let probe = Probe::for_actions(ctx, actions);
        let files = FILES
            .iter()
            .map(|rel| Ok((rel.to_string(), read_file(&ctx.root, rel)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Checkpoint {
            before,
            files,
            actions: actions.to_vec(),
            probe,
        })
    }

    /// Puts the host back as recorded. Returns how many changes it made;
    /// keeps going past errors and reports them all at the end.
    pub async fn restore(&self, ctx: &Context, nl: &Netlink) -> anyhow::Result<usize> {
        let now = read_current(ctx, nl, &self.probe)
            .await
            .context("reading the network state to roll back")?;
        let before = &self.before;
        let mut t = Tally::default();

        // 1. Links the apply created go (a veth takes its peer with it).
        let made = created(&self.actions);
        let mut gone: Vec<String> = Vec::new();
        for l in &now.links {
            if before.link(&l.name).is_none() && made.contains(&l.name) && !gone.contains(&l.name) {
                // Deleting a bond or bridge can take its VLANs with it: a
                // link that is already gone is what the rollback wants.
                t.note(match nl.delete_link(&l.name).await {
                    Err(e) if e.is_missing() => Ok(()),
                    r => r.map_err(Into::into),
                });
                gone.push(l.name.clone());
                if let Some(p) = &l.veth_peer {
                    gone.push(p.clone());
                }
            }
        }
        // 2. Links the apply deleted come back (leaves, bonds, VLANs, bridges).
        let mut missing: Vec<&LinkNow> = before
            .links
            .iter()
            .filter(|l| now.link(&l.name).is_none())
            .collect();
        missing.sort_by_key(|l| match l.kind {
            LinkKind::Bond => 1,
            LinkKind::Vlan => 2,
            LinkKind::Bridge => 3,
            _ => 0,
        });
        let mut recreated: Vec<String> = Vec::new();
        for l in missing {
            if recreated.contains(&l.name) {
                continue;
            }
            let r = match (&l.kind, &l.veth_peer) {
                (LinkKind::Bridge, _) => nl.create_bridge(&l.name).await,
                (LinkKind::Dummy, _) => nl.create_dummy(&l.name).await,
                (LinkKind::Bond, _) => {
                    nl.create_bond(
                        &l.name,
                        l.bond_mode.unwrap_or(BondMode::BalanceRr),
                        l.bond_miimon,
                    )
                    .await
                }
                (LinkKind::Vlan, _) => match (&l.vlan_base, l.vlan_id) {
                    (Some(base), Some(id)) => nl.create_vlan(&l.name, base, id).await,
                    _ => {
                        t.errors.push(format!(
                            "cannot recreate vlan {}: its base link is unknown",
                            l.name
                        ));
                        continue;
                    }
                },
                (LinkKind::Veth, Some(peer)) => {
                    recreated.push(peer.clone());
                    nl.create_veth(&l.name, peer).await
                }
                (kind, _) => {
                    t.errors
                        .push(format!("cannot recreate link {} of kind {kind:?}", l.name));
                    continue;
                }
            };
            t.note(r.map_err(Into::into));
            recreated.push(l.name.clone());
        }
        let now = read_current(ctx, nl, &self.probe).await?;

        // 3. Masters, MTU, then up/down of every recorded link.
        for b in &before.links {
            let Some(n) = now.link(&b.name) else { continue };
            if n.master != b.master {
                let r = match &b.master {
                    Some(m) => {
                        if now.link(m).is_some_and(|x| x.kind == LinkKind::Bond) {
                            let _ = nl.set_down(&b.name).await;
                        }
                        nl.set_master(&b.name, m).await
                    }
                    None => nl.set_nomaster(&b.name).await,
                };
                t.note(r.map_err(Into::into));
            }
            if let Some(mtu) = b.mtu {
                if n.mtu != Some(mtu) {
                    t.note(nl.set_mtu(&b.name, mtu).await.map_err(Into::into));
                }
            }
        }
        let now = read_current(ctx, nl, &self.probe).await?;
        for b in &before.links {
            let Some(n) = now.link(&b.name) else { continue };
            if n.up != b.up {
                let r = if b.up {
                    nl.set_up(&b.name).await
                } else {
                    nl.set_down(&b.name).await
                };
                t.note(r.map_err(Into::into));
            }
        }

        // 4. Addresses of recorded links (dynamic ones are the DHCP client's).
        let static_addrs = |c: &Current| -> Vec<AddrNow> {
            c.addresses.iter().filter(|a| !a.dynamic).cloned().collect()
        };
        let (was, is) = (static_addrs(before), static_addrs(&now));
        for a in is
            .iter()
            .filter(|a| !was.contains(a) && before.link(&a.link).is_some())
        {
            t.note(nl.delete_address(&a.link, a.addr).await.map_err(Into::into));
        }
        for a in was.iter().filter(|a| !is.contains(a)) {
            t.note(nl.add_address(&a.link, a.addr).await.map_err(Into::into));
        }

        // 5. Routes (the kernel's own follow the addresses).
        let now = read_current(ctx, nl, &self.probe).await?;
        for r in now
            .routes
            .iter()
            .filter(|r| is_restorable_route(&r.protocol))
        {
            if !before.routes.iter().any(|b| b.spec == r.spec) {
                match nl.delete_route(&r.spec).await {
                    Ok(()) => t.changes += 1,
                    Err(e) if e.is_missing() => {}
                    Err(e) => t.errors.push(format!("{e:#}")),
                }
            }
        }
        for b in before
            .routes
            .iter()
            .filter(|r| is_restorable_route(&r.protocol))
        {
            if !now.routes.iter().any(|r| r.spec == b.spec) {
                t.note(nl.add_route(&b.spec).await.map_err(Into::into));
            }
        }

        // 6. OVS bridges the actions touched.
        if let Some(addr) = &self.probe.ovsdb {
            match self.restore_ovs(addr, &now).await {
                Ok(n) => t.changes += n,
                Err(e) => t.errors.push(format!("{e:#}")),
            }
        }

        // 7. Files and DNS.
        for (rel, content) in &self.files {
            if read_file(&ctx.root, rel).ok().flatten() != *content {
                t.note(restore_file(&ctx.root, rel, content));
            }
        }
        if now.networkd != before.networkd {
            let remove: Vec<String> = now
                .networkd
                .keys()
                .filter(|k| !before.networkd.contains_key(*k))
                .cloned()
                .collect();
            t.note(super::dns::write_networkd(
                &ctx.root,
                &before.networkd,
                &remove,
            ));
        }
        if let (Some(dns_before), Some(dns_now)) = (&before.dns, &now.dns) {
            if dns_before != dns_now {
                if let super::dns::DnsBackend::Resolved(_) = super::dns::backend(ctx).await {
                    let index = match &dns_before.link {
                        Some(l) => nl.index_of("restoring DNS", l).await.ok(),
                        None => None,
                    };
                    t.note(
                        super::dns::set_dns(ctx, dns_before, index)
                            .await
                            .map(|_| ()),
                    );
                }
            }
        }
        if t.errors.is_empty() {
            Ok(t.changes)
        } else {
            anyhow::bail!(
                "{} step(s) of the rollback failed: {}",
                t.errors.len(),
                t.errors.join("; ")
            )
        }
    }

    async fn restore_ovs(&self, addr: &str, now: &Current) -> anyhow::Result<usize> {
        let client = ovsdb::Client::connect(addr)
            .await
            .with_context(|| format!("connecting to OVSDB at {addr} to roll back"))?;
        let before = self.before.ovs.clone().unwrap_or_default();
        let now_ovs = now.ovs.clone().unwrap_or_default();
        let mut touched: Vec<&str> = Vec::new();
        for a in &self.actions {
            match a {
                NetAction::EnsureOvsBridge { name, .. }
                | NetAction::DeleteOvsBridge { name, .. }
                | NetAction::DeleteOvsPort { bridge: name, .. } => touched.push(name),
                _ => {}
            }
        }
        let mut changes = 0;
        for name in touched {
            let was = before.iter().find(|b| b.name == name);
            let is = now_ovs.iter().find(|b| b.name == name);
            match (was, is) {
                (None, Some(_)) => {
                    ovsdb::vswitch::delete_bridge(&client, name).await?;
                    changes += 1;
                }
                (Some(w), is) => {
                    if is != Some(w) {
                        let spec = BridgeSpec {
                            name: name.to_string(),
                            ports: w.ports.clone(),
                            datapath_type: Some(w.datapath_type.clone()),
                            hwaddr: w.hwaddr.clone(),
                        };
                        ovsdb::vswitch::ensure_bridge(&client, &spec).await?;
                        for p in is.map(|b| b.ports.clone()).unwrap_or_default() {
                            if !w.ports.iter().any(|x| x.name == p.name) {
                                ovsdb::vswitch::delete_port(&client, name, &p.name).await?;
                            }
                        }
                        changes += 1;
                    }
                }
                (None, None) => {}
            }
        }
        Ok(changes)
    }
}
