//! The desired state as the engine holds it: the typed model, the raw JSON
//! and its SHA-256 (recorded with every audit record). The only way in is
//! through the same reader and validator as `validate`, so no entry point
//! (diff, apply, run, D-Bus ApplyState, the first-boot reconcile) acts on a
//! state `validate` rejects.

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

/// A state `validate` rejects: its lines are exactly what `validate` prints
/// for it (`FILE:LINE:COL: /pointer: message; hint`).
#[derive(Debug, thiserror::Error)]
#[error("{origin} is not a valid state; nothing was changed (`op-dbus-agent validate` prints the same):\n{}", lines.join("\n"))]
pub struct InvalidState {
    pub origin: String,
    pub lines: Vec<String>,
}

impl DesiredState {
    /// Parses and validates state.json text (warnings are logged, errors
    /// refuse it); `origin` names it in the diagnostics.
    pub fn from_json(text: &str, origin: &str) -> anyhow::Result<Self> {
        let loaded = opdbus_state::parse_str(text, origin).map_err(|f| InvalidState {
            origin: origin.to_string(),
            lines: f.lines(),
        })?;
        for w in &loaded.warnings {
            tracing::warn!("{}", w.render(origin));
        }
        let raw: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("parsing {origin} as JSON"))?;
        let hash = crate::audit::state_hash(&raw);
        Ok(Self {
            state: loaded.state,
            raw,
            hash,
        })
    }

    /// Reads (a regular file of at most 4 MiB), parses and validates a state file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let origin = path.display().to_string();
        let text = opdbus_state::read_state_text(path)
            .map_err(|e| anyhow::anyhow!("{}", opdbus_state::parse::read_line(&origin, &e)))?;
        Self::from_json(&text, &origin)
    }
}
