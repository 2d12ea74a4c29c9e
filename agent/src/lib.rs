//! The op-dbus agent library: the reconcile engine, its plugins and the
//! adapters that talk to the system (D-Bus, netlink, OVSDB), plus the audit chain.

pub mod cli;
pub mod audit;
pub mod dbus;
pub mod netlink;
pub mod ovsdb;
pub mod engine;
pub mod plugins;
pub mod service;
