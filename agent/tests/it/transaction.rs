//! The engine's transaction: retry of retryable errors only, the journal
//! written before the first action, reverse-order restore across plugins,
//! the state-directory lock, `--confirm-timeout` with `confirm` from another
//! process, signals and `kill -9` during the confirm window. Tier 1 uses a
//! test-only transactional plugin writing files in a temp root; the
//! privileged tier adds the network plugin in a namespace and the real binary.

use crate::netns;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netns::NetNs;
use opdbus_agent::engine::transaction::{Journal, StateLock, JOURNAL_FILE};
use opdbus_agent::engine::{
    confirm, ActionError, ActionResult, ApplyOptions, Context, DesiredState, Engine, ErrorKind,
    Plugin, PluginAction, PluginOutcome, RetryPolicy, RunReport, TransactionOutcome,
};
use opdbus_agent::plugins::network::NetworkPlugin;
use opdbus_state::State;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Writes one file below the plugin's root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Write {
    name: String,
    content: String,
}

impl fmt::Display for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "write {}", self.name)
    }
}

impl PluginAction for Write {
    fn kind(&self) -> &'static str {
        "write"
    }
    fn resource(&self) -> String {
        format!("file:{}", self.name)
    }
}

/// How the plugin fails writing `name`: with `kind`, the first `times` tries.
#[derive(Clone)]
struct Failure {
    name: &'static str,
    kind: ErrorKind,
    times: u32,
}

/// A transactional test plugin: files (name -> content) below `root`;
/// checkpoint = their contents before, restore = write them back.
#[derive(Clone)]
struct FilesPlugin {
    name: &'static str,
    root: PathBuf,
    files: BTreeMap<String, String>,
    fail: Option<Failure>,
    /// The names each `apply` call got, in order.
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    /// The journal as it was at each `apply` call.
    journals: Arc<Mutex<Vec<Option<String>>>>,
    state_dir: PathBuf,
}

impl FilesPlugin {
    fn new(name: &'static str, dir: &Path, files: &[(&str, &str)]) -> Self {
        FilesPlugin {
            name,
            root: dir.join(name),
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fail: None,
            calls: Arc::default(),
            journals: Arc::default(),
            state_dir: dir.join("state"),
        }
    }

    fn failing(mut self, name: &'static str, kind: ErrorKind, times: u32) -> Self {
        self.fail = Some(Failure { name, kind, times });
        self
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(name)).ok()
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }
}

type Files = BTreeMap<String, Option<String>>;

impl Plugin for FilesPlugin {
    type Desired = BTreeMap<String, String>;
    type Current = Files;
    type Action = Write;
    type Checkpoint = Files;

    fn name(&self) -> &'static str {
        self.name
    }

    fn desired(&self, _state: &State) -> anyhow::Result<Option<Self::Desired>> {
        Ok(Some(self.files.clone()))
    }

    async fn query(&self, _ctx: &Context, desired: &Self::Desired) -> anyhow::Result<Files> {
        Ok(desired.keys().map(|k| (k.clone(), self.read(k))).collect())
    }

    fn diff(&self, current: &Files, desired: &Self::Desired) -> Vec<Write> {
        desired
            .iter()
            .filter(|(k, v)| current.get(*k).cloned().flatten().as_ref() != Some(*v))
            .map(|(k, v)| Write {
                name: k.clone(),
                content: v.clone(),
            })
            .collect()
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Files,
        _actions: &[Write],
    ) -> anyhow::Result<Option<Files>> {
        Ok(Some(current.clone()))
    }

    async fn restore(&self, _ctx: &Context, cp: &Files) -> anyhow::Result<String> {
        for (k, v) in cp {
            match v {
                Some(text) => std::fs::write(self.root.join(k), text)?,
                None => {
                    let _ = std::fs::remove_file(self.root.join(k));
                }
            }
        }
        Ok(format!("{} file(s) put back", cp.len()))
    }

    async fn apply(&self, _ctx: &Context, actions: &[Write]) -> Vec<ActionResult> {
        self.calls
            .lock()
            .unwrap()
            .push(actions.iter().map(|a| a.name.clone()).collect());
        self.journals
            .lock()
            .unwrap()
            .push(std::fs::read_to_string(self.state_dir.join(JOURNAL_FILE)).ok());
        std::fs::create_dir_all(&self.root).unwrap();
        let mut out = Vec::new();
        for a in actions {
            if let Some(f) = &self.fail {
                let tries = self
                    .calls
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|c| c.contains(&a.name))
                    .count() as u32;
                if f.name == a.name && tries <= f.times {
                    out.push(Err(ActionError {
                        kind: f.kind,
                        error: anyhow::anyhow!("{} is busy (try {tries})", a.name),
                    }));
                    continue;
                }
            }
            out.push(
                std::fs::write(self.root.join(&a.name), &a.content)
                    .map(|_| None)
                    .map_err(Into::into),
            );
        }
        out
    }
}

