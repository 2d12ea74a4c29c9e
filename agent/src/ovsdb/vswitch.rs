//! Typed helpers for the Open_vSwitch schema: read bridges/ports/interfaces,
//! ensure or delete a bridge, ensure the root row, and the next_cfg/cur_cfg
//! handshake with ovs-vswitchd. Each change is one atomic transaction.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ops::{Condition, Function, Mutation, Mutator, Operation, Row, WaitUntil};
use super::{Atom, Client, Datum, OvsdbError, Result, VSWITCH_DB};

/// An interface as OVSDB reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterfaceInfo {
    pub uuid: String,
    pub name: String,
    /// `internal`, `patch`, ... (empty for a system interface).
    #[serde(rename = "type")]
    pub kind: String,
    pub options: BTreeMap<String, String>,
    /// Set by ovs-vswitchd when it could not create the interface.
    pub error: Option<String>,
    /// OpenFlow port number; absent until ovs-vswitchd assigns one, -1 on failure.
    pub ofport: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortInfo {
    pub uuid: String,
    pub name: String,
    /// Access VLAN (`tag` column).
    pub tag: Option<u16>,
    /// VLANs a trunk port carries (`trunks`), sorted; empty: all.
    pub trunks: Vec<u16>,
    pub interfaces: Vec<InterfaceInfo>,
    /// `bond_mode` (`active-backup`, `balance-slb`, `balance-tcp`), if set.
    pub bond_mode: Option<String>,
    /// `lacp` (`active`, `passive`, `off`), if set.
    pub lacp: Option<String>,
    pub other_config: BTreeMap<String, String>,
}

impl PortInfo {
    /// Whether the port is a bond: several interfaces, a bond mode, or an
    /// interface not named like the port.
    pub fn is_bond(&self) -> bool {
        self.interfaces.len() > 1
            || self.bond_mode.is_some()
            || self.interfaces.iter().any(|i| i.name != self.name)
    }

    /// The port's bond settings as a [`PortKind::Bond`] (OVS defaults made
    /// explicit: `active-backup`, LACP off, carrier detection).
    pub fn bond_kind(&self) -> PortKind {
        let miimon = (self
            .other_config
            .get("bond-detect-mode")
            .map(String::as_str)
            == Some("miimon"))
        .then(|| {
            self.other_config
                .get("bond-miimon-interval")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_MIIMON)
        });
        PortKind::Bond {
            interfaces: self.interfaces.iter().map(|i| i.name.clone()).collect(),
            bond_mode: self
                .bond_mode
                .clone()
                .unwrap_or_else(|| DEFAULT_BOND_MODE.to_string()),
            lacp: self.lacp.clone().filter(|l| l != "off"),
            miimon,
        }
    }
}

/// OVS's bond mode when `bond_mode` is empty.
pub const DEFAULT_BOND_MODE: &str = "active-backup";
/// OVS's `bond-miimon-interval` when it is not set.
const DEFAULT_MIIMON: u32 = 200;
/// The `other_config` keys of a bond port the agent manages.
const BOND_KEYS: [&str; 2] = ["bond-detect-mode", "bond-miimon-interval"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BridgeInfo {
    pub uuid: String,
    pub name: String,
    /// `netdev` (user-space datapath), `system` or empty (the default).
    pub datapath_type: String,
    /// Sorted by name.
    pub ports: Vec<PortInfo>,
    /// `other_config:hwaddr`: the MAC of the bridge's own device, if set.
    pub hwaddr: Option<String>,
}

impl BridgeInfo {
    pub fn port(&self, name: &str) -> Option<&PortInfo> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// What kind of interface a port carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PortKind {
    /// A port backed by an OVS internal device.
    Internal,
    /// An existing kernel network device (`eth0`).
    System,
    /// One end of a patch pair; `peer` is the other end's interface name.
    Patch { peer: String },
    /// An OVS bond: one port over several existing links (`interfaces`,
    /// sorted), `bond_mode` `active-backup`, `balance-slb` or `balance-tcp`,
    /// LACP `active`/`passive` (`None`: off), MII monitoring every `miimon`
    /// ms (`None`: carrier detection).
    Bond {
        interfaces: Vec<String>,
        bond_mode: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lacp: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        miimon: Option<u32>,
    },
}

impl PortKind {
    /// The Interface `type` column value.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortKind::Internal => "internal",
            PortKind::System | PortKind::Bond { .. } => "",
            PortKind::Patch { .. } => "patch",
        }
    }

    /// The Interface `options` column value.
    pub fn options(&self) -> BTreeMap<String, String> {
        match self {
            PortKind::Patch { peer } => BTreeMap::from([("peer".to_string(), peer.clone())]),
            _ => BTreeMap::new(),
        }
    }
}

