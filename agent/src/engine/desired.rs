//! The desired state as the engine holds it: the typed model, the raw JSON
//! and its SHA-256 (recorded with every audit record).

use std::path::Path;

use anyhow::Context as _;
use opdbus_state::State;

#[derive(Debug, Clone)]
pub struct DesiredState {
    pub state: State,
    pub raw: serde_json::Value,
    /// SHA-256 (hex) of the canonical JSON, see [`crate::audit::state_hash`].
    pub hash: String,
}

impl DesiredState {
    /// Parses state.json text; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> anyhow::Result<Self> {
        let raw: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("parsing {origin} as JSON"))?;
        let state: State = serde_json::from_value(raw.clone()).with_context(|| {
            format!("reading {origin} as state.json (run `op-dbus-agent validate {origin}`)")
        })?;
        let hash = crate::audit::state_hash(&raw);
        Ok(Self { state, raw, hash })
    }

    /// Reads and parses a state file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the state file {}", path.display()))?;
        Self::from_json(&text, &path.display().to_string())
    }
}