fn context(dir: &Path, options: ApplyOptions) -> Context {
    Context::new(dir.join("state"))
        .with_root(dir.join("root"))
        .with_bus_address(Some(format!("unix:path={}/no-bus", dir.display())))
        .with_options(options)
        .with_retry(RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(10),
        })
}

fn empty_state() -> DesiredState {
    DesiredState::from_json(r#"{"version": 1}"#, "test.json").unwrap()
}

fn engine_of(plugins: &[&FilesPlugin]) -> Engine {
    let mut e = Engine::new();
    for p in plugins {
        e.register((*p).clone());
    }
    e
}

fn seed(p: &FilesPlugin, files: &[(&str, &str)]) {
    std::fs::create_dir_all(&p.root).unwrap();
    for (k, v) in files {
        std::fs::write(p.root.join(k), v).unwrap();
    }
}

#[tokio::test]
async fn only_retryable_errors_are_retried_and_only_the_failed_actions() {
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "1"), ("b", "2"), ("c", "3")]).failing(
        "b",
        ErrorKind::Retryable,
        2,
    );
    let report = engine_of(&[&p])
        .apply(
            &context(dir.path(), ApplyOptions::default()),
            &empty_state(),
        )
        .await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        p.calls(),
        [vec!["a", "b", "c"], vec!["b"], vec!["b"]],
        "the retryable failure is tried again alone, up to the bound"
    );
    let b = &report.plugins[0].actions[1];
    assert_eq!((b.result.as_str(), b.attempt), ("ok", 3));
    assert_eq!(report.plugins[0].attempts, 3);

    // More retryable failures than the bound: the plugin fails after 3 tries.
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "1"), ("b", "2")]).failing(
        "b",
        ErrorKind::Retryable,
        10,
    );
    let report = engine_of(&[&p])
        .apply(
            &context(dir.path(), ApplyOptions::default()),
            &empty_state(),
        )
        .await;
    assert!(!report.ok);
    assert_eq!(p.calls().len(), 3);
    assert_eq!(
        report.plugins[0].actions[1].error_kind,
        Some(ErrorKind::Retryable)
    );

    // A fatal (or conflict) error is never retried.
    for kind in [ErrorKind::Fatal, ErrorKind::Conflict] {
        let dir = tempfile::tempdir().unwrap();
        let p =
            FilesPlugin::new("files", dir.path(), &[("a", "1"), ("b", "2")]).failing("b", kind, 10);
        let report = engine_of(&[&p])
            .apply(
                &context(dir.path(), ApplyOptions::default()),
                &empty_state(),
            )
            .await;
        assert!(!report.ok);
        assert_eq!(p.calls(), [vec!["a", "b"]], "{kind:?} was retried");
        assert_eq!(report.plugins[0].failed_resources, ["file:b"]);
        assert_eq!(report.plugins[0].actions[1].error_kind, Some(kind));
    }
}

