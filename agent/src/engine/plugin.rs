//! The plugin contract: `query` (only what the state names), a pure `diff`
//! into typed actions, and `apply`. [`DynPlugin`] erases the types so the
//! engine can hold plugins of different kinds in one ordered list; the values
//! stay typed in memory ([`Typed`], [`Planned`]) and become JSON only for
//! reports, audit, the journal and `--json`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

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

/// Whether a plugin's effect outlives a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Persistence {
    /// Kept on disk or in a database (users, unit files, packages).
    Persistent,
    /// Kernel state the host forgets at reboot (links, addresses, nftables,
    /// flows, WireGuard): applied again at every boot.
    Ephemeral,
}

/// What kind of failure an action met; decides whether the engine retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Worth trying again after a pause: a busy resource, a lock held by
    /// someone else, a task still running, a link that has not appeared yet.
    Retryable,
    /// Trying again cannot help: a unit that does not exist, an invalid name,
    /// a refused permission. The default.
    Fatal,
    /// The host holds something in the way that op-dbus does not own (a link
    /// of that name created by someone else): an operator must decide.
    Conflict,
}

/// A failed action: the error and its [`ErrorKind`]. Any error converts into
/// one of kind [`ErrorKind::Fatal`], so `?` works in plugin code; mark the
/// others with [`ActionError::retryable`] or [`ActionError::conflict`].
pub struct ActionError {
    pub kind: ErrorKind,
    pub error: anyhow::Error,
}

impl ActionError {
    pub fn fatal(error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            error: error.into(),
        }
    }

    pub fn retryable(error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            error: error.into(),
        }
    }

    pub fn conflict(error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Conflict,
            error: error.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }
}

impl<E: Into<anyhow::Error>> From<E> for ActionError {
    fn from(error: E) -> Self {
        Self::fatal(error)
    }
}

impl fmt::Display for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl fmt::Debug for ActionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} error: {:#}", self.kind, self.error)
    }
}

/// What applying one action gave: `Ok(note)` (the note says how, e.g. "via
/// PackageKit"), or the error with its kind.
pub type ActionResult = Result<Option<String>, ActionError>;

