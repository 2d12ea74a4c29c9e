//! The pure part of the network plugin: `diff` orders the changes (deletions
//! in reverse, then links, masters, OVS, up, addresses, routes, DNS, files),
//! `check_references` finds missing referenced links, `unmet` verifies.

use std::collections::BTreeMap;

use super::model::{
    CreateKind, Current, Desired, LinkNow, LinkWant, NetAction, RouteNow, WantKind,
};
use crate::netlink::{LinkKind, RouteSpec};
use crate::ovsdb::PortKind;

/// Link kinds `prune` may delete (the ones the agent creates), and then only
/// links the ownership registry says it created.
const PRUNABLE: [LinkKind; 5] = [
    LinkKind::Bridge,
    LinkKind::Bond,
    LinkKind::Vlan,
    LinkKind::Veth,
    LinkKind::Dummy,
];

fn create_kind(k: &WantKind) -> Option<CreateKind> {
    Some(match k {
        WantKind::Bridge => CreateKind::Bridge,
        WantKind::Bond { mode, miimon } => CreateKind::Bond {
            mode: *mode,
            miimon: *miimon,
        },
        WantKind::Vlan { id, base } => CreateKind::Vlan {
            id: *id,
            base: base.clone(),
        },
        WantKind::Veth { peer } => CreateKind::Veth { peer: peer.clone() },
        WantKind::Dummy => CreateKind::Dummy,
        WantKind::Existing | WantKind::OvsBridge { .. } => return None,
    })
}

/// Links `prune` leaves alone because the agent did not create them (kinds
/// it could delete, named nowhere in the state).
pub fn not_owned(current: &Current, desired: &Desired) -> Vec<String> {
    if !desired.prune {
        return Vec::new();
    }
    let is_named = |n: &str| desired.link(n).is_some();
    let mut out: Vec<String> = current
        .links
        .iter()
        .filter(|c| {
            PRUNABLE.contains(&c.kind)
                && !is_named(&c.name)
                && !c.veth_peer.as_deref().is_some_and(is_named)
                && !current.owns(c)
        })
        .map(|c| format!("link {}", c.name))
        .collect();
    for b in current.ovs.iter().flatten() {
        match desired.link(&b.name) {
            None if !current.owns_ovs_bridge(&b.name) => {
                out.push(format!("OVS bridge {}", b.name));
            }
            None => {}
            Some(l) => {
                let WantKind::OvsBridge { ports } = &l.kind else {
                    continue;
                };
                for p in &b.ports {
                    if !ports.iter().any(|w| w.name == p.name)
                        && !current.owns_ovs_port(&b.name, &p.name)
                    {
                        out.push(format!("OVS port {}/{}", b.name, p.name));
                    }
                }
            }
        }
    }
    out
}

/// Creation rank: leaves first, then bonds, VLANs, bridges.
fn rank(k: &WantKind) -> u8 {
    match k {
        WantKind::Existing | WantKind::Dummy | WantKind::Veth { .. } => 0,
        WantKind::Bond { .. } => 1,
        WantKind::Vlan { .. } => 2,
        WantKind::Bridge | WantKind::OvsBridge { .. } => 3,
    }
}

fn rank_now(k: &LinkKind) -> u8 {
    match k {
        LinkKind::Bond => 1,
        LinkKind::Vlan => 2,
        LinkKind::Bridge | LinkKind::Openvswitch => 3,
        _ => 0,
    }
}

/// Whether the existing link `c` is what `want` asks for (else it is recreated).
fn same_kind(c: &LinkNow, want: &WantKind) -> bool {
    let Some(kind) = want.link_kind() else {
        return true;
    };
    if c.kind != kind {
        return false;
    }
    match want {
        WantKind::Vlan { id, base } => {
            c.vlan_id == Some(*id) && c.vlan_base.as_deref().is_none_or(|b| b == base)
        }
        WantKind::Bond { mode, miimon } => {
            mode.is_none_or(|m| c.bond_mode == Some(m))
                && miimon.is_none_or(|m| c.bond_miimon == Some(m))
        }
        WantKind::Veth { peer } => c.veth_peer.as_deref().is_none_or(|p| p == peer),
        _ => true,
    }
}