/// A port with one interface of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    pub name: String,
    #[serde(flatten)]
    pub kind: PortKind,
    /// Access VLAN: the port carries only this VLAN, untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    /// VLANs a trunk port carries; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunks: Vec<u16>,
}

impl PortSpec {
    pub fn new(name: impl Into<String>, kind: PortKind) -> Self {
        Self {
            name: name.into(),
            kind,
            tag: None,
            trunks: Vec::new(),
        }
    }

    /// The same port with access VLAN `tag` and trunk VLANs `trunks`.
    pub fn with_vlans(mut self, tag: Option<u16>, trunks: &[u16]) -> Self {
        self.tag = tag;
        self.trunks = trunks.to_vec();
        self.trunks.sort();
        self.trunks.dedup();
        self
    }

    /// The names of the port's interfaces: its members for a bond, else itself.
    pub fn interface_names(&self) -> Vec<String> {
        match &self.kind {
            PortKind::Bond { interfaces, .. } => interfaces.clone(),
            _ => vec![self.name.clone()],
        }
    }

    /// `bond_mode` and `lacp` of a bond port (empty for other ports).
    fn bond_columns(&self) -> Vec<(String, Datum)> {
        let PortKind::Bond {
            bond_mode, lacp, ..
        } = &self.kind
        else {
            return Vec::new();
        };
        vec![
            ("bond_mode".into(), Datum::atom(bond_mode.as_str())),
            (
                "lacp".into(),
                Datum::set(lacp.as_deref().map(str::to_string)),
            ),
        ]
    }

    /// The agent's `other_config` keys of a bond port.
    fn bond_config(&self) -> BTreeMap<String, String> {
        match &self.kind {
            PortKind::Bond {
                miimon: Some(ms), ..
            } => BTreeMap::from([
                ("bond-detect-mode".to_string(), "miimon".to_string()),
                ("bond-miimon-interval".to_string(), ms.to_string()),
            ]),
            _ => BTreeMap::new(),
        }
    }

    fn vlan_columns(&self) -> [(String, Datum); 2] {
        [
            ("tag".into(), Datum::set(self.tag.map(i64::from))),
            (
                "trunks".into(),
                Datum::set(self.trunks.iter().map(|t| i64::from(*t))),
            ),
        ]
    }
}

/// A bridge and the ports it must have. The bridge's own internal port (named
/// like the bridge, as `ovs-vsctl add-br` makes it) is added unless listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSpec {
    pub name: String,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// `netdev` for the user-space datapath; `None` leaves the column alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath_type: Option<String>,
    /// MAC of the bridge's own device (`other_config:hwaddr`); `None`
    /// leaves it alone (ovs-vswitchd then picks one from the ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwaddr: Option<String>,
}

impl BridgeSpec {
    fn all_ports(&self) -> Vec<PortSpec> {
        let mut ports = self.ports.clone();
        if !ports.iter().any(|p| p.name == self.name) {
            ports.insert(0, PortSpec::new(self.name.clone(), PortKind::Internal));
        }
        ports
    }
}

/// What [`ensure_bridge`] changed; all empty when the bridge already matched.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EnsureReport {
    pub created_bridge: bool,
    pub added_ports: Vec<String>,
    pub updated_interfaces: Vec<String>,
    /// Ports whose VLAN tag or trunks changed.
    pub updated_ports: Vec<String>,
    /// Bond ports whose members, mode, LACP or link monitoring changed.
    pub updated_bonds: Vec<String>,
    pub updated_bridge: bool,
}

