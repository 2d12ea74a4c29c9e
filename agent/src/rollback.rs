//! `rollback --to-block N`: the desired state block N applied, read back
//! from the audit log (which must verify), its fingerprinted secrets
//! restored from the host's own files, checked against the state hash the
//! block recorded, ready to be applied as a new transaction (so the history
//! only grows).
//!
//! Where secrets come from: `<root>/etc/shadow` (password hashes of
//! `users` accounts and `root_password_hash`), `<root>/etc/wireguard/*.conf`
//! (`PrivateKey`, `PresharedKey`), and any `--secrets-from FILE` (a JSON
//! file such as the state file that had them: every string in it). A value
//! is restored only when its SHA-256 fingerprint is the recorded one.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::audit::{AuditLog, BlockRange};
use crate::engine::secret::{fingerprint, is_fingerprint, STATE_SECRET_KEYS};
use crate::engine::DesiredState;

/// The state to re-apply and where its secrets came from.
#[derive(Debug)]
pub struct Plan {
    pub block: i64,
    pub state: DesiredState,
    pub restored: Vec<Restored>,
}

/// One secret put back: its JSON pointer, fingerprint and source file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Restored {
    pub pointer: String,
    pub fingerprint: String,
    pub source: PathBuf,
}

/// Secrets a rollback could not restore.
#[derive(Debug, thiserror::Error)]
#[error("block {block}'s state has secrets that were redacted and that none of {} holds:\n{}\ngive the state file that had them with --secrets-from FILE (nothing was changed)",
    searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    missing.iter().map(|(p, f)| format!("  {p} ({f})")).collect::<Vec<_>>().join("\n"))]
pub struct Unrestorable {
    pub block: i64,
    /// (JSON pointer, fingerprint).
    pub missing: Vec<(String, String)>,
    pub searched: Vec<PathBuf>,
}

/// Candidate secrets by fingerprint, with the file each came from.
#[derive(Debug, Default)]
pub struct Secrets {
    by_fingerprint: BTreeMap<String, (String, PathBuf)>,
    searched: Vec<PathBuf>,
}