/// A veth pair is created once, from the end whose name sorts first when
/// both ends are declared.
fn created_by_peer(l: &LinkWant, desired: &Desired) -> bool {
    let WantKind::Veth { peer } = &l.kind else {
        return false;
    };
    matches!(
        desired.link(peer).map(|p| &p.kind),
        Some(WantKind::Veth { peer: back }) if back == &l.name && peer < &l.name
    )
}

/// Default metrics the kernel fills in when none is given.
fn metric_matches(want: &RouteSpec, have: &RouteSpec) -> bool {
    match want.metric {
        Some(m) => have.metric == Some(m),
        None => match have.metric {
            None | Some(0) => true,
            Some(1024) => want.dst.addr().is_ipv6(),
            Some(_) => false,
        },
    }
}

/// A current route is the desired one (same destination, metric, gateway
/// and, when the state names one, device).
pub fn route_matches(want: &RouteSpec, have: &RouteSpec) -> bool {
    want.dst == have.dst
        && metric_matches(want, have)
        && want.gateway == have.gateway
        && want
            .dev
            .as_ref()
            .is_none_or(|d| have.dev.as_ref() == Some(d))
}

fn route_present(routes: &[RouteNow], want: &RouteSpec) -> bool {
    routes.iter().any(|r| route_matches(want, &r.spec))
}