impl EnsureReport {
    pub fn changed(&self) -> bool {
        self.created_bridge
            || !self.added_ports.is_empty()
            || !self.updated_interfaces.is_empty()
            || !self.updated_ports.is_empty()
            || !self.updated_bonds.is_empty()
            || self.updated_bridge
    }
}

fn select(table: &str, columns: &[&str]) -> Operation {
    Operation::Select {
        table: table.into(),
        conditions: vec![],
        columns: Some(columns.iter().map(|c| c.to_string()).collect()),
    }
}

fn col<'a>(row: &'a Row, name: &str) -> Result<&'a Datum> {
    row.get(name)
        .ok_or_else(|| OvsdbError::Decode(format!("row lacks column '{name}'")))
}

fn col_str(row: &Row, name: &str) -> Result<String> {
    col(row, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| OvsdbError::Decode(format!("column '{name}' is not a string")))
}

fn uuids(d: &Datum) -> Vec<String> {
    d.atoms()
        .iter()
        .filter_map(|a| match a {
            Atom::Uuid(u) => Some(u.clone()),
            _ => None,
        })
        .collect()
}

/// All bridges with their ports and interfaces, sorted by name.
pub async fn list_bridges(client: &Client) -> Result<Vec<BridgeInfo>> {
    let res = client
        .transact(
            VSWITCH_DB,
            &[
                select(
                    "Bridge",
                    &["_uuid", "name", "ports", "datapath_type", "other_config"],
                ),
                select(
                    "Port",
                    &[
                        "_uuid",
                        "name",
                        "interfaces",
                        "tag",
                        "trunks",
                        "bond_mode",
                        "lacp",
                        "other_config",
                    ],
                ),
                select(
                    "Interface",
                    &["_uuid", "name", "type", "options", "error", "ofport"],
                ),
            ],
        )
        .await?;
    let mut ifaces = BTreeMap::new();
    for r in res[2].rows() {
        let info = InterfaceInfo {
            uuid: col_str(r, "_uuid")?,
            name: col_str(r, "name")?,
            kind: col_str(r, "type")?,
            options: col(r, "options")?.string_map(),
            error: col(r, "error")?.as_str().map(str::to_string),
            ofport: col(r, "ofport")?.as_i64(),
        };
        ifaces.insert(info.uuid.clone(), info);
    }
    let mut ports = BTreeMap::new();
    for r in res[1].rows() {
        let mut interfaces: Vec<InterfaceInfo> = uuids(col(r, "interfaces")?)
            .iter()
            .filter_map(|u| ifaces.get(u).cloned())
            .collect();
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        let mut trunks: Vec<u16> = col(r, "trunks")?
            .atoms()
            .iter()
            .filter_map(|a| a.as_i64().and_then(|t| u16::try_from(t).ok()))
            .collect();
        trunks.sort();
        let info = PortInfo {
            uuid: col_str(r, "_uuid")?,
            name: col_str(r, "name")?,
            tag: col(r, "tag")?.as_i64().and_then(|t| u16::try_from(t).ok()),
            trunks,
            interfaces,
            bond_mode: col(r, "bond_mode")?.as_str().map(str::to_string),
            lacp: col(r, "lacp")?.as_str().map(str::to_string),
            other_config: col(r, "other_config")?.string_map(),
        };
        ports.insert(info.uuid.clone(), info);
    }
    let mut bridges = Vec::new();
    for r in res[0].rows() {
        let mut bports: Vec<PortInfo> = uuids(col(r, "ports")?)
            .iter()
            .filter_map(|u| ports.get(u).cloned())
            .collect();
        bports.sort_by(|a, b| a.name.cmp(&b.name));
        bridges.push(BridgeInfo {
            uuid: col_str(r, "_uuid")?,
            name: col_str(r, "name")?,
            datapath_type: col_str(r, "datapath_type").unwrap_or_default(),
            ports: bports,
            hwaddr: col(r, "other_config")?
                .string_map()
                .get("hwaddr")
                .map(|m| m.to_ascii_lowercase()),
        });
    }
    bridges.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(bridges)
}

