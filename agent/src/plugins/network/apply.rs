//! Applying network actions in the order `diff` gave them, one adapter call
//! each (netlink, OVSDB, D-Bus, files), each failure with its kind: the
//! engine retries the retryable ones, verifies, and restores the checkpoint.

use anyhow::Context as _;

use super::dns;
use super::model::{CreateKind, NetAction};
use crate::engine::ownership::Owned;
use crate::engine::{ActionError, ActionResult, Context, ErrorKind};
use crate::netlink::{BondMode, LinkKind, Netlink, NetlinkError};
use crate::ovsdb::{self, BridgeSpec, OvsdbError};

fn ovsdb_addr(ctx: &Context, addr: &Option<String>) -> String {
    addr.clone().unwrap_or_else(|| ctx.ovsdb.clone())
}

async fn ovs_client(addr: &str) -> anyhow::Result<ovsdb::Client> {
    ovsdb::Client::connect(addr)
        .await
        .with_context(|| format!("connecting to OVSDB at {addr}"))
}

/// Applies one action; `Ok(note)` says how when that is worth saying.
/// Links it creates are added to `created`, for the caller to record in
/// the ownership registry (one synced write for all of them; the engine's
/// journal names the creations before they run, so a crash between the
/// creation and the record still restores them).
pub async fn apply_one(
    ctx: &Context,
    nl: &Netlink,
    action: &NetAction,
    created: &mut Vec<Owned>,
) -> anyhow::Result<Option<String>> {
    match action {
        NetAction::Networkd { write, remove } => {
            dns::write_networkd(&ctx.root, write, remove)?;
            Ok(Some(dns::reload_networkd(ctx).await))
        }
        NetAction::DeleteRoute { route } => match nl.delete_route(route).await {
            Err(e) if e.is_missing() => Ok(Some("already gone".into())),
            r => r.map(|_| None).map_err(Into::into),
        },
        NetAction::DeleteAddress { link, addr } => match nl.delete_address(link, *addr).await {
            Err(e) if e.is_missing() => Ok(Some("already gone".into())),
            r => r.map(|_| None).map_err(Into::into),
        },
        NetAction::Detach { link } => Ok(nl.set_nomaster(link).await.map(|_| None)?),
        NetAction::DeleteOvsPort {
            bridge,
            port,
            ovsdb,
        } => {
            let c = ovs_client(&ovsdb_addr(ctx, ovsdb)).await?;
            ovsdb::vswitch::delete_port(&c, bridge, port)
                .await
                .with_context(|| format!("deleting OVS port {port} from {bridge}"))?;
            ctx.ownership()
                .forget(super::PLUGIN, super::OVS_PORT, &format!("{bridge}/{port}"))?;
            Ok(None)
        }
        NetAction::DeleteOvsBridge { name, ovsdb } => {
            let c = ovs_client(&ovsdb_addr(ctx, ovsdb)).await?;
            ovsdb::vswitch::delete_bridge(&c, name)
                .await
                .with_context(|| format!("deleting OVS bridge {name}"))?;
            let reg = ctx.ownership();
            reg.forget(super::PLUGIN, super::OVS_BRIDGE, name)?;
            reg.forget_under(super::PLUGIN, super::OVS_PORT, &format!("{name}/"))?;
            Ok(None)
        }
        NetAction::DeleteLink { name } => {
            // Deleting one end of a veth pair deletes the other.
            let peer = nl.link(name).await?.and_then(|l| l.veth_peer);
            let note = match nl.delete_link(name).await {
                Err(e) if e.is_missing() => Some("already gone".into()),
                r => r.map(|_| None)?,
            };
            for link in std::iter::once(name).chain(peer.as_ref()) {
                ctx.ownership().forget(super::PLUGIN, super::LINK, link)?;
            }
            Ok(note)
        }
        NetAction::CreateLink { name, kind } => {
            match kind {
                CreateKind::Bridge => nl.create_bridge(name).await,
                CreateKind::Bond { mode, miimon } => {
                    nl.create_bond(name, mode.unwrap_or(BondMode::BalanceRr), *miimon)
                        .await
                }
                CreateKind::Vlan { id, base } => nl.create_vlan(name, base, *id).await,
                CreateKind::Veth { peer } => nl.create_veth(name, peer).await,
                CreateKind::Dummy => nl.create_dummy(name).await,
            }?;
            let mut made = vec![name.as_str()];
            if let CreateKind::Veth { peer } = kind {
                made.push(peer.as_str());
            }
            for link in made {
                let index = nl.index_of("recording a created link", link).await?;
                created.push(Owned {
                    plugin: super::PLUGIN.to_string(),
                    kind: super::LINK.to_string(),
                    id: link.to_string(),
                    index: Some(index),
                });
            }
            Ok(None)
        }
        NetAction::SetMtu { link, mtu } => Ok(nl.set_mtu(link, *mtu).await.map(|_| None)?),
        NetAction::SetMac { link, mac } => Ok(nl.set_mac(link, mac).await.map(|_| None)?),
        NetAction::Attach { link, master } => {
            let is_bond = nl
                .link(master)
                .await?
                .is_some_and(|m| m.kind == LinkKind::Bond);
            if is_bond {
                // The kernel enslaves only links that are down.
                nl.set_down(link).await?;
            }
            nl.set_master(link, master).await?;
            Ok(None)
        }
        NetAction::EnsureOvsBridge {
            name,
            ports,
            ovsdb,
            datapath_type,
            mac,
        } => {
            let addr = ovsdb_addr(ctx, ovsdb);
            let c = ovs_client(&addr).await?;
            let spec = BridgeSpec {
                name: name.clone(),
                ports: ports.clone(),
                datapath_type: datapath_type.clone(),
                hwaddr: mac.clone(),
            };
            let report = ovsdb::vswitch::ensure_bridge(&c, &spec)
                .await
                .with_context(|| format!("creating OVS bridge {name} in {addr}"))?;
            let reg = ctx.ownership();
            if report.created_bridge {
                reg.record(super::PLUGIN, super::OVS_BRIDGE, name, None)
                    .with_context(|| format!("recording that op-dbus created OVS bridge {name}"))?;
            }
            for port in &report.added_ports {
                reg.record(
                    super::PLUGIN,
                    super::OVS_PORT,
                    &format!("{name}/{port}"),
                    None,
                )
                .with_context(|| format!("recording that op-dbus added port {port} to {name}"))?;
            }
            ovsdb::vswitch::sync_vswitchd(&c, None)
                .await
                .context("bumping next_cfg for ovs-vswitchd")?;
            let mut note = format!(
                "via OVSDB: {}added ports {}",
                if report.created_bridge {
                    "created bridge, "
                } else {
                    ""
                },
                if report.added_ports.is_empty() {
                    "-".into()
                } else {
                    report.added_ports.join(",")
                }
            );
            if !report.updated_bonds.is_empty() {
                note += &format!(", updated bonds {}", report.updated_bonds.join(","));
            }
            Ok(Some(note))
        }
        NetAction::SetUp { link } => Ok(nl.set_up(link).await.map(|_| None)?),
        NetAction::SetDown { link } => Ok(nl.set_down(link).await.map(|_| None)?),
        NetAction::AddAddress { link, addr } => {
            wait_for_link(nl, link).await;
            match nl.add_address(link, *addr).await {
                Err(e) if e.is_already_exists() => Ok(Some("already there".into())),
                Err(e) if e.is_missing() && nl.link(link).await.ok().flatten().is_none() => {
                    Err(LinkNotYet {
                        link: link.clone(),
                        addr: addr.to_string(),
                    }
                    .into())
                }
                r => r.map(|_| None).map_err(Into::into),
            }
        }
        NetAction::SetRoute { route } => Ok(nl.replace_route(route).await.map(|_| None)?),
        NetAction::SetDns { dns } => {
            let index = match &dns.link {
                Some(l) => nl.index_of("setting DNS", l).await.ok(),
                None => None,
            };
            Ok(Some(dns::set_dns(ctx, dns, index).await?))
        }
        NetAction::WriteInterfaces { content } => {
            write_atomic(&ctx.host_path("/etc/network/interfaces"), content)?;
            Ok(None)
        }
    }
}

