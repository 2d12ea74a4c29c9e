//! The network plugin: links, bridges, bonds, VLANs, veths, addresses and
//! routes over netlink, Open vSwitch over OVSDB, DNS, networkd drop-ins and
//! (Proxmox) /etc/network/interfaces, with checkpoint, verify and rollback.

pub mod apply;
pub mod checkpoint;
pub mod diff;
pub mod dns;
pub mod flows;
pub mod interfaces;
pub mod model;
pub mod query;

use std::sync::Mutex;

use anyhow::Context as _;

use crate::engine::{ActionResult, Context, Plugin};
use crate::netlink::Netlink;
use opdbus_state::model::Distribution;
use opdbus_state::State;

pub use apply::rollback_pending;
pub use model::{Current, Desired, NetAction};

/// Plugin name and kind under which created links are recorded in the
/// ownership registry.
pub const PLUGIN: &str = "network";
pub const LINK: &str = "link";
pub const OVS_BRIDGE: &str = "ovs-bridge";
/// Id `BRIDGE/PORT`.
pub const OVS_PORT: &str = "ovs-port";

/// The `network` plugin (state sections `plugins.network` and `plugins.net`).
#[derive(Default)]
pub struct NetworkPlugin {
    /// Action lists rolled back for want of `confirm` in this process: the
    /// engine's retry must not apply them again.
    unconfirmed: Mutex<Vec<Vec<NetAction>>>,
}

/// Whether the state describes a Proxmox host (`/etc/network/interfaces` is rendered).
pub fn is_proxmox(state: &State) -> bool {
    state
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.distribution == Distribution::Proxmox)
        || state.plugins.proxmox.is_some()
}

/// The desired network of `state`, or `None` when it has no network section.
pub fn desired_of(state: &State) -> Option<Desired> {
    if state.plugins.network.is_none() && state.plugins.net.is_none() {
        return None;
    }
    Some(model::desired_from_spec(
        &state.network_spec(),
        is_proxmox(state),
    ))
}

impl Plugin for NetworkPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = NetAction;
    type Checkpoint = ();

    fn name(&self) -> &'static str {
        "network"
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

    async fn apply(&self, ctx: &Context, actions: &[NetAction]) -> Vec<ActionResult> {
        let refused = self
            .unconfirmed
            .lock()
            .map(|l| l.iter().any(|a| a == actions))
            .unwrap_or(false);
        if refused {
            return actions
                .iter()
                .map(|_| {
                    Err(anyhow::anyhow!(
                        "not applied again: this change was rolled back because nobody ran \
                         `op-dbus-agent confirm` in time"
                    )
                    .into())
                })
                .collect();
        }
        let (results, unconfirmed) = apply::apply_all(ctx, actions).await;
        if unconfirmed {
            if let Ok(mut l) = self.unconfirmed.lock() {
                l.push(actions.to_vec());
            }
        }
        results
    }
}
