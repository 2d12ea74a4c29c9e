//! `plugins.users` and root's credentials in `bootstrap`: uid/gid
//! collisions, unknown supplementary groups, plaintext where a crypt(3) hash
//! is required, malformed SSH public keys, a root nobody can log in as, and
//! values that cannot be one field of the account databases (a comment with a
//! line break would add a line of its own to /etc/passwd).

use std::collections::HashMap;

use super::Cx;
use crate::diag::{child, pointer};
use crate::model::{key_line_problem, name_problem, path_problem, text_problem, State};

/// Groups a Debian system has without being declared.
const SYSTEM_GROUPS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "adm",
    "tty",
    "disk",
    "lp",
    "mail",
    "news",
    "uucp",
    "man",
    "proxy",
    "kmem",
    "dialout",
    "fax",
    "voice",
    "cdrom",
    "floppy",
    "tape",
    "sudo",
    "audio",
    "dip",
    "www-data",
    "backup",
    "operator",
    "list",
    "irc",
    "src",
    "gnats",
    "shadow",
    "utmp",
    "video",
    "sasl",
    "plugdev",
    "staff",
    "games",
    "users",
    "nogroup",
    "systemd-journal",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "input",
    "sgx",
    "kvm",
    "render",
    "netdev",
    "crontab",
    "messagebus",
    "_ssh",
    "ssh",
    "wheel",
];

const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

pub(super) fn check(cx: &mut Cx, state: &State) {
    if let Some(b) = &state.bootstrap {
        if let Some(h) = &b.root_password_hash {
            check_hash(cx, "/bootstrap/root_password_hash", h);
        }
        for (k, key) in b.root_ssh_authorized_keys.iter().enumerate() {
            check_key_line(cx, child("/bootstrap/root_ssh_authorized_keys", k), key);
        }
        let root_account = state
            .plugins
            .users
            .as_ref()
            .and_then(|u| u.accounts.get("root"));
        let password = b
            .root_password_hash
            .as_deref()
            .or(root_account.and_then(|a| a.password_hash.as_deref()))
            .is_some_and(|h| !h.starts_with('!') && !h.starts_with('*'));
        let keys = !b.root_ssh_authorized_keys.is_empty()
            || root_account.is_some_and(|a| !a.ssh_authorized_keys.is_empty());
        if !password && !keys {
            cx.warn(
                "/bootstrap",
                "root has no password hash and no SSH key: nobody can log in as root on the installed system",
                "set bootstrap.root_password_hash (`mkpasswd -m yescrypt`) or bootstrap.root_ssh_authorized_keys",
            );
        }
    }
    let Some(users) = &state.plugins.users else {
        return;
    };

    let mut gids: HashMap<u32, String> = HashMap::new();
    for (name, g) in &users.groups {
        check_name(
            cx,
            key_pointer(&["plugins", "users", "groups"], name),
            "group",
            name,
        );
        let Some(gid) = g.gid else { continue };
        let ptr = pointer(&["plugins", "users", "groups", name, "gid"]);
        if let Some(other) = gids.get(&gid) {
            cx.error(
                ptr,
                format!("gid {gid} of group {name} collides with group {other}"),
                "give each group its own gid",
            );
        } else {
            gids.insert(gid, name.clone());
        }
    }

    let mut uids: HashMap<u32, &str> = HashMap::new();
    let mut private_gids: HashMap<u32, &str> = HashMap::new();
    for (name, a) in &users.accounts {
        let aptr = pointer(&["plugins", "users", "accounts", name]);
        check_fields(cx, &aptr, name, a);
        if let Some(uid) = a.uid {
            match uids.get(&uid) {
                Some(other) => cx.error(
                    child(&aptr, "uid"),
                    format!("uid {uid} of account {name} collides with account {other}"),
                    "give each account its own uid",
                ),
                None => {
                    uids.insert(uid, name);
                }
            }
        }
        if let Some(gid) = a.gid {
            let own = users.groups.get(name).and_then(|g| g.gid);
            if let Some(own) = own.filter(|own| *own != gid) {
                cx.error(
                    child(&aptr, "gid"),
                    format!(
                        "gid {gid} of account {name} differs from gid {own} of its group {name}"
                    ),
                    "use the same gid in both places, or leave one out",
                );
            } else if !gids.contains_key(&gid) {
                // The account's private group is created with this gid.
                match private_gids.get(&gid) {
                    Some(other) => cx.error(
                        child(&aptr, "gid"),
                        format!("gid {gid} of account {name} collides with the private group of account {other}"),
                        "declare a group with this gid in plugins.users.groups to share it, or pick another gid",
                    ),
                    None => {
                        private_gids.insert(gid, name);
                    }
                }
            }
        }
        for (k, g) in a.groups.iter().enumerate() {
            if name_problem(g).is_some() {
                check_name(
                    cx,
                    child(&child(&aptr, "groups"), k),
                    "supplementary group",
                    g,
                );
                continue;
            }
            let known = users.groups.contains_key(g)
                || users.accounts.contains_key(g)
                || SYSTEM_GROUPS.contains(&g.as_str());
            if !known {
                cx.warn(
                    child(&child(&aptr, "groups"), k),
                    format!("supplementary group {g} of account {name} is not declared and not a standard Debian group"),
                    format!("declare it in plugins.users.groups, or make sure a package creates it; otherwise adding {name} to it fails"),
                );
            }
        }
        if let Some(h) = &a.password_hash {
            check_hash(cx, child(&aptr, "password_hash"), h);
        }
        for (k, key) in a.ssh_authorized_keys.iter().enumerate() {
            check_key_line(cx, child(&child(&aptr, "ssh_authorized_keys"), k), key);
        }
    }
}

