//! Plumbing shared by the op-dbus binaries: one wrapper for external commands
//! (so their stderr lands in the error), one logging setup, and writes that
//! stay beneath a root directory; container templates (btrfs subvolumes) that
//! the installer fills at install and the agent makes on demand.

pub mod cmd;
pub mod containers;
pub mod deb;
pub mod fat;
pub mod interrupt;
pub mod layout;
pub mod logging;
pub mod rootfs;

pub use cmd::{Task, TaskError};