#[tokio::test]
async fn a_failing_second_plugin_restores_the_first_and_later_ones_do_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let first = FilesPlugin::new("first", dir.path(), &[("x", "new"), ("y", "new")]);
    seed(&first, &[("x", "old")]);
    let second = FilesPlugin::new("second", dir.path(), &[("p", "new"), ("q", "new")]).failing(
        "q",
        ErrorKind::Fatal,
        1,
    );
    let third = FilesPlugin::new("third", dir.path(), &[("z", "new")]);
    let report = engine_of(&[&first, &second, &third])
        .apply(
            &context(dir.path(), ApplyOptions::default()),
            &empty_state(),
        )
        .await;
    assert!(!report.ok);
    assert_eq!(report.exit_code(), 1);
    let t = report.transaction.as_ref().unwrap();
    assert_eq!(t.outcome, TransactionOutcome::RolledBack);
    assert_eq!(t.rolled_back, ["second", "first"], "reverse order");
    assert!(
        t.reason
            .as_deref()
            .unwrap()
            .contains("plugin 'second' failed"),
        "{t:?}"
    );
    assert_eq!(first.read("x").as_deref(), Some("old"));
    assert_eq!(first.read("y"), None);
    assert_eq!(
        second.read("p"),
        None,
        "the failing plugin's own change is undone"
    );
    assert_eq!(report.plugins[2].outcome, PluginOutcome::NotRun);
    assert!(third.calls().is_empty());
    assert!(report.plugins[0]
        .actions
        .iter()
        .all(|a| a.result == "rolled-back"));
    assert!(report.plugins[0]
        .rollback
        .as_deref()
        .unwrap()
        .starts_with("rolled back"));
    assert!(report
        .rollback_summary()
        .unwrap()
        .contains("restored: second, first"));
    assert!(!dir.path().join("state").join(JOURNAL_FILE).exists());

    // The audit log holds the actions and the rollback records, one
    // transaction.
    let log = opdbus_agent::audit::AuditLog::open(&dir.path().join("state")).unwrap();
    let records = log.list().unwrap();
    let kinds: Vec<_> = records
        .iter()
        .map(|r| format!("{}/{}", r.plugin, r.action))
        .collect();
    assert!(kinds.contains(&"first/rollback".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"engine/transaction".to_string()),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn the_journal_names_every_action_before_the_first_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = FilesPlugin::new("first", dir.path(), &[("x", "1")]);
    let second = FilesPlugin::new("second", dir.path(), &[("secret", "2")]);
    let report = engine_of(&[&first, &second])
        .apply(
            &context(dir.path(), ApplyOptions::default()),
            &empty_state(),
        )
        .await;
    assert!(report.ok, "{report:#?}");
    let journal = first.journals.lock().unwrap()[0]
        .clone()
        .expect("journal written");
    let j: Journal = serde_json::from_str(&journal).unwrap();
    assert_eq!(j.plugins.len(), 1);
    assert_eq!(j.plugins[0].actions[0].resource, "file:x");
    let journal = second.journals.lock().unwrap()[0].clone().unwrap();
    let j: Journal = serde_json::from_str(&journal).unwrap();
    assert_eq!(j.plugins.len(), 2);
    assert_eq!(j.plugins[1].checkpoint, Some(json!({"secret": null})));
    use std::os::unix::fs::PermissionsExt;
    // The apply is over: the journal is gone; the lock file stays, 0600.
    assert!(!dir.path().join("state").join(JOURNAL_FILE).exists());
    let mode = std::fs::metadata(dir.path().join("state/lock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn an_interrupted_journal_is_restored_before_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "new")]);
    seed(&p, &[("a", "new-but-unconfirmed")]);
    // What an agent killed mid-apply leaves: the journal, phase applying.
    let mut j = Journal::new("feed");
    j.pid = 999_999;
    j.plugins
        .push(opdbus_agent::engine::transaction::JournalEntry {
            plugin: "files".into(),
            checkpoint: Some(json!({"a": "old"})),
            actions: Vec::new(),
        });
    j.save(&dir.path().join("state")).unwrap();
    let report = engine_of(&[&p])
        .apply(
            &context(dir.path(), ApplyOptions::default()),
            &empty_state(),
        )
        .await;
    assert_eq!(report.recovered.len(), 1, "{report:#?}");
    assert!(
        report.recovered[0].contains("interrupted while applying"),
        "{:?}",
        report.recovered
    );
    // Restored first ("old"), then this apply wrote "new" again.
    assert_eq!(p.calls(), [vec!["a"]]);
    assert!(report.ok, "{report:#?}");
}

#[tokio::test]
async fn a_second_apply_waits_for_the_lock_then_fails_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "1")]);
    let held = StateLock::acquire(&dir.path().join("state"), Duration::ZERO)
        .await
        .unwrap();
    let ctx =
        context(dir.path(), ApplyOptions::default()).with_lock_wait(Duration::from_millis(300));
    let started = Instant::now();
    let report = engine_of(&[&p]).apply(&ctx, &empty_state()).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!report.ok);
    let err = report.error.clone().unwrap();
    assert!(
        err.contains(&format!(
            "locked by op-dbus-agent pid {}",
            std::process::id()
        )),
        "{err}"
    );
    assert!(p.calls().is_empty());
    drop(held);
    assert!(engine_of(&[&p]).apply(&ctx, &empty_state()).await.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_timeout_restores_unless_confirmed_and_drift_repair_does_not_reapply() {
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "new")]);
    seed(&p, &[("a", "old")]);
    let options = ApplyOptions {
        confirm_timeout: Some(Duration::from_secs(1)),
        ..ApplyOptions::default()
    };
    let report = engine_of(&[&p])
        .apply(&context(dir.path(), options.clone()), &empty_state())
        .await;
    assert!(!report.ok);
    let t = report.transaction.as_ref().unwrap();
    assert_eq!(t.outcome, TransactionOutcome::RolledBack);
    assert!(
        t.reason.as_deref().unwrap().contains("not confirmed"),
        "{t:?}"
    );
    assert_eq!(p.read("a").as_deref(), Some("old"));
    assert_eq!(
        confirm::confirm(&dir.path().join("state"), None).unwrap(),
        confirm::Confirmation::Nothing
    );

    // The resident agent does not apply the unconfirmed state again.
    let resident = ApplyOptions {
        resident: true,
        ..ApplyOptions::default()
    };
    let report = engine_of(&[&p])
        .apply(&context(dir.path(), resident.clone()), &empty_state())
        .await;
    assert!(!report.ok);
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("not applied again"),
        "{report:#?}"
    );
    assert_eq!(p.read("a").as_deref(), Some("old"));

    // Confirmed from another thread while the apply waits: kept; and an
    // explicit apply clears the unconfirmed mark.
    let state_dir = dir.path().join("state");
    let confirmer = std::thread::spawn(move || {
        for _ in 0..200 {
            if let confirm::Confirmation::Confirmed(t) = confirm::confirm(&state_dir, None).unwrap()
            {
                return t;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no change waited for confirmation");
    });
    let options = ApplyOptions {
        confirm_timeout: Some(Duration::from_secs(20)),
        ..ApplyOptions::default()
    };
    let started = Instant::now();
    let report = engine_of(&[&p])
        .apply(&context(dir.path(), options), &empty_state())
        .await;
    let token = confirmer.join().unwrap();
    assert!(report.ok, "{report:#?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let t = report.transaction.as_ref().unwrap();
    assert!(t.confirmed);
    assert_eq!(token.id, t.id);
    assert_eq!(token.description, "files: 1 change(s)");
    assert_eq!(p.read("a").as_deref(), Some("new"));
    let report = engine_of(&[&p])
        .apply(&context(dir.path(), resident), &empty_state())
        .await;
    assert!(report.ok, "{report:#?}");
}

/// What an agent killed in its confirm window leaves: the journal (phase
/// awaiting-confirm, its deadline) and the token `confirm` renames.
fn left_in_window(dir: &Path, deadline_in: u64) -> Journal {
    use opdbus_agent::engine::transaction::{now, JournalEntry, JournalPhase};
    let mut j = Journal::new("feed");
    j.pid = 999_999;
    j.phase = JournalPhase::AwaitingConfirm;
    j.deadline = Some(now() + deadline_in);
    j.plugins.push(JournalEntry {
        plugin: "files".into(),
        checkpoint: Some(json!({"a": "old"})),
        actions: Vec::new(),
    });
    let sd = dir.join("state");
    j.save(&sd).unwrap();
    confirm::begin(
        &sd,
        &confirm::WaitToken {
            id: j.id.clone(),
            pid: j.pid,
            description: "files: 1 change(s)".into(),
            deadline: j.deadline.unwrap(),
        },
    )
    .unwrap();
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_confirm_window_is_waited_for_by_run_and_refused_by_apply() {
    // apply inside the window: refused, saying when it expires; nothing runs.
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "old")]);
    seed(&p, &[("a", "changed")]);
    left_in_window(dir.path(), 60);
    let report = engine_of(&[&p])
        .apply(
            &context(dir.path(), ApplyOptions::default()),
            &empty_state(),
        )
        .await;
    let err = report.error.clone().unwrap();
    assert!(
        err.contains("waits for `op-dbus-agent confirm` until"),
        "{err}"
    );
    assert!(p.calls().is_empty());
    assert_eq!(p.read("a").as_deref(), Some("changed"));

    // The resident agent waits for the deadline, then restores.
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "old")]);
    seed(&p, &[("a", "changed")]);
    left_in_window(dir.path(), 2);
    let resident = ApplyOptions {
        resident: true,
        ..ApplyOptions::default()
    };
    let started = Instant::now();
    let engine = engine_of(&[&p]);
    let msgs = engine
        .recover_pending(&context(dir.path(), resident.clone()))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(msgs[0].contains("not confirmed"), "{msgs:?}");
    assert_eq!(p.read("a").as_deref(), Some("old"));
    // ... and that state is not applied again on its own.
    let report = engine
        .apply(
            &context(dir.path(), resident.clone()),
            &DesiredState {
                hash: "feed".into(),
                ..empty_state()
            },
        )
        .await;
    assert!(report.error.unwrap().contains("not applied again"));

    // Confirmed (by a new process) while the resident agent waits: kept.
    let dir = tempfile::tempdir().unwrap();
    let p = FilesPlugin::new("files", dir.path(), &[("a", "old")]);
    seed(&p, &[("a", "changed")]);
    left_in_window(dir.path(), 30);
    let sd = dir.path().join("state");
    let confirmer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        confirm::confirm(&sd, None).unwrap()
    });
    let msgs = engine_of(&[&p])
        .recover_pending(&context(dir.path(), resident))
        .await
        .unwrap();
    assert!(matches!(
        confirmer.join().unwrap(),
        confirm::Confirmation::Confirmed(_)
    ));
    assert!(msgs[0].contains("was confirmed"), "{msgs:?}");
    assert_eq!(p.read("a").as_deref(), Some("changed"));
    assert!(!dir.path().join("state").join(JOURNAL_FILE).exists());
}