/// A reconcile plugin. `diff` must be pure: golden fixtures pin it.
///
/// The engine runs one apply as one transaction over every plugin it
/// touches: for each plugin in [`super::ORDER`] it queries, diffs, takes the
/// plugin's [`Plugin::checkpoint`] (saved in the state directory before the
/// first action), applies, retries the actions that failed with a
/// [`ErrorKind::Retryable`] error, and verifies by querying again (the diff
/// must be empty). When any plugin fails, or `--confirm-timeout` passes
/// without `confirm`, every checkpointed plugin is restored in reverse order.
/// Implementations write the async methods as `async fn`.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's slice of state.json, normalized.
    type Desired: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What `query` found on the host, only for what `Desired` names.
    type Current: Serialize + DeserializeOwned + Send + Sync + 'static;
    type Action: PluginAction;
    /// What [`Plugin::checkpoint`] keeps to put back what the actions touch
    /// (`()` for a plugin that cannot restore). Serialized into the state
    /// directory, so a pending transaction survives a crash of the agent.
    type Checkpoint: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Name used for ordering (see [`super::ORDER`]), `--plugin`, reports and audit.
    fn name(&self) -> &'static str;

    /// Whether the plugin's effect survives a reboot; ephemeral plugins are
    /// applied again at every boot.
    fn persistence(&self) -> Persistence {
        Persistence::Persistent
    }

    /// The desired slice, or `None` when the state has no section for this plugin.
    fn desired(&self, state: &State) -> anyhow::Result<Option<Self::Desired>>;

    /// Reads the current state of everything `desired` names.
    fn query(
        &self,
        ctx: &Context,
        desired: &Self::Desired,
    ) -> impl Future<Output = anyhow::Result<Self::Current>> + Send;

    /// The actions that take `current` to `desired`; empty when nothing differs.
    fn diff(&self, current: &Self::Current, desired: &Self::Desired) -> Vec<Self::Action>;

    /// Records what `actions` are about to change, from `current` (the
    /// engine just queried it; do not read it again unless something it does
    /// not hold is needed, such as file contents). `Ok(None)`: the plugin
    /// cannot restore (the default); its changes stay when a transaction is
    /// rolled back, and the report says so.
    fn checkpoint(
        &self,
        _ctx: &Context,
        _current: &Self::Current,
        _actions: &[Self::Action],
    ) -> impl Future<Output = anyhow::Result<Option<Self::Checkpoint>>> + Send {
        async { Ok(None) }
    }

    /// Puts back what `checkpoint` recorded, undoing only what the actions
    /// touched; returns a line for the report ("3 change(s) undone"). Also
    /// called by a later agent process, for a transaction an agent that died
    /// left behind.
    fn restore(
        &self,
        _ctx: &Context,
        _checkpoint: &Self::Checkpoint,
    ) -> impl Future<Output = anyhow::Result<String>> + Send {
        async { anyhow::bail!("plugin '{}' cannot restore a checkpoint", self.name()) }
    }

    /// Applies `actions` in order; returns one result per action, same order.
    /// A plugin may stop at the first failure and report the rest as not
    /// applied (a retryable error only where trying again can help).
    fn apply(
        &self,
        ctx: &Context,
        actions: &[Self::Action],
    ) -> impl Future<Output = Vec<ActionResult>> + Send;

    /// The plugin's part of a state.json describing the host as it is, for
    /// `discover`: a JSON object merged into `plugins` (normally one key,
    /// the plugin's section), such that `diff` of it on the same host is
    /// empty. Never holds a secret. `Ok(None)`: the plugin cannot discover
    /// without a desired state (the default), or finds nothing to describe.
    fn discover(
        &self,
        _ctx: &Context,
    ) -> impl Future<Output = anyhow::Result<Option<serde_json::Value>>> + Send {
        async { Ok(None) }
    }

    /// Parts of the plugin's section it cannot apply on this host as
    /// `current` shows it (a tool it needs is not installed), each made
    /// with [`opdbus_state::coverage::Unapplied::on_host`]. The engine
    /// lists them with the parts this version does not apply: `apply` and
    /// `run` exit 3 for them (unless `--allow-unapplied`), `diff` and the
    /// `OPDBUS-RESULT` line list them. Default: none.
    fn not_applied(
        &self,
        _current: &Self::Current,
        _desired: &Self::Desired,
    ) -> Vec<opdbus_state::coverage::Unapplied> {
        Vec::new()
    }

    /// Replaces every secret in `v` with its fingerprint
    /// ([`super::secret::fingerprint`]); `v` is this plugin's current state,
    /// one of its actions, its checkpoint or an audit record's metadata, as
    /// JSON. The engine calls it before anything leaves it (audit, `diff
    /// --json`, `query`, D-Bus, `audit export`). Default: the plugin handles
    /// no secrets.
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

/// A plugin's value (its desired state, current state or checkpoint) with
/// its type erased but kept in memory: handed back to the plugin that made
/// it without a JSON round trip. [`Typed::to_json`] gives its JSON form for
/// output and for the journal.
pub struct Typed {
    plugin: &'static str,
    value: Box<dyn Any + Send + Sync>,
    encode: fn(&(dyn Any + Send + Sync)) -> serde_json::Result<serde_json::Value>,
}

fn encode_as<T: Serialize + 'static>(
    v: &(dyn Any + Send + Sync),
) -> serde_json::Result<serde_json::Value> {
    match v.downcast_ref::<T>() {
        Some(t) => serde_json::to_value(t),
        None => Err(serde::ser::Error::custom("typed value of another type")),
    }
}

impl Typed {
    fn new<T: Serialize + Send + Sync + 'static>(plugin: &'static str, value: T) -> Self {
        Self {
            plugin,
            value: Box::new(value),
            encode: encode_as::<T>,
        }
    }

    /// The plugin that made the value.
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// The value as JSON (unredacted: see [`DynPlugin::redact_json`]).
    pub fn to_json(&self) -> anyhow::Result<serde_json::Value> {
        (self.encode)(self.value.as_ref())
            .map_err(|e| anyhow::anyhow!("encoding a value of plugin '{}': {e}", self.plugin))
    }

    fn get<T: 'static>(&self, plugin: &str, what: &str) -> anyhow::Result<&T> {
        self.value.downcast_ref::<T>().ok_or_else(|| {
            anyhow::anyhow!(
                "plugin '{plugin}' was handed a {what} of plugin '{}' (engine bug)",
                self.plugin
            )
        })
    }
}

impl fmt::Debug for Typed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Typed({})", self.plugin)
    }
}

/// An action as the engine holds it within one run: its [`ActionView`]
/// (text, kind, resource and JSON detail: what the journal, the report and
/// the audit log carry) and the typed action that [`DynPlugin::apply_typed`]
/// hands back to its plugin without decoding the JSON.
#[derive(Clone)]
pub struct Planned {
    pub view: ActionView,
    plugin: &'static str,
    typed: Arc<dyn Any + Send + Sync>,
}

