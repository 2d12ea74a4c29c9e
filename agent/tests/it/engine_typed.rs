//! The engine keeps plugin values typed within one run: a whole apply
//! (query, diff, checkpoint, apply, verify), a rollback included, decodes
//! none of a plugin's values from JSON; the journal a later process
//! restores from still holds the checkpoint as JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use opdbus_agent::engine::{
    ActionError, ActionResult, Context, DesiredState, DynPlugin, Engine, Plugin, PluginAction,
    TransactionOutcome,
};
use opdbus_state::State;
use serde::{Deserialize, Deserializer, Serialize};

/// How often a value of this module was decoded from JSON.
static DECODES: AtomicUsize = AtomicUsize::new(0);

type Map = BTreeMap<String, String>;

/// A value whose every decoding is counted.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
struct Counted(Map);

impl<'de> Deserialize<'de> for Counted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DECODES.fetch_add(1, Ordering::SeqCst);
        Map::deserialize(d).map(Counted)
    }
}

#[derive(Debug, Clone, Serialize)]
struct Set {
    key: String,
    value: String,
}

impl<'de> Deserialize<'de> for Set {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            key: String,
            value: String,
        }
        DECODES.fetch_add(1, Ordering::SeqCst);
        let r = Raw::deserialize(d)?;
        Ok(Set {
            key: r.key,
            value: r.value,
        })
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "set {} to {}", self.key, self.value)
    }
}

impl PluginAction for Set {
    fn kind(&self) -> &'static str {
        "set"
    }
    fn resource(&self) -> String {
        format!("key:{}", self.key)
    }
}

/// A plugin over an in-memory "host"; `fail` makes every action fail.
#[derive(Clone)]
struct MemPlugin {
    name: &'static str,
    host: Arc<Mutex<Map>>,
    want: Map,
    fail: bool,
    /// Applying the first key removes the second from the host (as writing
    /// a networkd drop-in makes networkd drop the address it had set).
    undoes: Option<(String, String)>,
}

impl MemPlugin {
    fn new(name: &'static str, want: &[(&str, &str)], fail: bool) -> Self {
        MemPlugin {
            name,
            host: Arc::default(),
            want: want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fail,
            undoes: None,
        }
    }
    fn host(&self) -> Map {
        self.host.lock().unwrap().clone()
    }
}

impl Plugin for MemPlugin {
    type Desired = Counted;
    type Current = Counted;
    type Action = Set;
    type Checkpoint = Counted;

    fn name(&self) -> &'static str {
        self.name
    }

    fn desired(&self, _state: &State) -> anyhow::Result<Option<Counted>> {
        Ok(Some(Counted(self.want.clone())))
    }

    async fn query(&self, _ctx: &Context, _desired: &Counted) -> anyhow::Result<Counted> {
        Ok(Counted(self.host()))
    }

    fn diff(&self, current: &Counted, desired: &Counted) -> Vec<Set> {
        desired
            .0
            .iter()
            .filter(|(k, v)| current.0.get(*k) != Some(*v))
            .map(|(k, v)| Set {
                key: k.clone(),
                value: v.clone(),
            })
            .collect()
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Counted,
        _actions: &[Set],
    ) -> anyhow::Result<Option<Counted>> {
        Ok(Some(current.clone()))
    }

    async fn restore(&self, _ctx: &Context, cp: &Counted) -> anyhow::Result<String> {
        *self.host.lock().unwrap() = cp.0.clone();
        Ok("restored".into())
    }

    async fn apply(&self, _ctx: &Context, actions: &[Set]) -> Vec<ActionResult> {
        actions
            .iter()
            .map(|a| {
                if self.fail {
                    return Err(ActionError::fatal(anyhow::anyhow!("{} refused", a.key)));
                }
                let mut host = self.host.lock().unwrap();
                host.insert(a.key.clone(), a.value.clone());
                if let Some((k, gone)) = &self.undoes {
                    if *k == a.key {
                        host.remove(gone);
                    }
                }
                Ok(None)
            })
            .collect()
    }
}

