//! `plugins.packagekit`: package names, the manifest path, and the apt
//! sources the packages plugin writes as deb822 (URL scheme, suite and
//! components, exactly one of `trusted` and `signed_by`, nothing that could
//! break a deb822 field).

use super::{valid_package, Cx};
use crate::diag::{child, pointer};
use crate::model::{AptSource, State};

pub(super) fn check(cx: &mut Cx, state: &State) {
    let Some(pk) = &state.plugins.packagekit else {
        return;
    };
    let base = pointer(&["plugins", "packagekit"]);
    for (field, names) in [
        ("packages", &pk.packages),
        ("additional_packages", &pk.additional_packages),
        ("remove", &pk.remove),
    ] {
        let list = child(&base, field);
        for (i, p) in names.iter().enumerate() {
            if !valid_package(p) {
                cx.error(
                    child(&list, i),
                    format!("{p:?} is not a Debian package name"),
                    "package names use lowercase letters, digits and + - . and start with a letter or digit",
                );
            }
        }
    }
    if let Some(m) = &pk.manifest {
        if !m.starts_with('/') || m.chars().any(char::is_control) {
            cx.error(
                child(&base, "manifest"),
                format!("manifest {m:?} is not an absolute path"),
                "name the manifest file by its absolute path on the managed system, such as /root/pve-packages.json",
            );
        }
    }
    let sources = child(&base, "sources");
    for (i, s) in pk.sources.iter().enumerate() {
        check_source(cx, &child(&sources, i), s);
    }
}

/// A value of one deb822 field: non-empty, no whitespace or control
/// character (a line break would start a field of its own).
fn plain(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn check_source(cx: &mut Cx, ptr: &str, s: &AptSource) {
    let rest = s
        .uri
        .strip_prefix("http://")
        .or_else(|| s.uri.strip_prefix("https://"))
        .or_else(|| s.uri.strip_prefix("file:"));
    if !plain(&s.uri)
        || rest.is_none_or(|r| r.is_empty() || (s.uri.starts_with("file:") && !r.starts_with('/')))
    {
        cx.error(
            child(ptr, "uri"),
            format!(
                "apt source uri {:?} is not an http(s):// or file: URL",
                s.uri
            ),
            "write a full URL such as http://deb.example.org/debian or file:/srv/repo",
        );
    }
    if !plain(&s.suite) {
        cx.error(
            child(ptr, "suite"),
            format!(
                "apt source suite {:?} is empty or contains whitespace",
                s.suite
            ),
            "name one suite such as bookworm, or ./ for a flat repository",
        );
    } else if s.suite.ends_with('/') && !s.components.is_empty() {
        cx.error(
            child(ptr, "components"),
            format!(
                "the flat repository suite {:?} takes no components",
                s.suite
            ),
            "remove components, or name a suite without a trailing / (bookworm)",
        );
    } else if !s.suite.ends_with('/') && s.components.is_empty() {
        cx.error(
            child(ptr, "components"),
            format!("apt source suite {:?} has no components", s.suite),
            "add components such as [\"main\"], or write the suite as ./ for a flat repository",
        );
    }
    let comps = child(ptr, "components");
    for (k, c) in s.components.iter().enumerate() {
        if !plain(c) {
            cx.error(
                child(&comps, k),
                format!("apt source component {c:?} is empty or contains whitespace"),
                "one component per entry, such as main",
            );
        }
    }
    match (&s.signed_by, s.trusted) {
        (Some(_), true) => cx.error(
            child(ptr, "trusted"),
            "apt source has both trusted and signed_by",
            "keep signed_by (apt checks the signature) or trusted (it does not), not both",
        ),
        (None, false) => cx.error(
            ptr.to_string(),
            "apt source has neither signed_by nor trusted: apt refuses an unsigned repository",
            "add \"signed_by\": the keyring that signs it, or \"trusted\": true for a local repository you built",
        ),
        (Some(k), false) if !k.starts_with('/') || !plain(k) => cx.error(
            child(ptr, "signed_by"),
            format!("signed_by {k:?} is not an absolute path"),
            "name the keyring by its absolute path, such as /usr/share/keyrings/example.gpg",
        ),
        _ => {}
    }
}