impl Planned {
    fn new<A: PluginAction>(plugin: &'static str, a: A) -> anyhow::Result<Self> {
        Ok(Self {
            view: view(&a)?,
            plugin,
            typed: Arc::new(a),
        })
    }

    fn get<A: PluginAction>(&self, plugin: &str) -> anyhow::Result<&A> {
        self.typed.downcast_ref::<A>().ok_or_else(|| {
            anyhow::anyhow!(
                "plugin '{plugin}' was handed an action of plugin '{}' (engine bug)",
                self.plugin
            )
        })
    }
}

impl fmt::Debug for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.view, f)
    }
}

/// Object-safe form of [`Plugin`]; implemented for every `Plugin`. The
/// engine uses the `*_typed` methods; the `*_json` ones decode and encode
/// around them (golden fixtures, a journal a later process restores).
pub trait DynPlugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// [`Plugin::persistence`].
    fn persistence(&self) -> Persistence;

    /// [`Plugin::desired`].
    fn desired_typed(&self, state: &State) -> anyhow::Result<Option<Typed>>;
    /// [`Plugin::query`]; `desired` is what `desired_typed` returned.
    fn query_typed<'a>(
        &'a self,
        ctx: &'a Context,
        desired: &'a Typed,
    ) -> BoxFuture<'a, anyhow::Result<Typed>>;
    /// [`Plugin::diff`].
    fn diff_typed(&self, current: &Typed, desired: &Typed) -> anyhow::Result<Vec<Planned>>;
    /// [`Plugin::not_applied`].
    fn not_applied_typed(
        &self,
        current: &Typed,
        desired: &Typed,
    ) -> anyhow::Result<Vec<opdbus_state::coverage::Unapplied>>;
    /// [`Plugin::checkpoint`]; `current` is what `query_typed` returned.
    fn checkpoint_typed<'a>(
        &'a self,
        ctx: &'a Context,
        current: &'a Typed,
        actions: &'a [Planned],
    ) -> BoxFuture<'a, anyhow::Result<Option<Typed>>>;
    /// [`Plugin::apply`].
    fn apply_typed<'a>(
        &'a self,
        ctx: &'a Context,
        actions: &'a [Planned],
    ) -> BoxFuture<'a, anyhow::Result<Vec<ActionResult>>>;
    /// [`Plugin::restore`] of a checkpoint taken in this process.
    fn restore_typed<'a>(
        &'a self,
        ctx: &'a Context,
        checkpoint: &'a Typed,
    ) -> BoxFuture<'a, anyhow::Result<String>>;

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
    /// [`Plugin::checkpoint`]; `current` is what `query_json` returned.
    fn checkpoint_json<'a>(
        &'a self,
        ctx: &'a Context,
        current: &'a serde_json::Value,
        actions: &'a [ActionView],
    ) -> BoxFuture<'a, anyhow::Result<Option<serde_json::Value>>>;
    /// [`Plugin::restore`] of a checkpoint read from a journal.
    fn restore_json<'a>(
        &'a self,
        ctx: &'a Context,
        checkpoint: &'a serde_json::Value,
    ) -> BoxFuture<'a, anyhow::Result<String>>;
    /// [`Plugin::redact`].
    fn redact_json(&self, v: &mut serde_json::Value);
    /// [`Plugin::discover`].
    fn discover_json<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> BoxFuture<'a, anyhow::Result<Option<serde_json::Value>>>;
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
    T::deserialize(v).map_err(|e| anyhow::anyhow!("decoding the {what} of plugin '{plugin}': {e}"))
}

fn decode_actions<P: Plugin>(p: &P, actions: &[ActionView]) -> anyhow::Result<Vec<P::Action>> {
    actions
        .iter()
        .map(|a| decode::<P::Action>(Plugin::name(p), "action", &a.detail))
        .collect()
}

fn checked<P: Plugin>(
    p: &P,
    results: Vec<ActionResult>,
    n: usize,
) -> anyhow::Result<Vec<ActionResult>> {
    anyhow::ensure!(
        results.len() == n,
        "plugin '{}' returned {} results for {n} actions (plugin bug)",
        Plugin::name(p),
        results.len(),
    );
    Ok(results)
}