/// The pointer to the entry `key` of the object at `base`; the object itself
/// when the key holds control characters (a pointer is printed verbatim, and
/// a line break would split the diagnostic; the message shows the key quoted).
fn key_pointer(base: &[&str], key: &str) -> String {
    if key.chars().any(char::is_control) {
        pointer(base)
    } else {
        child(&pointer(base), key)
    }
}

/// A user or group name by `useradd`'s rules.
fn check_name(cx: &mut Cx, ptr: String, what: &str, name: &str) {
    if let Some(p) = name_problem(name) {
        cx.error(
            ptr,
            format!("{what} name {name:?} {p}"),
            "user and group names follow useradd: [a-z_][a-z0-9_-]*[$]?, at most 32 characters",
        );
    }
}

/// The name, comment, home and shell of one account: each becomes one field
/// of /etc/passwd.
fn check_fields(cx: &mut Cx, aptr: &str, name: &str, a: &crate::model::Account) {
    check_name(
        cx,
        key_pointer(&["plugins", "users", "accounts"], name),
        "account",
        name,
    );
    if let Some(p) = a.comment.as_deref().and_then(text_problem) {
        cx.error(
            child(aptr, "comment"),
            format!("comment of account {name} {p}"),
            "the comment is one field of /etc/passwd: remove ':', line breaks and control characters",
        );
    }
    for (field, value) in [("home", &a.home), ("shell", &a.shell)] {
        if let Some(p) = value.as_deref().and_then(path_problem) {
            cx.error(
                child(aptr, field),
                format!("{field} of account {name} {p}"),
                "use an absolute path without '..', ':', line breaks or control characters",
            );
        }
    }
}

/// One element of an authorized-keys list: exactly one line, then a key.
fn check_key_line(cx: &mut Cx, ptr: String, line: &str) {
    match key_line_problem(line) {
        Some(p) => cx.error(
            ptr,
            format!("SSH key {p}"),
            "put each key in its own array element, one line each",
        ),
        None => check_ssh_key(cx, ptr, line),
    }
}