fn write_atomic(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".interfaces.op-dbus.{}", std::process::id()));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Whether trying `e` again can help: a busy device (EBUSY, EAGAIN), a
/// link that is not there yet (ENODEV: an OVS internal port before
/// ovs-vswitchd made it), ovsdb-server not accepting connections yet while
/// it starts. Everything else is fatal.
pub fn kind_of(e: &anyhow::Error) -> ErrorKind {
    for cause in e.chain() {
        if let Some(nl) = cause.downcast_ref::<NetlinkError>() {
            if matches!(nl, NetlinkError::LinkNotFound { .. })
                || nl
                    .errno()
                    .is_some_and(|n| [libc::EBUSY, libc::EAGAIN, libc::ENODEV].contains(&n))
            {
                return ErrorKind::Retryable;
            }
        }
        if let Some(OvsdbError::Connect { source, .. }) = cause.downcast_ref::<OvsdbError>() {
            if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) {
                return ErrorKind::Retryable;
            }
        }
        if cause.downcast_ref::<LinkNotYet>().is_some() {
            return ErrorKind::Retryable;
        }
    }
    ErrorKind::Fatal
}

/// An address's link did not appear in time.
#[derive(Debug, thiserror::Error)]
#[error(
    "adding address {addr} to {link}: the link does not exist \
     (an OVS bridge's device appears only while ovs-vswitchd runs)"
)]
struct LinkNotYet {
    link: String,
    addr: String,
}

