//! Results of a reconcile: per plugin, per action, with the resource named,
//! serializable for the status file, `apply --json` and the OPDBUS-RESULT line.

use opdbus_state::coverage::Unapplied;
use serde::{Deserialize, Serialize};

use super::plugin::ErrorKind;

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
    /// Query, checkpoint, apply or verify failed.
    Failed,
    /// Not run: an earlier plugin failed and the transaction stopped.
    NotRun,
}

/// One applied (or planned) action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReport {
    pub action: String,
    pub resource: String,
    pub description: String,
    /// `ok`, `failed`, `planned`, or `rolled-back` (applied, then undone
    /// when the transaction was rolled back).
    pub result: String,
    /// How it was done ("via PackageKit") or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The kind of the error of a failed action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
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
    /// When the transaction was rolled back: what became of this plugin's
    /// changes ("rolled back: 3 change(s) undone", "not rolled back: ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// Parts of its section the plugin could not apply on this host
    /// ([`super::Plugin::not_applied`]); also in the run's `not_applied`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<opdbus_state::coverage::Unapplied>,
    pub duration_ms: u64,
}

/// How the transaction of an apply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransactionOutcome {
    /// Applied and verified (and confirmed, with `--confirm-timeout`).
    Committed,
    /// A plugin failed, or `confirm` did not come: every checkpointed plugin
    /// was restored.
    RolledBack,
    /// Restoring failed for some plugin: the host may be half-configured.
    RollbackFailed,
    /// A plugin failed and nothing was restored (`--no-rollback`).
    NotRolledBack,
}

/// The transaction part of a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionReport {
    pub id: String,
    pub outcome: TransactionOutcome,
    /// Why it was rolled back (the failure, or the missing confirmation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `op-dbus-agent confirm` kept the change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
    /// Plugins restored to their checkpoint, in the order restored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back: Vec<String>,
    /// Plugins whose changes stay although the transaction was rolled back
    /// (they cannot restore, or `--no-rollback`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_rolled_back: Vec<String>,
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
    /// The transaction (absent for `--dry-run`, or when nothing ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<TransactionReport>,
    /// What became of a transaction an earlier agent left behind (it died
    /// mid-apply or while waiting for `confirm`), done before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recovered: Vec<String>,
    /// Why nothing was applied (the state directory is locked, a change
    /// still waits for `confirm`, recovering an earlier transaction failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl RunReport {
    /// Some plugin failed, the transaction was rolled back or could not
    /// start (`ok` may also be false for unapplied parts).
    pub fn any_failed(&self) -> bool {
        self.plugins.iter().any(PluginReport::failed)
            || self.error.is_some()
            || self
                .transaction
                .as_ref()
                .is_some_and(|t| t.outcome != TransactionOutcome::Committed)
    }

    /// "transaction ID rolled back: REASON; restored: network, ...; changes
    /// kept (not restorable): users", when the transaction did not commit.
    pub fn rollback_summary(&self) -> Option<String> {
        let t = self.transaction.as_ref()?;
        let what = match t.outcome {
            TransactionOutcome::Committed => return None,
            TransactionOutcome::RolledBack => "rolled back",
            TransactionOutcome::RollbackFailed => {
                "ROLLBACK FAILED (the host may be half-configured)"
            }
            TransactionOutcome::NotRolledBack => "failed, not rolled back",
        };
        let mut line = format!("transaction {} {what}", t.id);
        if let Some(r) = &t.reason {
            line.push_str(&format!(": {r}"));
        }
        if !t.rolled_back.is_empty() {
            line.push_str(&format!("; restored: {}", t.rolled_back.join(", ")));
        }
        if !t.not_rolled_back.is_empty() {
            line.push_str(&format!(
                "; changes kept (not restorable): {}",
                t.not_rolled_back.join(", ")
            ));
        }
        Some(line)
    }

    /// Names of the plugins restored (empty when nothing was rolled back).
    pub fn rolled_back(&self) -> Vec<String> {
        self.transaction
            .as_ref()
            .map(|t| t.rolled_back.clone())
            .unwrap_or_default()
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

    /// "plugin 'users' failed on user:admin: ..." lines, one per failed
    /// plugin, then the transaction's rollback and the run's own error.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .plugins
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
            .collect();
        // A rollback without a failed plugin (no `confirm`) is a failure of its own.
        if out.is_empty() {
            out.extend(self.rollback_summary());
        }
        if let Some(e) = &self.error {
            out.push(e.clone());
        }
        out
    }
}
