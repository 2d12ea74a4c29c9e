//! Test fixture: a PVE API simulator over HTTPS (a self-signed certificate
//! made by `openssl` for 127.0.0.1), checked against the real schema in
//! `../shared/pve-api/apidata.json`. It rejects any request whose path,
//! method, parameter names, types, enums, property-string keys or required
//! parameters the schema does not allow (HTTP 400 with PVE's `errors`
//! object, 501 for an unknown method+path), and calls the schema refuses
//! to API tokens. It models qemu and lxc guests (configs with `digest` and
//! `delete`, disks allocated from `STORAGE:GiB`, generated MACs), storage
//! definitions, backup jobs (`/cluster/backup`), tasks with real UPID
//! strings, their status and log, and lock timeouts ("can't lock file ...
//! got timeout") when writers contend for a guest or a storage. Only token
//! authentication (`PVEAPIToken=USER@REALM!ID=SECRET`) is accepted.
//! Not part of the product.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub const TOKEN: &str = "root@pam!opdbus=5f2b8c1e-3a4d-4e6f-9b7a-0c1d2e3f4a5b";
pub const NODE: &str = "pve";

/// The values of a path's `{params}`.
type Vars = BTreeMap<String, String>;

/// The schema, indexed by path pattern.
pub struct Schema {
    /// (segments, method -> info)
    paths: Vec<(Vec<String>, Map<String, Value>)>,
}

/// `shared/pve-api/apidata.json` beside the repository (or above a
/// worktree), or `$PVE_APIDATA`.
pub fn schema_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PVE_APIDATA") {
        return PathBuf::from(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/pve-api/apidata.json"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no shared/pve-api/apidata.json above {}; set PVE_APIDATA",
                here.display()
            )
        })
}

impl Schema {
    pub fn load() -> Schema {
        let text = std::fs::read_to_string(schema_path()).unwrap();
        let tree: Value = serde_json::from_str(&text).unwrap();
        let mut paths = Vec::new();
        fn walk(nodes: &Value, out: &mut Vec<(Vec<String>, Map<String, Value>)>) {
            for n in nodes.as_array().into_iter().flatten() {
                if let (Some(p), Some(info)) = (n["path"].as_str(), n["info"].as_object()) {
                    let segs = p
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    out.push((segs, info.clone()));
                }
                walk(&n["children"], out);
            }
        }
        walk(&tree, &mut paths);
        Schema { paths }
    }

    /// The endpoint for `path` and the values of its `{params}`; most literal match wins.
    fn find(&self, path: &str) -> Option<(&Map<String, Value>, Vars)> {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect();
        let mut best: Option<(usize, &Map<String, Value>, Vars)> = None;
        for (pat, info) in &self.paths {
            if pat.len() != segs.len() {
                continue;
            }
            let mut vars = BTreeMap::new();
            let mut literal = 0;
            let ok = pat.iter().zip(&segs).all(|(p, s)| {
                if p.starts_with('{') {
                    vars.insert(
                        p.trim_matches(|c| c == '{' || c == '}').to_string(),
                        s.clone(),
                    );
                    true
                } else {
                    literal += 1;
                    p == s
                }
            });
            if ok && best.as_ref().is_none_or(|b| literal > b.0) {
                best = Some((literal, info, vars));
            }
        }
        best.map(|(_, i, v)| (i, v))
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Checks one value against a parameter schema; the error text is PVE's.
fn check_value(s: &Value, v: &str) -> Result<(), String> {
    let ty = s["type"].as_str().unwrap_or("string");
    match ty {
        "integer" => {
            let n: i64 = v
                .parse()
                .map_err(|_| format!("type check ('integer') failed - got '{v}'"))?;
            if let Some(min) = s["minimum"].as_i64() {
                if n < min {
                    return Err(format!("value must have a minimum value of {min}"));
                }
            }
            if let Some(max) = s["maximum"].as_i64() {
                if n > max {
                    return Err(format!("value may only be {max}"));
                }
            }
        }
        "number" => {
            v.parse::<f64>()
                .map_err(|_| format!("type check ('number') failed - got '{v}'"))?;
        }
        "boolean" => {
            if !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "1" | "true" | "false" | "yes" | "no" | "on" | "off"
            ) {
                return Err(format!("type check ('boolean') failed - got '{v}'"));
            }
        }
        _ => {
            if let Some(pat) = s["pattern"].as_str() {
                let re = regex::Regex::new(&format!("^(?:{pat})$")).unwrap();
                if !re.is_match(v) {
                    return Err("value does not match the regex pattern".to_string());
                }
            }
            if let Some(en) = s["enum"].as_array() {
                if !en.iter().any(|e| e.as_str() == Some(v)) {
                    let list: Vec<&str> = en.iter().filter_map(Value::as_str).collect();
                    return Err(format!(
                        "value '{v}' does not have a value in the enumeration '{}'",
                        list.join(", ")
                    ));
                }
            }
            if let Some(max) = s["maxLength"].as_u64() {
                if v.len() as u64 > max {
                    return Err(format!("value may only be {max} characters long"));
                }
            }
            if let Some(fmt) = s["format"].as_object() {
                check_props(fmt, v)?;
            } else if s["format"].as_str() == Some("pve-vmid-list") {
                if !v
                    .split([',', ' ', ';'])
                    .filter(|x| !x.is_empty())
                    .all(|x| x.parse::<u32>().is_ok_and(|n| n >= 100))
                {
                    return Err(format!("value '{v}' does not look like a valid vmid list"));
                }
            } else if s["format"].as_str() == Some("pve-storage-id") {
                let ok = !v.is_empty()
                    && v.chars().next().unwrap().is_ascii_alphabetic()
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !ok {
                    return Err(format!("storage ID '{v}' contains illegal characters"));
                }
            }
        }
    }
    Ok(())
}

/// Checks a property string against its `format` object: known keys
/// (aliases and `MODEL=MAC` key aliases resolved), value types and enums,
/// required keys.
fn check_props(fmt: &Map<String, Value>, v: &str) -> Result<(), String> {
    let default_key = fmt
        .iter()
        .find(|(_, s)| s["default_key"].as_i64() == Some(1))
        .map(|(k, _)| k.clone());
    let mut seen = HashSet::new();
    for part in v.split(',').filter(|p| !p.is_empty()) {
        let (k, val) = match part.split_once('=') {
            Some((k, val)) => (k.to_string(), val.to_string()),
            None => match &default_key {
                Some(dk) => (dk.clone(), part.to_string()),
                None => {
                    return Err(format!(
                        "value without key, but schema does not define a default key: '{part}'"
                    ))
                }
            },
        };
        let Some(mut s) = fmt.get(&k) else {
            return Err(format!("invalid format - unknown property '{k}' in '{v}'"));
        };
        let mut key = k.clone();
        if let Some(ka) = s["keyAlias"].as_str() {
            // `virtio=MAC`: the key is a value of `ka`, the value is the alias target.
            check_value(&fmt[ka], &k)?;
            seen.insert(ka.to_string());
            key = s["alias"].as_str().unwrap().to_string();
            s = &fmt[&key];
        } else if let Some(a) = s["alias"].as_str() {
            key = a.to_string();
            s = &fmt[a];
        }
        check_value(s, &val).map_err(|e| format!("invalid format - {key}: {e}"))?;
        if !seen.insert(key.clone()) {
            return Err(format!(
                "invalid format - duplicate key in comma-separated list property: {key}"
            ));
        }
    }
    for (k, s) in fmt {
        if s.get("alias").is_none() && s["optional"].as_i64() != Some(1) && !seen.contains(k) {
            return Err(format!("invalid format - property '{k}' is missing"));
        }
    }
    Ok(())
}

/// The schema property for a parameter name (`net0` → `net[n]`).
fn property<'a>(props: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    props.get(name).or_else(|| {
        let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
        (base.len() < name.len())
            .then(|| props.get(&format!("{base}[n]")))
            .flatten()
    })
}

