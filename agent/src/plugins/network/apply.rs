//! Applying network actions in the order `diff` gave them, one adapter call
//! each (netlink, OVSDB, D-Bus, files), then verifying them with bounded
//! retries; checkpoint, rollback and the confirm handshake wrap it all.

use std::time::Duration;

use anyhow::Context as _;

use super::checkpoint::Checkpoint;
use super::diff::unmet;
use super::dns;
use super::model::{CreateKind, NetAction};
use super::query::{read_current, Probe};
use crate::engine::{confirm, ActionResult, Context};
use crate::netlink::{BondMode, LinkKind, Netlink};
use crate::ovsdb::{self, BridgeSpec};

/// Verification tries and the pause between them (links take time).
const VERIFY_TRIES: u32 = 5;
const VERIFY_PAUSE: Duration = Duration::from_millis(200);

fn ovsdb_addr(ctx: &Context, addr: &Option<String>) -> String {
    addr.clone().unwrap_or_else(|| ctx.ovsdb.clone())
}

async fn ovs_client(addr: &str) -> anyhow::Result<ovsdb::Client> {
    ovsdb::Client::connect(addr)
        .await
        .with_context(|| format!("connecting to OVSDB at {addr}"))
}

/// Applies one action; `Ok(note)` says how when that is worth saying.
pub async fn apply_one(
    ctx: &Context,
    nl: &Netlink,
    action: &NetAction,
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
                ctx.ownership()
                    .record(super::PLUGIN, super::LINK, link, Some(index))
                    .with_context(|| format!("recording that op-dbus created link {link}"))?;
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
        } => {
            let addr = ovsdb_addr(ctx, ovsdb);
            let c = ovs_client(&addr).await?;
            let spec = BridgeSpec {
                name: name.clone(),
                ports: ports.clone(),
                datapath_type: datapath_type.clone(),
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
            Ok(Some(format!(
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
            )))
        }
        NetAction::SetUp { link } => Ok(nl.set_up(link).await.map(|_| None)?),
        NetAction::SetDown { link } => Ok(nl.set_down(link).await.map(|_| None)?),
        NetAction::AddAddress { link, addr } => {
            wait_for_link(nl, link).await;
            match nl.add_address(link, *addr).await {
                Err(e) if e.is_already_exists() => Ok(Some("already there".into())),
                Err(e) if e.is_missing() && nl.link(link).await.ok().flatten().is_none() => {
                    Err(anyhow::anyhow!(
                        "adding address {addr} to {link}: the link does not exist \
                 (an OVS bridge's device appears only while ovs-vswitchd runs)"
                    ))
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

/// Re-reads the host until every action shows its effect, or gives up
/// after [`VERIFY_TRIES`]; the error lists what did not take.
pub async fn verify(
    ctx: &Context,
    nl: &Netlink,
    probe: &Probe,
    actions: &[NetAction],
) -> anyhow::Result<()> {
    let mut left = Vec::new();
    for attempt in 1..=VERIFY_TRIES {
        let now = read_current(ctx, nl, probe)
            .await
            .context("re-reading the network to verify")?;
        left = unmet(&now, actions);
        if left.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(VERIFY_PAUSE * attempt).await;
    }
    anyhow::bail!(
        "applied, but {} change(s) did not verify after {VERIFY_TRIES} tries: {}",
        left.len(),
        left.join("; ")
    )
}

fn all_err(n: usize, msg: &str) -> Vec<ActionResult> {
    (0..n)
        .map(|_| Err(anyhow::anyhow!("{msg}").into()))
        .collect()
}

async fn rollback(ctx: &Context, nl: &Netlink, cp: &Option<Checkpoint>) -> String {
    match cp {
        Some(cp) => match cp.restore(ctx, nl).await {
            Ok(n) => format!(
                "rolled back to the checkpoint taken before the apply ({n} change(s) undone)"
            ),
            Err(e) => format!("ROLLBACK FAILED, the network may be half-configured: {e:#}"),
        },
        None => "not rolled back (--no-rollback)".into(),
    }
}

/// Checkpoint, apply in order, verify; on failure restore the checkpoint.
/// With `--confirm-timeout` the change stays only if `confirm` comes in time.
/// Returns one result per action, and whether a `--confirm-timeout` change
/// was rolled back for want of `confirm` (it must not be re-applied then).
pub async fn apply_all(ctx: &Context, actions: &[NetAction]) -> (Vec<ActionResult>, bool) {
    let nl = match Netlink::new() {
        Ok(nl) => nl,
        Err(e) => {
            return (
                all_err(actions.len(), &format!("{:#}", anyhow::Error::from(e))),
                false,
            )
        }
    };
    let probe = Probe::for_actions(ctx, actions);
    let cp = if ctx.options.no_rollback {
        None
    } else {
        match Checkpoint::take(ctx, &nl, &probe, actions).await {
            Ok(cp) => Some(cp),
            Err(e) => {
                return (
                    all_err(actions.len(), &format!("{e:#}; nothing was applied")),
                    false,
                )
            }
        }
    };
    let mut results: Vec<ActionResult> = Vec::with_capacity(actions.len());
    let mut failed: Option<(usize, String)> = None;
    for (i, a) in actions.iter().enumerate() {
        match apply_one(ctx, &nl, a).await {
            Ok(note) => results.push(Ok(note)),
            Err(e) => {
                failed = Some((i, format!("{e:#}")));
                break;
            }
        }
    }
    if failed.is_none() {
        if let Err(e) = verify(ctx, &nl, &probe, actions).await {
            failed = Some((actions.len(), format!("{e:#}")));
        }
    }
    if let Some((at, msg)) = failed {
        let rb = rollback(ctx, &nl, &cp).await;
        tracing::error!("network apply failed: {msg}; {rb}");
        let mut out: Vec<ActionResult> = Vec::with_capacity(actions.len());
        for (i, (a, r)) in actions
            .iter()
            .zip(
                results
                    .into_iter()
                    .map(Some)
                    .chain(std::iter::repeat_with(|| None)),
            )
            .enumerate()
        {
            let res = if i == at {
                Err(anyhow::anyhow!("{msg}; {rb}").into())
            } else if at == actions.len() {
                Err(anyhow::anyhow!("{a}: {msg}; {rb}").into())
            } else if i > at {
                Err(anyhow::anyhow!("not applied: '{}' failed before it; {rb}", actions[at]).into())
            } else if cp.is_some() {
                Err(anyhow::anyhow!("undone: '{}' failed later ({msg}); {rb}", actions[at]).into())
            } else {
                r.unwrap_or(Ok(None))
            };
            out.push(res);
        }
        return (out, false);
    }
    if let (Some(timeout), Some(cp)) = (ctx.options.confirm_timeout, &cp) {
        if let Some(err) = await_confirm(ctx, &nl, cp, timeout, actions.len()).await {
            return (all_err(actions.len(), &err), true);
        }
        for note in results.iter_mut().flatten() {
            *note = Some(match note.take() {
                Some(n) => format!("{n}; confirmed"),
                None => "confirmed".into(),
            });
        }
    }
    if ctx.options.confirm_timeout.is_some() && cp.is_none() {
        tracing::warn!("--confirm-timeout has no effect with --no-rollback: the change stays");
    }
    (results, false)
}

/// Waits for `op-dbus-agent confirm`; `Some(error)` when it did not come
/// and the checkpoint was restored.
async fn await_confirm(
    ctx: &Context,
    nl: &Netlink,
    cp: &Checkpoint,
    timeout: Duration,
    n: usize,
) -> Option<String> {
    if let Err(e) = cp.save_pending(&ctx.state_dir) {
        let rb = rollback(ctx, nl, &Some(cp.clone())).await;
        return Some(format!("{e:#}; cannot wait for confirmation; {rb}"));
    }
    let what = format!(
        "network: {n} change(s); rolled back unless confirmed within {} s",
        timeout.as_secs()
    );
    if let Err(e) = confirm::begin(&ctx.state_dir, &what) {
        Checkpoint::clear_pending(&ctx.state_dir);
        let rb = rollback(ctx, nl, &Some(cp.clone())).await;
        return Some(format!("{e:#}; {rb}"));
    }
    tracing::warn!("{what}: run `op-dbus-agent confirm` to keep it");
    let confirmed = confirm::wait(&ctx.state_dir, timeout).await;
    Checkpoint::clear_pending(&ctx.state_dir);
    if confirmed {
        return None;
    }
    let rb = rollback(ctx, nl, &Some(cp.clone())).await;
    Some(format!(
        "not confirmed with `op-dbus-agent confirm` within {} s; {rb}",
        timeout.as_secs()
    ))
}

/// Restores a checkpoint an earlier apply left waiting for `confirm` (the
/// agent died while waiting). Call at agent start; returns what it did.
pub async fn rollback_pending(ctx: &Context) -> anyhow::Result<Option<String>> {
    let Some(cp) = Checkpoint::load_pending(&ctx.state_dir)? else {
        return Ok(None);
    };
    let nl = Netlink::new()?;
    let n = cp
        .restore(ctx, &nl)
        .await
        .context("rolling back an unconfirmed network change")?;
    Checkpoint::clear_pending(&ctx.state_dir);
    Ok(Some(format!(
        "rolled back an unconfirmed network change ({n} change(s) undone)"
    )))
}

/// Some links appear asynchronously (an OVS internal port once ovs-vswitchd
/// has processed the transaction, a link udev renames): wait a bounded time
/// for `name` before acting on it.
async fn wait_for_link(nl: &Netlink, name: &str) {
    for _ in 0..50 {
        if matches!(nl.link(name).await, Ok(Some(_))) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
