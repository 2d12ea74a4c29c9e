//! The op-dbus installer library: everything `op-dbus-install` does, as
//! testable code. Modules are the steps of an install, named by what they own.

pub mod bootloader;
pub mod cli;
pub mod disk;
pub mod install;
pub mod interrupt;
pub mod inventory;
pub mod live;
pub mod payload;
pub mod plan;
pub mod proxmox;
pub mod target;
pub mod templates;
pub mod wizard;
