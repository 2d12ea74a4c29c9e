//! OVSDB JSON-RPC client (RFC 7047) over a Unix socket, and typed helpers for
//! the Open_vSwitch schema (bridges, ports, interfaces, next_cfg/cur_cfg).
//! Layers: `codec` (framing, datum encoding), `ops` (transact operations), `client`, `vswitch`.

pub mod client;
pub mod codec;
pub mod ops;
pub mod vswitch;

pub use client::{
    parse_address, Client, Monitor, MonitorRequest, MonitorSelect, RowUpdate, TableUpdates,
};
pub use codec::{Atom, Datum, FrameDecoder};
pub use ops::{Condition, Function, Mutation, Mutator, OpResult, Operation, Row, WaitUntil};
pub use vswitch::{
    BridgeInfo, BridgeSpec, EnsureReport, InterfaceInfo, PortInfo, PortKind, PortSpec,
};

/// Default OVSDB socket of Open vSwitch.
pub const DEFAULT_ADDRESS: &str = "unix:/run/openvswitch/db.sock";
/// Database name of the Open vSwitch schema.
pub const VSWITCH_DB: &str = "Open_vSwitch";

/// Errors of the OVSDB client and helpers.
#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("invalid OVSDB address '{0}': expected unix:PATH (for example unix:/run/openvswitch/db.sock)")]
    Address(String),
    #[error("connecting to ovsdb-server at {path}: is openvswitch-switch running?")]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("OVSDB connection I/O failed")]
    Io(#[from] std::io::Error),
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),
    #[error("ovsdb-server rejected '{method}': {error}")]
    Rpc {
        method: String,
        error: serde_json::Value,
    },
    #[error("OVSDB {}: {error}{}", op_label(*index, op), details_suffix(details))]
    Operation {
        /// Position in the transaction; equal to the number of operations when
        /// the failure came at commit (the extra trailing error element).
        index: usize,
        /// Operation name (`insert`, `mutate`, ...) or `commit`.
        op: String,
        error: String,
        details: Option<String>,
    },
    #[error("OVSDB connection closed")]
    Disconnected,
    #[error("timed out after {0:?} waiting for ovsdb-server")]
    Timeout(std::time::Duration),
    #[error("unexpected OVSDB data: {0}")]
    Decode(String),
    #[error("{0}")]
    Precondition(String),
}

fn op_label(index: usize, op: &str) -> String {
    if op == "commit" {
        "transaction failed at commit".to_string()
    } else {
        format!("operation {index} ({op}) failed")
    }
}

fn details_suffix(details: &Option<String>) -> String {
    details
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

pub type Result<T, E = OvsdbError> = std::result::Result<T, E>;