/// Applies `actions` in order and stops at the first failure; the actions
/// after it are reported as not applied, with the failure's kind (so the
/// engine tries them again together when it is retryable).
pub async fn apply_all(ctx: &Context, actions: &[NetAction]) -> Vec<ActionResult> {
    let nl = match Netlink::new() {
        Ok(nl) => nl,
        Err(e) => {
            let msg = format!("{:#}", anyhow::Error::from(e));
            return actions
                .iter()
                .map(|_| Err(ActionError::fatal(anyhow::anyhow!("{msg}"))))
                .collect();
        }
    };
    let mut results: Vec<ActionResult> = Vec::with_capacity(actions.len());
    let mut created = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        // The registry is read and written by these actions too: what was
        // created so far is recorded before them.
        let recorded = if touches_ownership(a) {
            record_created(ctx, &mut created)
        } else {
            Ok(())
        };
        let r = match recorded {
            Ok(()) => apply_one(ctx, &nl, a, &mut created).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(note) => results.push(Ok(note)),
            Err(e) => {
                let kind = kind_of(&e);
                results.push(Err(ActionError { kind, error: e }));
                for _ in &actions[i + 1..] {
                    results.push(Err(ActionError {
                        kind,
                        error: anyhow::anyhow!("not applied: '{a}' failed before it"),
                    }));
                }
                break;
            }
        }
    }
    if let Err(e) = record_created(ctx, &mut created) {
        // The links exist but are not recorded as op-dbus's: the actions
        // that made them fail, so the transaction restores (deletes) them.
        let msg = format!("{e:#}");
        for (a, r) in actions.iter().zip(results.iter_mut()) {
            if matches!(a, NetAction::CreateLink { .. }) && r.is_ok() {
                *r = Err(ActionError::fatal(anyhow::anyhow!("{msg}")));
            }
        }
    }
    results
}

/// Whether `a` reads or writes the ownership registry itself.
fn touches_ownership(a: &NetAction) -> bool {
    matches!(
        a,
        NetAction::DeleteLink { .. }
            | NetAction::DeleteOvsPort { .. }
            | NetAction::DeleteOvsBridge { .. }
            | NetAction::EnsureOvsBridge { .. }
    )
}

/// Records the links in `created` as op-dbus's, in one write.
fn record_created(ctx: &Context, created: &mut Vec<Owned>) -> anyhow::Result<()> {
    if created.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = created.iter().map(|o| o.id.clone()).collect();
    ctx.ownership().record_all(created).with_context(|| {
        format!(
            "recording that op-dbus created link(s) {}",
            names.join(", ")
        )
    })?;
    created.clear();
    Ok(())
}

/// Some links appear asynchronously (an OVS internal port once ovs-vswitchd
/// has processed the transaction, a link udev renames): wait a bounded time
/// for `name` before acting on it.
async fn wait_for_link(nl: &Netlink, name: &str) {
    // Known to this connection (created or seen by it): no look-up. A stale
    // index is caught by the action itself (ENODEV: looked up again).
    if nl.index_of("waiting for a link", name).await.is_ok() {
        return;
    }
    for _ in 0..50 {
        if matches!(nl.link(name).await, Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
