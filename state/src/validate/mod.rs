//! Semantic validation of a parsed state: cross-references and values serde
//! cannot check (overlaps, subnets, collisions, hashes). One file per
//! section; every check has its own pinned message.

mod bootstrap;
mod firewall;
mod flows;
mod network;
mod packagekit;
mod proxmox;
mod storage;
mod systemd;
mod users;
mod wireguard;

/// The error diagnostics of a state as (pointer, message) pairs, for the
/// submodules' tests.
#[cfg(test)]
pub(crate) fn test_errors(json: &str) -> Vec<(String, String)> {
    let s = crate::parse::parse_only(json).expect("parses");
    validate(&s)
        .into_iter()
        .filter(|d| d.severity == crate::diag::Severity::Error)
        .map(|d| (d.pointer.clone(), d.message.clone()))
        .collect()
}

pub use flows::flow_problem;
pub use wireguard::is_wg_key;

pub(crate) use bootstrap::valid_package;

use crate::diag::{Diagnostic, Severity};
use crate::State;

/// Every finding about `state`, in document order of the sections; positions
/// are 0:0 until `crate::parse::locate` fills them in.
pub fn validate(state: &State) -> Vec<Diagnostic> {
    let mut cx = Cx::default();
    if state.version != 1 {
        cx.error(
            "/version",
            format!("unsupported version {}", state.version),
            "set \"version\": 1, the only version this installer reads",
        );
    }
    if let Some(b) = &state.bootstrap {
        bootstrap::check(&mut cx, b, state);
    }
    storage::check(&mut cx, state);
    network::check(&mut cx, state);
    flows::check(&mut cx, state);
    systemd::check(&mut cx, state);
    firewall::check(&mut cx, state);
    packagekit::check(&mut cx, state);
    users::check(&mut cx, state);
    wireguard::check(&mut cx, state);
    proxmox::check(&mut cx, state);
    if let Some(layout) = &state.plugins.opdbus {
        for (name, sv) in &layout.subvolumes {
            if let Some(c) = &sv.compression {
                storage::check_compression(
                    &mut cx,
                    crate::diag::pointer(&["plugins", "opdbus", "subvolumes", name, "compression"]),
                    c,
                );
            }
        }
    }
    if let Some(w) = state
        .plugins
        .opdbus
        .as_ref()
        .and_then(|l| l.audit.witness.as_ref())
    {
        check_witness(&mut cx, w);
    }
    // Last: what the checks above accept but this version does not apply.
    for u in crate::coverage::unapplied(state) {
        cx.warn(u.pointer, crate::coverage::NOT_APPLIED, u.why);
    }
    cx.out
}

/// `plugins.opdbus.audit.witness`: an https URL with a host, a SHA-256 pin.
fn check_witness(cx: &mut Cx, w: &crate::model::AuditWitness) {
    let at = |k: &str| crate::diag::pointer(&["plugins", "opdbus", "audit", "witness", k]);
    let host = w
        .url
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or_default());
    match host {
        None => cx.error(
            at("url"),
            format!("witness URL {:?} is not https", w.url),
            "give https://HOST[:PORT]/PATH: checkpoints go only over TLS to the pinned certificate",
        ),
        Some(h) if h.is_empty() || h.contains(char::is_whitespace) || h.contains('@') => cx.error(
            at("url"),
            format!("witness URL {:?} has no valid host", w.url),
            "give https://HOST[:PORT]/PATH (no user info, no spaces)",
        ),
        Some(_) => {}
    }
    let hex: String = w.fingerprint.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        cx.error(
            at("fingerprint"),
            format!("witness fingerprint {:?} is not a SHA-256", w.fingerprint),
            "give the SHA-256 of the witness's certificate, 64 hex digits (colons allowed): `openssl x509 -in CERT -noout -fingerprint -sha256`",
        );
    }
}

/// Collects diagnostics.
#[derive(Default)]
pub(crate) struct Cx {
    pub out: Vec<Diagnostic>,
}

impl Cx {
    pub fn error(
        &mut self,
        pointer: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.out
            .push(Diagnostic::new(Severity::Error, pointer, message).with_hint(hint));
    }

    pub fn warn(
        &mut self,
        pointer: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.out
            .push(Diagnostic::new(Severity::Warning, pointer, message).with_hint(hint));
    }
}
