//! The agent's integration tests, one module per area, in one test binary
//! (one link instead of one per file). Privileged tests are `#[ignore]`d:
//! run them as root with `-- --ignored`. Shared fixtures are in `../support`.
#![allow(clippy::unwrap_used)]

#[path = "../support/dbus_daemon.rs"]
mod dbus_daemon;
#[path = "../support/fake_packagekit.rs"]
mod fake_packagekit;
#[path = "../support/fake_settings.rs"]
mod fake_settings;
#[path = "../support/fake_systemd.rs"]
mod fake_systemd;
#[path = "../support/netns.rs"]
mod netns;
#[path = "../support/ovsdb_server.rs"]
mod ovsdb_server;
#[path = "../support/pve_sim.rs"]
mod pve_sim;
#[path = "../support/witness_server.rs"]
mod witness_server;

mod audit;
mod audit_history;
mod btrfs_degraded;
mod clean_output;
mod containers;
mod convergence;
mod dbus_packagekit;
mod dbus_settings;
mod dbus_systemd;
mod discover;
mod engine_cli;
mod engine_dbus;
mod engine_golden;
mod engine_typed;
mod firewall;
mod netlink;
mod netmaker;
mod network;
mod network_netns;
mod network_ovs;
mod not_applied;
mod ovs_bonds;
mod ovs_flows_wg;
mod ovsdb;
mod packages_apt;
mod proxmox_api;
mod transaction;
mod users_hostile;
mod users_injection;
mod users_root;
mod validate_cli;
