//! Results of a reconcile: per plugin, per action, with the resource named,
//! serializable for the status file, `apply --json` and the OPDBUS-RESULT line.

use opdbus_state::coverage::Unapplied;
use serde::{Deserialize, Serialize};

/// Exit status of `apply`, `run` and `status` when the state sets parts this
/// version does not apply (and `--allow-unapplied` was not given).
pub const EXIT_NOT_APPLIED: u8 = 3;

/// How one plugin's reconcile ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginOutcome {
    /// The state has no section for the plugin.
    Skipped,
    /// Nothing differed.
    Unchanged,
    /// Actions were applied and verified.
    Changed,
    /// Only planned (`--dry-run`).
    Planned,
    /// Query, apply or verify failed.
    Failed,
}

/// One applied (or planned) action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReport {
    pub action: String,
    pub resource: String,
    pub description: String,
    /// `ok`, `failed` or `planned`.
    pub result: String,
    /// How it was done ("via PackageKit") or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginReport {
    pub plugin: String,
    pub outcome: PluginOutcome,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionReport>,
    /// Resources that failed to apply or did not verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl PluginReport {
    pub fn failed(&self) -> bool {
        self.outcome == PluginOutcome::Failed
    }
}

/// A whole run: every registered plugin in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// No plugin failed, and everything the state names was applied or
    /// already matched (or `--allow-unapplied` accepted what was not).
    pub ok: bool,
    pub state_hash: String,
    pub plugins: Vec<PluginReport>,
    /// Parts of the state this version does not apply (see
    /// `opdbus_state::coverage`), whether or not they were accepted.
    #[serde(default)]
    pub not_applied: Vec<Unapplied>,
    /// `--allow-unapplied` was given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unapplied: bool,
    pub duration_ms: u64,
}

impl RunReport {
    /// Some plugin failed (`ok` may also be false for unapplied parts).
    pub fn any_failed(&self) -> bool {
        self.plugins.iter().any(PluginReport::failed)
    }

    /// 0 everything applied or matched; 1 a plugin failed; 3
    /// ([`EXIT_NOT_APPLIED`]) parts of the state were not applied.
    pub fn exit_code(&self) -> u8 {
        if self.any_failed() {
            1
        } else if !self.ok {
            EXIT_NOT_APPLIED
        } else {
            0
        }
    }

    /// "/plugins/firewall: not applied by this version of op-dbus; ..." lines.
    pub fn not_applied_lines(&self) -> Vec<String> {
        self.not_applied.iter().map(ToString::to_string).collect()
    }

    /// "plugin 'users' failed on user:admin: ..." lines, one per failed plugin.
    pub fn failures(&self) -> Vec<String> {
        self.plugins
            .iter()
            .filter(|p| p.failed())
            .map(|p| {
                let on = if p.failed_resources.is_empty() {
                    String::new()
                } else {
                    format!(" on {}", p.failed_resources.join(", "))
                };
                format!(
                    "plugin '{}' failed{on}: {}",
                    p.plugin,
                    p.error.as_deref().unwrap_or("unknown error")
                )
            })
            .collect()
    }
}