/// `!`/`*` (locked, optionally followed by a hash) or `$id$...` of a known scheme.
fn check_hash(cx: &mut Cx, ptr: impl Into<String>, hash: &str) {
    if let Some(p) = text_problem(hash) {
        cx.error(
            ptr,
            format!("password hash {p}"),
            "a crypt(3) hash is one field of /etc/shadow; generate one with `mkpasswd -m yescrypt`",
        );
        return;
    }
    let h = hash.trim_start_matches('!');
    if h.is_empty() && !hash.is_empty() || h == "*" {
        return;
    }
    let fields: Vec<&str> = h.split('$').collect();
    if h.starts_with('$') && fields.len() >= 4 {
        let known = matches!(fields[1], "y" | "gy" | "7" | "6" | "5" | "2b" | "2y");
        let tail_ok = fields.last().is_some_and(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
        });
        if known && tail_ok {
            return;
        }
        if !known {
            cx.error(
                ptr,
                format!("password hash uses the unsupported or weak crypt(3) scheme ${}$", fields[1]),
                "use yescrypt ($y$), SHA-512 ($6$), SHA-256 ($5$), bcrypt ($2b$) or scrypt ($7$); generate one with `mkpasswd -m yescrypt`",
            );
            return;
        }
    }
    cx.error(
        ptr,
        "plaintext password where a crypt(3) hash is required",
        "generate one with `mkpasswd -m yescrypt`, or use \"!\" to lock the password",
    );
}

/// Warns about keys whose type is unknown or whose base64 blob does not
/// decode to a key of the same type.
fn check_ssh_key(cx: &mut Cx, ptr: String, line: &str) {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let Some(at) = tokens.iter().position(|t| SSH_KEY_TYPES.contains(t)) else {
        cx.warn(
            ptr,
            "malformed SSH public key: no known key type (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ...)",
            "paste the whole line of the .pub file, such as the output of `cat ~/.ssh/id_ed25519.pub`",
        );
        return;
    };
    let kind = tokens[at];
    let blob = tokens.get(at + 1).and_then(|b| base64_decode(b));
    let ok = blob.as_deref().is_some_and(|b| {
        b.len() >= 4 && {
            let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            b.get(4..4 + n) == Some(kind.as_bytes())
        }
    });
    if !ok {
        cx.warn(
            ptr,
            format!("malformed SSH public key: the {kind} key data is not valid base64 of a {kind} key"),
            "paste the whole line of the .pub file, such as the output of `cat ~/.ssh/id_ed25519.pub`",
        );
    }
}

/// Standard base64 with padding; `None` on any invalid character or length.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() & 3 != 0 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(b.len() / 4 * 3);
    let chunks = b.len() / 4;
    for (i, c) in b.chunks(4).enumerate() {
        let pad = c.iter().rev().take_while(|&&x| x == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &x in &c[..4 - pad] {
            n = (n << 6) | val(x)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("AAAA..."), None);
        assert_eq!(base64_decode("a=bc"), None);
    }

    #[test]
    fn accepts_real_key_and_warns_on_placeholder() {
        let mut cx = Cx::default();
        check_ssh_key(
            &mut cx,
            "/k".into(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF9QkkNXDsXqqgHhb1uLz4eyLqcW9gWSjcwj/PfKm5gC admin@example",
        );
        assert!(cx.out.is_empty(), "{:?}", cx.out);
        check_ssh_key(&mut cx, "/k".into(), "ssh-ed25519 AAAA...");
        assert_eq!(cx.out.len(), 1);
    }

    #[test]
    fn hashes() {
        let mut cx = Cx::default();
        for ok in [
            "!",
            "*",
            "!$6$salt$abc",
            "$y$j9T$salt$hash./",
            "$6$rounds=5000$salt$h",
            "$2b$12$abcdefghijklmnopqrstuv",
        ] {
            check_hash(&mut cx, "/p", ok);
            assert!(cx.out.is_empty(), "{ok}: {:?}", cx.out);
        }
        for bad in [
            "hunter2",
            "",
            "$1$salt$hash",
            "$6$salt",
            "$6$salt$ has space",
        ] {
            let mut cx = Cx::default();
            check_hash(&mut cx, "/p", bad);
            assert_eq!(cx.out.len(), 1, "{bad}");
        }
    }
}
