//! Secrets (password hashes, keys) never leave the engine: audit records,
//! reports, `diff --json`, `query`, `audit export` and D-Bus replies carry a
//! fingerprint instead, so a change stays visible without the value.
//! Each plugin names its secrets through [`crate::engine::Plugin::redact`].

use sha2::{Digest, Sha256};

/// `sha256:` and the first 12 hex digits of the secret's SHA-256.
pub fn fingerprint(secret: &str) -> String {
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    format!("sha256:{}", &digest[..12])
}

/// Whether `s` is already a fingerprint (redacting twice changes nothing).
pub fn is_fingerprint(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Replaces the string value of every member named in `keys`, at any depth
/// of `v`, with its fingerprint.
pub fn redact_keys(v: &mut serde_json::Value, keys: &[&str]) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match val {
                    serde_json::Value::String(s) if keys.contains(&k.as_str()) => {
                        if !is_fingerprint(s) {
                            *s = fingerprint(s);
                        }
                    }
                    other => redact_keys(other, keys),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| redact_keys(x, keys)),
        _ => {}
    }
}

/// Every member of a state file that holds a secret, whatever plugin reads
/// it: the union of the plugins' [`crate::engine::Plugin::redact`] keys and
/// the installer's `root_password_hash`.
pub const STATE_SECRET_KEYS: &[&str] = &[
    "password_hash",
    "root_password_hash",
    "private_key",
    "preshared_key",
    "password",
    "cipassword",
    "encryption-key",
    "token",
    "keyring",
];

/// A desired state with every secret fingerprinted, as a block keeps it
/// (`rollback --to-block` restores the secrets from the host's files).
pub fn redact_state(state: &serde_json::Value) -> serde_json::Value {
    let mut v = state.clone();
    redact_keys(&mut v, STATE_SECRET_KEYS);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_members_are_fingerprinted_once() {
        let mut v = serde_json::json!({
            "accounts": {"a": {"password_hash": "$6$s$h", "uid": 1}},
            "list": [{"password_hash": "$y$j9T$x$y"}],
            "other": "$6$s$h"
        });
        redact_keys(&mut v, &["password_hash"]);
        let fp = fingerprint("$6$s$h");
        assert_eq!(v["accounts"]["a"]["password_hash"], fp.as_str());
        assert_eq!(v["other"], "$6$s$h");
        assert!(is_fingerprint(
            v["list"][0]["password_hash"].as_str().unwrap_or("")
        ));
        let again = v.clone();
        redact_keys(&mut v, &["password_hash"]);
        assert_eq!(v, again);
    }
}