/// The changes that take `current` to `desired`; empty when they agree.
pub fn diff(current: &Current, desired: &Desired) -> Vec<NetAction> {
    let named = desired.named();
    let is_named = |n: &str| named.iter().any(|x| x == n);
    let mut out = Vec::new();

    // systemd-networkd drop-ins go first so networkd keeps off new links.
    let write: BTreeMap<String, String> = desired
        .networkd
        .iter()
        .filter(|(k, v)| current.networkd.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove: Vec<String> = current
        .networkd
        .keys()
        .filter(|k| !desired.networkd.contains_key(*k))
        .cloned()
        .collect();
    if !write.is_empty() || !remove.is_empty() {
        out.push(NetAction::Networkd { write, remove });
    }

    // Links to (re)create, and links to delete.
    let mut fresh: Vec<String> = Vec::new();
    let mut create: Vec<(&LinkWant, CreateKind)> = Vec::new();
    let mut delete: Vec<&LinkNow> = Vec::new();
    for l in &desired.links {
        let Some(kind) = create_kind(&l.kind) else {
            continue;
        };
        if created_by_peer(l, desired) {
            if current.link(&l.name).is_none() {
                fresh.push(l.name.clone());
            }
            continue;
        }
        match current.link(&l.name) {
            Some(c) if same_kind(c, &l.kind) => continue,
            Some(c) => delete.push(c),
            None => {}
        }
        fresh.push(l.name.clone());
        if let CreateKind::Veth { peer } = &kind {
            fresh.push(peer.clone());
        }
        create.push((l, kind));
    }
    if desired.prune {
        for c in &current.links {
            let peer_named = c.veth_peer.as_deref().is_some_and(is_named);
            // Deleting one end of a veth pair deletes the other.
            let peer_going = c
                .veth_peer
                .as_deref()
                .is_some_and(|p| delete.iter().any(|d| d.name == p));
            if PRUNABLE.contains(&c.kind)
                && !is_named(&c.name)
                && !peer_named
                && !peer_going
                && !c.peer_netns
                && !current.has_guest_port(&c.name)
                && current.owns(c)
            {
                delete.push(c);
            }
        }
    }
    let deleted = |n: &str| delete.iter().any(|d| d.name == n);
    let fresh_or_deleted = |n: &str| fresh.iter().any(|f| f == n);

    // Routes and addresses the state no longer wants (prune only for routes).
    if desired.prune {
        for r in &current.routes {
            let ours = r.protocol == "static" || r.protocol == "boot";
            let gone = r.spec.dev.as_deref().is_some_and(deleted);
            if ours && !gone && !desired.routes.iter().any(|w| route_matches(w, &r.spec)) {
                out.push(NetAction::DeleteRoute {
                    route: r.spec.clone(),
                });
            }
        }
    }
    for l in &desired.links {
        let Some(want) = &l.addresses else { continue };
        if fresh_or_deleted(&l.name) {
            continue;
        }
        for a in current.addresses.iter().filter(|a| a.link == l.name) {
            // Dynamic addresses belong to DHCP or to the kernel's IPv6
            // autoconfiguration (router advertisements): not the agent's
            // to delete, or every RA would be drift.
            let kept = want.contains(&a.addr) || (a.dynamic && (l.dhcp || a.addr.addr().is_ipv6()));
            if !kept {
                out.push(NetAction::DeleteAddress {
                    link: l.name.clone(),
                    addr: a.addr,
                });
            }
        }
    }

    // Detach: declared links whose master the state took away, and (prune)
    // unnamed links on a managed bridge or bond.
    for c in &current.links {
        let Some(m) = &c.master else { continue };
        let want = desired.link(&c.name);
        let detach = match want {
            Some(w) => w.master.is_none() && w.declared && is_named(m),
            // A container's veth stays on its bridge.
            None => {
                desired.prune && desired.link(m).is_some() && !deleted(&c.name) && !c.peer_netns
            }
        };
        if detach && !deleted(m) {
            out.push(NetAction::Detach {
                link: c.name.clone(),
            });
        }
    }

    // OVS: extra ports (prune) and unnamed bridges (prune).
    let ovs_now = current.ovs.clone().unwrap_or_default();
    let mut ovs_ensure = Vec::new();
    for l in &desired.links {
        let WantKind::OvsBridge { ports } = &l.kind else {
            continue;
        };
        let ensure = (
            l.name.clone(),
            ports.clone(),
            l.datapath_type.clone(),
            l.mac.clone(),
        );
        match ovs_now.iter().find(|b| b.name == l.name) {
            None => ovs_ensure.push(ensure),
            Some(b) => {
                let dp_differs = l
                    .datapath_type
                    .as_ref()
                    .is_some_and(|dp| *dp != b.datapath_type);
                // The bridge's MAC is ovs-vswitchd's to set (it would undo
                // a netlink change): other_config:hwaddr.
                let mac_differs = l.mac.is_some() && l.mac != b.hwaddr;
                if dp_differs || mac_differs || ports.iter().any(|p| !b.ports.contains(p)) {
                    ovs_ensure.push(ensure);
                }
                if desired.prune {
                    for p in b.ports.iter().filter(|p| {
                        !ports.iter().any(|w| w.name == p.name)
                            && current.owns_ovs_port(&l.name, &p.name)
                    }) {
                        out.push(NetAction::DeleteOvsPort {
                            bridge: l.name.clone(),
                            port: p.name.clone(),
                            ovsdb: desired.ovsdb.clone(),
                        });
                    }
                }
            }
        }
    }
    if desired.prune {
        for b in ovs_now
            .iter()
            .filter(|b| desired.link(&b.name).is_none() && current.owns_ovs_bridge(&b.name))
        {
            out.push(NetAction::DeleteOvsBridge {
                name: b.name.clone(),
                ovsdb: desired.ovsdb.clone(),
            });
        }
    }

    // Link deletions: bridges, VLANs, bonds, then leaves.
    delete.sort_by(|a, b| {
        rank_now(&b.kind)
            .cmp(&rank_now(&a.kind))
            .then(a.name.cmp(&b.name))
    });
    delete.dedup_by(|a, b| a.name == b.name);
    for d in &delete {
        out.push(NetAction::DeleteLink {
            name: d.name.clone(),
        });
    }

    // Creations: leaves, bonds, VLANs, bridges.
    create.sort_by(|a, b| {
        rank(&a.0.kind)
            .cmp(&rank(&b.0.kind))
            .then(a.0.name.cmp(&b.0.name))
    });
    for (l, kind) in create {
        out.push(NetAction::CreateLink {
            name: l.name.clone(),
            kind,
        });
    }

    let mut links: Vec<&LinkWant> = desired.links.iter().collect();
    links.sort_by(|a, b| rank(&a.kind).cmp(&rank(&b.kind)).then(a.name.cmp(&b.name)));
    // An OVS bridge's kernel device exists only with ovs-vswitchd; without
    // it, only addresses (which then fail clearly) are asked for.
    let ovs_internal: Vec<&str> = desired
        .links
        .iter()
        .flat_map(|l| match &l.kind {
            WantKind::OvsBridge { ports } => ports
                .iter()
                .filter(|p| p.kind == PortKind::Internal)
                .map(|p| p.name.as_str())
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let present = |l: &LinkWant| {
        fresh_or_deleted(&l.name)
            || current.link(&l.name).is_some()
            || !(matches!(l.kind, WantKind::OvsBridge { .. })
                || ovs_internal.contains(&l.name.as_str()))
    };
    let now = |name: &str| {
        if fresh_or_deleted(name) {
            None
        } else {
            current.link(name)
        }
    };

    for l in links.iter().filter(|l| present(l)) {
        if let Some(mtu) = l.mtu {
            if now(&l.name).and_then(|c| c.mtu) != Some(mtu) {
                out.push(NetAction::SetMtu {
                    link: l.name.clone(),
                    mtu,
                });
            }
        }
        if let (Some(mac), false) = (&l.mac, matches!(l.kind, WantKind::OvsBridge { .. })) {
            if now(&l.name).and_then(|c| c.mac.as_deref()) != Some(mac.as_str()) {
                out.push(NetAction::SetMac {
                    link: l.name.clone(),
                    mac: mac.clone(),
                });
            }
        }
    }
    // Bond slaves are taken down to be attached: bring them up again.
    let mut force_up: Vec<&str> = Vec::new();
    for l in &links {
        let Some(m) = &l.master else { continue };
        if now(&l.name).and_then(|c| c.master.as_deref()) != Some(m.as_str()) {
            out.push(NetAction::Attach {
                link: l.name.clone(),
                master: m.clone(),
            });
            if matches!(
                desired.link(m).map(|w| &w.kind),
                Some(WantKind::Bond { .. })
            ) {
                force_up.push(&l.name);
            }
        }
    }
    for (name, ports, datapath_type, mac) in ovs_ensure {
        out.push(NetAction::EnsureOvsBridge {
            name,
            ports,
            ovsdb: desired.ovsdb.clone(),
            datapath_type,
            mac,
        });
    }
    for l in links.iter().filter(|l| present(l)) {
        let up_now = now(&l.name).is_some_and(|c| c.up) && !force_up.contains(&l.name.as_str());
        if l.up && !up_now {
            out.push(NetAction::SetUp {
                link: l.name.clone(),
            });
        } else if !l.up && up_now {
            out.push(NetAction::SetDown {
                link: l.name.clone(),
            });
        }
    }
    for l in &links {
        let Some(want) = &l.addresses else { continue };
        for a in want {
            let has = !fresh_or_deleted(&l.name)
                && current
                    .addresses
                    .iter()
                    .any(|c| c.link == l.name && c.addr == *a);
            if !has {
                out.push(NetAction::AddAddress {
                    link: l.name.clone(),
                    addr: *a,
                });
            }
        }
    }
    for r in &desired.routes {
        let on_fresh = r.dev.as_deref().is_some_and(&fresh_or_deleted);
        if on_fresh || !route_present(&current.routes, r) {
            out.push(NetAction::SetRoute { route: r.clone() });
        }
    }
    if let Some(dns) = &desired.dns {
        let same = current
            .dns
            .as_ref()
            .is_some_and(|c| c.servers == dns.servers && c.search == dns.search);
        if !same {
            out.push(NetAction::SetDns { dns: dns.clone() });
        }
    }
    if let Some(content) = &desired.interfaces_file {
        if current.interfaces_file.as_ref() != Some(content) {
            out.push(NetAction::WriteInterfaces {
                content: content.clone(),
            });
        }
    }
    out
}

/// Links the state references but neither declares nor creates (bridge
/// ports, bond slaves, VLAN bases) must exist: the error names each one.
pub fn check_references(current: &Current, desired: &Desired) -> Result<(), String> {
    let mut made: Vec<&str> = Vec::new();
    for l in &desired.links {
        if l.kind.link_kind().is_some() {
            made.push(&l.name);
        }
        match &l.kind {
            WantKind::Veth { peer } => made.push(peer),
            WantKind::OvsBridge { ports } => made.extend(
                ports
                    .iter()
                    .filter(|p| p.kind == PortKind::Internal)
                    .map(|p| p.name.as_str()),
            ),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for l in &desired.links {
        if l.kind == WantKind::Existing
            && current.link(&l.name).is_none()
            && !made.contains(&l.name.as_str())
        {
            let role = match &l.master {
                Some(m) => format!("port of {m}"),
                None => "declared as ethernet".to_string(),
            };
            missing.push(format!("'{}' ({role})", l.name));
        }
        if let WantKind::Vlan { base, .. } = &l.kind {
            if current.link(base).is_none() && desired.link(base).is_none() {
                missing.push(format!("'{base}' (base of vlan {})", l.name));
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the state references network links this host does not have: {}; \
             check the names with `ip link` and fix the state",
            missing.join(", ")
        ))
    }
}

/// Actions whose effect `current` does not show (verification after apply).
pub fn unmet(current: &Current, actions: &[NetAction]) -> Vec<String> {
    let link = |n: &str| current.link(n);
    let has_addr = |l: &str, a: &ipnet::IpNet| {
        current
            .addresses
            .iter()
            .any(|c| c.link == l && c.addr == *a)
    };
    let ovs = current.ovs.clone().unwrap_or_default();
    actions
        .iter()
        .filter(|a| {
            let ok = match a {
                NetAction::Networkd { write, remove } => {
                    write
                        .iter()
                        .all(|(k, v)| current.networkd.get(k) == Some(v))
                        && remove.iter().all(|k| !current.networkd.contains_key(k))
                }
                NetAction::DeleteRoute { route } => !route_present(&current.routes, route),
                NetAction::DeleteAddress { link, addr } => !has_addr(link, addr),
                NetAction::Detach { link: l } => link(l).is_none_or(|c| c.master.is_none()),
                NetAction::DeleteOvsPort { bridge, port, .. } => ovs
                    .iter()
                    .find(|b| &b.name == bridge)
                    .is_none_or(|b| !b.ports.iter().any(|p| &p.name == port)),
                NetAction::DeleteOvsBridge { name, .. } => !ovs.iter().any(|b| &b.name == name),
                NetAction::DeleteLink { name } => link(name).is_none(),
                NetAction::CreateLink { name, .. } => link(name).is_some(),
                NetAction::SetMtu { link: l, mtu } => link(l).is_some_and(|c| c.mtu == Some(*mtu)),
                NetAction::SetMac { link: l, mac } => {
                    link(l).is_some_and(|c| c.mac.as_ref() == Some(mac))
                }
                NetAction::Attach { link: l, master } => {
                    link(l).is_some_and(|c| c.master.as_ref() == Some(master))
                }
                NetAction::EnsureOvsBridge {
                    name,
                    ports,
                    datapath_type,
                    mac,
                    ..
                } => ovs.iter().find(|b| &b.name == name).is_some_and(|b| {
                    ports.iter().all(|p| b.ports.contains(p))
                        && datapath_type
                            .as_ref()
                            .is_none_or(|dp| *dp == b.datapath_type)
                        && (mac.is_none() || *mac == b.hwaddr)
                }),
                NetAction::SetUp { link: l } => link(l).is_some_and(|c| c.up),
                NetAction::SetDown { link: l } => link(l).is_some_and(|c| !c.up),
                NetAction::AddAddress { link, addr } => has_addr(link, addr),
                NetAction::SetRoute { route } => route_present(&current.routes, route),
                NetAction::SetDns { dns } => current
                    .dns
                    .as_ref()
                    .is_some_and(|c| c.servers == dns.servers && c.search == dns.search),
                NetAction::WriteInterfaces { content } => {
                    current.interfaces_file.as_ref() == Some(content)
                }
            };
            !ok
        })
        .map(|a| a.to_string())
        .collect()
}
