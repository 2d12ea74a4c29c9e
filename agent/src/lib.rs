//! The op-dbus agent library: the reconcile engine, its plugins and the
//! adapters that talk to the system (D-Bus, netlink, OVSDB), plus the audit chain
//! and the host health the status reports (degraded arrays).

pub mod audit;
pub mod cli;
pub mod dbus;
pub mod engine;
pub mod health;
pub mod lxc;
pub mod netlink;
pub mod ovsdb;
pub mod plugins;
pub mod rollback;
pub mod service;
pub mod tls_pin;
pub mod watch;
