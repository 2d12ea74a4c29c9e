//! One model for each seed's alternative spellings: `network` (map) and
//! `net` (list) become a sorted [`NetworkSpec`]; `services`, `units`,
//! `timers` and `custom_units` become one [`UnitTarget`] per unit name.
//!
//! Call these only on a validated state (`crate::load`/`crate::parse_str`
//! returned `Ok`): they assume addresses parse, names are unique and
//! VLANs have an id and base; invalid values are skipped, not reported.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{
    ActiveState, BondMode, Dns, Interface, InterfaceType, IpBlock, Lacp, LinkState, NetInterface,
    OvsPortSpec, OvsPortType, PveNetwork, Route, ServiceState, State, TimerSpec,
};

/// Unit type suffixes systemd knows.
pub const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".mount",
    ".automount",
    ".swap",
    ".path",
    ".slice",
    ".scope",
    ".device",
];

/// Every interface of the state, whichever form declared it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Sorted by name.
    pub interfaces: Vec<IfaceSpec>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// `unix:PATH` when the state sets one.
    pub ovsdb: Option<String>,
    /// Delete managed links the state does not name.
    pub prune: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IfaceSpec {
    pub name: String,
    pub kind: IfaceKind,
    pub up: bool,
    pub addresses: Vec<IpNet>,
    pub dhcp4: bool,
    pub dhcp6: bool,
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
    pub mtu: Option<u32>,
    pub mac: Option<String>,
    pub dns: Vec<IpAddr>,
    /// Datapath of an ovs-bridge (`netdev`, `system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum IfaceKind {
    Ethernet,
    Bridge {
        ports: Vec<String>,
    },
    Bond {
        mode: Option<BondMode>,
        miimon: Option<u32>,
        slaves: Vec<String>,
        /// Only for a bond that is a port of an OVS bridge (see `OvsPortSpec`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lacp: Option<Lacp>,
    },
    Vlan {
        id: u16,
        base: String,
    },
    OvsBridge {
        ports: Vec<OvsPortSpec>,
    },
    Veth {
        peer: Option<String>,
    },
    Dummy,
}

/// What a unit should look like; `None` leaves that aspect alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTarget {
    pub enabled: Option<bool>,
    pub active: Option<bool>,
    pub masked: Option<bool>,
    /// Unit file text to write to /etc/systemd/system (custom units, timers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `NAME` -> `NAME.service` unless it already has a unit suffix.