// ---- privileged: the network plugin in a namespace, the real binary ----

fn agent_bin() -> &'static str {
    env!("CARGO_BIN_EXE_op-dbus-agent")
}

/// Full `ip -j` dumps of links, addresses and routes (all tables).
fn dumps(ns: &NetNs) -> Value {
    let mut v = json!({
        "link": ns.ip_json(&["link", "show"]),
        "addr": ns.ip_json(&["addr", "show"]),
        "route4": ns.ip_json(&["-4", "route", "show", "table", "all"]),
        "route6": ns.ip_json(&["-6", "route", "show", "table", "all"]),
    });
    // Only the kernel's own clocks move by themselves.
    for l in v["addr"].as_array_mut().unwrap() {
        for a in l["addr_info"].as_array_mut().into_iter().flatten() {
            a.as_object_mut().unwrap().remove("preferred_life_time");
            a.as_object_mut().unwrap().remove("valid_life_time");
        }
    }
    v
}

fn net_state(mtu: u32, addr: &str) -> Value {
    json!({"version": 1, "plugins": {"network": {"interfaces": {
        "tx0": {"type": "bridge", "mtu": mtu, "address": [addr]},
        "tv0": {"type": "veth", "peer": "tv1", "address": "10.61.0.1/24"}
    }}}})
}

