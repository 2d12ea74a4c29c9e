//! A remote witness of the audit log (`plugins.opdbus.audit.witness`):
//! after every block the new signed checkpoint is POSTed as JSON to the
//! witness's https URL, over TLS to the certificate pinned by its SHA-256.
//! Each answer (or failure) is a line of `audit-checkpoints/witness.jsonl`;
//! a witness that is down never fails the apply, `status` and `audit
//! verify` report it. A witness that kept the checkpoints can later show
//! that the host's history was rewritten or cut, whatever happens on the host.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoint, Store};
use crate::engine::state_dir::FILE_MODE;

/// The receipts, next to the checkpoints.
pub const RECEIPTS_FILE: &str = "witness.jsonl";
/// How long one send may take (connect included): an apply waits at most this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The most of a witness's answer that is kept.
const MAX_ANSWER: usize = 64 * 1024;

/// Where checkpoints go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub url: String,
    /// Lower-case hex, no colons.
    pub fingerprint: String,
}

impl Witness {
    /// The witness a (validated) state names, if any.
    pub fn from_state(raw: &serde_json::Value) -> Option<Witness> {
        let w = raw.pointer("/plugins/opdbus/audit/witness")?;
        let fingerprint: String = w
            .get("fingerprint")?
            .as_str()?
            .chars()
            .filter(|c| *c != ':')
            .collect();
        Some(Witness {
            url: w.get("url")?.as_str()?.to_string(),
            fingerprint: fingerprint.to_ascii_lowercase(),
        })
    }
}

/// What the witness said about one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Unix seconds when the answer came (or the send failed).
    pub time: i64,
    pub url: String,
    pub block: i64,
    pub tree_size: u64,
    pub root_hash: String,
    /// The witness answered 2xx.
    pub ok: bool,
    pub http_status: Option<u16>,
    /// Its answer: JSON when it sent JSON, else the text (at most 64 KiB).
    pub answer: Option<serde_json::Value>,
    pub error: Option<String>,
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ok {
            write!(
                f,
                "witness {}: acknowledged block {} (tree {}) at {}",
                self.url, self.block, self.tree_size, self.time
            )
        } else {
            write!(
                f,
                "witness {}: block {} (tree {}) NOT acknowledged: {} (the apply went on; the next checkpoint is sent again)",
                self.url,
                self.block,
                self.tree_size,
                self.error.as_deref().unwrap_or("no answer")
            )
        }
    }
}

/// Sends `cp` and returns the witness's answer; never fails (a failure is a
/// receipt with `ok: false`).
pub async fn send(w: &Witness, cp: &Checkpoint, timeout: Duration) -> Receipt {
    let mut receipt = Receipt {
        time: 0,
        url: w.url.clone(),
        block: cp.block,
        tree_size: cp.tree_size,
        root_hash: cp.root_hash.clone(),
        ok: false,
        http_status: None,
        answer: None,
        error: None,
    };
    match post(w, cp, timeout).await {
        Ok((status, body)) => {
            receipt.http_status = Some(status);
            receipt.ok = (200..300).contains(&status);
            let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER)]).into_owned();
            receipt.answer = Some(
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text.clone())),
            );
            if !receipt.ok {
                receipt.error = Some(format!("HTTP {status}: {}", text.trim()));
            }
        }
        Err(e) => receipt.error = Some(e),
    }
    receipt.time = super::now_unix();
    receipt
}

async fn post(w: &Witness, cp: &Checkpoint, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let pin = Arc::new(crate::tls_pin::CertPin::new(
        &w.fingerprint,
        "the audit witness",
        "plugins.opdbus.audit.witness.fingerprint",
        "check the witness's certificate with `openssl x509 -in CERT -noout -fingerprint -sha256`",
    ));
    let tls = pin
        .client_config()
        .map_err(|e| format!("setting up TLS: {e}"))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("building the HTTPS client: {e}"))?;
    let chain = |e: &dyn std::error::Error| {
        let mut out = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            out.push_str(": ");
            out.push_str(&s.to_string());
            src = s.source();
        }
        out
    };
    let resp = client
        .post(&w.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(cp).unwrap_or_default())
        .send()
        .await
        .map_err(|e| chain(&e))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| chain(&e))?;
    Ok((status, body.to_vec()))
}

/// Appends a receipt to `witness.jsonl` (0600).
pub fn record(store: &Store, r: &Receipt) -> std::io::Result<()> {
    let path = store.dir().join(RECEIPTS_FILE);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let line = serde_json::to_string(r).unwrap_or_default() + "\n";
    f.write_all(line.as_bytes())
}

/// The latest receipt, if a witness was ever asked.
pub fn last(state_dir: &Path) -> Option<Receipt> {
    let path = Store::new(state_dir).dir().join(RECEIPTS_FILE);
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
}

/// After a block: sends the latest checkpoint to the witness the state
/// names and records the answer. Logs a failure; never fails.
pub async fn notify(state_dir: &Path, desired: &serde_json::Value) -> Option<Receipt> {
    let w = Witness::from_state(desired)?;
    let store = Store::new(state_dir);
    let cp = match store.latest() {
        Ok(Some(cp)) => cp,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!("audit witness: reading the latest checkpoint: {e:#}");
            return None;
        }
    };
    let receipt = send(&w, &cp, TIMEOUT).await;
    if receipt.ok {
        tracing::debug!(block = receipt.block, url = %receipt.url, "audit witness acknowledged");
    } else {
        tracing::warn!("{receipt}");
    }
    if let Err(e) = record(&store, &receipt) {
        tracing::warn!(
            "audit witness: recording the answer in {}: {e}",
            store.dir().display()
        );
    }
    Some(receipt)
}

/// One line for `status` and `audit verify`: the latest receipt, and
/// whether the latest checkpoint is still unacknowledged.
pub fn summary(state_dir: &Path) -> Option<String> {
    let r = last(state_dir)?;
    let latest = Store::new(state_dir).latest().ok().flatten();
    match latest {
        Some(cp) if r.ok && cp.block > r.block => Some(format!(
            "{r}; the latest checkpoint (block {}) was not sent yet",
            cp.block
        )),
        _ => Some(r.to_string()),
    }
}