/// PVE's answer to a request that failed validation: the `errors` object.
pub fn validate(
    info: &Map<String, Value>,
    params: &BTreeMap<String, String>,
) -> Result<(), Map<String, Value>> {
    let schema = &info["parameters"];
    let empty = Map::new();
    let props = schema["properties"].as_object().unwrap_or(&empty);
    let extra = schema["additionalProperties"].as_i64() == Some(1);
    let mut errors = Map::new();
    for (k, v) in params {
        match property(props, k) {
            Some(s) => {
                if let Err(e) = check_value(s, v) {
                    errors.insert(k.clone(), json!(e));
                }
            }
            None if extra => {}
            None => {
                errors.insert(k.clone(), json!("property is not defined in schema and the schema does not allow additional properties"));
            }
        }
    }
    for (k, s) in props {
        if s["optional"].as_i64() != Some(1) && !k.ends_with("[n]") && !params.contains_key(k) {
            errors.insert(
                k.clone(),
                json!("property is missing and it is not optional"),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[derive(Debug, Clone)]
pub struct Guest {
    pub kind: &'static str,
    pub config: BTreeMap<String, String>,
    pub running: bool,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub upid: String,
    pub done: bool,
    pub exitstatus: String,
    pub log: Vec<String>,
}

/// Held locks (`qemu-server/lock-100.conf`, `pve-storage-local-lvm`).
#[derive(Default)]
struct Locks {
    held: Mutex<HashSet<String>>,
    cv: Condvar,
}

impl Locks {
    fn acquire(&self, name: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut held = self.held.lock().unwrap();
        while held.contains(name) {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("can't lock file '/var/lock/{name}' - got timeout"));
            }
            held = self.cv.wait_timeout(held, deadline - now).unwrap().0;
        }
        held.insert(name.to_string());
        Ok(())
    }
    fn release(&self, name: &str) {
        self.held.lock().unwrap().remove(name);
        self.cv.notify_all();
    }
}

#[derive(Default)]
pub struct World {
    pub guests: BTreeMap<u32, Guest>,
    pub storage: BTreeMap<String, BTreeMap<String, String>>,
    pub backups: BTreeMap<String, BTreeMap<String, String>>,
    pub tasks: BTreeMap<String, Task>,
    /// Another writer, once: just before the next config write to guest
    /// `.0`, key `.1` is set to `.2` (the write's digest is then stale).
    pub meanwhile: Option<(u32, String, String)>,
    /// The token's privileges (a privilege-separated token); `None`: all.
    pub token_privs: Option<Vec<String>>,
    /// The cluster this node is in (`None`: standalone).
    pub cluster: Option<String>,
    /// The other members of that cluster (name, address).
    pub members: Vec<(String, String)>,
    /// HA resources by sid (`vm:100`): their options.
    pub ha: BTreeMap<String, BTreeMap<String, String>>,
    /// HA groups that exist (`ha-manager groupadd`).
    pub ha_groups: Vec<String>,
    /// The cluster a join can reach: a member at `peer` with that
    /// certificate fingerprint and root password.
    pub joinable: Option<Joinable>,
    /// Every request: "METHOD /path".
    pub log: Vec<String>,
    pub rejected: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Joinable {
    pub cluster: String,
    pub peer_name: String,
    pub peer: String,
    /// `AB:CD:...`
    pub fingerprint: String,
    pub password: String,
}

/// Knobs: how long a task holds its locks, how long a writer waits for one.
#[derive(Debug, Clone)]
pub struct Timing {
    pub task: Duration,
    pub lock_wait: Duration,
}

pub struct Sim {
    pub url: String,
    pub fingerprint: String,
    pub cert_pem: PathBuf,
    pub world: Arc<Mutex<World>>,
    pub writes: Arc<AtomicU64>,
    pub timing: Arc<Mutex<Timing>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn digest_of(config: &BTreeMap<String, String>) -> String {
    let text: String = config.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    hex::encode(Sha256::digest(text.as_bytes()))[..40].to_string()
}

struct Shared {
    schema: Schema,
    world: Arc<Mutex<World>>,
    writes: Arc<AtomicU64>,
    timing: Arc<Mutex<Timing>>,
    locks: Locks,
    seq: AtomicU64,
}

type Reply = (u16, String, Value);

fn fail(status: u16, msg: impl Into<String>) -> Reply {
    let m = msg.into();
    (
        status,
        m.clone(),
        json!({"data": null, "message": format!("{m}\n")}),
    )
}

fn ok(data: Value) -> Reply {
    (200, "OK".into(), json!({ "data": data }))
}

impl Shared {
    fn upid(&self, kind: &str, id: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        format!(
            "UPID:{NODE}:{:08X}:{:08X}:{:08X}:{kind}:{id}:root@pam!opdbus:",
            4000 + n,
            100000 + n,
            now
        )
    }

    /// Starts a worker task that takes `locks`, waits the task time, runs `work`.
    fn task(
        self: &Arc<Self>,
        kind: &str,
        id: &str,
        locks: Vec<String>,
        work: impl FnOnce(&mut World) -> Result<Vec<String>, String> + Send + 'static,
    ) -> Reply {
        let upid = self.upid(kind, id);
        self.world.lock().unwrap().tasks.insert(
            upid.clone(),
            Task {
                upid: upid.clone(),
                done: false,
                exitstatus: String::new(),
                log: vec![],
            },
        );
        let me = self.clone();
        let u = upid.clone();
        std::thread::spawn(move || {
            let t = me.timing.lock().unwrap().clone();
            let mut taken = Vec::new();
            let mut result = Ok(vec![]);
            for l in &locks {
                match me.locks.acquire(l, t.lock_wait) {
                    Ok(()) => taken.push(l.clone()),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() {
                std::thread::sleep(t.task);
                result = work(&mut me.world.lock().unwrap());
            }
            for l in &taken {
                me.locks.release(l);
            }
            let mut w = me.world.lock().unwrap();
            let task = w.tasks.get_mut(&u).unwrap();
            task.done = true;
            match result {
                Ok(lines) => {
                    task.log = lines;
                    task.log.push("TASK OK".into());
                    task.exitstatus = "OK".into();
                }
                Err(e) => {
                    task.log.push(e.clone());
                    task.log.push(format!("TASK ERROR: {e}"));
                    task.exitstatus = e;
                }
            }
        });
        ok(json!(upid))
    }

    fn handle(
        self: &Arc<Self>,
        method: &str,
        path: &str,
        auth: Option<&str>,
        params: BTreeMap<String, String>,
    ) -> Reply {
        let Some(rest) = path.strip_prefix("/api2/json") else {
            return fail(404, "Not found");
        };
        if auth != Some(&format!("PVEAPIToken={TOKEN}")) {
            return fail(401, "authentication failure");
        }
        let Some((info, vars)) = self.schema.find(rest) else {
            return fail(501, format!("Method '{method} {rest}' not implemented"));
        };
        let Some(minfo) = info.get(method).and_then(Value::as_object) else {
            return fail(501, format!("Method '{method} {rest}' not implemented"));
        };
        if minfo.get("allowtoken").and_then(Value::as_i64) == Some(0) {
            return fail(
                403,
                "Permission check failed (user != root@pam, API tokens are not allowed)",
            );
        }
        let mut all = params.clone();
        for (k, v) in &vars {
            if let Some(prev) = all.insert(k.clone(), v.clone()) {
                if &prev != v {
                    return fail(
                        400,
                        format!("Parameter verification failed: {k} given twice"),
                    );
                }
            }
        }
        if let Err(errors) = validate(minfo, &all) {
            self.world.lock().unwrap().rejected.push(format!(
                "{method} {rest}: {}",
                Value::Object(errors.clone())
            ));
            return (
                400,
                "Parameter verification failed.".into(),
                json!({"data": null, "errors": errors, "message": "Parameter verification failed.\n"}),
            );
        }
        if let Some(denied) = self.denied(minfo, &all) {
            return fail(403, denied);
        }
        if method != "GET" {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        // "METHOD /path name,name": what was sent, without values.
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        self.world.lock().unwrap().log.push(
            format!("{method} {rest} {}", names.join(","))
                .trim_end()
                .to_string(),
        );
        self.route(method, &segments(rest), all)
    }

    /// The token's privileges against the endpoint's `["perm", PATH,
    /// [PRIVS], "any", 1]` check (other checks pass).
    fn denied(
        &self,
        minfo: &Map<String, Value>,
        params: &BTreeMap<String, String>,
    ) -> Option<String> {
        let privs = self.world.lock().unwrap().token_privs.clone()?;
        let check = minfo.get("permissions")?.get("check")?.as_array()?;
        if check.first()?.as_str()? != "perm" {
            return None;
        }
        let mut path = check.get(1)?.as_str()?.to_string();
        for (k, v) in params {
            path = path.replace(&format!("{{{k}}}"), v);
        }
        let wanted: Vec<&str> = check
            .get(2)?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let any = check.get(3).and_then(Value::as_str) == Some("any");
        let has = |p: &&str| privs.iter().any(|x| x == p);
        let ok = if any {
            wanted.iter().any(has)
        } else {
            wanted.iter().all(has)
        };
        (!ok).then(|| {
            let missing: Vec<&str> = wanted.iter().filter(|p| !has(p)).copied().collect();
            format!("Permission check failed ({path}, {})", missing.join("|"))
        })
    }

    fn route(self: &Arc<Self>, method: &str, seg: &[String], p: BTreeMap<String, String>) -> Reply {
        let s: Vec<&str> = seg.iter().map(String::as_str).collect();
        let lock_wait = self.timing.lock().unwrap().lock_wait;
        match (method, s.as_slice()) {
            ("GET", ["version"]) => {
                ok(json!({"version": "9.1.1", "release": "9.1", "repoid": "sim"}))
            }
            ("GET", ["nodes"]) => ok(json!([{"node": NODE, "status": "online"}])),
            ("GET", ["cluster", "status"]) => {
                let mut v = vec![
                    json!({"type": "node", "name": NODE, "id": format!("node/{NODE}"), "ip": "127.0.0.1", "local": 1, "online": 1, "nodeid": 1}),
                ];
                let w = self.world.lock().unwrap();
                if let Some(c) = &w.cluster {
                    for (i, (n, ip)) in w.members.iter().enumerate() {
                        v.push(json!({"type": "node", "name": n, "id": format!("node/{n}"), "ip": ip, "local": 0, "online": 1, "nodeid": i + 2}));
                    }
                    v.insert(0, json!({"type": "cluster", "name": c, "id": "cluster", "nodes": 1 + w.members.len(), "quorate": 1, "version": 1}));
                }
                ok(Value::Array(v))
            }
            ("GET", ["nodes", _, "tasks", upid, "status"]) => {
                let w = self.world.lock().unwrap();
                let Some(t) = w.tasks.get(*upid) else {
                    return fail(500, format!("no such task '{upid}'"));
                };
                let mut v = json!({"upid": t.upid, "node": NODE, "status": if t.done {"stopped"} else {"running"}, "type": t.upid.split(':').nth(5), "id": t.upid.split(':').nth(6), "user": "root@pam!opdbus", "pid": 1, "pstart": 1, "starttime": 1});
                if t.done {
                    v["exitstatus"] = json!(t.exitstatus);
                }
                ok(v)
            }
            ("GET", ["nodes", _, "tasks", upid, "log"]) => {
                let w = self.world.lock().unwrap();
                let Some(t) = w.tasks.get(*upid) else {
                    return fail(500, format!("no such task '{upid}'"));
                };
                ok(Value::Array(
                    t.log
                        .iter()
                        .enumerate()
                        .map(|(i, l)| json!({"n": i + 1, "t": l}))
                        .collect(),
                ))
            }
            (_, ["nodes", _, kind @ ("qemu" | "lxc"), rest @ ..]) => {
                self.guest(method, kind, rest, p, lock_wait)
            }
            (_, ["cluster", "ha", "resources", rest @ ..]) => self.ha(method, rest, p, lock_wait),
            ("GET", ["cluster", "ha", "groups"]) => {
                let w = self.world.lock().unwrap();
                ok(Value::Array(
                    w.ha_groups
                        .iter()
                        .map(|g| json!({"group": g, "type": "group", "nodes": NODE}))
                        .collect(),
                ))
            }
            ("GET", ["cluster", "config", "nodes"]) => {
                let w = self.world.lock().unwrap();
                if w.cluster.is_none() {
                    return fail(500, "Corosync config '/etc/pve/corosync.conf' does not exist - is this node part of a cluster?");
                }
                let mut v = vec![
                    json!({"node": NODE, "nodeid": 1, "quorum_votes": 1, "ring0_addr": "127.0.0.1"}),
                ];
                for (i, (n, ip)) in w.members.iter().enumerate() {
                    v.push(
                        json!({"node": n, "nodeid": i + 2, "quorum_votes": 1, "ring0_addr": ip}),
                    );
                }
                ok(Value::Array(v))
            }
            ("POST", ["cluster", "config", "join"]) => {
                let hostname = p["hostname"].clone();
                let fingerprint = p["fingerprint"].clone();
                let password = p["password"].clone();
                self.task("clusterjoin", "", vec!["pve-cluster/join".into()], move |w| {
                    if w.cluster.is_some() {
                        return Err("detected the following error(s):\n* corosync is already running, is this node already in a cluster?!".into());
                    }
                    if !w.guests.is_empty() {
                        return Err("detected the following error(s):\n* this host already contains virtual guests".into());
                    }
                    let Some(j) = w.joinable.clone().filter(|j| j.peer == hostname) else {
                        return Err(format!("500 Can't connect to {hostname}:8006 (Connection refused)"));
                    };
                    if !j.fingerprint.eq_ignore_ascii_case(&fingerprint) {
                        return Err(format!("Certificate fingerprint verification failed: expected {fingerprint}, got {}", j.fingerprint));
                    }
                    if j.password != password {
                        return Err("401 authentication failure".into());
                    }
                    w.cluster = Some(j.cluster.clone());
                    w.members.push((j.peer_name.clone(), j.peer.clone()));
                    Ok(vec![
                        format!("Establishing API connection with host '{hostname}'"),
                        "Request addition of this node".into(),
                        "Join request OK, finishing setup locally".into(),
                        "successfully added node 'pve' to cluster.".into(),
                    ])
                })
            }
            ("GET", ["storage"]) => {
                let w = self.world.lock().unwrap();
                ok(Value::Array(
                    w.storage
                        .iter()
                        .map(|(id, c)| {
                            let mut o = obj(c);
                            o["storage"] = json!(id);
                            o
                        })
                        .collect(),
                ))
            }
            ("GET", ["storage", id]) => {
                let w = self.world.lock().unwrap();
                match w.storage.get(*id) {
                    Some(c) => {
                        let mut o = obj(c);
                        o["storage"] = json!(id);
                        o["digest"] = json!(digest_of(c));
                        ok(o)
                    }
                    None => fail(500, format!("storage '{id}' does not exist")),
                }
            }
            ("POST", ["storage"]) => {
                let mut w = self.world.lock().unwrap();
                let id = p["storage"].clone();
                if w.storage.contains_key(&id) {
                    return fail(
                        500,
                        format!("create storage failed: storage ID '{id}' already defined"),
                    );
                }
                let mut c = p.clone();
                c.remove("storage");
                w.storage.insert(id.clone(), c);
                ok(json!({"storage": id, "type": p["type"]}))
            }
            ("PUT", ["storage", id]) => {
                let mut w = self.world.lock().unwrap();
                let Some(c) = w.storage.get_mut(*id) else {
                    return fail(500, format!("storage '{id}' does not exist"));
                };
                if let Some(d) = p.get("digest") {
                    if d != &digest_of(c) {
                        return fail(500, "update storage failed: detected modified configuration - file changed by other user? Try again.");
                    }
                }
                for (k, v) in &p {
                    if k != "digest" && k != "storage" && k != "delete" {
                        c.insert(k.clone(), v.clone());
                    }
                }
                for k in p
                    .get("delete")
                    .map(|d| d.split(',').map(String::from).collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    c.remove(&k);
                }
                ok(json!({"storage": id, "type": c.get("type")}))
            }
            ("DELETE", ["storage", id]) => {
                let mut w = self.world.lock().unwrap();
                if w.storage.remove(*id).is_none() {
                    return fail(500, format!("storage '{id}' does not exist"));
                }
                ok(Value::Null)
            }
            ("GET", ["cluster", "backup"]) => {
                let w = self.world.lock().unwrap();
                ok(Value::Array(
                    w.backups
                        .iter()
                        .map(|(id, c)| {
                            let mut o = obj(c);
                            o["id"] = json!(id);
                            o
                        })
                        .collect(),
                ))
            }
            ("GET", ["cluster", "backup", id]) => {
                let w = self.world.lock().unwrap();
                match w.backups.get(*id) {
                    Some(c) => {
                        let mut o = obj(c);
                        o["id"] = json!(id);
                        o["type"] = json!("vzdump");
                        ok(o)
                    }
                    None => fail(500, format!("Job '{id}' does not exist")),
                }
            }
            ("POST", ["cluster", "backup"]) => {
                let mut w = self.world.lock().unwrap();
                let id = p.get("id").cloned().unwrap_or_else(|| {
                    format!("backup-{:x}", self.seq.fetch_add(1, Ordering::SeqCst))
                });
                if w.backups.contains_key(&id) {
                    return fail(500, format!("Job '{id}' already exists"));
                }
                if let Some(st) = p.get("storage") {
                    if !w.storage.contains_key(st) {
                        return fail(500, format!("storage '{st}' does not exist"));
                    }
                }
                let mut c = p.clone();
                c.remove("id");
                w.backups.insert(id, c);
                ok(Value::Null)
            }
            ("PUT", ["cluster", "backup", id]) => {
                let mut w = self.world.lock().unwrap();
                let Some(c) = w.backups.get_mut(*id) else {
                    return fail(500, format!("Job '{id}' does not exist"));
                };
                for (k, v) in &p {
                    if k != "id" && k != "delete" {
                        c.insert(k.clone(), v.clone());
                    }
                }
                ok(Value::Null)
            }
            ("DELETE", ["cluster", "backup", id]) => {
                self.world.lock().unwrap().backups.remove(*id);
                ok(Value::Null)
            }
            _ => fail(
                501,
                format!(
                    "Method '{method} /{}' not implemented in the simulator",
                    seg.join("/")
                ),
            ),
        }
    }

    fn guest(
        self: &Arc<Self>,
        method: &str,
        kind: &str,
        rest: &[&str],
        p: BTreeMap<String, String>,
        lock_wait: Duration,
    ) -> Reply {
        let kind: &'static str = if kind == "qemu" { "qemu" } else { "lxc" };
        let lockname = |vmid: &str| {
            if kind == "qemu" {
                format!("qemu-server/lock-{vmid}.conf")
            } else {
                format!("lxc/pve-config-{vmid}.lock")
            }
        };
        let conf_missing = |vmid: &str| {
            fail(
                500,
                format!(
                    "Configuration file 'nodes/{NODE}/{}/{vmid}.conf' does not exist",
                    if kind == "qemu" { "qemu-server" } else { "lxc" }
                ),
            )
        };
        match (method, rest) {
            ("GET", []) => {
                let w = self.world.lock().unwrap();
                ok(Value::Array(w.guests.iter().filter(|(_, g)| g.kind == kind).map(|(id, g)| json!({"vmid": id, "name": g.config.get("name").or(g.config.get("hostname")), "status": if g.running {"running"} else {"stopped"}})).collect()))
            }
            ("POST", []) => {
                let vmid = p["vmid"].clone();
                let id: u32 = vmid.parse().unwrap();
                if self.world.lock().unwrap().guests.contains_key(&id) {
                    return fail(500, format!("unable to create {} {vmid} - VM {vmid} already exists on node '{NODE}'", if kind == "qemu" { "VM" } else { "CT" }));
                }
                let mut locks = vec![lockname(&vmid)];
                let mut storages: Vec<String> = p
                    .iter()
                    .filter(|(k, _)| is_disk(k))
                    .filter_map(|(_, v)| v.split_once(':').map(|x| x.0.to_string()))
                    .collect();
                storages.sort();
                storages.dedup();
                locks.extend(
                    storages
                        .iter()
                        .map(|s| format!("pve-manager/pve-storage-{s}")),
                );
                let start = p.get("start").is_some_and(|s| s == "1");
                self.task(
                    if kind == "qemu" {
                        "qmcreate"
                    } else {
                        "vzcreate"
                    },
                    &vmid.clone(),
                    locks,
                    move |w| {
                        if w.guests.contains_key(&id) {
                            return Err(format!("VM {vmid} already exists"));
                        }
                        let mut config = BTreeMap::new();
                        let mut lines = vec![];
                        for (k, v) in &p {
                            if matches!(k.as_str(), "vmid" | "start" | "ostemplate" | "node") {
                                continue;
                            }
                            let v = if is_disk(k) {
                                alloc(w, id, k, v, &mut lines)?
                            } else if k.starts_with("net") {
                                with_mac(kind, id, k, v)
                            } else {
                                v.clone()
                            };
                            config.insert(k.clone(), v);
                        }
                        if kind == "lxc" {
                            let t = p.get("ostemplate").cloned().unwrap_or_default();
                            let st = t.split(':').next().unwrap_or_default().to_string();
                            if !w.storage.contains_key(&st) {
                                return Err(format!("storage '{st}' does not exist"));
                            }
                            lines.push(format!("extracting archive '{t}'"));
                            config.entry("arch".into()).or_insert("amd64".into());
                            config.entry("ostype".into()).or_insert("debian".into());
                        } else {
                            config
                                .entry("smbios1".into())
                                .or_insert(format!("uuid=00000000-0000-4000-8000-{id:012}"));
                            config
                                .entry("vmgenid".into())
                                .or_insert(format!("00000000-0000-4000-8000-{id:012}"));
                        }
                        w.guests.insert(
                            id,
                            Guest {
                                kind,
                                config,
                                running: start,
                            },
                        );
                        Ok(lines)
                    },
                )
            }
            (m, [vmid, rest @ ..]) => {
                let id: u32 = vmid.parse().unwrap();
                let exists = self
                    .world
                    .lock()
                    .unwrap()
                    .guests
                    .get(&id)
                    .is_some_and(|g| g.kind == kind);
                if !exists {
                    return conf_missing(vmid);
                }
                match (m, rest) {
                    ("GET", ["config"]) => {
                        let w = self.world.lock().unwrap();
                        let g = &w.guests[&id];
                        let mut o = Map::new();
                        for (k, v) in &g.config {
                            let num = matches!(k.as_str(), "cores" | "sockets")
                                || (kind == "lxc" && matches!(k.as_str(), "memory" | "swap"));
                            o.insert(
                                k.clone(),
                                if num {
                                    json!(v.parse::<i64>().unwrap_or(0))
                                } else {
                                    json!(v)
                                },
                            );
                        }
                        o.insert("digest".into(), json!(digest_of(&g.config)));
                        ok(Value::Object(o))
                    }
                    ("GET", ["status", "current"]) => {
                        let w = self.world.lock().unwrap();
                        let g = &w.guests[&id];
                        ok(
                            json!({"vmid": id, "status": if g.running {"running"} else {"stopped"}, "name": g.config.get("name").or(g.config.get("hostname"))}),
                        )
                    }
                    ("PUT", ["config"]) | ("POST", ["config"]) => {
                        // Synchronous: the guest's lock, then the storages of new disks.
                        let mut locks = vec![lockname(vmid)];
                        for (k, v) in &p {
                            if is_disk(k) && is_alloc(v) {
                                locks.push(format!(
                                    "pve-manager/pve-storage-{}",
                                    v.split(':').next().unwrap()
                                ));
                            }
                        }
                        let mut taken: Vec<String> = vec![];
                        for l in &locks {
                            if let Err(e) = self.locks.acquire(l, lock_wait) {
                                for t in &taken {
                                    self.locks.release(t);
                                }
                                return fail(500, e);
                            }
                            taken.push(l.clone());
                        }
                        let task = self.timing.lock().unwrap().task;
                        std::thread::sleep(task / 2);
                        let r = (|| {
                            let mut w = self.world.lock().unwrap();
                            if let Some((gid, k, v)) = w.meanwhile.take_if(|m| m.0 == id) {
                                w.guests.get_mut(&gid).unwrap().config.insert(k, v);
                            }
                            let cur = digest_of(&w.guests[&id].config);
                            if let Some(d) = p.get("digest") {
                                if d != &cur {
                                    return fail(500, format!("{} {vmid}: detected modified configuration - file changed by other user? Try again.", if kind == "qemu" {"VM"} else {"CT"}));
                                }
                            }
                            let mut lines = vec![];
                            let mut updates = vec![];
                            for (k, v) in &p {
                                if matches!(k.as_str(), "digest" | "delete" | "node" | "vmid") {
                                    continue;
                                }
                                let v = if is_disk(k) && is_alloc(v) {
                                    match alloc(&mut w, id, k, v, &mut lines) {
                                        Ok(v) => v,
                                        Err(e) => return fail(500, e),
                                    }
                                } else if k.starts_with("net") && !v.contains(':') {
                                    with_mac(kind, id, k, v)
                                } else {
                                    v.clone()
                                };
                                updates.push((k.clone(), v));
                            }
                            let g = w.guests.get_mut(&id).unwrap();
                            for (k, v) in updates {
                                g.config.insert(k, v);
                            }
                            for k in p
                                .get("delete")
                                .map(|d| d.split(',').map(String::from).collect::<Vec<_>>())
                                .unwrap_or_default()
                            {
                                g.config.remove(&k);
                            }
                            ok(Value::Null)
                        })();
                        for t in &taken {
                            self.locks.release(t);
                        }
                        r
                    }
                    ("PUT", ["resize"]) => {
                        let disk = p["disk"].clone();
                        let size = p["size"].clone();
                        let digest = p.get("digest").cloned();
                        let vmid = vmid.to_string();
                        self.task("resize", &vmid.clone(), vec![lockname(&vmid)], move |w| {
                            let g = w.guests.get_mut(&id).unwrap();
                            if let Some(d) = digest { if d != digest_of(&g.config) { return Err("detected modified configuration - file changed by other user? Try again.".into()); } }
                            let Some(v) = g.config.get(&disk).cloned() else { return Err(format!("disk '{disk}' does not exist")) };
                            let file = v.split(',').next().unwrap().to_string();
                            g.config.insert(disk.clone(), format!("{file},size={size}"));
                            Ok(vec![format!("resized {disk} to {size}")])
                        })
                    }
                    ("POST", ["status", verb @ ("start" | "stop" | "shutdown")]) => {
                        let run = *verb == "start";
                        self.task(
                            &format!("{}{verb}", if kind == "qemu" { "qm" } else { "vz" }),
                            vmid,
                            vec![lockname(vmid)],
                            move |w| {
                                let g = w.guests.get_mut(&id).unwrap();
                                if run && g.running {
                                    return Err(format!("VM {id} already running"));
                                }
                                g.running = run;
                                Ok(vec![])
                            },
                        )
                    }
                    ("DELETE", []) => {
                        let purge = p.get("purge").is_some_and(|v| v == "1");
                        self.task(
                        if kind == "qemu" {
                            "qmdestroy"
                        } else {
                            "vzdestroy"
                        },
                        vmid,
                        vec![lockname(vmid)],
                        move |w| {
                            if w.guests[&id].running {
                                return Err(format!("VM {id} is running - destroy failed"));
                            }
                            let sid = format!("{}:{id}", if kind == "qemu" { "vm" } else { "ct" });
                            if w.ha.contains_key(&sid) {
                                if !purge {
                                    return Err(format!("unable to remove VM {id} - used in HA resources and purge parameter not set."));
                                }
                                w.ha.remove(&sid);
                            }
                            w.guests.remove(&id);
                            Ok(vec![format!("destroyed {id}")])
                        },
                    )
                    }
                    _ => fail(
                        501,
                        format!(
                            "Method '{m} {}/{vmid}/{}' not implemented in the simulator",
                            kind,
                            rest.join("/")
                        ),
                    ),
                }
            }
            _ => fail(501, "not implemented in the simulator"),
        }
    }
}

impl Shared {
    /// `/cluster/ha/resources[/{sid}]`: writes are synchronous and take
    /// PVE's cluster-wide HA domain lock; the simulated CRM starts or
    /// stops the guest as the resource's state asks.
    fn ha(
        self: &Arc<Self>,
        method: &str,
        rest: &[&str],
        p: BTreeMap<String, String>,
        lock_wait: Duration,
    ) -> Reply {
        let sid_of = |w: &World, raw: &str| -> Result<(String, u32), String> {
            let (ty, id) = match raw.split_once(':') {
                Some((t, id)) => (Some(t.to_string()), id),
                None => (None, raw),
            };
            let id: u32 = id
                .parse()
                .map_err(|_| format!("invalid HA resource ID '{raw}'"))?;
            let g = w
                .guests
                .get(&id)
                .ok_or_else(|| format!("unable to find VM {id}"))?;
            let want = if g.kind == "qemu" { "vm" } else { "ct" };
            if ty.as_deref().is_some_and(|t| t != want) {
                return Err(format!(
                    "resource type '{}' does not match guest {id} ({want})",
                    ty.unwrap()
                ));
            }
            Ok((format!("{want}:{id}"), id))
        };
        if method == "GET" {
            let w = self.world.lock().unwrap();
            return match rest {
                [] => ok(Value::Array(
                    w.ha.iter()
                        .map(|(sid, c)| {
                            let mut o = obj(c);
                            o["sid"] = json!(sid);
                            o["type"] = json!(sid.split(':').next());
                            o
                        })
                        .collect(),
                )),
                [raw] => {
                    let sid = match sid_of(&w, raw) {
                        Ok((sid, _)) => sid,
                        Err(_) => raw.to_string(),
                    };
                    match w.ha.get(&sid) {
                        Some(c) => {
                            let mut o = obj(c);
                            o["sid"] = json!(sid);
                            o["type"] = json!(sid.split(':').next());
                            o["digest"] = json!(digest_of(c));
                            ok(o)
                        }
                        None => fail(500, format!("no such resource '{sid}'")),
                    }
                }
                _ => fail(501, "not implemented in the simulator"),
            };
        }
        let lock = "domain-ha";
        if self.locks.acquire(lock, lock_wait).is_err() {
            return fail(
                500,
                format!("cfs-lock '{lock}' error: got lock request timeout"),
            );
        }
        let task = self.timing.lock().unwrap().task;
        std::thread::sleep(task / 2);
        let r = (|| {
            let mut w = self.world.lock().unwrap();
            let raw = match (method, rest) {
                ("POST", []) => p["sid"].clone(),
                (_, [raw]) => raw.to_string(),
                _ => return fail(501, "not implemented in the simulator"),
            };
            let (sid, id) = match sid_of(&w, &raw) {
                Ok(x) => x,
                Err(e) => return fail(500, e),
            };
            if let Some(g) = p.get("group") {
                if !w.ha_groups.contains(g) {
                    return fail(500, format!("HA group '{g}' does not exist"));
                }
            }
            match method {
                "POST" => {
                    if w.ha.contains_key(&sid) {
                        return fail(500, format!("resource ID '{sid}' already defined"));
                    }
                    let mut c = p.clone();
                    c.remove("sid");
                    c.remove("type");
                    w.ha.insert(sid.clone(), c);
                }
                "PUT" => {
                    let Some(c) = w.ha.get_mut(&sid) else {
                        return fail(500, format!("no such resource '{sid}'"));
                    };
                    if let Some(d) = p.get("digest") {
                        if d != &digest_of(c) {
                            return fail(500, "detected modified configuration - file changed by other user? Try again.");
                        }
                    }
                    for (k, v) in &p {
                        if !matches!(k.as_str(), "sid" | "digest" | "delete") {
                            c.insert(k.clone(), v.clone());
                        }
                    }
                    for k in p
                        .get("delete")
                        .map(|d| d.split(',').map(String::from).collect::<Vec<_>>())
                        .unwrap_or_default()
                    {
                        c.remove(&k);
                    }
                }
                "DELETE" => {
                    if w.ha.remove(&sid).is_none() {
                        return fail(500, format!("no such resource '{sid}'"));
                    }
                    return ok(Value::Null);
                }
                _ => return fail(501, "not implemented in the simulator"),
            }
            // The CRM acts on the requested state.
            let state = w.ha[&sid]
                .get("state")
                .cloned()
                .unwrap_or_else(|| "started".into());
            if let Some(g) = w.guests.get_mut(&id) {
                match state.as_str() {
                    "started" | "enabled" => g.running = true,
                    "stopped" | "disabled" => g.running = false,
                    _ => {}
                }
            }
            ok(Value::Null)
        })();
        self.locks.release(lock);
        r
    }
}

fn is_disk(k: &str) -> bool {
    let b = k.trim_end_matches(|c: char| c.is_ascii_digit());
    k == "rootfs" || (b.len() < k.len() && matches!(b, "scsi" | "virtio" | "sata" | "ide" | "mp"))
}

/// `STORAGE:SIZE` (a new volume) rather than an existing volume name.
fn is_alloc(v: &str) -> bool {
    let file = v.split(',').next().unwrap_or_default();
    file.split_once(':')
        .is_some_and(|(_, s)| s.parse::<f64>().is_ok())
}

fn alloc(
    w: &mut World,
    id: u32,
    key: &str,
    v: &str,
    lines: &mut Vec<String>,
) -> Result<String, String> {
    let mut parts = v.split(',');
    let file = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let Some((st, size)) = file.split_once(':') else {
        return Ok(v.to_string());
    };
    if size.parse::<f64>().is_err() {
        return Ok(v.to_string());
    }
    if !w.storage.contains_key(st) {
        return Err(format!("storage '{st}' does not exist"));
    }
    let n = w
        .guests
        .values()
        .flat_map(|g| g.config.values())
        .filter(|x| x.contains(&format!("vm-{id}-disk-")))
        .count()
        + lines
            .iter()
            .filter(|l| l.contains("Logical volume"))
            .count();
    let vol = format!("{st}:vm-{id}-disk-{n}");
    lines.push(format!(
        "  Logical volume \"vm-{id}-disk-{n}\" created ({key})."
    ));
    let mut out = format!("{vol},size={size}G");
    for r in rest {
        if !r.starts_with("size=") {
            out.push(',');
            out.push_str(r);
        }
    }
    Ok(out)
}

/// A NIC as PVE stores it: a generated MAC (`virtio=BC:24:11:..` for a VM, `hwaddr=` for a CT).
fn with_mac(kind: &str, id: u32, key: &str, v: &str) -> String {
    let idx: u32 = key.trim_start_matches("net").parse().unwrap_or(0);
    let mac = format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        (id >> 8) & 0xff,
        id & 0xff,
        idx
    );
    if kind == "lxc" {
        if v.contains("hwaddr=") {
            return v.to_string();
        }
        return format!("{v},hwaddr={mac},type=veth");
    }
    let mut model = "virtio".to_string();
    let mut rest = vec![];
    for part in v.split(',') {
        match part.split_once('=') {
            Some(("model", m)) => model = m.to_string(),
            Some(_) => rest.push(part.to_string()),
            None => model = part.to_string(),
        }
    }
    let mut out = format!("{model}={mac}");
    for r in rest {
        if !r.starts_with("macaddr=") {
            out.push(',');
            out.push_str(&r);
        }
    }
    out
}

fn obj(m: &BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect()
}

fn reason(status: u16, r: &str) -> String {
    // A status line carries no newline or control character.
    let r: String = r.chars().filter(|c| !c.is_control()).collect();
    if r.is_empty() {
        format!("{status}")
    } else {
        r
    }
}

fn serve(shared: Arc<Shared>, mut stream: impl Read + Write) {
    let mut reader = BufReader::new(&mut stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut it = line.split_whitespace();
    let method = it.next().unwrap_or_default().to_string();
    let target = it.next().unwrap_or_default().to_string();
    let mut auth = None;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => auth = Some(v.trim().to_string()),
                "content-length" => len = v.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let mut params = BTreeMap::new();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let mut dup = None;
    for (k, v) in parse_form(query).into_iter().chain(parse_form(&body_text)) {
        if params.insert(k.clone(), v).is_some() {
            dup = Some(k);
        }
    }
    let (status, why, value) = match dup {
        Some(k) => fail(
            400,
            format!("Parameter verification failed: {k} given twice"),
        ),
        None => shared.handle(&method, path, auth.as_deref(), params),
    };
    let text = value.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        reason(status, &why),
        text.len()
    );
    let _ = stream.flush();
}

impl Sim {
    /// Starts the simulator with storage `local` (dir) and `local-lvm`
    /// (lvmthin), as a fresh PVE node has them.
    pub fn start(timing: Timing) -> Sim {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        let st = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
            ])
            .args(["-subj", "/CN=pve", "-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "openssl req failed");
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        let fingerprint = hex::encode(Sha256::digest(der.as_ref()));
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], PrivateKeyDer::from_pem_file(&key).unwrap())
            .unwrap(),
        );
        let mut world = World::default();
        world.storage.insert(
            "local".into(),
            [
                ("type", "dir"),
                ("path", "/var/lib/vz"),
                ("content", "backup,iso,vztmpl"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        world.storage.insert(
            "local-lvm".into(),
            [
                ("type", "lvmthin"),
                ("thinpool", "data"),
                ("vgname", "pve"),
                ("content", "images,rootdir"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        let world = Arc::new(Mutex::new(world));
        let writes = Arc::new(AtomicU64::new(0));
        let timing = Arc::new(Mutex::new(timing));
        let shared = Arc::new(Shared {
            schema: Schema::load(),
            world: world.clone(),
            writes: writes.clone(),
            timing: timing.clone(),
            locks: Locks::default(),
            seq: AtomicU64::new(1),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            // Bounded: the simulator stops by itself after 10 minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                let Ok((tcp, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let config = config.clone();
                let shared = shared.clone();
                std::thread::spawn(move || {
                    tcp.set_nonblocking(false).unwrap();
                    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let tls = rustls::StreamOwned::new(conn, tcp);
                    serve(shared, tls);
                });
            }
        });
        Sim {
            url: format!("https://{addr}"),
            fingerprint,
            cert_pem: cert,
            world,
            writes,
            timing,
            stop,
            _dir: dir,
        }
    }

    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn guest(&self, vmid: u32) -> Option<Guest> {
        self.world.lock().unwrap().guests.get(&vmid).cloned()
    }
}