#[test]
#[ignore = "privileged: network namespace"]
fn network_is_restored_exactly_when_a_later_plugin_fails() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let base = net_state(1500, "10.60.0.1/24").to_string();
    ns.run(move |_| async move {
        let mut e = Engine::new();
        e.register(NetworkPlugin);
        let r = e
            .apply(
                &context(&d, ApplyOptions::default()),
                &DesiredState::from_json(&base, "t.json").unwrap(),
            )
            .await;
        assert!(r.ok, "{r:#?}");
    });
    let before = dumps(&ns);

    let d = dir.path().to_path_buf();
    let files =
        FilesPlugin::new("zfiles", dir.path(), &[("a", "1")]).failing("a", ErrorKind::Fatal, 1);
    let mut changed = net_state(1400, "10.60.0.2/24");
    changed["plugins"]["network"]["interfaces"]["tx9"] =
        json!({"type": "veth", "peer": "tx8", "address": "10.62.0.1/24"});
    let changed = changed.to_string();
    let report: RunReport = ns.run(move |_| async move {
        let mut e = Engine::new();
        e.register(NetworkPlugin);
        e.register(files);
        e.apply(
            &context(&d, ApplyOptions::default()),
            &DesiredState::from_json(&changed, "t.json").unwrap(),
        )
        .await
    });
    assert!(!report.ok);
    assert_eq!(
        report.plugins[0].outcome,
        PluginOutcome::Changed,
        "{report:#?}"
    );
    let t = report.transaction.as_ref().unwrap();
    assert_eq!(t.rolled_back, ["zfiles", "network"], "{t:?}");
    assert_eq!(dumps(&ns), before, "the network was not restored exactly");
}

