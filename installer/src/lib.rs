//! The op-dbus installer library: everything `op-dbus-install` does, as
//! testable code. Modules are the steps of an install, named by what they own.

pub mod cli;
pub mod disk;
pub mod payload;