impl Secrets {
    /// The host's files below `root`, then each of `extra` (JSON files).
    pub fn gather(root: &Path, extra: &[PathBuf]) -> anyhow::Result<Secrets> {
        let mut s = Secrets::default();
        let shadow = root.join("etc/shadow");
        if let Some(text) = read_private(&shadow)? {
            for line in text.lines() {
                if let Some(hash) = line.split(':').nth(1) {
                    s.add(hash, &shadow);
                }
            }
        }
        s.searched.push(shadow);
        let wg = root.join("etc/wireguard");
        if let Ok(dir) = std::fs::read_dir(&wg) {
            let mut confs: Vec<PathBuf> = dir
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect();
            confs.sort();
            for conf in confs {
                if let Some(text) = read_private(&conf)? {
                    for line in text.lines() {
                        if let Some((k, v)) = line.split_once('=') {
                            if matches!(k.trim(), "PrivateKey" | "PresharedKey") {
                                s.add(v.trim(), &conf);
                            }
                        }
                    }
                }
                s.searched.push(conf);
            }
        }
        for file in extra {
            let text = read_private(file)?
                .with_context(|| format!("--secrets-from {}: no such file", file.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("--secrets-from {}: not JSON", file.display()))?;
            s.add_strings(&v, file);
            s.searched.push(file.clone());
        }
        Ok(s)
    }

    fn add(&mut self, secret: &str, source: &Path) {
        if secret.is_empty() || is_fingerprint(secret) {
            return;
        }
        self.by_fingerprint
            .entry(fingerprint(secret))
            .or_insert_with(|| (secret.to_string(), source.to_path_buf()));
    }

    fn add_strings(&mut self, v: &serde_json::Value, source: &Path) {
        match v {
            serde_json::Value::String(s) => self.add(s, source),
            serde_json::Value::Array(a) => a.iter().for_each(|x| self.add_strings(x, source)),
            serde_json::Value::Object(m) => m.values().for_each(|x| self.add_strings(x, source)),
            _ => {}
        }
    }

    /// Puts back every fingerprinted secret of `state`; the pointers it
    /// could not restore are returned.
    pub fn restore(&self, state: &mut serde_json::Value) -> (Vec<Restored>, Vec<(String, String)>) {
        let mut restored = Vec::new();
        let mut missing = Vec::new();
        self.walk(state, String::new(), &mut restored, &mut missing);
        (restored, missing)
    }

    fn walk(
        &self,
        v: &mut serde_json::Value,
        pointer: String,
        restored: &mut Vec<Restored>,
        missing: &mut Vec<(String, String)>,
    ) {
        let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
        match v {
            serde_json::Value::Object(m) => {
                for (k, val) in m.iter_mut() {
                    let p = format!("{pointer}/{}", escape(k));
                    match val {
                        serde_json::Value::String(s)
                            if STATE_SECRET_KEYS.contains(&k.as_str()) && is_fingerprint(s) =>
                        {
                            match self.by_fingerprint.get(s.as_str()) {
                                Some((secret, source)) => {
                                    restored.push(Restored {
                                        pointer: p,
                                        fingerprint: s.clone(),
                                        source: source.clone(),
                                    });
                                    *s = secret.clone();
                                }
                                None => missing.push((p, s.clone())),
                            }
                        }
                        other => self.walk(other, p, restored, missing),
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    self.walk(x, format!("{pointer}/{i}"), restored, missing);
                }
            }
            _ => {}
        }
    }
}

/// Reads a regular file without following a symlink; `None` if it is absent.
fn read_private(path: &Path) -> anyhow::Result<Option<String>> {
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut text = String::new();
    f.read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(text))
}

/// The state block `block` applied, secrets restored from `secrets`,
/// validated, its hash equal to the one the block recorded. Refuses a log
/// that does not verify, a block that kept no state, and secrets that
/// cannot be restored.
pub fn plan(state_dir: &Path, block: i64, secrets: &Secrets) -> anyhow::Result<Plan> {
    let report = crate::audit::verify_state_dir(state_dir, None)
        .with_context(|| format!("verifying the audit log in {}", state_dir.display()))?;
    if let Some(brk) = report.broken {
        anyhow::bail!("{brk}: the recorded states cannot be trusted, so nothing is rolled back (see `op-dbus-agent audit verify`)");
    }
    let log = AuditLog::open_existing(state_dir)?;
    let range = BlockRange {
        from: Some(block),
        to: Some(block),
    };
    let Some(b) = log.blocks(range)?.pop() else {
        let all = log.blocks(BlockRange::all())?;
        anyhow::bail!(
            "no block {block} in the audit log (it holds blocks {}..={}{})",
            all.first().map_or(0, |b| b.id),
            all.last().map_or(0, |b| b.id),
            report
                .archived_through
                .map(|a| format!("; blocks 0..={a} are archived and cannot be rolled back to"))
                .unwrap_or_default()
        );
    };
    let (Some(mut state), Some(hash)) = (b.state, b.state_hash) else {
        anyhow::bail!(
            "block {block} keeps no desired state (only blocks an apply wrote since this version do): apply the state file you want instead"
        );
    };
    let (restored, missing) = secrets.restore(&mut state);
    if !missing.is_empty() {
        return Err(Unrestorable {
            block,
            missing,
            searched: secrets.searched.clone(),
        }
        .into());
    }
    let desired = DesiredState::from_json(&state.to_string(), &format!("block {block}"))?;
    anyhow::ensure!(
        desired.hash == hash,
        "block {block}'s state with its secrets restored hashes to {}, not to the {hash} the block recorded: a restored secret is not the one applied then; nothing was changed",
        desired.hash
    );
    Ok(Plan {
        block,
        state: desired,
        restored,
    })
}
