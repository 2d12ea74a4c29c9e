//! Semantic validation of a parsed state: cross-references and values serde
//! cannot check (overlaps, subnets, collisions, hashes). One file per
//! section; every check has its own pinned message.

mod bootstrap;
mod firewall;
mod flows;
mod network;
mod proxmox;
mod storage;
mod systemd;
mod users;
mod wireguard;

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
    // Last: what the checks above accept but this version does not apply.
    for u in crate::coverage::unapplied(state) {
        cx.warn(u.pointer, crate::coverage::NOT_APPLIED, u.why);
    }
    cx.out
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
