//! The state.json contract shared by the installer, the agent, the wizard and
//! the ISO builder: the typed model, parsing with source positions, semantic
//! validation and normalization. No I/O beyond reading a file (bounded, see
//! [`read`]).

pub mod check;
pub mod coverage;
pub mod diag;
pub mod manifest;
pub mod model;
pub mod nft;
pub mod normalize;
pub mod parse;
pub mod position;
pub mod read;
pub mod validate;

pub use check::{check_files, check_text, Report};
pub use diag::{Diagnostic, Severity};
pub use model::State;
pub use normalize::{IfaceKind, IfaceSpec, NetworkSpec, UnitTarget};
pub use parse::{load, parse_str, Failure, Loaded};
pub use read::{read_state_text, ReadError, MAX_STATE_BYTES};
pub use validate::validate;

/// The JSON Schema of state.json, generated from the model types.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(State)).unwrap_or_default()
}
