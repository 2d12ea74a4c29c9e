//! `plugins.wireguard`: link names, addresses, keys, endpoints and allowed
//! networks, checked before anything reaches the kernel.

use std::collections::HashMap;
use std::net::SocketAddr;

use ipnet::IpNet;

use super::Cx;
use crate::diag::pointer;
use crate::model::State;

/// Whether `s` is the base64 form of a 32-byte WireGuard key.
pub fn is_wg_key(s: &str) -> bool {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    b.len() == 44
        && b[43] == b'='
        && b[..43].iter().all(|c| B64.contains(c))
        // the last digit carries 2 key bits and 4 zero bits
        && B64.iter().position(|c| *c == b[42]).is_some_and(|i| i % 4 == 0)
}

fn valid_link_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 15
        && n != "."
        && n != ".."
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub(super) fn check(cx: &mut Cx, state: &State) {
    let Some(wg) = &state.plugins.wireguard else {
        return;
    };
    let mut ports: HashMap<u16, String> = HashMap::new();
    for (name, i) in &wg.interfaces {
        let at = |rest: &[&str]| {
            let mut t = vec!["plugins", "wireguard", "interfaces", name.as_str()];
            t.extend_from_slice(rest);
            pointer(&t)
        };
        if !valid_link_name(name) {
            cx.error(
                at(&[]),
                format!("'{name}' is not a valid link name"),
                "use at most 15 letters, digits, '-', '_' or '.', e.g. \"wg0\"",
            );
        }
        if let Some(net) = &state.plugins.network {
            if net.interfaces.contains_key(name) || net.bonds.contains_key(name) {
                cx.error(
                    at(&[]),
                    format!("'{name}' is also declared under plugins.network"),
                    "declare a WireGuard link only under plugins.wireguard",
                );
            }
        }
        for (k, a) in i.address.0.iter().enumerate() {
            if a.parse::<IpNet>().is_err() {
                cx.error(
                    at(&["address", &k.to_string()]),
                    format!("'{a}' is not an address in CIDR form"),
                    "write the address with its prefix length, e.g. \"10.10.0.1/24\"",
                );
            }
        }
        if let Some(p) = i.listen_port {
            if p == 0 {
                cx.error(
                    at(&["listen_port"]),
                    "listen_port 0 is not a port",
                    "remove listen_port to let the kernel choose one, or give 1-65535",
                );
            } else if let Some(other) = ports.insert(p, name.clone()) {
                cx.error(
                    at(&["listen_port"]),
                    format!("port {p} is also the listen_port of '{other}'"),
                    "give each WireGuard interface its own port",
                );
            }
        }
        if let Some(f) = &i.private_key_file {
            if !f.starts_with('/') || f.split('/').any(|c| c == "..") {
                cx.error(
                    at(&["private_key_file"]),
                    format!("'{f}' is not an absolute path"),
                    "give an absolute path without '..', e.g. \"/etc/wireguard/wg0.key\"",
                );
            }
        }
        let mut keys: HashMap<&str, usize> = HashMap::new();
        for (n, p) in i.peers.iter().enumerate() {
            let ns = n.to_string();
            if !is_wg_key(&p.public_key) {
                cx.error(
                    at(&["peers", &ns, "public_key"]),
                    "not a WireGuard public key",
                    "give the peer's public key as `wg pubkey` prints it (44 characters of base64)",
                );
            } else if let Some(first) = keys.insert(&p.public_key, n) {
                cx.error(
                    at(&["peers", &ns, "public_key"]),
                    format!("the same public key as peer {first}"),
                    "list each peer once; merge their allowed_ips",
                );
            }
            if let Some(e) = &p.endpoint {
                if e.parse::<SocketAddr>().is_err() {
                    cx.error(
                        at(&["peers", &ns, "endpoint"]),
                        format!("'{e}' is not IP:PORT"),
                        "write the endpoint as 192.0.2.1:51820 or [2001:db8::1]:51820",
                    );
                }
            }
            for (k, a) in p.allowed_ips.iter().enumerate() {
                if a.parse::<IpNet>().is_err() {
                    cx.error(
                        at(&["peers", &ns, "allowed_ips", &k.to_string()]),
                        format!("'{a}' is not a network in CIDR form"),
                        "write it with its prefix length, e.g. \"10.10.0.2/32\"",
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_wg_key;

    #[test]
    fn keys() {
        assert!(is_wg_key("YJ9IdJRkkFJqVD5w+2DNrjwNcwCvXsTZhaq3Hnkx/mI="));
        assert!(!is_wg_key("YJ9IdJRkkFJqVD5w+2DNrjwNcwCvXsTZhaq3Hnkx/mJ="));
        assert!(!is_wg_key("short="));
    }
}
