//! [`Engine`]: the ordered plugin list and the reconcile loop
//! (query -> diff -> apply -> verify, bounded retry), which records every
//! applied action in the audit chain and reports failures by plugin and resource.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context as _;
use serde::Serialize;

use super::plugin::{ActionView, DynPlugin, Plugin};
use super::report::{ActionReport, PluginOutcome, PluginReport, RunReport};
use super::{Context, DesiredState, ORDER};
use crate::audit::{AuditLog, NewEntry};
use opdbus_state::coverage::Unapplied;

/// The actions one plugin would take.
#[derive(Debug, Clone, Serialize)]
pub struct PluginDiff {
    pub plugin: String,
    pub actions: Vec<ActionView>,
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
}

fn rank(name: &str) -> usize {
    ORDER.iter().position(|n| *n == name).unwrap_or(ORDER.len())
}

impl Engine {
    /// An engine with no plugins.
    pub fn new() -> Self {
        Self::default()
    }

    /// The agent's plugins: storage, host, packages, users, network, systemd, proxmox.
    /// (Firewall and containers register here when they exist.)
    pub fn standard() -> Self {
        let mut e = Self::new();
        e.register(crate::plugins::storage::StoragePlugin);
        e.register(crate::plugins::host::HostPlugin);
        e.register(crate::plugins::packages::PackagesPlugin);
        e.register(crate::plugins::users::UsersPlugin);
        e.register(crate::plugins::network::NetworkPlugin::default());
        e.register(crate::plugins::systemd::SystemdPlugin);
        e.register(crate::plugins::proxmox::ProxmoxPlugin::default());
        e
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
        self.plugins.retain(|p| names.iter().any(|n| n == p.name()));
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
            let Some(desired) = p.desired_json(&state.state)? else {
                continue;
            };
            let mut current = p
                .query_json(ctx, &desired)
                .await
                .with_context(|| format!("querying plugin '{}'", p.name()))?;
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
            let Some(desired) = p.desired_json(&state.state)? else {
                continue;
            };
            let current = p
                .query_json(ctx, &desired)
                .await
                .with_context(|| format!("querying plugin '{}'", p.name()))?;
            let actions = p
                .diff_json(&current, &desired)?
                .iter()
                .map(|a| a.redacted(p.as_ref()))
                .collect();
            out.push(PluginDiff {
                plugin: p.name().to_string(),
                actions,
            });
        }
        Ok(out)
    }

    /// Reconciles every plugin in order. A failing plugin is reported and the
    /// later ones still run; `report.ok` is false if any failed or a part
    /// of the state is not applied (unless allowed). With
    /// `ctx.options.dry_run` actions are only planned.
    pub async fn apply(&self, ctx: &Context, state: &DesiredState) -> RunReport {
        let started = Instant::now();
        let mut audit = AuditSink::new(ctx, &state.hash);
        let mut plugins = Vec::new();
        for p in &self.plugins {
            let report = reconcile(p.as_ref(), ctx, state, &mut audit, None).await;
            match report.outcome {
                PluginOutcome::Failed => tracing::error!(
                    plugin = %report.plugin,
                    resources = %report.failed_resources.join(","),
                    "{}", report.error.as_deref().unwrap_or("failed")
                ),
                outcome => tracing::info!(plugin = %report.plugin, ?outcome, "plugin reconciled"),
            }
            plugins.push(report);
        }
        let not_applied = self.not_applied(&state.state);
        for u in &not_applied {
            tracing::warn!("{u}");
        }
        let allow_unapplied = ctx.options.allow_unapplied;
        RunReport {
            ok: !plugins.iter().any(PluginReport::failed)
                && (allow_unapplied || not_applied.is_empty()),
            state_hash: state.hash.clone(),
            plugins,
            not_applied,
            allow_unapplied,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Re-applies one plugin's actions selected by `repair.filter`, audited as
    /// `drift-repair` with the reason.
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
        let mut audit = AuditSink::new(ctx, &state.hash);
        Ok(reconcile(p, ctx, state, &mut audit, Some(&repair)).await)
    }
}

/// Opens the audit log on the first record, so a plugin (storage) may create
/// the directory it lives in first.
struct AuditSink<'a> {
    ctx: &'a Context,
    state_hash: &'a str,
    log: Option<AuditLog>,
}

impl<'a> AuditSink<'a> {
    fn new(ctx: &'a Context, state_hash: &'a str) -> Self {
        Self {
            ctx,
            state_hash,
            log: None,
        }
    }

