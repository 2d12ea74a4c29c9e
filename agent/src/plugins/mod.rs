//! The agent's plugins, one module per concept, and their registry
//! ([`standard`]). Each maps its section of state.json to a desired value,
//! queries only what it names, diffs purely and applies through one adapter
//! (D-Bus, netlink, OVSDB, files, commands). The engine knows none of them.

pub mod firewall;
pub mod host;
pub mod lxc;
pub mod netmaker;
pub mod network;
pub mod packages;
pub mod proxmox;
pub mod storage;
pub mod systemd;
pub mod users;
pub mod wireguard;

use crate::engine::Engine;

/// The agent's plugins in an engine: storage, host, packages, users,
/// network, systemd (firewall, containers and proxmox register here when
/// they exist).
pub fn standard() -> Engine {
    let mut e = Engine::new();
    e.register(storage::StoragePlugin);
    e.register(host::HostPlugin);
    e.register(packages::PackagesPlugin);
    e.register(users::UsersPlugin);
    e.register(network::NetworkPlugin);
    e.register(network::flows::FlowsPlugin);
    e.register(wireguard::WireGuardPlugin);
    e.register(netmaker::NetmakerPlugin);
    e.register(firewall::FirewallPlugin::default());
    e.register(systemd::SystemdPlugin);
    e.register(lxc::LxcPlugin);
    e.register(proxmox::ProxmoxPlugin::default());
    e
}

/// Applies `f` to each action in order, collecting one result per action.
pub(crate) async fn each<'a, A, F, Fut>(
    actions: &'a [A],
    mut f: F,
) -> Vec<crate::engine::ActionResult>
where
    F: FnMut(&'a A) -> Fut,
    Fut: std::future::Future<Output = crate::engine::ActionResult>,
{
    let mut out = Vec::with_capacity(actions.len());
    for a in actions {
        out.push(f(a).await);
    }
    out
}

#[cfg(test)]
mod tests {
    /// What a reboot loses is applied again at every boot: every plugin
    /// whose effect lives only in the kernel, none that writes to disk.
    #[test]
    fn boot_reapplies_every_ephemeral_plugin() {
        assert_eq!(
            super::standard().ephemeral_plugins(),
            ["network", "flows", "wireguard", "firewall"]
        );
    }
}