struct Cli {
    ns: String,
    dir: PathBuf,
    state: PathBuf,
}

impl Cli {
    fn new(ns: &NetNs, dir: &Path, state: &Value) -> Self {
        let path = dir.join("state.json");
        std::fs::write(&path, state.to_string()).unwrap();
        Cli {
            ns: ns.name().to_string(),
            dir: dir.to_path_buf(),
            state: path,
        }
    }

    fn set_state(&self, state: &Value) {
        std::fs::write(&self.state, state.to_string()).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, agent_bin()])
            .arg("--state-dir")
            .arg(self.dir.join("sd"))
            .args(args)
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--bus")
            .arg(format!("unix:path={}/no-bus", self.dir.display()));
        c
    }

    /// `apply STATE [extra]` in the background (`ip netns exec` execs the agent:
    /// the child's pid is the agent's).
    fn spawn_apply(&self, extra: &[&str]) -> Child {
        let mut args = vec!["apply", self.state.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn confirm(&self) -> std::process::Output {
        Command::new(agent_bin())
            .arg("--state-dir")
            .arg(self.dir.join("sd"))
            .arg("confirm")
            .output()
            .unwrap()
    }

    /// Waits until the apply waits for `confirm`.
    fn wait_for_window(&self) {
        let sd = self.dir.join("sd");
        for _ in 0..300 {
            let waiting = std::fs::read_dir(&sd).ok().into_iter().flatten().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("confirm-wait.")
            });
            if waiting {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the apply never waited for confirm");
    }
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
#[ignore = "privileged: network namespace"]
fn confirm_window_over_the_cli_timeout_confirm_and_signals() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&ns, dir.path(), &net_state(1500, "10.60.0.1/24"));
    let before = dumps(&ns);

    // No confirm: restored at the deadline, exit 1.
    let (code, out) = finish(cli.spawn_apply(&["--confirm-timeout", "1"]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not confirmed"), "{out}");
    assert_eq!(dumps(&ns), before);
    let late = cli.confirm();
    assert_eq!(late.status.code(), Some(1));

    // SIGHUP, SIGTERM, SIGINT during the window: rolled back at once.
    for sig in ["HUP", "TERM", "INT"] {
        let child = cli.spawn_apply(&["--confirm-timeout", "60"]);
        cli.wait_for_window();
        assert!(ns.link("tx0").is_some());
        let started = Instant::now();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let (code, out) = finish(child);
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(code, 1, "SIG{sig}: {out}");
        assert!(out.contains(&format!("SIG{sig} arrived")), "{out}");
        assert_eq!(dumps(&ns), before, "SIG{sig} did not roll back");
    }

    // Confirmed by a new process: kept, exit 0.
    let child = cli.spawn_apply(&["--confirm-timeout", "60"]);
    cli.wait_for_window();
    let c = cli.confirm();
    assert_eq!(c.status.code(), Some(0), "{c:?}");
    assert!(String::from_utf8_lossy(&c.stdout).starts_with("confirmed: transaction"));
    let (code, out) = finish(child);
    assert_eq!(code, 0, "{out}");
    assert!(ns.link("tx0").is_some());
}

#[test]
#[ignore = "privileged: network namespace"]
fn kill_9_in_the_window_is_restored_by_the_next_apply_after_the_deadline() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&ns, dir.path(), &net_state(1500, "10.60.0.1/24"));
    let before = dumps(&ns);
    let mut child = cli.spawn_apply(&["--confirm-timeout", "3"]);
    cli.wait_for_window();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(ns.link("tx0").is_some(), "SIGKILL leaves the change");

    // Inside the window an operator's apply refuses, saying when it expires.
    let out = cli
        .cmd(&["apply", cli.state.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("waits for `op-dbus-agent confirm` until"),
        "{err}"
    );

    // After the deadline: restored first, then (a changed state) applied.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(cli.confirm().status.code(), Some(1), "too late to confirm");
    cli.set_state(&json!({"version": 1, "plugins": {"network": {"interfaces": {}}}}));
    let out = cli
        .cmd(&["apply", cli.state.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let report: RunReport = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report.recovered.len(), 1, "{report:#?}");
    assert!(
        report.recovered[0].contains("network: restored"),
        "{:?}",
        report.recovered
    );
    assert_eq!(dumps(&ns), before);
}

#[test]
#[ignore = "privileged: network namespace"]
fn two_concurrent_applies_are_serialized_and_keep_their_own_confirmation() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&ns, dir.path(), &net_state(1500, "10.60.0.1/24"));
    // The first waits for confirm; the second waits for the lock meanwhile.
    let first = cli.spawn_apply(&["--confirm-timeout", "60"]);
    cli.wait_for_window();
    let second_state = dir.path().join("second.json");
    std::fs::write(&second_state, net_state(1400, "10.60.0.1/24").to_string()).unwrap();
    let second = cli
        .cmd(&[
            "apply",
            second_state.to_str().unwrap(),
            "--confirm-timeout",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // One confirm: the first's (the second has not even started).
    assert_eq!(cli.confirm().status.code(), Some(0));
    let (code, out) = finish(first);
    assert_eq!(code, 0, "{out}");
    // The second then applies, gets no confirmation and restores the first's result.
    let (code, out) = finish(second);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not confirmed"), "{out}");
    assert_eq!(
        ns.link("tx0").unwrap()["mtu"],
        1500,
        "the first change stays"
    );
}