/// UUID of the Open_vSwitch root row, if the database has one.
pub async fn root_uuid(client: &Client) -> Result<Option<String>> {
    let res = client
        .transact(VSWITCH_DB, &[select("Open_vSwitch", &["_uuid"])])
        .await?;
    match res[0].rows() {
        [] => Ok(None),
        [row] => Ok(Some(col_str(row, "_uuid")?)),
        rows => Err(OvsdbError::Decode(format!(
            "{} Open_vSwitch root rows, expected one",
            rows.len()
        ))),
    }
}

/// Makes sure the root row exists (a database fresh from `ovsdb-tool create`
/// has none) and returns its UUID. Safe against a concurrent creator.
pub async fn ensure_root_row(client: &Client) -> Result<String> {
    if let Some(u) = root_uuid(client).await? {
        return Ok(u);
    }
    let ops = [
        // insert only while the table is still empty
        Operation::Wait {
            table: "Open_vSwitch".into(),
            conditions: vec![],
            columns: vec![],
            until: WaitUntil::Equal,
            rows: vec![],
            timeout_ms: Some(0),
        },
        Operation::Insert {
            table: "Open_vSwitch".into(),
            row: Row::new(),
            uuid_name: None,
        },
    ];
    match client.transact(VSWITCH_DB, &ops).await {
        Ok(res) => res[1]
            .uuid
            .clone()
            .ok_or_else(|| OvsdbError::Decode("insert returned no uuid".into())),
        Err(OvsdbError::Operation { index: 0, .. }) => root_uuid(client)
            .await?
            .ok_or_else(|| OvsdbError::Precondition("Open_vSwitch root row vanished".into())),
        Err(e) => Err(e),
    }
}

/// Inserts an Interface row of `p`'s type named `name`; returns its uuid-name.
fn insert_interface(ops: &mut Vec<Operation>, p: &PortSpec, name: &str, tag: String) -> Atom {
    ops.push(Operation::Insert {
        table: "Interface".into(),
        row: Row::from([
            ("name".into(), Datum::atom(name)),
            ("type".into(), Datum::atom(p.kind.type_name())),
            ("options".into(), Datum::map(p.kind.options())),
        ]),
        uuid_name: Some(tag.clone()),
    });
    Atom::named(tag)
}

fn insert_port(ops: &mut Vec<Operation>, p: &PortSpec, i: usize) -> String {
    let port = format!("port{i}");
    let ifaces: Vec<Atom> = p
        .interface_names()
        .iter()
        .enumerate()
        .map(|(j, n)| insert_interface(ops, p, n, format!("iface{i}x{j}")))
        .collect();
    let mut row = Row::from([
        ("name".into(), Datum::atom(p.name.as_str())),
        ("interfaces".into(), Datum::Set(ifaces)),
    ]);
    row.extend(p.vlan_columns());
    row.extend(p.bond_columns());
    let config = p.bond_config();
    if !config.is_empty() {
        row.insert("other_config".into(), Datum::map(config));
    }
    ops.push(Operation::Insert {
        table: "Port".into(),
        row,
        uuid_name: Some(port.clone()),
    });
    port
}

/// Checks that the mutate at `index` matched exactly one row.
fn expect_one(res: &[super::OpResult], index: usize, what: &str) -> Result<()> {
    match res.get(index).and_then(|r| r.count) {
        Some(1) => Ok(()),
        n => Err(OvsdbError::Precondition(format!(
            "{what} matched {} rows instead of 1; nothing was changed",
            n.unwrap_or(0)
        ))),
    }
}

