//! Plumbing shared by the op-dbus binaries: one wrapper for external commands
//! (so their stderr lands in the error), one logging setup, and writes that
//! stay beneath a root directory.

pub mod cmd;
pub mod deb;
pub mod interrupt;
pub mod logging;
pub mod rootfs;

pub use cmd::{Task, TaskError};
