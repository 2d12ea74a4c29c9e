//! `plugins.users`: accounts, groups and SSH keys.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Presence;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Users {
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Group>,
    /// Remove regular accounts (uid >= 1000) the state does not name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Primary group id; a group named like the user is created when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Supplementary groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// crypt(3) hash (`$y$`, `$6$`, `$5$`), or `!` for a locked password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
    #[serde(default)]
    pub state: Presence,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
    #[serde(default)]
    pub state: Presence,
}

/// Why a value cannot be one field of a colon-separated account database
/// (`/etc/passwd`, `/etc/shadow`, `/etc/group`, `/etc/gshadow`) or one line
/// of `authorized_keys`. The validator and the agent's writer share these
/// rules, so a value the writer would refuse never validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    #[error("is empty")]
    Empty,
    #[error("is longer than {MAX_NAME_LEN} characters")]
    TooLong,
    #[error("is not a valid name (lower-case letters, digits, '_' and '-', starting with a letter or '_', optionally ending in '$')")]
    BadName,
    #[error("contains ':', the field separator")]
    Colon,
    #[error("contains a line break")]
    LineBreak,
    #[error("contains a control character")]
    Control,
    #[error("is not an absolute path")]
    NotAbsolute,
    #[error("contains a '..' component")]
    DotDot,
}

/// The longest user or group name `useradd` accepts.
pub const MAX_NAME_LEN: usize = 32;

/// A user or group name by `useradd`'s rule `[a-z_][a-z0-9_-]*[$]?`, at most
/// 32 characters.
pub fn name_problem(name: &str) -> Option<FieldProblem> {
    let b = name.as_bytes();
    let body = b.strip_suffix(b"$").unwrap_or(b);
    if b.is_empty() {
        return Some(FieldProblem::Empty);
    }
    if b.len() > MAX_NAME_LEN {
        return Some(FieldProblem::TooLong);
    }
    let first = body
        .first()
        .is_some_and(|c| c.is_ascii_lowercase() || *c == b'_');
    let rest = body
        .iter()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-');
    if !first || !rest {
        return Some(FieldProblem::BadName);
    }
    None
}

/// A free-text field (comment/GECOS, a password hash): no ':', no line
/// break, no other control character.
pub fn text_problem(text: &str) -> Option<FieldProblem> {
    if text.contains(['\n', '\r']) {
        Some(FieldProblem::LineBreak)
    } else if text.contains(':') {
        Some(FieldProblem::Colon)
    } else if text.chars().any(char::is_control) {
        Some(FieldProblem::Control)
    } else {
        None
    }
}

/// A home directory or login shell: a text field that is an absolute path
/// without `..`.
pub fn path_problem(path: &str) -> Option<FieldProblem> {
    if let Some(p) = text_problem(path) {
        return Some(p);
    }
    if !path.starts_with('/') {
        return Some(FieldProblem::NotAbsolute);
    }
    if path.split('/').any(|c| c == "..") {
        return Some(FieldProblem::DotDot);
    }
    None
}

/// One line of `authorized_keys`: no line break or NUL inside it (a second
/// line would be a second key, with options of its own).
pub fn key_line_problem(line: &str) -> Option<FieldProblem> {
    if line.contains(['\n', '\r']) {
        Some(FieldProblem::LineBreak)
    } else if line.contains('\0') {
        Some(FieldProblem::Control)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_useradd() {
        for ok in [
            "alice",
            "_apt",
            "systemd-network",
            "a1_b-c",
            "machine$",
            &"a".repeat(32),
        ] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("", FieldProblem::Empty),
            (&"a".repeat(33), FieldProblem::TooLong),
            ("Alice", FieldProblem::BadName),
            ("1alice", FieldProblem::BadName),
            ("-rf", FieldProblem::BadName),
            ("a:b", FieldProblem::BadName),
            ("a,b", FieldProblem::BadName),
            ("a\nb", FieldProblem::BadName),
            ("$", FieldProblem::BadName),
            ("a$b", FieldProblem::BadName),
        ] {
            assert_eq!(name_problem(bad), Some(why), "{bad:?}");
        }
    }

    #[test]
    fn fields_and_paths() {
        assert_eq!(text_problem("Alice Doe,Room 1,,"), None);
        assert_eq!(text_problem("a\nb"), Some(FieldProblem::LineBreak));
        assert_eq!(text_problem("a\rb"), Some(FieldProblem::LineBreak));
        assert_eq!(text_problem("a:b"), Some(FieldProblem::Colon));
        assert_eq!(text_problem("a\u{7}b"), Some(FieldProblem::Control));
        assert_eq!(path_problem("/home/alice"), None);
        assert_eq!(path_problem("home/alice"), Some(FieldProblem::NotAbsolute));
        assert_eq!(path_problem(""), Some(FieldProblem::NotAbsolute));
        assert_eq!(path_problem("/home/../etc"), Some(FieldProblem::DotDot));
        assert_eq!(path_problem("/bin/sh\t"), Some(FieldProblem::Control));
        assert_eq!(key_line_problem("ssh-ed25519 AAAA a@b"), None);
        assert_eq!(key_line_problem("k1\nk2"), Some(FieldProblem::LineBreak));
    }
}
