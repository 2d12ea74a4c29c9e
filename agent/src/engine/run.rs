//! [`Engine`]: the ordered plugin list and the transaction every apply is
//! (per plugin: query -> diff -> checkpoint -> journal -> apply, retrying
//! only retryable errors -> verify; on failure or no `confirm`, restore every
//! checkpointed plugin in reverse order), recorded in the audit chain at
//! its end and reported by plugin and resource.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::confirm;
use super::plugin::{ActionResult, ActionView, DynPlugin, Planned, Plugin, Typed};
use super::report::{
    ActionReport, PluginOutcome, PluginReport, RunReport, TransactionOutcome, TransactionReport,
};
use super::transaction::{self, format_time, Journal, JournalEntry, JournalPhase, StateLock};
use super::{Context, DesiredState, ORDER};
use crate::audit::{AuditLog, NewEntry};
use opdbus_state::coverage::Unapplied;

/// The actions one plugin would take.
#[derive(Debug, Clone, Serialize)]
pub struct PluginDiff {
    pub plugin: String,
    pub actions: Vec<ActionView>,
    /// What the plugin cannot apply on this host ([`Plugin::not_applied`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_applied: Vec<Unapplied>,
}

/// A targeted re-apply after drift: only the actions `filter` accepts are
/// applied, and their audit records say `drift-repair` and `reason`.
pub struct Repair<'a> {
    pub reason: String,
    pub filter: &'a (dyn Fn(&ActionView) -> bool + Send + Sync),
}

/// Plugins in their fixed order.
#[derive(Default)]
pub struct Engine {
    plugins: Vec<Box<dyn DynPlugin>>,
    /// Set by [`Engine::retain`]: only these plugins' unapplied parts count.
    retained: Option<Vec<String>>,
    /// Plugins [`Engine::retain`] removed: they do not run, but restore
    /// what a journal of theirs left behind.
    set_aside: Vec<Box<dyn DynPlugin>>,
}

fn rank(name: &str) -> usize {
    ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len())
}

impl Engine {
    /// An engine with no plugins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a plugin at its place in [`ORDER`] (after plugins of equal rank).
    pub fn register<P: Plugin>(&mut self, plugin: P) -> &mut Self {
        self.register_dyn(Box::new(plugin))
    }

    pub fn register_dyn(&mut self, plugin: Box<dyn DynPlugin>) -> &mut Self {
        let r = rank(plugin.name());
        let at = self
            .plugins
            .iter()
            .position(|p| rank(p.name()) > r)
            .unwrap_or(self.plugins.len());
        self.plugins.insert(at, plugin);
        self
    }

