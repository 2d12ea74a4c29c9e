//! A small async client for the PVE REST API (`/api2/json`): API token
//! authentication, the server certificate pinned by its SHA-256, form
//! bodies as PVE's own clients send them, and task (UPID) polling with a
//! deadline that puts the task's log into the error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::tls_pin::CertPin;
use sha2::{Digest, Sha256};

/// A failed API call, as the plugin reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        message: String,
    },
    #[error("{method} {path}: {detail}")]
    Transport {
        method: String,
        path: String,
        detail: String,
    },
    #[error("PVE task {upid} failed: {exitstatus}; task log:\n{log}")]
    Task {
        upid: String,
        exitstatus: String,
        log: String,
    },
    #[error(
        "PVE task {upid} still running after {secs} s (api.task_timeout); task log so far:\n{log}"
    )]
    TaskTimeout {
        upid: String,
        secs: u64,
        log: String,
    },
}

impl ApiError {
    /// A lock held by another writer ("can't lock file ... got timeout"),
    /// a config changed under us (digest), or a busy server: trying again
    /// after re-reading can help.
    pub fn is_retryable(&self) -> bool {
        let text = match self {
            ApiError::Status {
                status, message, ..
            } => {
                if *status == 503 {
                    return true;
                }
                message.as_str()
            }
            ApiError::Task { exitstatus, .. } => exitstatus.as_str(),
            ApiError::Transport { .. } => return true,
            ApiError::TaskTimeout { .. } => return false,
        };
        (text.contains("can't lock file") && text.contains("got timeout"))
            || (text.contains("cfs-lock") && text.contains("got lock request timeout"))
            || text.contains("detected modified configuration")
    }
}

/// Where and how to reach the API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    /// `USER@REALM!TOKENID=SECRET`.
    pub token: String,
    /// Lower-case hex SHA-256 of the server certificate (DER).
    pub fingerprint: String,
    pub task_timeout: Duration,
}

/// The first line of a secret file (`what` names it in errors): a
/// regular file, not a symlink, owned by the agent's user and readable by
/// nobody else (0600 or stricter). The secret is in no error.
pub fn read_private(path: &Path, what: &str) -> anyhow::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            anyhow::anyhow!(
                "reading {what} {}: {e}; create it as a regular file of mode 0600",
                path.display()
            )
        })?;
    let meta = f
        .metadata()
        .map_err(|e| anyhow::anyhow!("reading {what} {}: {e}", path.display()))?;
    anyhow::ensure!(
        meta.file_type().is_file(),
        "{what} {} is not a regular file; point the state at a file",
        path.display()
    );
    anyhow::ensure!(
        meta.mode() & 0o077 == 0,
        "{what} {} is readable by group or others (mode {:o}); run chmod 600 on it",
        path.display(),
        meta.mode() & 0o7777
    );
    anyhow::ensure!(
        meta.uid() == nix::unistd::geteuid().as_raw(),
        "{what} {} belongs to uid {}, not to the agent (uid {}); run chown on it",
        path.display(),
        meta.uid(),
        nix::unistd::geteuid()
    );
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("reading {what} {}: {e}", path.display()))?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string();
    anyhow::ensure!(!line.is_empty(), "{what} {} is empty", path.display());
    Ok(line)
}

/// Reads the API token from `path`: it must be a regular file owned by
/// the agent's user and readable by nobody else (0600 or stricter).
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    const WHAT: &str = "the PVE API token file";
    if std::fs::symlink_metadata(path).is_err() {
        anyhow::bail!(
            "reading {WHAT} {} (plugins.proxmox.api.token_file): no such file; create it with one line USER@REALM!TOKENID=SECRET, mode 0600",
            path.display()
        );
    }
    let token = read_private(path, WHAT)?;
    let valid = token
        .split_once('!')
        .and_then(|(user, rest)| rest.split_once('=').map(|(id, secret)| (user, id, secret)))
        .is_some_and(|(user, id, secret)| {
            user.contains('@') && !id.is_empty() && !secret.is_empty()
        });
    anyhow::ensure!(
        valid,
        "the PVE API token file {} does not hold USER@REALM!TOKENID=SECRET (as `pveum user token add` prints it)",
        path.display()
    );
    Ok(token)
}

/// The SHA-256 (lower-case hex) of the first certificate in a PEM file:
/// the node's own `/etc/pve/local/pve-ssl.pem` by default.
pub fn pem_fingerprint(path: &Path) -> anyhow::Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let cert = CertificateDer::from_pem_file(path).map_err(|e| {
        anyhow::anyhow!(
            "reading the PVE certificate {}: {e}; set plugins.proxmox.api.fingerprint to the SHA-256 of the server certificate",
            path.display()
        )
    })?;
    Ok(hex::encode(Sha256::digest(cert.as_ref())))
}

/// A fingerprint as written in a state (`AB:CD:...` or plain hex), normalized.
pub fn normalize_fingerprint(text: &str) -> anyhow::Result<String> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    anyhow::ensure!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "plugins.proxmox.api.fingerprint {text:?}: expected the SHA-256 of the certificate, 64 hexadecimal digits (colons allowed)"
    );
    Ok(hex.to_ascii_lowercase())
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: String,
    task_timeout: Duration,
}

