//! The state.json contract shared by the installer, the agent, the wizard and
//! the ISO builder: the typed model, parsing with source positions, semantic
//! validation and normalization. No I/O beyond reading a file.

pub mod model;

pub use model::State;