    fn record(
        &mut self,
        plugin: &dyn DynPlugin,
        a: &ActionView,
        result: &str,
        repair: Option<&Repair<'_>>,
    ) -> anyhow::Result<()> {
        if self.log.is_none() {
            self.log = Some(AuditLog::open(&self.ctx.state_dir).with_context(|| {
                format!("opening the audit log in {}", self.ctx.state_dir.display())
            })?);
        }
        let a = &a.redacted(plugin);
        let (action, metadata) = match repair {
            Some(r) => (
                "drift-repair".to_string(),
                serde_json::json!({
                    "reason": r.reason,
                    "repair": a.action,
                    "description": a.description,
                    "detail": a.detail,
                }),
            ),
            None => (
                a.action.clone(),
                serde_json::json!({ "description": a.description, "detail": a.detail }),
            ),
        };
        let log = self.log.as_mut().context("audit log not open")?;
        log.append(NewEntry {
            plugin: plugin.name().to_string(),
            action,
            resource: a.resource.clone(),
            result: result.to_string(),
            state_hash: Some(self.state_hash.to_string()),
            metadata,
        })
        .context("appending to the audit log")?;
        Ok(())
    }
}

async fn reconcile(
    p: &dyn DynPlugin,
    ctx: &Context,
    state: &DesiredState,
    audit: &mut AuditSink<'_>,
    repair: Option<&Repair<'_>>,
) -> PluginReport {
    let started = Instant::now();
    let mut report = PluginReport {
        plugin: p.name().to_string(),
        outcome: PluginOutcome::Unchanged,
        attempts: 0,
        actions: Vec::new(),
        failed_resources: Vec::new(),
        error: None,
        duration_ms: 0,
    };
    if let Err(e) = reconcile_inner(p, ctx, state, audit, repair, &mut report).await {
        report.outcome = PluginOutcome::Failed;
        report.error = Some(format!("{e:#}"));
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

async fn plan(
    p: &dyn DynPlugin,
    ctx: &Context,
    desired: &serde_json::Value,
    repair: Option<&Repair<'_>>,
) -> anyhow::Result<Vec<ActionView>> {
    let current = p
        .query_json(ctx, desired)
        .await
        .with_context(|| format!("querying the current state for plugin '{}'", p.name()))?;
    let mut actions = p.diff_json(&current, desired)?;
    if let Some(r) = repair {
        actions.retain(|a| (r.filter)(a));
    }
    Ok(actions)
}

async fn reconcile_inner(
    p: &dyn DynPlugin,
    ctx: &Context,
    state: &DesiredState,
    audit: &mut AuditSink<'_>,
    repair: Option<&Repair<'_>>,
    report: &mut PluginReport,
) -> anyhow::Result<()> {
    let Some(desired) = p.desired_json(&state.state)? else {
        report.outcome = PluginOutcome::Skipped;
        return Ok(());
    };
    let mut actions = plan(p, ctx, &desired, repair).await?;
    if actions.is_empty() {
        return Ok(());
    }
    if ctx.options.dry_run {
        report.outcome = PluginOutcome::Planned;
        report.actions = actions
            .iter()
            .map(|a| ActionReport {
                action: a.action.clone(),
                resource: a.resource.clone(),
                description: a.description.clone(),
                result: "planned".into(),
                detail: None,
                attempt: 0,
            })
            .collect();
        return Ok(());
    }
    let attempts = ctx.retry.attempts.max(1);
    let mut last_errors: Vec<String> = Vec::new();
    for attempt in 1..=attempts {
        report.attempts = attempt;
        let results = p.apply_json(ctx, &actions).await?;
        last_errors.clear();
        for (a, r) in actions.iter().zip(results) {
            let (result, detail) = match r {
                Ok(note) => ("ok".to_string(), note),
                Err(e) => {
                    let msg = format!("{e:#}");
                    last_errors.push(format!("{}: {msg}", a.resource));
                    ("failed".to_string(), Some(msg))
                }
            };
            let audit_result = match &detail {
                Some(d) if result == "failed" => format!("failed: {d}"),
                _ => result.clone(),
            };
            audit.record(p, a, &audit_result, repair)?;
            report.actions.push(ActionReport {
                action: a.action.clone(),
                resource: a.resource.clone(),
                description: a.description.clone(),
                result,
                detail,
                attempt,
            });
        }
        // Verify: query again; whatever still differs is applied again.
        let remaining = plan(p, ctx, &desired, repair).await?;
        if remaining.is_empty() {
            report.outcome = PluginOutcome::Changed;
            return Ok(());
        }
        actions = remaining;
        if attempt < attempts {
            tracing::warn!(
                plugin = p.name(),
                attempt,
                remaining = actions.len(),
                "state did not verify, retrying"
            );
            tokio::time::sleep(ctx.retry.backoff * attempt).await;
        }
    }
    report.outcome = PluginOutcome::Failed;
    report.failed_resources = actions.iter().map(|a| a.resource.clone()).collect();
    report.failed_resources.dedup();
    let pending: Vec<String> = actions.iter().map(|a| a.description.clone()).collect();
    let mut msg = format!(
        "did not verify after {attempts} attempt(s); still to do: {}",
        pending.join("; ")
    );
    if !last_errors.is_empty() {
        msg.push_str(&format!("; errors: {}", last_errors.join("; ")));
    }
    report.error = Some(msg);
    Ok(())
}