impl Client {
    pub fn new(ep: &Endpoint) -> anyhow::Result<Self> {
        let pin = Arc::new(CertPin::new(
            &ep.fingerprint,
            "the PVE server",
            "plugins.proxmox.api.fingerprint",
            "check it on the node with `openssl x509 -in /etc/pve/local/pve-ssl.pem -noout -fingerprint -sha256`",
        ));
        let tls = pin
            .client_config()
            .map_err(|e| anyhow::anyhow!("setting up TLS for the PVE API: {e}"))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("building the PVE API client: {e}"))?;
        Ok(Self {
            http,
            base: format!("{}/api2/json", ep.url.trim_end_matches('/')),
            auth: format!("PVEAPIToken={}", ep.token),
            task_timeout: ep.task_timeout,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Value, ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("Authorization", &self.auth);
        if !params.is_empty() {
            req = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
                req.query(params)
            } else {
                req.form(params)
            };
        }
        let transport = |e: reqwest::Error| ApiError::Transport {
            method: method.to_string(),
            path: path.to_string(),
            // The error's chain names the certificate mismatch.
            detail: format!("{:#}", anyhow::Error::from(e)),
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let mut message = json
                .get("message")
                .and_then(Value::as_str)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
            if let Some(errors) = json.get("errors").and_then(Value::as_object) {
                let detail: Vec<String> = errors
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.as_str().unwrap_or_default().trim()))
                    .collect();
                message = format!("{message} ({})", detail.join("; "));
            }
            return Err(ApiError::Status {
                method: method.to_string(),
                path: path.to_string(),
                status: status.as_u16(),
                message,
            });
        }
        Ok(json.get("data").cloned().unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(reqwest::Method::GET, path, &[]).await
    }

    /// GET that maps "does not exist" (500 with that text, or 404) to `None`.
    pub async fn get_opt(&self, path: &str) -> Result<Option<Value>, ApiError> {
        match self.get(path).await {
            Ok(v) => Ok(Some(v)),
            Err(ApiError::Status {
                status, message, ..
            }) if status == 404
                || message.contains("does not exist")
                || message.contains("no such") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn post(&self, path: &str, params: &[(String, String)]) -> Result<Value, ApiError> {
        self.call(reqwest::Method::POST, path, params).await
    }

    pub async fn put(&self, path: &str, params: &[(String, String)]) -> Result<Value, ApiError> {
        self.call(reqwest::Method::PUT, path, params).await
    }

    pub async fn delete(&self, path: &str, params: &[(String, String)]) -> Result<Value, ApiError> {
        self.call(reqwest::Method::DELETE, path, params).await
    }

    /// Waits for a call's result: a UPID string is a task, polled until it
    /// stops (or `task_timeout` passes); anything else is already done.
    pub async fn wait(&self, node: &str, result: Value) -> Result<Option<String>, ApiError> {
        let Some(upid) = result.as_str().filter(|s| s.starts_with("UPID:")) else {
            return Ok(None);
        };
        let path = format!("/nodes/{node}/tasks/{}/status", encode(upid));
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let st = self.get(&path).await?;
            if st.get("status").and_then(Value::as_str) == Some("stopped") {
                let exit = st
                    .get("exitstatus")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string();
                if exit == "OK" {
                    return Ok(Some(upid.to_string()));
                }
                return Err(ApiError::Task {
                    upid: upid.to_string(),
                    exitstatus: exit,
                    log: self.task_log(node, upid).await,
                });
            }
            if start.elapsed() >= self.task_timeout {
                return Err(ApiError::TaskTimeout {
                    upid: upid.to_string(),
                    secs: self.task_timeout.as_secs(),
                    log: self.task_log(node, upid).await,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// The last 50 lines of a task's log (or why they could not be read).
    async fn task_log(&self, node: &str, upid: &str) -> String {
        let path = format!("/nodes/{node}/tasks/{}/log", encode(upid));
        match self
            .call(
                reqwest::Method::GET,
                &path,
                &[("limit".to_string(), "50".to_string())],
            )
            .await
        {
            Ok(Value::Array(lines)) => lines
                .iter()
                .filter_map(|l| l.get("t").and_then(Value::as_str))
                .map(|t| format!("  {t}"))
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(_) => "  (empty)".to_string(),
            Err(e) => format!("  (not readable: {e})"),
        }
    }
}

/// Percent-encodes one path segment (a UPID holds ':' and '@').
pub fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parameters of one write, in a stable order.
pub fn form(params: &BTreeMap<String, String>) -> Vec<(String, String)> {
    params.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> ApiError {
        ApiError::Status {
            method: "PUT".into(),
            path: "/nodes/pve/qemu/100/config".into(),
            status: code,
            message: message.into(),
        }
    }

    #[test]
    fn lock_timeouts_and_stale_digests_are_retryable_the_rest_is_not() {
        assert!(status(
            500,
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
        )
        .is_retryable());
        assert!(status(
            500,
            "VM 100: detected modified configuration - file changed by other user? Try again."
        )
        .is_retryable());
        assert!(
            ApiError::Task {
                upid: "UPID:pve:1:1:1:qmcreate:100:root@pam:".into(),
                exitstatus:
                    "can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout"
                        .into(),
                log: String::new(),
            }
            .is_retryable()
        );
        assert!(!status(
            400,
            "Parameter verification failed. (cores: type check ('integer') failed - got 'two')"
        )
        .is_retryable());
        assert!(!status(500, "storage 'nope' does not exist").is_retryable());
        assert!(!status(401, "authentication failure").is_retryable());
    }

    #[test]
    fn the_token_file_must_be_private_and_well_formed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "root@pam!op=s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token(&f).unwrap(), "root@pam!op=s3cret");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o604)).unwrap();
        let e = read_token(&f).unwrap_err().to_string();
        assert!(
            e.contains("readable by group or others") && !e.contains("s3cret"),
            "{e}"
        );
        std::fs::write(&f, "just-a-secret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = read_token(&f).unwrap_err().to_string();
        assert!(
            e.contains("USER@REALM!TOKENID=SECRET") && !e.contains("just-a-secret"),
            "{e}"
        );
        assert!(normalize_fingerprint(&format!("{}AB", "AB:".repeat(31))).is_ok());
        assert!(normalize_fingerprint("abc").is_err());
    }
}
