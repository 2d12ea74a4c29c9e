//! The op-dbus installer library: everything `op-dbus-install` does, as
//! testable code. Modules are the steps of an install, named by what they own.

pub mod cli;
pub mod disk;
pub mod payload;
pub mod bootloader;
pub mod target;
pub mod live;
pub mod layout;
pub mod inventory;
pub mod plan;
pub mod install;
pub mod wizard;
