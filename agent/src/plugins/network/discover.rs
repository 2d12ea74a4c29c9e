//! `discover` for the network plugin: the host's [`Current`] (every link,
//! its static addresses, the static routes, OVS bridges) as a
//! `plugins.network` section whose diff against the same host is empty.
//! Pure, so golden fixtures pin it.
//!
//! Left out on purpose: loopback, link-local and dynamic addresses (a
//! dynamic IPv4 address marks the link `dhcp`), kernel/DHCP/RA routes, MAC
//! addresses (the kernel or the hardware assigns them), an MTU of 1500,
//! the veths of containers (their peer is in another namespace: the lxc
//! plugin's), OVS's `ovs-system` datapath device, and DNS.

use std::collections::BTreeMap;

use opdbus_state::model::{
    Interface, InterfaceType, LinkState, Network, OneOrMany, OvsPort, OvsPortSpec, OvsPortType,
    Route,
};

use super::model::Current;
use crate::netlink::LinkKind;
use crate::ovsdb::PortKind;

/// The kernel's device for OVS's kernel datapath: not a link of the state.
const OVS_DATAPATH: &str = "ovs-system";
const DEFAULT_MTU: u32 = 1500;

fn port(p: &crate::ovsdb::PortSpec) -> OvsPort {
    let kind = match &p.kind {
        PortKind::System => OvsPortType::System,
        PortKind::Internal => OvsPortType::Internal,
        PortKind::Patch { .. } => OvsPortType::Patch,
        PortKind::Bond { .. } => OvsPortType::Bond,
    };
    let mut spec = OvsPortSpec::plain(p.name.clone(), kind);
    spec.tag = p.tag;
    spec.trunks = p.trunks.clone();
    match &p.kind {
        PortKind::Patch { peer } => spec.peer = Some(peer.clone()),
        PortKind::Bond {
            interfaces,
            bond_mode,
            lacp,
            miimon,
        } => {
            spec.interfaces = interfaces.clone();
            spec.bond_mode =
                serde_json::from_value(serde_json::Value::String(bond_mode.clone())).ok();
            spec.lacp = lacp
                .as_ref()
                .and_then(|l| serde_json::from_value(serde_json::Value::String(l.clone())).ok());
            spec.miimon = *miimon;
        }
        _ => {}
    }
    OvsPort(spec)
}

fn bond_mode(m: crate::netlink::BondMode) -> Option<opdbus_state::model::BondMode> {
    serde_json::from_value(serde_json::Value::String(m.as_str().to_string())).ok()
}

/// The `plugins.network` section describing `current`.
pub fn section(current: &Current) -> Network {
    let ovs: Vec<_> = current.ovs.iter().flatten().collect();
    let is_ovs_bridge = |n: &str| ovs.iter().any(|b| b.name == n);
    // Links that are not the state's: a container's veth, the datapath.
    let skipped = |l: &super::model::LinkNow| l.peer_netns || l.name == OVS_DATAPATH;
    let mut interfaces: BTreeMap<String, Interface> = BTreeMap::new();

    for b in &ovs {
        let mut ports: Vec<OvsPort> = b.ports.iter().map(port).collect();
        ports.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        interfaces.insert(
            b.name.clone(),
            Interface {
                kind: InterfaceType::OvsBridge,
                ports,
                datapath_type: Some(b.datapath_type.clone()).filter(|d| !d.is_empty()),
                ..Interface::default()
            },
        );
    }
    for l in current.links.iter().filter(|l| !skipped(l)) {
        let members = |kind: &LinkKind| -> Vec<String> {
            let mut v: Vec<String> = current
                .links
                .iter()
                .filter(|m| !skipped(m) && m.master.as_deref() == Some(l.name.as_str()))
                .filter(|_| l.kind == *kind)
                .map(|m| m.name.clone())
                .collect();
            v.sort();
            v
        };
        let i = interfaces.entry(l.name.clone()).or_default();
        if !is_ovs_bridge(&l.name) {
            match &l.kind {
                LinkKind::Bridge => {
                    i.kind = InterfaceType::Bridge;
                    i.bridge_ports = OneOrMany(members(&LinkKind::Bridge));
                }
                LinkKind::Bond => {
                    i.kind = InterfaceType::Bond;
                    i.slaves = members(&LinkKind::Bond);
                    i.mode = l.bond_mode.and_then(bond_mode);
                    i.miimon = l.bond_miimon;
                }
                LinkKind::Vlan => {
                    i.kind = InterfaceType::Vlan;
                    i.id = l.vlan_id;
                    i.base = l.vlan_base.clone();
                }
                LinkKind::Veth => {
                    i.kind = InterfaceType::Veth;
                    i.peer = l.veth_peer.clone();
                }
                LinkKind::Dummy => i.kind = InterfaceType::Dummy,
                // NICs, OVS internal devices, tun/tap, anything else: exists,
                // configured only.
                _ => i.kind = InterfaceType::Ethernet,
            }
        }
        i.state = if l.up { LinkState::Up } else { LinkState::Down };
        i.mtu = l.mtu.filter(|m| *m != DEFAULT_MTU);
        let mut addrs: Vec<_> = current
            .addresses
            .iter()
            .filter(|a| a.link == l.name && !a.dynamic)
            .map(|a| a.addr)
            .collect();
        addrs.sort();
        addrs.dedup();
        i.address = OneOrMany(addrs.iter().map(ToString::to_string).collect());
        i.dhcp = current
            .addresses
            .iter()
            .any(|a| a.link == l.name && a.dynamic && a.addr.addr().is_ipv4());
    }

    let mut routes: Vec<Route> = current
        .routes
        .iter()
        .filter(|r| r.protocol == "static" || r.protocol == "boot")
        .filter(|r| {
            r.spec
                .dev
                .as_deref()
                .is_none_or(|d| interfaces.contains_key(d))
        })
        .map(|r| {
            let s = &r.spec;
            let to = if s.dst.prefix_len() == 0 && s.gateway.is_some() {
                "default".to_string()
            } else {
                s.dst.to_string()
            };
            // The kernel's defaults (0, and 1024 for IPv6) are what an
            // unspecified metric gives.
            let default_metric = if s.dst.addr().is_ipv6() { 1024 } else { 0 };
            Route {
                to,
                via: s.gateway.map(|g| g.to_string()),
                dev: s.dev.clone(),
                metric: s.metric.filter(|m| *m != default_metric && *m != 0),
            }
        })
        .collect();
    routes
        .sort_by(|a, b| (&a.to, &a.dev, &a.via, a.metric).cmp(&(&b.to, &b.dev, &b.via, b.metric)));
    routes.dedup();

    Network {
        interfaces,
        routes,
        ..Network::default()
    }
}
