//! The plugin contract: `query` (only what the state names), a pure `diff`
//! into typed actions, and `apply`. [`DynPlugin`] erases the types to JSON so
//! the engine can hold plugins of different kinds in one ordered list.

use std::fmt;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Context;
use opdbus_state::State;

/// One typed change a plugin can make. `Display` is the human line `diff` prints.
pub trait PluginAction:
    Serialize + DeserializeOwned + fmt::Display + Clone + Send + Sync + 'static
{
    /// Short verb recorded in the audit log and reports: `start`, `create-user`.
    fn kind(&self) -> &'static str;
    /// The resource acted on, prefixed by its type: `unit:ssh.service`, `user:admin`.
    fn resource(&self) -> String;
}

/// What applying one action gave: `Ok(note)` (the note says how, e.g. "via
/// PackageKit"), or the error.
pub type ActionResult = Result<Option<String>, anyhow::Error>;

/// A reconcile plugin. `diff` must be pure: golden fixtures pin it.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's slice of state.json, normalized.
    type Desired: Serialize + DeserializeOwned + Send + Sync;
    /// What `query` found on the host, only for what `Desired` names.
    type Current: Serialize + DeserializeOwned + Send + Sync;
    type Action: PluginAction;

    /// Name used for ordering (see [`super::ORDER`]), `--plugin`, reports and audit.
    fn name(&self) -> &'static str;

    /// The desired slice, or `None` when the state has no section for this plugin.
    fn desired(&self, state: &State) -> anyhow::Result<Option<Self::Desired>>;

    /// Reads the current state of everything `desired` names.
    fn query<'a>(
        &'a self,
        ctx: &'a Context,
        desired: &'a Self::Desired,
    ) -> BoxFuture<'a, anyhow::Result<Self::Current>>;

    /// The actions that take `current` to `desired`; empty when nothing differs.
    fn diff(&self, current: &Self::Current, desired: &Self::Desired) -> Vec<Self::Action>;

    /// Applies `actions` in order; returns one result per action, same order.
    fn apply<'a>(
        &'a self,
        ctx: &'a Context,
        actions: &'a [Self::Action],
    ) -> BoxFuture<'a, Vec<ActionResult>>;

    /// Replaces every secret in `v` with its fingerprint
    /// ([`super::secret::fingerprint`]); `v` is this plugin's current state,
    /// one of its actions or an audit record's metadata, as JSON. The engine
    /// calls it before anything leaves it (audit, `diff --json`, `query`,
    /// D-Bus, `audit export`). Default: the plugin handles no secrets.
    fn redact(&self, _v: &mut serde_json::Value) {}
}

/// An action with its type erased: what reports, `diff --json` and the audit log carry.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ActionView {
    pub action: String,
    pub resource: String,
    pub description: String,
    /// The typed action as JSON (what golden fixtures hold).
    pub detail: serde_json::Value,
}

impl fmt::Display for ActionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// Object-safe form of [`Plugin`]; implemented for every `Plugin`.
pub trait DynPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn desired_json(&self, state: &State) -> anyhow::Result<Option<serde_json::Value>>;
    fn query_json<'a>(
        &'a self,
        ctx: &'a Context,
        desired: &'a serde_json::Value,
    ) -> BoxFuture<'a, anyhow::Result<serde_json::Value>>;
    fn diff_json(
        &self,
        current: &serde_json::Value,
        desired: &serde_json::Value,
    ) -> anyhow::Result<Vec<ActionView>>;
    fn apply_json<'a>(
        &'a self,
        ctx: &'a Context,
        actions: &'a [ActionView],
    ) -> BoxFuture<'a, anyhow::Result<Vec<ActionResult>>>;
    /// [`Plugin::redact`].
    fn redact_json(&self, v: &mut serde_json::Value);
}

impl ActionView {
    /// The view with `plugin`'s secrets in `detail` fingerprinted: what
    /// leaves the engine. Only the unredacted view can be applied.
    pub fn redacted(&self, plugin: &dyn DynPlugin) -> ActionView {
        let mut out = self.clone();
        plugin.redact_json(&mut out.detail);
        out
    }
}

fn view<A: PluginAction>(a: &A) -> anyhow::Result<ActionView> {
    Ok(ActionView {
        action: a.kind().to_string(),
        resource: a.resource(),
        description: a.to_string(),
        detail: serde_json::to_value(a)?,
    })
}

fn decode<T: DeserializeOwned>(
    plugin: &str,
    what: &str,
    v: &serde_json::Value,
) -> anyhow::Result<T> {
    serde_json::from_value(v.clone())
        .map_err(|e| anyhow::anyhow!("decoding the {what} of plugin '{plugin}': {e}"))
}

impl<P: Plugin> DynPlugin for P {
    fn name(&self) -> &'static str {
        Plugin::name(self)
    }

    fn desired_json(&self, state: &State) -> anyhow::Result<Option<serde_json::Value>> {
        match self.desired(state)? {
            Some(d) => Ok(Some(serde_json::to_value(d)?)),
            None => Ok(None),
        }
    }

    fn query_json<'a>(
        &'a self,
        ctx: &'a Context,
        desired: &'a serde_json::Value,
    ) -> BoxFuture<'a, anyhow::Result<serde_json::Value>> {
        async move {
            let desired: P::Desired = decode(Plugin::name(self), "desired state", desired)?;
            let current = self.query(ctx, &desired).await?;
            Ok(serde_json::to_value(current)?)
        }
        .boxed()
    }

    fn diff_json(
        &self,
        current: &serde_json::Value,
        desired: &serde_json::Value,
    ) -> anyhow::Result<Vec<ActionView>> {
        let name = Plugin::name(self);
        let current: P::Current = decode(name, "current state", current)?;
        let desired: P::Desired = decode(name, "desired state", desired)?;
        self.diff(&current, &desired).iter().map(view).collect()
    }

    fn apply_json<'a>(
        &'a self,
        ctx: &'a Context,
        actions: &'a [ActionView],
    ) -> BoxFuture<'a, anyhow::Result<Vec<ActionResult>>> {
        async move {
            let typed = actions
                .iter()
                .map(|a| decode::<P::Action>(Plugin::name(self), "action", &a.detail))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let results = self.apply(ctx, &typed).await;
            anyhow::ensure!(
                results.len() == typed.len(),
                "plugin '{}' returned {} results for {} actions (plugin bug)",
                Plugin::name(self),
                results.len(),
                typed.len()
            );
            Ok(results)
        }
        .boxed()
    }

    fn redact_json(&self, v: &mut serde_json::Value) {
        Plugin::redact(self, v)
    }
}
