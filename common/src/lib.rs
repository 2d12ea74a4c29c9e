//! Plumbing shared by the op-dbus binaries: one wrapper for external commands
//! (so their stderr lands in the error) and one logging setup.

pub mod cmd;
pub mod logging;

pub use cmd::{Task, TaskError};