    /// Keeps only the named plugins (`apply --plugin`), in the fixed order;
    /// an unknown name is an error listing the known ones.
    pub fn retain(&mut self, names: &[String]) -> anyhow::Result<()> {
        let known = self.plugin_names();
        if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
            anyhow::bail!(
                "no plugin named {bad:?}; the plugins are {}",
                known.join(", ")
            );
        }
        let (keep, aside) = std::mem::take(&mut self.plugins)
            .into_iter()
            .partition(|p| names.iter().any(|n| n == p.name()));
        self.plugins = keep;
        self.set_aside.extend(aside);
        self.retained = Some(names.to_vec());
        Ok(())
    }

    /// The parts of `state` this version does not apply
    /// (`opdbus_state::coverage`); after [`Engine::retain`] only those in
    /// the retained plugins' sections (`apply --plugin users` is not about
    /// the firewall).
    pub fn not_applied(&self, state: &opdbus_state::State) -> Vec<Unapplied> {
        let mut out = opdbus_state::coverage::unapplied(state);
        if let Some(names) = &self.retained {
            out.retain(|u| names.contains(&u.plugin));
        }
        out
    }

    /// The plugins whose effect a reboot loses ([`Persistence::Ephemeral`]:
    /// links, tunnels, rule sets, flows), in run order: what the resident
    /// agent applies again at every boot.
    pub fn ephemeral_plugins(&self) -> Vec<String> {
        self.plugins
            .iter()
            .filter(|p| p.persistence() == super::Persistence::Ephemeral)
            .map(|p| p.name().to_string())
            .collect()
    }

    /// Names in run order.
    pub fn plugin_names(&self) -> Vec<&'static str> {
        self.plugins.iter().map(|p| p.name()).collect()
    }

    pub fn plugin(&self, name: &str) -> Option<&dyn DynPlugin> {
        self.plugins
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    /// Current state of what the state names, per plugin (only `only` if
    /// given), secrets fingerprinted.
    pub async fn query(
        &self,
        ctx: &Context,
        state: &DesiredState,
        only: Option<&str>,
    ) -> anyhow::Result<BTreeMap<String, serde_json::Value>> {
        if let Some(name) = only {
            anyhow::ensure!(
                self.plugin(name).is_some(),
                "no plugin named '{name}' (plugins: {})",
                self.plugin_names().join(", ")
            );
        }
        let mut out = BTreeMap::new();
        for p in self
            .plugins
            .iter()
            .filter(|p| only.is_none_or(|n| n == p.name()))
        {
            let Some(desired) = p.desired_typed(&state.state)? else {
                continue;
            };
            let mut current = p
                .query_typed(ctx, &desired)
                .await
                .with_context(|| format!("querying plugin '{}'", p.name()))?
                .to_json()?;
            p.redact_json(&mut current);
            out.insert(p.name().to_string(), current);
        }
        Ok(out)
    }

    /// The actions an apply would take, per plugin with a section in the
    /// state, secrets fingerprinted (for display; nothing applies these).
    pub async fn diff(
        &self,
        ctx: &Context,
        state: &DesiredState,
    ) -> anyhow::Result<Vec<PluginDiff>> {
        let mut out = Vec::new();
        for p in &self.plugins {
            let Some(desired) = p.desired_typed(&state.state)? else {
                continue;
            };
            let current = p
                .query_typed(ctx, &desired)
                .await
                .with_context(|| format!("querying plugin '{}'", p.name()))?;
            let actions = p
                .diff_typed(&current, &desired)?
                .iter()
                .map(|a| a.view.redacted(p.as_ref()))
                .collect();
            out.push(PluginDiff {
                plugin: p.name().to_string(),
                actions,
                not_applied: p.not_applied_typed(&current, &desired)?,
            });
        }
        Ok(out)
    }

    /// Reconciles every plugin in order as one transaction (see
    /// [`Plugin`]): under the state-directory lock, after recovering what
    /// an earlier agent left behind; the first failing plugin stops it and
    /// every checkpointed plugin is restored in reverse order.
    /// `report.ok` is false if it was rolled back or a part of the state is
    /// not applied (unless allowed). With `ctx.options.dry_run` actions are
    /// only planned (no lock, no journal).
    pub async fn apply(&self, ctx: &Context, state: &DesiredState) -> RunReport {
        self.apply_as(ctx, state, ctx.options.resident).await
    }

    /// [`Engine::apply`] as an operator's explicit apply (`resident`
    /// false: D-Bus `ApplyState` in the resident agent) or as the resident
    /// agent's own (see [`super::ApplyOptions::resident`]).
    pub async fn apply_as(&self, ctx: &Context, state: &DesiredState, resident: bool) -> RunReport {
        let started = Instant::now();
        let mut report = RunReport {
            ok: false,
            state_hash: state.hash.clone(),
            plugins: Vec::new(),
            not_applied: Vec::new(),
            allow_unapplied: ctx.options.allow_unapplied,
            transaction: None,
            recovered: Vec::new(),
            error: None,
            duration_ms: 0,
        };
        let plugins: Vec<&dyn DynPlugin> = self.plugins.iter().map(|p| p.as_ref()).collect();
        if ctx.options.dry_run {
            for p in plugins {
                report.plugins.push(plan_only(p, ctx, state).await);
            }
        } else if let Err(e) = self
            .transaction(ctx, state, &plugins, None, resident, &mut report)
            .await
        {
            tracing::error!("{e:#}");
            report.error = Some(format!("{e:#}"));
        }
        report.not_applied = self.not_applied(&state.state);
        for p in &report.plugins {
            report.not_applied.extend(p.not_applied.iter().cloned());
        }
        for u in &report.not_applied {
            tracing::warn!("{u}");
        }
        report.ok =
            !report.any_failed() && (report.allow_unapplied || report.not_applied.is_empty());
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    }

    /// Re-applies one plugin's actions selected by `repair.filter`, as a
    /// transaction of its own, audited as `drift-repair` with the reason.
    /// A state rolled back for want of `confirm` is not repaired.
    pub async fn repair(
        &self,
        ctx: &Context,
        state: &DesiredState,
        plugin: &str,
        repair: Repair<'_>,
    ) -> anyhow::Result<PluginReport> {
        let p = self
            .plugin(plugin)
            .with_context(|| format!("no plugin named '{plugin}'"))?;
        let mut report = RunReport {
            ok: false,
            state_hash: state.hash.clone(),
            plugins: Vec::new(),
            not_applied: Vec::new(),
            allow_unapplied: true,
            transaction: None,
            recovered: Vec::new(),
            error: None,
            duration_ms: 0,
        };
        self.transaction(ctx, state, &[p], Some(&repair), true, &mut report)
            .await?;
        let mut out = report
            .plugins
            .pop()
            .context("the repair transaction reported no plugin")?;
        if let Some(t) = report
            .transaction
            .filter(|t| t.outcome != TransactionOutcome::Committed)
        {
            if out.error.is_none() {
                out.outcome = PluginOutcome::Failed;
                out.error = t.reason;
            }
        }
        Ok(out)
    }

    /// [`Engine::recover`] under the state-directory lock (`run` calls it
    /// first; every apply and repair also does).
    pub async fn recover_pending(&self, ctx: &Context) -> anyhow::Result<Vec<String>> {
        let _lock = StateLock::acquire(&ctx.state_dir, ctx.lock_wait).await?;
        self.recover(ctx).await
    }

    /// A registered plugin, also one [`Engine::retain`] set aside (a
    /// journal may name it).
    fn restorer(&self, name: &str) -> Option<&dyn DynPlugin> {
        self.plugins
            .iter()
            .chain(&self.set_aside)
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    /// Finishes a transaction an earlier agent left in the state directory
    /// (it died applying, or while waiting for `confirm`); the caller holds
    /// the lock, so its owner is gone. Applying: restored. Waiting for
    /// `confirm`: kept when confirmed, restored once its deadline passed;
    /// before that, a resident agent waits and an operator's apply fails
    /// saying when it expires. Returns what it did.
    pub async fn recover(&self, ctx: &Context) -> anyhow::Result<Vec<String>> {
        self.recover_as(ctx, ctx.options.resident).await
    }

    async fn recover_as(&self, ctx: &Context, resident: bool) -> anyhow::Result<Vec<String>> {
        let dir = &ctx.state_dir;
        let Some(journal) = Journal::load(dir)? else {
            return Ok(Vec::new());
        };
        let started = format_time(journal.started);
        let reason = match journal.phase {
            JournalPhase::Applying => format!(
                "interrupted while applying (op-dbus-agent pid {} died; started {started})",
                journal.pid
            ),
            JournalPhase::AwaitingConfirm => {
                let deadline = journal.deadline.unwrap_or(0);
                loop {
                    if confirm::is_confirmed(dir, &journal.id) {
                        let msg = format!(
                            "transaction {} (started {started}) was confirmed after its agent \
                             (pid {}) died; kept",
                            journal.id, journal.pid
                        );
                        append_audit(
                            ctx,
                            vec![engine_record(&journal, "committed", "confirmed")],
                            None,
                        )?;
                        confirm::clear(dir, &journal.id);
                        Journal::remove(dir)?;
                        return Ok(vec![msg]);
                    }
                    if transaction::now() >= deadline
                        && confirm::expire(dir, &journal.id)? == confirm::Decision::Expired
                    {
                        break;
                    }
                    if transaction::now() < deadline && !resident {
                        anyhow::bail!(
                            "transaction {} (op-dbus-agent pid {}, which is gone) waits for \
                             `op-dbus-agent confirm` until {} (in {} s): confirm it, or apply \
                             again after that time (it is rolled back first)",
                            journal.id,
                            journal.pid,
                            format_time(deadline),
                            deadline.saturating_sub(transaction::now())
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                transaction::Unconfirmed::write(dir, &journal.state_hash, &journal.id)?;
                format!(
                    "not confirmed with `op-dbus-agent confirm` by {} (op-dbus-agent pid {} died \
                     while waiting)",
                    format_time(deadline),
                    journal.pid
                )
            }
        };
        tracing::warn!("transaction {}: {reason}; restoring it", journal.id);
        let mut audit = Vec::new();
        let mut lines = Vec::new();
        let mut failed = Vec::new();
        for entry in journal.plugins.iter().rev() {
            let Some(cp) = &entry.checkpoint else {
                lines.push(format!(
                    "{}: not restorable, its changes stay",
                    entry.plugin
                ));
                continue;
            };
            let Some(p) = self.restorer(&entry.plugin) else {
                failed.push(format!(
                    "{}: this agent has no such plugin to restore it",
                    entry.plugin
                ));
                continue;
            };
            let result = p.restore_json(ctx, cp).await;
            let line = match &result {
                Ok(m) => format!("{}: restored ({m})", entry.plugin),
                Err(e) => format!("{}: RESTORE FAILED: {e:#}", entry.plugin),
            };
            audit.push(rollback_record(&journal, &entry.plugin, &result, &reason));
            match result {
                Ok(_) => lines.push(line),
                Err(_) => failed.push(line),
            }
        }
        let outcome = if failed.is_empty() {
            "rolled-back"
        } else {
            "rollback-failed"
        };
        audit.push(engine_record(&journal, outcome, &reason));
        append_audit(ctx, audit, None)?;
        confirm::clear(dir, &journal.id);
        let mut all = lines;
        all.extend(failed.iter().cloned());
        let msg = format!(
            "transaction {} {reason}: {}",
            journal.id,
            if all.is_empty() {
                "nothing to restore".to_string()
            } else {
                all.join("; ")
            }
        );
        anyhow::ensure!(
            failed.is_empty(),
            "{msg}; the journal {} is kept: fix the cause and run the agent again",
            dir.join(transaction::JOURNAL_FILE).display()
        );
        Journal::remove(dir)?;
        tracing::warn!("{msg}");
        Ok(vec![msg])
    }

    /// One transaction over `plugins` (in order): lock, recovery, then per
    /// plugin query, diff, checkpoint, journal, apply with retry, verify;
    /// on failure (or no `confirm`) restore in reverse order.
    async fn transaction(
        &self,
        ctx: &Context,
        state: &DesiredState,
        plugins: &[&dyn DynPlugin],
        repair: Option<&Repair<'_>>,
        resident: bool,
        report: &mut RunReport,
    ) -> anyhow::Result<()> {
        let dir = &ctx.state_dir;
        let _lock = StateLock::acquire(dir, ctx.lock_wait).await?;
        report.recovered = self.recover_as(ctx, resident).await?;
        if resident {
            if let Some(u) = transaction::Unconfirmed::read(dir) {
                anyhow::ensure!(
                    u.state_hash != state.hash,
                    "not applied again: this state was rolled back at {} because nobody ran \
                     `op-dbus-agent confirm` in time; the agent applies it when the state \
                     changes, or run `op-dbus-agent apply` to try again",
                    format_time(u.rolled_back)
                );
            }
        } else {
            transaction::Unconfirmed::clear(dir);
        }
        let mut tx = Tx {
            journal: Journal::new(&state.hash),
            checkpoints: Vec::new(),
            audit: Vec::new(),
            repair,
        };
        let mut failure: Option<String> = None;
        for p in plugins {
            if failure.is_some() {
                let outcome = match p.desired_typed(&state.state) {
                    Ok(None) => PluginOutcome::Skipped,
                    _ => PluginOutcome::NotRun,
                };
                report.plugins.push(PluginReport::new(p.name(), outcome));
                continue;
            }
            let r = step(*p, ctx, state, &mut tx).await;
            match r.outcome {
                PluginOutcome::Failed => {
                    tracing::error!(
                        plugin = %r.plugin,
                        resources = %r.failed_resources.join(","),
                        "{}", r.error.as_deref().unwrap_or("failed")
                    );
                    failure = Some(format!(
                        "plugin '{}' failed: {}",
                        r.plugin,
                        r.error.as_deref().unwrap_or("unknown error")
                    ));
                }
                outcome => tracing::info!(plugin = %r.plugin, ?outcome, "plugin reconciled"),
            }
            report.plugins.push(r);
        }
        let changed = !tx.journal.plugins.is_empty();
        let mut confirmed = false;
        if failure.is_none() && changed {
            if let Some(timeout) = ctx.options.confirm_timeout {
                if tx.journal.plugins.iter().any(|e| e.checkpoint.is_some()) {
                    match await_confirm(ctx, &mut tx.journal, timeout).await {
                        Ok(Ok(())) => confirmed = true,
                        Ok(Err(reason)) => {
                            if let Err(e) =
                                transaction::Unconfirmed::write(dir, &state.hash, &tx.journal.id)
                            {
                                tracing::error!("{e:#}");
                            }
                            failure = Some(reason);
                        }
                        Err(e) => failure = Some(format!("cannot wait for confirmation: {e:#}")),
                    }
                } else {
                    tracing::warn!(
                        "--confirm-timeout has no effect: no plugin of this change took a \
                         checkpoint (--no-rollback, or none can restore); the change stays"
                    );
                }
            }
        }
        let outcome = match &failure {
            None => TransactionOutcome::Committed,
            Some(reason) => roll_back(ctx, plugins, &mut tx, report, reason).await,
        };
        let mut t = TransactionReport {
            id: tx.journal.id.clone(),
            outcome,
            reason: failure,
            confirmed,
            rolled_back: Vec::new(),
            not_rolled_back: Vec::new(),
        };
        for e in tx.journal.plugins.iter().rev() {
            let restored = report
                .plugins
                .iter()
                .find(|p| p.plugin == e.plugin)
                .and_then(|p| p.rollback.as_deref())
                .is_some_and(|r| r.starts_with("rolled back"));
            if t.outcome == TransactionOutcome::Committed {
                continue;
            }
            if restored {
                t.rolled_back.push(e.plugin.clone());
            } else if e.checkpoint.is_none() {
                t.not_rolled_back.push(e.plugin.clone());
            }
        }
        let mut audited = Ok(());
        if changed || t.outcome != TransactionOutcome::Committed {
            let result = match t.outcome {
                TransactionOutcome::Committed if confirmed => "confirmed".to_string(),
                TransactionOutcome::Committed => "committed".to_string(),
                _ => format!(
                    "{}: {}",
                    serde_json::to_value(t.outcome)?
                        .as_str()
                        .unwrap_or("rolled-back"),
                    t.reason.as_deref().unwrap_or("")
                ),
            };
            let mut audit = std::mem::take(&mut tx.audit);
            let mut record = engine_record(&tx.journal, &result, "");
            if let Some(note) = &ctx.audit_note {
                record.metadata["note"] = serde_json::json!(note);
            }
            audit.push(record);
            // `audit.enabled: false` (the seeds' agent-only mode): no log.
            audited = if crate::audit::enabled(&state.raw) {
                let appended = append_audit(ctx, audit, Some(&state.raw));
                if appended.is_ok() {
                    // A witness that is down is logged and recorded, never fatal.
                    crate::audit::witness::notify(&ctx.state_dir, &state.raw).await;
                }
                appended
            } else {
                Ok(())
            };
        }
        // The transaction is decided: its journal goes even when the audit
        // log failed (a later agent would restore a committed change).
        confirm::clear(dir, &tx.journal.id);
        let removed = if t.outcome != TransactionOutcome::RollbackFailed {
            Journal::remove(dir)
        } else {
            Ok(())
        };
        report.transaction = Some(t);
        audited.and(removed)
    }
}

/// How often verification re-queries (kernel state settles), and the pause
/// between queries (times the try number).
const VERIFY_TRIES: u32 = 5;
const VERIFY_PAUSE: Duration = Duration::from_millis(250);

/// A transaction in progress: its journal, the audit records written at
/// its end, and the repair it serves (if any).
struct Tx<'a> {
    journal: Journal,
    /// The typed checkpoints of `journal.plugins`, same order (`None`
    /// where the entry has none): restored without decoding the journal.
    checkpoints: Vec<Option<Typed>>,
    audit: Vec<NewEntry>,
    repair: Option<&'a Repair<'a>>,
}

impl PluginReport {
    fn new(plugin: &str, outcome: PluginOutcome) -> Self {
        PluginReport {
            plugin: plugin.to_string(),
            outcome,
            attempts: 0,
            actions: Vec::new(),
            failed_resources: Vec::new(),
            error: None,
            rollback: None,
            not_applied: Vec::new(),
            duration_ms: 0,
        }
    }
}

/// Appends the transaction's records as one block that keeps the desired
/// state (when known) with its secrets fingerprinted, for `rollback --to-block`.
fn append_audit(
    ctx: &Context,
    entries: Vec<NewEntry>,
    desired: Option<&serde_json::Value>,
) -> anyhow::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut log = AuditLog::open(&ctx.state_dir)
        .with_context(|| format!("opening the audit log in {}", ctx.state_dir.display()))?;
    let redacted = desired.map(crate::engine::secret::redact_state);
    log.append_block(entries, redacted.as_ref())
        .context("appending the transaction to the audit log")?;
    Ok(())
}

/// The engine's own record of how transaction `journal` ended.
fn engine_record(journal: &Journal, result: &str, reason: &str) -> NewEntry {
    let plugins: Vec<&str> = journal.plugins.iter().map(|e| e.plugin.as_str()).collect();
    NewEntry {
        plugin: "engine".into(),
        action: "transaction".into(),
        resource: format!("transaction:{}", journal.id),
        result: result.to_string(),
        state_hash: Some(journal.state_hash.clone()),
        metadata: serde_json::json!({
            "pid": journal.pid,
            "started": journal.started,
            "plugins": plugins,
            "reason": reason,
        }),
    }
}

fn rollback_record(
    journal: &Journal,
    plugin: &str,
    result: &anyhow::Result<String>,
    reason: &str,
) -> NewEntry {
    NewEntry {
        plugin: plugin.to_string(),
        action: "rollback".into(),
        resource: format!("transaction:{}", journal.id),
        result: match result {
            Ok(m) => format!("ok: {m}"),
            Err(e) => format!("failed: {e:#}"),
        },
        state_hash: Some(journal.state_hash.clone()),
        metadata: serde_json::json!({ "reason": reason }),
    }
}

/// Restores every checkpointed plugin of `tx` in reverse order, notes the
/// result in each plugin's report and adds the audit records.
async fn roll_back(
    ctx: &Context,
    plugins: &[&dyn DynPlugin],
    tx: &mut Tx<'_>,
    report: &mut RunReport,
    reason: &str,
) -> TransactionOutcome {
    tracing::warn!("transaction {}: {reason}; rolling back", tx.journal.id);
    let mut restore_failed = false;
    let mut any_restored = false;
    for (entry, typed) in tx.journal.plugins.iter().zip(&tx.checkpoints).rev() {
        let note = match (
            &entry.checkpoint,
            plugins.iter().find(|p| p.name() == entry.plugin),
        ) {
            (None, _) if ctx.options.no_rollback => {
                "not rolled back (--no-rollback): its changes stay".to_string()
            }
            (None, _) => {
                "not rolled back: this plugin cannot restore; its changes stay".to_string()
            }
            (Some(_), None) => {
                restore_failed = true;
                "ROLLBACK FAILED: the plugin is not registered (engine bug)".to_string()
            }
            (Some(cp), Some(p)) => {
                let result = match typed {
                    Some(t) => p.restore_typed(ctx, t).await,
                    None => p.restore_json(ctx, cp).await,
                };
                tx.audit
                    .push(rollback_record(&tx.journal, &entry.plugin, &result, reason));
                match result {
                    Ok(m) => {
                        any_restored = true;
                        format!("rolled back: {m}")
                    }
                    Err(e) => {
                        restore_failed = true;
                        format!("ROLLBACK FAILED, its changes may be half undone: {e:#}")
                    }
                }
            }
        };
        tracing::warn!(plugin = %entry.plugin, "{note}");
        if let Some(pr) = report.plugins.iter_mut().find(|p| p.plugin == entry.plugin) {
            if note.starts_with("rolled back") {
                for a in pr.actions.iter_mut().filter(|a| a.result == "ok") {
                    a.result = "rolled-back".into();
                }
            }
            pr.rollback = Some(note);
        }
    }
    if restore_failed {
        TransactionOutcome::RollbackFailed
    } else if !any_restored && tx.journal.plugins.iter().any(|e| e.checkpoint.is_none()) {
        TransactionOutcome::NotRolledBack
    } else {
        TransactionOutcome::RolledBack
    }
}

/// Waits for `op-dbus-agent confirm` (see [`confirm`]); `Ok(Err(reason))`
/// when it did not come in time or a signal (SIGHUP of a dropped SSH
/// session, SIGTERM, SIGINT) cut the wait short: the caller rolls back.
async fn await_confirm(
    ctx: &Context,
    journal: &mut Journal,
    timeout: Duration,
) -> anyhow::Result<Result<(), String>> {
    use tokio::signal::unix::{signal, SignalKind};
    let dir = &ctx.state_dir;
    let deadline = transaction::now() + timeout.as_secs().max(1);
    journal.phase = JournalPhase::AwaitingConfirm;
    journal.deadline = Some(deadline);
    journal.save(dir)?;
    let description = journal
        .plugins
        .iter()
        .map(|e| format!("{}: {} change(s)", e.plugin, e.actions.len()))
        .collect::<Vec<_>>()
        .join(", ");
    let token = confirm::WaitToken {
        id: journal.id.clone(),
        pid: journal.pid,
        description,
        deadline,
    };
    confirm::begin(dir, &token)?;
    tracing::warn!(
        "transaction {} ({}) is rolled back unless `op-dbus-agent confirm` runs {}",
        token.id,
        token.description,
        token.by()
    );
    let catch = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot catch {name} while waiting for confirm: {e}");
            None
        }
    };
    let mut hup = catch(SignalKind::hangup(), "SIGHUP");
    let mut term = catch(SignalKind::terminate(), "SIGTERM");
    let mut int = catch(SignalKind::interrupt(), "SIGINT");
    let end = Instant::now() + timeout;
    let cut = loop {
        if confirm::is_confirmed(dir, &journal.id) {
            return Ok(Ok(()));
        }
        if Instant::now() >= end {
            break None;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            Some(()) = recv(&mut hup) => break Some("SIGHUP"),
            Some(()) = recv(&mut term) => break Some("SIGTERM"),
            Some(()) = recv(&mut int) => break Some("SIGINT"),
        }
    };
    let reason = match cut {
        Some(name) => format!("{name} arrived while waiting for `op-dbus-agent confirm`"),
        None => format!(
            "not confirmed with `op-dbus-agent confirm` within {} s",
            timeout.as_secs()
        ),
    };
    Ok(match confirm::expire(dir, &journal.id)? {
        confirm::Decision::Confirmed => Ok(()),
        confirm::Decision::Expired => Err(reason),
    })
}