/// Makes the bridge exist with at least the given ports, each with the given
/// interface type and options. Ports not in `spec` are left alone. Sends
/// nothing when everything already matches.
pub async fn ensure_bridge(client: &Client, spec: &BridgeSpec) -> Result<EnsureReport> {
    let root = ensure_root_row(client).await?;
    let bridges = list_bridges(client).await?;
    let mut ops = Vec::new();
    let mut report = EnsureReport::default();
    let mut count_checks = Vec::new();
    let wanted = spec.all_ports();
    match bridges.iter().find(|b| b.name == spec.name) {
        None => {
            let mut port_refs = Vec::new();
            for (i, p) in wanted.iter().enumerate() {
                port_refs.push(Atom::named(insert_port(&mut ops, p, i)));
                report.added_ports.push(p.name.clone());
            }
            let mut row = Row::from([
                ("name".into(), Datum::atom(spec.name.as_str())),
                ("ports".into(), Datum::Set(port_refs)),
            ]);
            if let Some(dp) = &spec.datapath_type {
                row.insert("datapath_type".into(), Datum::atom(dp.as_str()));
            }
            if let Some(mac) = &spec.hwaddr {
                row.insert(
                    "other_config".into(),
                    Datum::map([("hwaddr", mac.as_str())]),
                );
            }
            ops.push(Operation::Insert {
                table: "Bridge".into(),
                row,
                uuid_name: Some("bridge".into()),
            });
            // Without this the new Bridge is garbage-collected at commit.
            count_checks.push((ops.len(), "adding the bridge to the Open_vSwitch root row"));
            ops.push(Operation::Mutate {
                table: "Open_vSwitch".into(),
                conditions: vec![Condition::uuid(&root)],
                mutations: vec![Mutation::new(
                    "bridges",
                    Mutator::Insert,
                    Datum::named_uuid("bridge"),
                )],
            });
            report.created_bridge = true;
        }
        Some(bridge) => {
            if let Some(dp) = spec
                .datapath_type
                .as_ref()
                .filter(|dp| **dp != bridge.datapath_type)
            {
                ops.push(Operation::Update {
                    table: "Bridge".into(),
                    conditions: vec![Condition::uuid(&bridge.uuid)],
                    row: Row::from([("datapath_type".into(), Datum::atom(dp.as_str()))]),
                });
                report.updated_bridge = true;
            }
            if let Some(mac) = spec
                .hwaddr
                .as_ref()
                .filter(|m| bridge.hwaddr.as_ref() != Some(*m))
            {
                ops.push(Operation::Mutate {
                    table: "Bridge".into(),
                    conditions: vec![Condition::uuid(&bridge.uuid)],
                    mutations: vec![
                        Mutation::new("other_config", Mutator::Delete, Datum::set(["hwaddr"])),
                        Mutation::new(
                            "other_config",
                            Mutator::Insert,
                            Datum::map([("hwaddr", mac.as_str())]),
                        ),
                    ],
                });
                report.updated_bridge = true;
            }
            let mut new_ports = Vec::new();
            for (i, p) in wanted.iter().enumerate() {
                let Some(port) = bridge.port(&p.name) else {
                    new_ports.push(Atom::named(insert_port(&mut ops, p, i)));
                    report.added_ports.push(p.name.clone());
                    continue;
                };
                if port.tag != p.tag || port.trunks != p.trunks {
                    ops.push(Operation::Update {
                        table: "Port".into(),
                        conditions: vec![Condition::uuid(&port.uuid)],
                        row: Row::from(p.vlan_columns()),
                    });
                    report.updated_ports.push(p.name.clone());
                }
                if let PortKind::Bond { .. } = &p.kind {
                    if update_bond(&mut ops, port, p, i) {
                        report.updated_bonds.push(p.name.clone());
                    }
                    continue;
                }
                if port.is_bond() {
                    return Err(OvsdbError::Precondition(format!(
                        "port '{}' on bridge '{}' is an OVS bond and the state wants a \
                         plain port; remove it (ovs-vsctl del-port {} {}) and apply again",
                        p.name, spec.name, spec.name, p.name
                    )));
                }
                let iface = port
                    .interfaces
                    .iter()
                    .find(|f| f.name == p.name)
                    .ok_or_else(|| {
                        OvsdbError::Precondition(format!(
                            "port '{}' on bridge '{}' has no interface of the same name; \
                             remove it (ovs-vsctl del-port) and apply again",
                            p.name, spec.name
                        ))
                    })?;
                if iface.kind != p.kind.type_name() || iface.options != p.kind.options() {
                    ops.push(Operation::Update {
                        table: "Interface".into(),
                        conditions: vec![Condition::uuid(&iface.uuid)],
                        row: Row::from([
                            ("type".into(), Datum::atom(p.kind.type_name())),
                            ("options".into(), Datum::map(p.kind.options())),
                        ]),
                    });
                    report.updated_interfaces.push(p.name.clone());
                }
            }
            if !new_ports.is_empty() {
                count_checks.push((ops.len(), "adding ports to the bridge"));
                ops.push(Operation::Mutate {
                    table: "Bridge".into(),
                    conditions: vec![Condition::uuid(&bridge.uuid)],
                    mutations: vec![Mutation::new(
                        "ports",
                        Mutator::Insert,
                        Datum::Set(new_ports),
                    )],
                });
            }
        }
    }
    if ops.is_empty() {
        return Ok(report);
    }
    tracing::debug!(bridge = %spec.name, ?report, "ovsdb: ensuring bridge");
    let res = client.transact(VSWITCH_DB, &ops).await?;
    for (i, what) in count_checks {
        expect_one(&res, i, what)?;
    }
    Ok(report)
}