fn context(dir: &std::path::Path) -> Context {
    Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
}

fn state() -> DesiredState {
    DesiredState::from_json(r#"{"version": 1}"#, "test.json").unwrap()
}

#[tokio::test]
async fn an_apply_and_its_rollback_decode_no_plugin_value() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let first = MemPlugin::new("mem-a", &[("x", "1"), ("y", "2")], false);
    first.host.lock().unwrap().insert("x".into(), "0".into());
    let mut engine = Engine::new();
    engine.register(first.clone());
    let report = engine.apply(&ctx, &state()).await;
    assert!(report.ok, "{:?}", report.failures());
    assert_eq!(report.plugins[0].actions.len(), 2);
    assert_eq!(first.host()["x"], "1");
    assert_eq!(
        DECODES.load(Ordering::SeqCst),
        0,
        "the apply decoded values"
    );

    // A second plugin fails: the first is restored in this process from
    // its typed checkpoint, again without decoding.
    let second = MemPlugin::new("mem-b", &[("z", "3")], false);
    let failing = MemPlugin::new("mem-c", &[("w", "4")], true);
    let mut engine = Engine::new();
    engine.register(second.clone()).register(failing);
    let report = engine.apply(&ctx, &state()).await;
    assert!(!report.ok);
    let t = report.transaction.unwrap();
    assert_eq!(t.outcome, TransactionOutcome::RolledBack);
    // Both took a checkpoint: restored in reverse order.
    assert_eq!(t.rolled_back, ["mem-c", "mem-b"]);
    assert!(second.host().is_empty(), "restored: {:?}", second.host());
    assert_eq!(
        DECODES.load(Ordering::SeqCst),
        0,
        "the rollback decoded values"
    );
    // Here, not in a test of its own: the counter is global.
    the_json_forms_give_the_same_actions().await;
    assert!(DECODES.load(Ordering::SeqCst) > 0);
}

/// The JSON forms stay for what leaves the process: the JSON methods
/// decode (and count), and give the same actions as the typed ones.
async fn the_json_forms_give_the_same_actions() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path());
    let p = MemPlugin::new("mem-d", &[("k", "v")], false);
    let s = state();
    let desired = DynPlugin::desired_typed(&p, &s.state).unwrap().unwrap();
    let current = p.query_typed(&ctx, &desired).await.unwrap();
    let typed: Vec<_> = p
        .diff_typed(&current, &desired)
        .unwrap()
        .into_iter()
        .map(|a| a.view)
        .collect();
    let json = p
        .diff_json(&current.to_json().unwrap(), &desired.to_json().unwrap())
        .unwrap();
    assert_eq!(typed, json);
    assert_eq!(
        typed[0].detail,
        serde_json::json!({"key": "k", "value": "v"})
    );
    assert_eq!(typed[0].resource, "key:k");
    let cp = p
        .checkpoint_typed(&ctx, &current, &p.diff_typed(&current, &desired).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cp.to_json().unwrap(), serde_json::json!({}));
}

/// A value that matched when the plan was made and that an action of the
/// same transaction then undid (the resource belongs to an object the
/// action names) is applied again while verifying, not rolled back for.
#[tokio::test]
async fn a_value_an_action_undid_is_applied_again_before_verification_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let addr = "ovsint0/10.99.0.1/24";
    let mut p = MemPlugin::new(
        "mem-e",
        &[("dropins", "eth0,ovsint0"), (addr, "present")],
        false,
    );
    p.undoes = Some(("dropins".into(), addr.into()));
    p.host.lock().unwrap().insert(addr.into(), "present".into());
    let mut engine = Engine::new();
    engine.register(p.clone());
    let report = engine.apply(&context(dir.path()), &state()).await;
    assert!(report.ok, "{:?}", report.failures());
    assert_eq!(
        report.plugins[0].actions.len(),
        1,
        "planned: the drop-ins only"
    );
    assert_eq!(p.host().get(addr).map(String::as_str), Some("present"));
}