/// The next delivery of a caught signal; never, when it is not caught.
async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Plans one plugin without applying (`--dry-run`).
async fn plan_only(p: &dyn DynPlugin, ctx: &Context, state: &DesiredState) -> PluginReport {
    let started = Instant::now();
    let mut report = PluginReport::new(p.name(), PluginOutcome::Unchanged);
    let planned = async {
        let Some(desired) = p.desired_typed(&state.state)? else {
            return anyhow::Ok(None);
        };
        let (current, actions) = plan(p, ctx, &desired, None).await?;
        Ok(Some((p.not_applied_typed(&current, &desired)?, actions)))
    }
    .await;
    let planned = planned.map(|o| {
        o.map(|(here, actions)| {
            report.not_applied = here;
            actions
        })
    });
    match planned {
        Ok(None) => report.outcome = PluginOutcome::Skipped,
        Ok(Some(actions)) if actions.is_empty() => {}
        Ok(Some(actions)) => {
            report.outcome = PluginOutcome::Planned;
            report.actions = actions
                .iter()
                .map(|a| {
                    let a = a.view.redacted(p);
                    ActionReport {
                        action: a.action,
                        resource: a.resource,
                        description: a.description,
                        result: "planned".into(),
                        detail: None,
                        error_kind: None,
                        attempt: 0,
                    }
                })
                .collect();
        }
        Err(e) => {
            report.outcome = PluginOutcome::Failed;
            report.error = Some(format!("{e:#}"));
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// The current state and the actions that take it to `desired` (only those
/// `repair` selects).
async fn plan(
    p: &dyn DynPlugin,
    ctx: &Context,
    desired: &Typed,
    repair: Option<&Repair<'_>>,
) -> anyhow::Result<(Typed, Vec<Planned>)> {
    let current = p
        .query_typed(ctx, desired)
        .await
        .with_context(|| format!("querying the current state for plugin '{}'", p.name()))?;
    let mut actions = p.diff_typed(&current, desired)?;
    if let Some(r) = repair {
        actions.retain(|a| (r.filter)(&a.view));
    }
    Ok((current, actions))
}

/// One plugin's part of the transaction.
async fn step(
    p: &dyn DynPlugin,
    ctx: &Context,
    state: &DesiredState,
    tx: &mut Tx<'_>,
) -> PluginReport {
    let started = Instant::now();
    let mut report = PluginReport::new(p.name(), PluginOutcome::Unchanged);
    if let Err(e) = step_inner(p, ctx, state, tx, &mut report).await {
        report.outcome = PluginOutcome::Failed;
        report.error = Some(format!("{e:#}"));
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// The audit record of one applied (or failed) action; `a` is redacted.
fn action_record(
    tx: &Tx<'_>,
    plugin: &str,
    a: &ActionView,
    result: &str,
    attempt: u32,
) -> NewEntry {
    let (action, metadata) = match tx.repair {
        Some(r) => (
            "drift-repair".to_string(),
            serde_json::json!({
                "reason": r.reason,
                "repair": a.action,
                "description": a.description,
                "detail": a.detail,
                "transaction": tx.journal.id,
                "attempt": attempt,
            }),
        ),
        None => (
            a.action.clone(),
            serde_json::json!({
                "description": a.description,
                "detail": a.detail,
                "transaction": tx.journal.id,
                "attempt": attempt,
            }),
        ),
    };
    NewEntry {
        plugin: plugin.to_string(),
        action,
        resource: a.resource.clone(),
        result: result.to_string(),
        state_hash: Some(tx.journal.state_hash.clone()),
        metadata,
    }
}

async fn step_inner(
    p: &dyn DynPlugin,
    ctx: &Context,
    state: &DesiredState,
    tx: &mut Tx<'_>,
    report: &mut PluginReport,
) -> anyhow::Result<()> {
    let Some(desired) = p.desired_typed(&state.state)? else {
        report.outcome = PluginOutcome::Skipped;
        return Ok(());
    };
    let (current, mut actions) = plan(p, ctx, &desired, tx.repair).await?;
    report.not_applied = p.not_applied_typed(&current, &desired)?;
    if actions.is_empty() {
        return Ok(());
    }
    let checkpoint = if ctx.options.no_rollback {
        None
    } else {
        p.checkpoint_typed(ctx, &current, &actions)
            .await
            .with_context(|| {
                format!(
                    "taking the checkpoint of plugin '{}'; nothing of it was applied",
                    p.name()
                )
            })?
    };
    // Write-ahead: the journal names every action before the first one runs.
    tx.journal.plugins.push(JournalEntry {
        plugin: p.name().to_string(),
        checkpoint: checkpoint.as_ref().map(Typed::to_json).transpose()?,
        actions: actions.iter().map(|a| a.view.redacted(p)).collect(),
    });
    tx.checkpoints.push(checkpoint);
    tx.journal
        .save(&ctx.state_dir)
        .with_context(|| format!("nothing of plugin '{}' was applied", p.name()))?;

    // Apply; only actions that failed with a retryable error are tried again.
    let attempts = ctx.retry.attempts.max(1);
    let mut done: Vec<Option<(ActionResult, u32)>> = (0..actions.len()).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..actions.len()).collect();
    for attempt in 1..=attempts {
        report.attempts = attempt;
        let batch: Vec<Planned> = pending.iter().map(|&i| actions[i].clone()).collect();
        let results = p.apply_typed(ctx, &batch).await?;
        let mut again = Vec::new();
        let mut skipped_now = Vec::new();
        for (&i, r) in pending.iter().zip(results) {
            match &r {
                Err(e) if e.is_retryable() && attempt < attempts => again.push(i),
                // Not tried because an earlier action failed: tried again
                // with it when that one is retried.
                Err(e) if format!("{e:#}").starts_with("not applied:") => skipped_now.push(i),
                _ => {}
            }
            done[i] = Some((r, attempt));
        }
        if !again.is_empty() {
            again.extend(skipped_now);
            again.sort_unstable();
        }
        if again.is_empty() {
            break;
        }
        tracing::warn!(
            plugin = p.name(),
            attempt,
            retrying = again.len(),
            "actions failed with a retryable error; trying them again"
        );
        tokio::time::sleep(ctx.retry.backoff * attempt).await;
        // What a retryable error says is often that the host moved under
        // the action (a config digest, a lock holder's change): the retried
        // actions are re-planned from a fresh query; one whose resource
        // needs nothing any more is done.
        if let Ok((_, fresh)) = plan(p, ctx, &desired, tx.repair).await {
            let mut still = Vec::new();
            for i in again {
                match fresh.iter().find(|f| {
                    f.view.resource == actions[i].view.resource
                        && f.view.action == actions[i].view.action
                }) {
                    Some(f) => {
                        actions[i] = f.clone();
                        still.push(i);
                    }
                    None => done[i] = Some((Ok(Some("done meanwhile".into())), attempt)),
                }
            }
            again = still;
        }
        if again.is_empty() {
            break;
        }
        pending = again;
    }
    let mut errors = Vec::new();
    let mut skipped = 0;
    for (a, d) in actions.iter().zip(done) {
        let (r, attempt) = d.context("an action got no result (engine bug)")?;
        let (result, detail, kind) = match r {
            Ok(note) => ("ok".to_string(), note, None),
            Err(e) => {
                let msg = format!("{e:#}");
                if msg.starts_with("not applied:") {
                    skipped += 1;
                } else {
                    errors.push(format!("{}: {msg}", a.view.resource));
                }
                report.failed_resources.push(a.view.resource.clone());
                ("failed".to_string(), Some(msg), Some(e.kind))
            }
        };
        let audit_result = match &detail {
            Some(d) if kind.is_some() => format!("failed: {d}"),
            _ => result.clone(),
        };
        let a = a.view.redacted(p);
        tx.audit
            .push(action_record(tx, p.name(), &a, &audit_result, attempt));
        report.actions.push(ActionReport {
            action: a.action,
            resource: a.resource,
            description: a.description,
            result,
            detail,
            error_kind: kind,
            attempt,
        });
    }
    report.failed_resources.dedup();
    if !errors.is_empty() || skipped > 0 {
        report.outcome = PluginOutcome::Failed;
        let after = if skipped > 0 {
            format!(" ({skipped} not applied after it)")
        } else {
            String::new()
        };
        anyhow::bail!("{}{after}", errors.join("; "));
    }

    // Verify: query again (a few times: kernel state settles); the diff
    // must be empty.
    let mut left = Vec::new();
    for attempt in 1..=VERIFY_TRIES {
        let (_, remaining) = plan(p, ctx, &desired, tx.repair)
            .await
            .context("verifying")?;
        if remaining.is_empty() {
            report.outcome = PluginOutcome::Changed;
            return Ok(());
        }
        tracing::debug!(
            plugin = p.name(),
            attempt,
            differs = ?remaining.iter().map(|r| r.view.description.as_str()).collect::<Vec<_>>(),
            "not verified yet"
        );
        if attempt < VERIFY_TRIES {
            tokio::time::sleep(VERIFY_PAUSE * attempt).await;
        }
        // Kernel state that lags the actions (an OVS device ovs-vswitchd
        // creates later comes up down): what still differs after a settled
        // re-query is applied once more, on the resources this transaction
        // already touched (the checkpoint covers them), then verified again.
        if (2..VERIFY_TRIES).contains(&attempt) {
            // A resource counts as touched when an action of this
            // transaction names it or the object it belongs to
            // (`link:ovsint0` after "ensure OVS bridge ovsbr0 with ports
            // ovsint0" created it; `address:ovsint0/10.99.0.1/24` after
            // "networkd drop-ins: write eth0,ovsint0" made networkd let go
            // of the link and drop the address it had set).
            let touched: Vec<Planned> = remaining
                .iter()
                .filter(|r| {
                    let r = &r.view;
                    let name = r
                        .resource
                        .split_once(':')
                        .map_or(r.resource.as_str(), |x| x.1);
                    let owner = name.split_once('/').map_or(name, |x| x.0);
                    actions.iter().map(|a| &a.view).any(|a| {
                        a.resource == r.resource
                            || a.resource.contains(name)
                            || a.description
                                .split(|c: char| c.is_whitespace() || c == ',')
                                .any(|w| w == name || w == owner)
                    })
                })
                .cloned()
                .collect();
            if !touched.is_empty() {
                tracing::info!(
                    plugin = p.name(),
                    again = touched.len(),
                    "not verified yet; applying what still differs once more"
                );
                let _ = p.apply_typed(ctx, &touched).await;
            }
        }
        left = remaining;
    }
    report.failed_resources = left.iter().map(|a| a.view.resource.clone()).collect();
    report.failed_resources.dedup();
    let pending: Vec<String> = left
        .iter()
        .map(|a| a.view.redacted(p).description)
        .collect();
    anyhow::bail!(
        "applied, but did not verify after {VERIFY_TRIES} queries; still to do: {}",
        pending.join("; ")
    )
}