/// Brings the existing bond port `port` to `want` (a [`PortKind::Bond`]):
/// members added and removed in one mutate, mode and LACP updated, the
/// agent's `other_config` keys replaced. Returns whether it changed anything.
fn update_bond(ops: &mut Vec<Operation>, port: &PortInfo, want: &PortSpec, i: usize) -> bool {
    let PortKind::Bond {
        interfaces,
        bond_mode,
        lacp,
        miimon,
    } = &want.kind
    else {
        return false;
    };
    let PortKind::Bond {
        interfaces: have,
        bond_mode: have_mode,
        lacp: have_lacp,
        miimon: have_miimon,
    } = port.bond_kind()
    else {
        return false;
    };
    let mut changed = false;
    let add: Vec<Atom> = interfaces
        .iter()
        .filter(|m| !have.contains(m))
        .enumerate()
        .map(|(j, m)| insert_interface(ops, want, m, format!("iface{i}x{j}")))
        .collect();
    let remove: Vec<Atom> = port
        .interfaces
        .iter()
        .filter(|f| !interfaces.contains(&f.name))
        .map(|f| Atom::uuid(f.uuid.clone()))
        .collect();
    if !add.is_empty() || !remove.is_empty() {
        // Insert first: a port may never be left without an interface.
        let mut mutations = Vec::new();
        if !add.is_empty() {
            mutations.push(Mutation::new(
                "interfaces",
                Mutator::Insert,
                Datum::Set(add),
            ));
        }
        if !remove.is_empty() {
            mutations.push(Mutation::new(
                "interfaces",
                Mutator::Delete,
                Datum::Set(remove),
            ));
        }
        ops.push(Operation::Mutate {
            table: "Port".into(),
            conditions: vec![Condition::uuid(&port.uuid)],
            mutations,
        });
        changed = true;
    }
    if *bond_mode != have_mode || *lacp != have_lacp || port.bond_mode.is_none() {
        ops.push(Operation::Update {
            table: "Port".into(),
            conditions: vec![Condition::uuid(&port.uuid)],
            row: Row::from_iter(want.bond_columns()),
        });
        changed = true;
    }
    if *miimon != have_miimon {
        let mut mutations = vec![Mutation::new(
            "other_config",
            Mutator::Delete,
            Datum::set(BOND_KEYS),
        )];
        let config = want.bond_config();
        if !config.is_empty() {
            mutations.push(Mutation::new(
                "other_config",
                Mutator::Insert,
                Datum::map(config),
            ));
        }
        ops.push(Operation::Mutate {
            table: "Port".into(),
            conditions: vec![Condition::uuid(&port.uuid)],
            mutations,
        });
        changed = true;
    }
    changed
}