impl<P: Plugin> DynPlugin for P {
    fn name(&self) -> &'static str {
        Plugin::name(self)
    }

    fn persistence(&self) -> Persistence {
        Plugin::persistence(self)
    }

    fn desired_typed(&self, state: &State) -> anyhow::Result<Option<Typed>> {
        Ok(self
            .desired(state)?
            .map(|d| Typed::new::<P::Desired>(Plugin::name(self), d)))
    }

    fn query_typed<'a>(
        &'a self,
        ctx: &'a Context,
        desired: &'a Typed,
    ) -> BoxFuture<'a, anyhow::Result<Typed>> {
        async move {
            let name = Plugin::name(self);
            let desired = desired.get::<P::Desired>(name, "desired state")?;
            let current = self.query(ctx, desired).await?;
            Ok(Typed::new::<P::Current>(name, current))
        }
        .boxed()
    }

    fn diff_typed(&self, current: &Typed, desired: &Typed) -> anyhow::Result<Vec<Planned>> {
        let name = Plugin::name(self);
        let current = current.get::<P::Current>(name, "current state")?;
        let desired = desired.get::<P::Desired>(name, "desired state")?;
        self.diff(current, desired)
            .into_iter()
            .map(|a| Planned::new(name, a))
            .collect()
    }

    fn not_applied_typed(
        &self,
        current: &Typed,
        desired: &Typed,
    ) -> anyhow::Result<Vec<opdbus_state::coverage::Unapplied>> {
        let name = Plugin::name(self);
        let current = current.get::<P::Current>(name, "current state")?;
        let desired = desired.get::<P::Desired>(name, "desired state")?;
        Ok(self.not_applied(current, desired))
    }

    fn checkpoint_typed<'a>(
        &'a self,
        ctx: &'a Context,
        current: &'a Typed,
        actions: &'a [Planned],
    ) -> BoxFuture<'a, anyhow::Result<Option<Typed>>> {
        async move {
            let name = Plugin::name(self);
            let current = current.get::<P::Current>(name, "current state")?;
            let typed = actions
                .iter()
                .map(|a| a.get::<P::Action>(name).cloned())
                .collect::<anyhow::Result<Vec<_>>>()?;
            Ok(self
                .checkpoint(ctx, current, &typed)
                .await?
                .map(|cp| Typed::new::<P::Checkpoint>(name, cp)))
        }
        .boxed()
    }

    fn apply_typed<'a>(
        &'a self,
        ctx: &'a Context,
        actions: &'a [Planned],
    ) -> BoxFuture<'a, anyhow::Result<Vec<ActionResult>>> {
        async move {
            let name = Plugin::name(self);
            let typed = actions
                .iter()
                .map(|a| a.get::<P::Action>(name).cloned())
                .collect::<anyhow::Result<Vec<_>>>()?;
            let results = self.apply(ctx, &typed).await;
            checked(self, results, typed.len())
        }
        .boxed()
    }

    fn restore_typed<'a>(
        &'a self,
        ctx: &'a Context,
        checkpoint: &'a Typed,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        async move {
            let cp = checkpoint.get::<P::Checkpoint>(Plugin::name(self), "checkpoint")?;
            self.restore(ctx, cp).await
        }
        .boxed()
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
            let typed = decode_actions(self, actions)?;
            let results = self.apply(ctx, &typed).await;
            checked(self, results, typed.len())
        }
        .boxed()
    }

    fn checkpoint_json<'a>(
        &'a self,
        ctx: &'a Context,
        current: &'a serde_json::Value,
        actions: &'a [ActionView],
    ) -> BoxFuture<'a, anyhow::Result<Option<serde_json::Value>>> {
        async move {
            let current: P::Current = decode(Plugin::name(self), "current state", current)?;
            let typed = decode_actions(self, actions)?;
            match self.checkpoint(ctx, &current, &typed).await? {
                Some(cp) => Ok(Some(serde_json::to_value(cp)?)),
                None => Ok(None),
            }
        }
        .boxed()
    }

    fn restore_json<'a>(
        &'a self,
        ctx: &'a Context,
        checkpoint: &'a serde_json::Value,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        async move {
            let cp: P::Checkpoint = decode(Plugin::name(self), "checkpoint", checkpoint)?;
            self.restore(ctx, &cp).await
        }
        .boxed()
    }

    fn redact_json(&self, v: &mut serde_json::Value) {
        Plugin::redact(self, v)
    }

    fn discover_json<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> BoxFuture<'a, anyhow::Result<Option<serde_json::Value>>> {
        self.discover(ctx).boxed()
    }
}