pub fn service_unit_name(name: &str) -> String {
    if UNIT_SUFFIXES.iter().any(|s| name.ends_with(s)) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// `NAME` -> `NAME.timer` unless it already ends in `.timer`.
pub fn timer_unit_name(name: &str) -> String {
    if name.ends_with(".timer") {
        name.to_string()
    } else {
        format!("{name}.timer")
    }
}

/// The unit a timer activates: its `unit`, or its stem with `.service`.
pub fn timer_target(name: &str, timer: &TimerSpec) -> String {
    match &timer.unit {
        Some(u) => service_unit_name(u),
        None => format!("{}.service", name.strip_suffix(".timer").unwrap_or(name)),
    }
}

impl State {
    /// The merged interface list; call only on a validated state.
    pub fn network_spec(&self) -> NetworkSpec {
        let mut spec = NetworkSpec::default();
        let mut dns = Dns::default();
        if let Some(n) = &self.plugins.network {
            for (name, i) in &n.interfaces {
                spec.interfaces.push(from_map(name, i, i.kind));
            }
            for (name, i) in &n.bonds {
                spec.interfaces.push(from_map(name, i, InterfaceType::Bond));
            }
            spec.routes.extend(n.routes.iter().cloned());
            if let Some(d) = &n.dns {
                merge_dns(&mut dns, d);
            }
            spec.ovsdb = n.ovsdb.clone();
            spec.prune |= n.prune;
        }
        if let Some(n) = &self.plugins.net {
            for i in &n.interfaces {
                spec.interfaces.push(from_list(i));
            }
            spec.routes.extend(n.routes.iter().cloned());
            if let Some(d) = &n.dns {
                merge_dns(&mut dns, d);
            }
            if spec.ovsdb.is_none() {
                spec.ovsdb = n.ovsdb.clone();
            }
            spec.prune |= n.prune;
        }
        if let Some(p) = &self.plugins.proxmox {
            spec.interfaces.extend(pve_network_ifaces(&p.network));
        }
        ovs_bonds(&mut spec.interfaces);
        spec.interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        spec.dns = dns;
        spec
    }

    /// The ports the firewall's management floor accepts, with what each is
    /// for: the SSH port while ssh is not disabled, stopped or masked in
    /// `plugins.systemd`, and 8006 on Proxmox. Empty when the state turns the
    /// floor off.
    pub fn firewall_floor_ports(&self) -> Vec<(u16, &'static str)> {
        let Some(fw) = &self.plugins.firewall else {
            return Vec::new();
        };
        if !fw.management_floor {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.ssh_enabled() {
            let port = fw
                .ssh_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0);
            out.push((port.unwrap_or(22), "ssh"));
        }
        if self.is_proxmox() {
            out.push((8006, "proxmox-web"));
        }
        out
    }

    /// False only when `plugins.systemd` turns ssh (or sshd) off.
    pub fn ssh_enabled(&self) -> bool {
        let Some(sd) = &self.plugins.systemd else {
            return true;
        };
        let off_service = ["ssh", "sshd", "ssh.service", "sshd.service"]
            .iter()
            .filter_map(|n| sd.services.get(*n))
            .any(|s| {
                matches!(
                    s.state,
                    crate::model::ServiceState::Disabled
                        | crate::model::ServiceState::Stopped
                        | crate::model::ServiceState::Masked
                )
            });
        let off_unit = ["ssh.service", "sshd.service"]
            .iter()
            .filter_map(|n| sd.units.get(*n))
            .any(|u| {
                u.masked == Some(true)
                    || u.active_state == Some(crate::model::ActiveState::Inactive)
            });
        !(off_service || off_unit)
    }

    /// A Proxmox VE host: `bootstrap.distribution` proxmox or a
    /// `plugins.proxmox` section.
    pub fn is_proxmox(&self) -> bool {
        self.plugins.proxmox.is_some()
            || self
                .bootstrap
                .as_ref()
                .is_some_and(|b| b.distribution == crate::model::Distribution::Proxmox)
    }

    /// The desired state of every unit the state names; call only on a
    /// validated state.
    pub fn unit_specs(&self) -> BTreeMap<String, UnitTarget> {
        self.plugins
            .systemd
            .as_ref()
            .map(unit_specs_of)
            .unwrap_or_default()
    }
}

/// `services`, `units`, `custom_units` and `timers` of `plugins.systemd`
/// merged into one target per unit name (what the agent applies and the
/// golden files pin). A name without a unit suffix is a service; a unit
/// named twice gets every aspect either entry sets (the later form wins
/// where both do). Timers become unit files whose `Unit=` always carries a
/// suffix: systemd ignores `Unit=scrub`.
pub fn unit_specs_of(sd: &crate::model::Systemd) -> BTreeMap<String, UnitTarget> {
    let mut out: BTreeMap<String, UnitTarget> = BTreeMap::new();
    for (name, s) in &sd.services {
        let t = match s.state {
            ServiceState::Enabled => target(Some(true), Some(true), None),
            ServiceState::Disabled => target(Some(false), Some(false), None),
            ServiceState::Running => target(None, Some(true), None),
            ServiceState::Stopped => target(None, Some(false), None),
            ServiceState::Masked => target(None, Some(false), Some(true)),
        };
        out.insert(service_unit_name(name), t);
    }
    let overlay =
        |t: &mut UnitTarget, enabled: Option<bool>, active: Option<bool>, masked: Option<bool>| {
            t.enabled = enabled.or(t.enabled);
            t.active = active.or(t.active);
            t.masked = masked.or(t.masked);
        };
    for (name, u) in &sd.units {
        let t = out.entry(service_unit_name(name)).or_default();
        overlay(
            t,
            u.enabled,
            u.active_state.map(|a| a == ActiveState::Active),
            u.masked,
        );
    }
    for (name, c) in &sd.custom_units {
        let t = out.entry(service_unit_name(name)).or_default();
        overlay(
            t,
            c.enabled,
            c.active_state.map(|a| a == ActiveState::Active),
            None,
        );
        t.content = Some(c.content.clone());
    }
    for (name, timer) in &sd.timers {
        let unit = timer_unit_name(name);
        let activates = timer_target(name, timer);
        let description = timer
            .description
            .clone()
            .unwrap_or_else(|| format!("op-dbus timer for {activates}"));
        let content = format!(
            "[Unit]\nDescription={description}\n\n[Timer]\nOnCalendar={}\nUnit={activates}\nPersistent={}\n\n[Install]\nWantedBy=timers.target\n",
            timer.on_calendar, timer.persistent
        );
        let mut t = target(Some(timer.enabled), Some(timer.enabled), None);
        t.content = Some(content);
        out.insert(unit, t);
    }
    out
}

/// `plugins.proxmox.network` (PVE's stanzas of /etc/network/interfaces)
/// as interfaces of the network plugin, its one writer: `bridge` is a
/// Linux bridge, `OVSBridge` an Open vSwitch bridge, `eth` a NIC;
/// `address` + `netmask` become one CIDR address; `bridge_ports` may be
/// space separated and `none` means no port. Types `validate` refuses
/// are skipped.
pub fn pve_network_ifaces(list: &[PveNetwork]) -> Vec<IfaceSpec> {
    let mut out = Vec::new();
    for n in list {
        let ports: Vec<String> = n
            .bridge_ports
            .iter()
            .flat_map(|p| p.split_whitespace())
            .filter(|p| *p != "none")
            .map(str::to_string)
            .collect();
        let kind = match n.kind.as_str() {
            "bridge" => IfaceKind::Bridge { ports },
            "OVSBridge" => IfaceKind::OvsBridge {
                ports: ports.iter().map(|p| system_port(p)).collect(),
            },
            "eth" => IfaceKind::Ethernet,
            _ => continue,
        };
        let gateway: Option<IpAddr> = n.gateway.as_deref().and_then(|g| g.parse().ok());
        out.push(IfaceSpec {
            name: n.iface.clone(),
            kind,
            up: true,
            addresses: pve_address(n).into_iter().collect(),
            dhcp4: false,
            dhcp6: false,
            gateway4: match gateway {
                Some(IpAddr::V4(g)) => Some(g),
                _ => None,
            },
            gateway6: match gateway {
                Some(IpAddr::V6(g)) => Some(g),
                _ => None,
            },
            mtu: None,
            mac: None,
            dns: Vec::new(),
            datapath_type: None,
        });
    }
    out
}

/// The address of a PVE stanza: `address` in CIDR form, or `address` with
/// `netmask` (dotted, or a prefix length).
pub fn pve_address(n: &PveNetwork) -> Option<IpNet> {
    let a = n.address.as_deref()?.trim();
    if a.contains('/') {
        return a.parse().ok();
    }
    let ip: IpAddr = a.parse().ok()?;
    let mask = n.netmask.as_deref()?.trim();
    let prefix = match mask.parse::<u8>() {
        Ok(p) => p,
        Err(_) => {
            let m: IpAddr = mask.parse().ok()?;
            ipnet::ip_mask_to_prefix(m).ok()?
        }
    };
    IpNet::new(ip, prefix).ok()
}

fn target(enabled: Option<bool>, active: Option<bool>, masked: Option<bool>) -> UnitTarget {
    UnitTarget {
        enabled,
        active,
        masked,
        content: None,
    }
}

fn merge_dns(into: &mut Dns, from: &Dns) {
    for s in &from.servers {
        if !into.servers.contains(s) {
            into.servers.push(s.clone());
        }
    }
    for s in &from.search {
        if !into.search.contains(s) {
            into.search.push(s.clone());
        }
    }
}

fn ips(list: &[String]) -> Vec<IpAddr> {
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

fn from_map(name: &str, i: &Interface, kind: InterfaceType) -> IfaceSpec {
    let ports: Vec<OvsPortSpec> = i.ports.iter().map(|p| p.0.clone()).collect();
    let kind = match kind {
        InterfaceType::Ethernet => IfaceKind::Ethernet,
        InterfaceType::Bridge => {
            let mut names: Vec<String> = i.bridge_ports.iter().cloned().collect();
            names.extend(ports.iter().map(|p| p.name.clone()));
            IfaceKind::Bridge { ports: names }
        }
        InterfaceType::Bond => IfaceKind::Bond {
            mode: i.mode,
            miimon: i.miimon,
            slaves: i.slaves.clone(),
            lacp: i.lacp,
        },
        InterfaceType::Vlan => IfaceKind::Vlan {
            id: i.id.unwrap_or_default(),
            base: i.base.clone().unwrap_or_default(),
        },
        InterfaceType::OvsBridge => {
            let mut all = ports;
            all.extend(i.bridge_ports.iter().map(|n| system_port(n)));
            IfaceKind::OvsBridge { ports: all }
        }
        InterfaceType::Veth => IfaceKind::Veth {
            peer: i.peer.clone(),
        },
        InterfaceType::Dummy => IfaceKind::Dummy,
    };
    IfaceSpec {
        name: name.to_string(),
        kind,
        up: i.state == LinkState::Up,
        addresses: i.address.iter().filter_map(|a| a.parse().ok()).collect(),
        dhcp4: i.dhcp,
        dhcp6: i.dhcp6,
        gateway4: i.gateway.as_deref().and_then(|g| g.parse().ok()),
        gateway6: i.gateway6.as_deref().and_then(|g| g.parse().ok()),
        mtu: i.mtu,
        mac: i.mac.clone(),
        dns: ips(&i.dns),
        datapath_type: i.datapath_type.clone(),
    }
}

fn system_port(name: &str) -> OvsPortSpec {
    OvsPortSpec::plain(name, OvsPortType::System)
}

/// A bond the state declares whose name is a system port of an OVS bridge
/// becomes that port as an OVS bond (its slaves the port's interfaces): a
/// kernel bond cannot be an OVS port's bond. Its own entry goes.
fn ovs_bonds(interfaces: &mut Vec<IfaceSpec>) {
    let mut bonds: BTreeMap<String, OvsPortSpec> = BTreeMap::new();
    for i in interfaces.iter() {
        if let IfaceKind::Bond {
            mode,
            miimon,
            slaves,
            lacp,
        } = &i.kind
        {
            let mut p = OvsPortSpec::plain(i.name.clone(), OvsPortType::Bond);
            p.interfaces = slaves.clone();
            p.bond_mode = *mode;
            p.miimon = *miimon;
            p.lacp = *lacp;
            bonds.insert(i.name.clone(), p);
        }
    }
    let mut used = Vec::new();
    for i in interfaces.iter_mut() {
        let IfaceKind::OvsBridge { ports } = &mut i.kind else {
            continue;
        };
        for p in ports.iter_mut() {
            if p.kind != OvsPortType::System {
                continue;
            }
            if let Some(b) = bonds.get(&p.name) {
                let (tag, trunks) = (p.tag, std::mem::take(&mut p.trunks));
                *p = b.clone();
                p.tag = tag;
                p.trunks = trunks;
                used.push(p.name.clone());
            }
        }
    }
    interfaces.retain(|i| !used.contains(&i.name));
}

fn from_list(i: &NetInterface) -> IfaceSpec {
    let ports: Vec<OvsPortSpec> = i.ports.iter().map(|p| p.0.clone()).collect();
    let kind = match i.kind {
        InterfaceType::Ethernet => IfaceKind::Ethernet,
        InterfaceType::Bridge => IfaceKind::Bridge {
            ports: ports.into_iter().map(|p| p.name).collect(),
        },
        InterfaceType::Bond => IfaceKind::Bond {
            mode: i.mode,
            miimon: i.miimon,
            slaves: i.slaves.clone(),
            lacp: i.lacp,
        },
        InterfaceType::Vlan => IfaceKind::Vlan {
            id: i.id.unwrap_or_default(),
            base: i.base.clone().unwrap_or_default(),
        },
        InterfaceType::OvsBridge => IfaceKind::OvsBridge { ports },
        InterfaceType::Veth => IfaceKind::Veth {
            peer: i.peer.clone(),
        },
        InterfaceType::Dummy => IfaceKind::Dummy,
    };
    let (v4, v6) = (enabled(&i.ipv4), enabled(&i.ipv6));
    let mut addresses = Vec::new();
    let mut dns = Vec::new();
    for block in [v4, v6].into_iter().flatten() {
        addresses.extend(block.address.iter().filter_map(|a| {
            let ip: IpAddr = a.ip.parse().ok()?;
            IpNet::new(ip, a.prefix).ok()
        }));
        dns.extend(ips(&block.dns));
    }
    IfaceSpec {
        name: i.name.clone(),
        kind,
        up: i.state == LinkState::Up,
        addresses,
        dhcp4: v4.is_some_and(|b| b.dhcp),
        dhcp6: v6.is_some_and(|b| b.dhcp),
        gateway4: v4
            .and_then(|b| b.gateway.as_deref())
            .and_then(|g| g.parse().ok()),
        gateway6: v6
            .and_then(|b| b.gateway.as_deref())
            .and_then(|g| g.parse().ok()),
        mtu: i.mtu,
        mac: i.mac.clone(),
        datapath_type: i.datapath_type.clone(),
        dns,
    }
}

fn enabled(b: &Option<IpBlock>) -> Option<&IpBlock> {
    b.as_ref().filter(|b| b.enabled)
}