/// Removes a bridge (and with it its ports and interfaces) by taking it out
/// of the root row. Returns false if there was no such bridge.
pub async fn delete_bridge(client: &Client, name: &str) -> Result<bool> {
    let Some(root) = root_uuid(client).await? else {
        return Ok(false);
    };
    let bridges = list_bridges(client).await?;
    let Some(bridge) = bridges.iter().find(|b| b.name == name) else {
        return Ok(false);
    };
    let res = client
        .transact(
            VSWITCH_DB,
            &[Operation::Mutate {
                table: "Open_vSwitch".into(),
                conditions: vec![Condition::uuid(&root)],
                mutations: vec![Mutation::new(
                    "bridges",
                    Mutator::Delete,
                    Datum::uuid(&bridge.uuid),
                )],
            }],
        )
        .await?;
    expect_one(
        &res,
        0,
        "removing the bridge from the Open_vSwitch root row",
    )?;
    Ok(true)
}

/// Removes one port from a bridge. Returns false if it was not there.
pub async fn delete_port(client: &Client, bridge: &str, port: &str) -> Result<bool> {
    let bridges = list_bridges(client).await?;
    let Some(b) = bridges.iter().find(|b| b.name == bridge) else {
        return Ok(false);
    };
    let Some(p) = b.port(port) else {
        return Ok(false);
    };
    let res = client
        .transact(
            VSWITCH_DB,
            &[Operation::Mutate {
                table: "Bridge".into(),
                conditions: vec![Condition::uuid(&b.uuid)],
                mutations: vec![Mutation::new(
                    "ports",
                    Mutator::Delete,
                    Datum::uuid(&p.uuid),
                )],
            }],
        )
        .await?;
    expect_one(&res, 0, "removing the port from the bridge")?;
    Ok(true)
}

/// Increments `next_cfg` in the root row and returns the new value; once
/// ovs-vswitchd has applied the database it sets `cur_cfg` to it.
pub async fn bump_next_cfg(client: &Client) -> Result<i64> {
    let root = ensure_root_row(client).await?;
    let res = client
        .transact(
            VSWITCH_DB,
            &[
                Operation::Mutate {
                    table: "Open_vSwitch".into(),
                    conditions: vec![Condition::uuid(&root)],
                    mutations: vec![Mutation::new("next_cfg", Mutator::Add, 1i64)],
                },
                Operation::Select {
                    table: "Open_vSwitch".into(),
                    conditions: vec![Condition::uuid(&root)],
                    columns: Some(vec!["next_cfg".into()]),
                },
            ],
        )
        .await?;
    expect_one(&res, 0, "incrementing next_cfg")?;
    res[1]
        .rows()
        .first()
        .and_then(|r| r.get("next_cfg"))
        .and_then(Datum::as_i64)
        .ok_or_else(|| OvsdbError::Decode("next_cfg missing after increment".into()))
}

/// Waits until `cur_cfg >= target` (ovs-vswitchd caught up). Returns false on
/// timeout, e.g. when ovs-vswitchd is not running.
pub async fn wait_cur_cfg(client: &Client, target: i64, timeout: Duration) -> Result<bool> {
    let ops = [Operation::Wait {
        table: "Open_vSwitch".into(),
        conditions: vec![Condition::new("cur_cfg", Function::Ge, target)],
        columns: vec!["cur_cfg".into()],
        until: WaitUntil::NotEqual,
        rows: vec![],
        timeout_ms: Some(timeout.as_millis() as u64),
    }];
    match client
        .transact_with_timeout(VSWITCH_DB, &ops, timeout + Duration::from_secs(5))
        .await
    {
        Ok(_) => Ok(true),
        Err(OvsdbError::Operation {
            index: 0, error, ..
        }) if error == "timed out" => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`bump_next_cfg`] then, if `wait` is given, [`wait_cur_cfg`]. Returns the
/// new next_cfg and whether ovs-vswitchd confirmed it (`None`: not waited).
pub async fn sync_vswitchd(client: &Client, wait: Option<Duration>) -> Result<(i64, Option<bool>)> {
    let next = bump_next_cfg(client).await?;
    let applied = match wait {
        Some(t) => Some(wait_cur_cfg(client, next, t).await?),
        None => None,
    };
    Ok((next, applied))
}
