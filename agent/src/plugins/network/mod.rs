//! The network plugin: links, bridges, bonds, VLANs, veths, addresses and
//! routes over netlink, Open vSwitch over OVSDB, DNS, networkd drop-ins and
//! (Proxmox) /etc/network/interfaces. Ephemeral (re-applied at every boot)
//! and transactional: the engine keeps its [`checkpoint::Checkpoint`] and
//! restores it when the transaction is rolled back.

pub mod apply;
pub mod checkpoint;
pub mod diff;
pub mod discover;
pub mod dns;
pub mod flows;
pub mod interfaces;
pub mod model;
pub mod query;

use anyhow::Context as _;

use crate::engine::{ActionResult, Context, Persistence, Plugin};
use crate::netlink::Netlink;
use opdbus_state::model::Distribution;
use opdbus_state::State;

pub use model::{Current, Desired, NetAction, LINK, OVS_BRIDGE, OVS_PORT, PLUGIN};

/// The `network` plugin (state sections `plugins.network` and `plugins.net`).
#[derive(Default)]
pub struct NetworkPlugin;

/// Whether the state describes a Proxmox host (`/etc/network/interfaces` is rendered).
pub fn is_proxmox(state: &State) -> bool {
    state
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.distribution == Distribution::Proxmox)
        || state.plugins.proxmox.is_some()
}

/// The desired network of `state` (with the networkd drop-ins and, on
/// Proxmox, /etc/network/interfaces rendered), or `None` when it has no
/// network section. `plugins.proxmox.network` is part of it: this plugin
/// is the one writer of /etc/network/interfaces (the proxmox plugin never
/// writes the node's network through the PVE API).
pub fn desired_of(state: &State) -> Option<Desired> {
    let pve_network = state
        .plugins
        .proxmox
        .as_ref()
        .is_some_and(|p| !p.network.is_empty());
    if state.plugins.network.is_none() && state.plugins.net.is_none() && !pve_network {
        return None;
    }
    let mut desired = model::desired_from_spec(&state.network_spec());
    desired.networkd = desired
        .links
        .iter()
        .filter(|l| !matches!(l.kind, model::WantKind::OvsBridge { .. }))
        .map(|l| (l.name.clone(), dns::networkd_dropin(&l.name, l.dhcp)))
        .collect();
    if is_proxmox(state) {
        desired.interfaces_file = Some(interfaces::render(&desired));
    }
    Some(desired)
}

impl Plugin for NetworkPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = NetAction;
    type Checkpoint = checkpoint::Checkpoint;

    fn name(&self) -> &'static str {
        "network"
    }

    fn persistence(&self) -> Persistence {
        Persistence::Ephemeral
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        Ok(desired_of(state))
    }

    async fn query(&self, ctx: &Context, desired: &Desired) -> anyhow::Result<Current> {
        let nl = Netlink::new().context("opening netlink")?;
        let probe = query::Probe::for_desired(ctx, desired);
        let current = query::read_current(ctx, &nl, &probe).await?;
        diff::check_references(&current, desired).map_err(anyhow::Error::msg)?;
        Ok(current)
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<NetAction> {
        for what in diff::not_owned(current, desired) {
            tracing::info!("prune: {what} is not owned (op-dbus did not create it), left alone");
        }
        diff::diff(current, desired)
    }

    async fn checkpoint(
        &self,
        ctx: &Context,
        current: &Current,
        actions: &[NetAction],
    ) -> anyhow::Result<Option<checkpoint::Checkpoint>> {
        checkpoint::Checkpoint::from_current(ctx, current, actions).map(Some)
    }

    async fn restore(&self, ctx: &Context, cp: &checkpoint::Checkpoint) -> anyhow::Result<String> {
        let nl = Netlink::new().context("opening netlink to roll back")?;
        let n = cp.restore(ctx, &nl).await?;
        Ok(format!("{n} change(s) undone"))
    }

    async fn apply(&self, ctx: &Context, actions: &[NetAction]) -> Vec<ActionResult> {
        apply::apply_all(ctx, actions).await
    }

    /// Every link, static address and route over netlink, and the OVS
    /// bridges when OVSDB answers at `--ovsdb` (its socket exists).
    async fn discover(&self, ctx: &Context) -> anyhow::Result<Option<serde_json::Value>> {
        let nl = Netlink::new().context("opening netlink")?;
        let socket = ctx.ovsdb.strip_prefix("unix:").unwrap_or(&ctx.ovsdb);
        let ovs = std::path::Path::new(socket).exists();
        if ovs {
            crate::ovsdb::Client::connect(&ctx.ovsdb).await.with_context(|| {
                format!(
                    "the OVSDB socket {socket} exists but does not answer: start ovsdb-server, or pass --ovsdb with the right socket"
                )
            })?;
        }
        let probe = query::Probe {
            ovsdb: ovs.then(|| ctx.ovsdb.clone()),
            ..query::Probe::default()
        };
        let mut current = query::read_current(ctx, &nl, &probe).await?;
        // WireGuard tunnels and their addresses are the wireguard plugin's
        // to describe (a drop-in of ours on them would be a second owner).
        let tunnels: Vec<String> = current
            .links
            .iter()
            .filter(|l| crate::plugins::wireguard::is_tunnel(&l.kind, &l.name))
            .map(|l| l.name.clone())
            .collect();
        current.links.retain(|l| !tunnels.contains(&l.name));
        current.addresses.retain(|a| !tunnels.contains(&a.link));
        let section = discover::section(&current);
        if section.interfaces.is_empty() && section.routes.is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::json!({ "network": section })))
    }
}
