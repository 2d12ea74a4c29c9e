//! `plugins.proxmox`: its network stanzas (types the network plugin can
//! write, addresses, and no interface declared both here and under
//! `plugins.network`/`plugins.net`: one writer of /etc/network/interfaces),
//! HA settings that contradict the guest, and a cluster join's values.

use std::collections::HashMap;
use std::net::IpAddr;

use super::Cx;
use crate::diag::{child, pointer};
use crate::model::{PveGuestState, PveHa, State};
use crate::normalize::pve_address;

/// The `type`s of a PVE stanza the network plugin writes.
const NET_TYPES: &[&str] = &["bridge", "OVSBridge", "eth"];

pub(super) fn check(cx: &mut Cx, state: &State) {
    let Some(p) = &state.plugins.proxmox else {
        return;
    };
    // Where plugins.network / plugins.net declare each interface.
    let mut elsewhere: HashMap<&str, String> = HashMap::new();
    if let Some(n) = &state.plugins.network {
        for (section, map) in [("interfaces", &n.interfaces), ("bonds", &n.bonds)] {
            for name in map.keys() {
                elsewhere.insert(name, pointer(&["plugins", "network", section, name]));
            }
        }
    }
    if let Some(n) = &state.plugins.net {
        for (k, i) in n.interfaces.iter().enumerate() {
            elsewhere
                .entry(&i.name)
                .or_insert_with(|| format!("/plugins/net/interfaces/{k}"));
        }
    }
    let mut here: HashMap<&str, String> = HashMap::new();
    for (k, n) in p.network.iter().enumerate() {
        let ptr = format!("/plugins/proxmox/network/{k}");
        if let Some(other) = elsewhere.get(n.iface.as_str()) {
            cx.error(
                child(&ptr, "iface"),
                format!(
                    "interface {} is declared both here and at {other}; the network plugin is the one writer of /etc/network/interfaces",
                    n.iface
                ),
                format!("keep one declaration: remove this entry, or the one at {other}"),
            );
        }
        if let Some(first) = here.get(n.iface.as_str()) {
            cx.error(
                child(&ptr, "iface"),
                format!("interface {} is declared twice", n.iface),
                format!("keep one declaration; the other is at {first}"),
            );
        } else {
            here.insert(&n.iface, ptr.clone());
        }
        if !NET_TYPES.contains(&n.kind.as_str()) {
            cx.error(
                child(&ptr, "type"),
                format!("type {:?} is not one op-dbus writes here", n.kind),
                "use bridge, OVSBridge or eth; declare bonds and VLANs under plugins.network",
            );
        }
        if n.kind == "eth" && !n.bridge_ports.is_empty() {
            cx.error(
                child(&ptr, "bridge_ports"),
                format!("{} is a NIC (type eth): it has no bridge ports", n.iface),
                "remove bridge_ports, or set \"type\": \"bridge\"",
            );
        }
        match (&n.address, &n.netmask) {
            (Some(a), _) if pve_address(n).is_none() => {
                let hint = if a.contains('/') || n.netmask.is_some() {
                    "give an address such as 192.168.1.10 with a netmask such as 255.255.255.0 or 24, or 192.168.1.10/24"
                } else {
                    "add \"netmask\" (such as 255.255.255.0), or write the address as 192.168.1.10/24"
                };
                let at = if a.contains('/') || n.netmask.is_none() || a.parse::<IpAddr>().is_err() {
                    "address"
                } else {
                    "netmask"
                };
                cx.error(
                    child(&ptr, at),
                    format!("{} has no valid address and prefix", n.iface),
                    hint,
                );
            }
            (None, Some(_)) => cx.error(
                child(&ptr, "netmask"),
                format!("{} has a netmask but no address", n.iface),
                "add \"address\", or remove netmask",
            ),
            _ => {}
        }
        if let Some(g) = &n.gateway {
            match (g.parse::<IpAddr>(), pve_address(n)) {
                (Err(_), _) => cx.error(
                    child(&ptr, "gateway"),
                    format!("{g:?} is not an IP address"),
                    "give the gateway as an address such as 192.168.1.1",
                ),
                (Ok(gw), Some(net)) if !net.contains(&gw) => cx.error(
                    child(&ptr, "gateway"),
                    format!("gateway {g} is outside {net} of {}", n.iface),
                    "use a gateway in the interface's subnet, or fix the address",
                ),
                _ => {}
            }
        }
    }

    for (k, vm) in p.vms.iter().enumerate() {
        check_ha(
            cx,
            &format!("/plugins/proxmox/vms/{k}"),
            vm.state,
            vm.ha.as_ref(),
        );
    }
    for (k, ct) in p.containers.iter().enumerate() {
        check_ha(
            cx,
            &format!("/plugins/proxmox/containers/{k}"),
            ct.state,
            ct.ha.as_ref(),
        );
    }

    if let Some(j) = p.cluster.as_ref().and_then(|c| c.join.as_ref()) {
        let ptr = "/plugins/proxmox/cluster/join";
        if let Some(f) = &j.fingerprint {
            let hex: String = f.chars().filter(|c| *c != ':').collect();
            if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                cx.error(
                    child(ptr, "fingerprint"),
                    "not a SHA-256 fingerprint",
                    "give the peer's certificate SHA-256 as 64 hex digits (colons allowed), as `pvenode cert info` on the peer prints it",
                );
            }
        }
        if let Some(f) = &j.password_file {
            if !f.starts_with('/') {
                cx.error(
                    child(ptr, "password_file"),
                    format!("{f:?} is not an absolute path"),
                    "give the absolute path of a root-only file (mode 0600) holding the peer's root password",
                );
            }
        }
    }
}

fn check_ha(cx: &mut Cx, guest: &str, state: PveGuestState, ha: Option<&PveHa>) {
    if ha.is_some_and(|h| h.enabled) && state == PveGuestState::Absent {
        cx.error(
            child(guest, "ha"),
            "the guest is marked absent but is to be an HA resource",
            "remove ha (or set \"enabled\": false), or change the guest's state",
        );
    }
}
