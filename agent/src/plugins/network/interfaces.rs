//! Renders `/etc/network/interfaces` in the ifupdown2 syntax Proxmox VE's
//! own tools read and write (vmbr bridges, bonds, VLANs, OVS), so a PVE
//! host's GUI shows what the agent configured. Pure text; written via root.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::model::{Desired, LinkWant, WantKind};
use crate::ovsdb::PortKind;

/// Sort order: physical and virtual leaves, bonds, bridges, VLANs (as PVE).
fn rank(l: &LinkWant) -> u8 {
    match l.kind {
        WantKind::Existing | WantKind::Dummy | WantKind::Veth { .. } => 0,
        WantKind::Bond { .. } => 1,
        WantKind::Bridge | WantKind::OvsBridge { .. } => 2,
        WantKind::Vlan { .. } => 3,
    }
}

fn ovs_bridge_of<'a>(desired: &'a Desired, port: &str) -> Option<(&'a str, &'a PortKind)> {
    desired.links.iter().find_map(|l| match &l.kind {
        WantKind::OvsBridge { ports } => ports
            .iter()
            .find(|p| p.name == port)
            .map(|p| (l.name.as_str(), &p.kind)),
        _ => None,
    })
}

/// The whole file for `desired`.
pub fn render(desired: &Desired) -> String {
    let mut out = String::from(
        "# Written by op-dbus-agent from state.json; edit the state, not this file.\n\n\
         auto lo\niface lo inet loopback\n",
    );
    let mut links: Vec<&LinkWant> = desired.links.iter().collect();
    links.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.name.cmp(&b.name)));
    // OVS ports the state only lists on a bridge get their own stanza too.
    let mut ovs_only: Vec<(String, &str, &PortKind)> = Vec::new();
    for l in &links {
        if let WantKind::OvsBridge { ports } = &l.kind {
            for p in ports {
                if desired.link(&p.name).is_none() {
                    ovs_only.push((p.name.clone(), l.name.as_str(), &p.kind));
                }
            }
        }
    }
    for l in links {
        stanza(&mut out, desired, l);
    }
    for (name, bridge, kind) in ovs_only {
        let _ = write!(out, "\nauto {name}\niface {name} inet manual\n");
        ovs_port_lines(&mut out, bridge, kind);
    }
    out.push_str("\nsource /etc/network/interfaces.d/*\n");
    out
}

fn ovs_port_lines(out: &mut String, bridge: &str, kind: &PortKind) {
    let t = match kind {
        PortKind::Internal => "OVSIntPort",
        PortKind::System => "OVSPort",
        PortKind::Patch { .. } => "OVSPatchPort",
        PortKind::Bond { .. } => "OVSBond",
    };
    if let PortKind::Bond { interfaces, .. } = kind {
        let _ = writeln!(out, "\tovs_bonds {}", interfaces.join(" "));
    }
    let _ = writeln!(out, "\tovs_type {t}\n\tovs_bridge {bridge}");
    match kind {
        PortKind::Patch { peer } => {
            let _ = writeln!(out, "\tovs_patch_peer {peer}");
        }
        PortKind::Bond {
            bond_mode,
            lacp,
            miimon,
            ..
        } => {
            let mut opts = format!("bond_mode={bond_mode}");
            if let Some(l) = lacp {
                opts += &format!(" lacp={l}");
            }
            if let Some(ms) = miimon {
                opts += &format!(
                    " other_config:bond-detect-mode=miimon other_config:bond-miimon-interval={ms}"
                );
            }
            let _ = writeln!(out, "\tovs_options {opts}");
        }
        _ => {}
    }
}

fn stanza(out: &mut String, desired: &Desired, l: &LinkWant) {
    let name = &l.name;
    let addrs = l.addresses.clone().unwrap_or_default();
    let v4: Vec<_> = addrs.iter().filter(|a| a.addr().is_ipv4()).collect();
    let v6: Vec<_> = addrs.iter().filter(|a| a.addr().is_ipv6()).collect();
    let gw = |v6: bool| {
        desired.routes.iter().find_map(|r| {
            (r.dst.prefix_len() == 0
                && r.dst.addr().is_ipv6() == v6
                && r.dev.as_deref() == Some(name.as_str()))
            .then_some(r.gateway)
            .flatten()
        })
    };
    let method4 = if l.dhcp && v4.is_empty() {
        "dhcp"
    } else if v4.is_empty() {
        "manual"
    } else {
        "static"
    };
    if l.up {
        let _ = writeln!(out, "\nauto {name}");
    } else {
        out.push('\n');
    }
    let _ = writeln!(out, "iface {name} inet {method4}");
    for a in &v4 {
        let _ = writeln!(out, "\taddress {a}");
    }
    if let Some(g) = gw(false) {
        let _ = writeln!(out, "\tgateway {g}");
    }
    if let Some(mtu) = l.mtu {
        let _ = writeln!(out, "\tmtu {mtu}");
    }
    match &l.kind {
        WantKind::Existing => {
            if let Some((bridge, kind)) = ovs_bridge_of(desired, name) {
                ovs_port_lines(out, bridge, kind);
            }
        }
        WantKind::Bridge => {
            let mut ports: Vec<&str> = desired
                .links
                .iter()
                .filter(|p| p.master.as_deref() == Some(name.as_str()))
                .map(|p| p.name.as_str())
                .collect();
            ports.sort();
            let ports = if ports.is_empty() {
                "none".to_string()
            } else {
                ports.join(" ")
            };
            let _ = writeln!(
                out,
                "\tbridge-ports {ports}\n\tbridge-stp off\n\tbridge-fd 0"
            );
        }
        WantKind::Bond { mode, miimon } => {
            let mut slaves: Vec<&str> = desired
                .links
                .iter()
                .filter(|p| p.master.as_deref() == Some(name.as_str()))
                .map(|p| p.name.as_str())
                .collect();
            slaves.sort();
            let _ = writeln!(out, "\tbond-slaves {}", slaves.join(" "));
            let _ = writeln!(out, "\tbond-miimon {}", miimon.unwrap_or(100));
            let mode = mode.map(|m| m.as_str()).unwrap_or("balance-rr");
            let _ = writeln!(out, "\tbond-mode {mode}");
        }
        WantKind::Vlan { id, base } => {
            let _ = writeln!(out, "\tvlan-id {id}\n\tvlan-raw-device {base}");
        }
        WantKind::Veth { peer } => {
            let _ = writeln!(out, "\tlink-type veth\n\tveth-peer-name {peer}");
        }
        WantKind::Dummy => {
            let _ = writeln!(out, "\tlink-type dummy");
        }
        WantKind::OvsBridge { ports } => {
            let names: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
            let _ = writeln!(out, "\tovs_type OVSBridge\n\tovs_ports {}", names.join(" "));
        }
    }
    for r in desired
        .routes
        .iter()
        .filter(|r| r.dst.prefix_len() > 0 && r.dev.as_deref() == Some(name.as_str()))
    {
        let via = r
            .gateway
            .map(|g: IpAddr| format!(" via {g}"))
            .unwrap_or_default();
        let _ = writeln!(out, "\tpost-up ip route add {}{via} dev {name}", r.dst);
    }
    let g6 = gw(true);
    if !v6.is_empty() || g6.is_some() {
        let _ = writeln!(out, "\niface {name} inet6 static");
        for a in &v6 {
            let _ = writeln!(out, "\taddress {a}");
        }
        if let Some(g) = g6 {
            let _ = writeln!(out, "\tgateway {g}");
        }
    }
}
