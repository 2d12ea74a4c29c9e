//! The reconcile engine: plugins in a fixed order, each retrieving the current
//! state of what state.json names, diffing it purely into typed actions,
//! applying them and verifying by querying again, with bounded retry.

pub mod confirm;
pub mod context;
pub mod desired;
pub mod discover;
pub mod first_boot;
pub mod ownership;
pub mod plugin;
pub mod report;
pub mod run;
pub mod secret;
pub mod state_dir;
pub mod status;
pub mod transaction;

pub use context::{ApplyOptions, Context, RetryPolicy};
pub use desired::{DesiredState, InvalidState};
pub use first_boot::FirstBoot;
pub use plugin::{
    ActionError, ActionResult, ActionView, DynPlugin, ErrorKind, Persistence, Planned, Plugin,
    PluginAction, Typed,
};
pub use report::{
    ActionReport, PluginOutcome, PluginReport, RunReport, TransactionOutcome, TransactionReport,
    EXIT_NOT_APPLIED,
};
pub use run::{Engine, PluginDiff, Repair};
pub use status::{Phase, Refused, RunProgress, Status};

/// The order plugins run in, by name. Storage comes first (everything else
/// lives on it), host identity before packages, users before the services
/// that run as them, the network before the firewall, and systemd units after
/// the files, packages and users they need. Plugins not listed run last.
pub const ORDER: &[&str] = &[
    "storage",
    "host",
    "packages",
    "users",
    "network",
    "flows",
    "wireguard",
    "netmaker",
    "firewall",
    "systemd",
    "lxc",
    "proxmox",
];
