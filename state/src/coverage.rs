//! Which parts of state.json are applied, and by whom: the installer, an
//! agent plugin (by its registered name), nobody (descriptions), or nobody
//! yet. [`unapplied`] lists the parts a given state sets that this version
//! does not apply, so `validate`, `diff` and `apply` can name them instead of
//! ignoring them. When a plugin lands, its rows change from `not_yet` to
//! `plugin`: one line each.

use serde::Serialize;
use serde_json::Value;

use crate::diag::push_token;
use crate::State;

/// Who applies a part of the state.
#[derive(Debug, Clone, Copy)]
pub enum By {
    /// `op-dbus-install` (disk, base system, boot loader, identity files).
    Installer,
    /// The agent plugin registered under this name.
    Plugin(&'static str),
    /// Descriptions and comments: nothing to apply.
    Documentation,
    /// Parsed but not applied by this version. `owner` is the plugin whose
    /// section holds it (or the plugin that will apply it): `apply --plugin
    /// P` reports only P's parts.
    NotYet {
        owner: &'static str,
        /// Whether a present value is actually ignored (its parent object
        /// and itself); `None`: whenever it is set (not empty).
        unless: Option<fn(&Value, &Value) -> bool>,
        why: &'static str,
    },
}

/// One row of the table: a JSON pointer pattern (`*` matches any object key
/// or array index) and who applies what it points at. A `NotYet` row covers
/// the whole subtree; the others name one value.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    pub pointer: &'static str,
    pub by: By,
}

const fn part(pointer: &'static str, by: By) -> Part {
    Part { pointer, by }
}
const fn installer(pointer: &'static str) -> Part {
    part(pointer, By::Installer)
}
const fn plugin(pointer: &'static str, name: &'static str) -> Part {
    part(pointer, By::Plugin(name))
}
const fn doc(pointer: &'static str) -> Part {
    part(pointer, By::Documentation)
}
const fn not_yet(pointer: &'static str, owner: &'static str, why: &'static str) -> Part {
    part(
        pointer,
        By::NotYet {
            owner,
            unless: None,
            why,
        },
    )
}
/// Applied only when `applied(parent, value)` holds; reported otherwise.
const fn applied_if(
    pointer: &'static str,
    owner: &'static str,
    applied: fn(&Value, &Value) -> bool,
    why: &'static str,
) -> Part {
    part(
        pointer,
        By::NotYet {
            owner,
            unless: Some(applied),
            why,
        },
    )
}

fn kind_of(parent: &Value) -> &str {
    parent
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ethernet")
}
fn on_bond(p: &Value, _: &Value) -> bool {
    kind_of(p) == "bond"
}
fn on_vlan(p: &Value, _: &Value) -> bool {
    kind_of(p) == "vlan"
}
fn on_veth(p: &Value, _: &Value) -> bool {
    kind_of(p) == "veth"
}
fn on_ovs_bridge(p: &Value, _: &Value) -> bool {
    kind_of(p) == "ovs-bridge"
}
fn on_bridge(p: &Value, _: &Value) -> bool {
    matches!(kind_of(p), "bridge" | "ovs-bridge")
}
fn never(_: &Value, _: &Value) -> bool {
    false
}
fn default_audit_db(_: &Value, v: &Value) -> bool {
    v.as_str() == Some("@timing/blockchain.db")
}

const FLOWS_KIND: &str =
    "only an ovs-bridge has an OpenFlow table; set \"type\": \"ovs-bridge\" or remove flows";
const PATHS_KIND: &str =
    "paths classify the traffic of an ovs-bridge; set \"type\": \"ovs-bridge\" or remove paths";
const IFACE_KIND: &str = "only the interface types that have it use it (slaves, mode, miimon and lacp: bond; id and base: vlan; peer: veth; bridge_ports and ports: bridge and ovs-bridge); remove it or fix the type";

/// The table. Every value the schema allows is matched by a row (a test
/// walks the schema to check it).
pub const TABLE: &[Part] = &[
    doc("/version"),
    doc("/metadata/name"),
    doc("/metadata/description"),
    doc("/metadata/author"),
    // bootstrap: the installer; the host plugin keeps the identity settings.
    installer("/bootstrap/device"),
    installer("/bootstrap/distribution"),
    installer("/bootstrap/suite"),
    installer("/bootstrap/proxmox_version"),
    installer("/bootstrap/mirror"),
    plugin("/bootstrap/hostname", "host"),
    installer("/bootstrap/domain"),
    plugin("/bootstrap/timezone", "host"),
    plugin("/bootstrap/locale", "host"),
    plugin("/bootstrap/keyboard", "host"),
    installer("/bootstrap/firmware"),
    installer("/bootstrap/bootloader"),
    installer("/bootstrap/kernel_cmdline"),
    installer("/bootstrap/root_password_hash"),
    installer("/bootstrap/root_ssh_authorized_keys/*"),
    installer("/bootstrap/packages/*"),
    installer("/bootstrap/payload/source"),
    installer("/bootstrap/payload/path"),
    installer("/bootstrap/payload/sha256"),
    installer("/bootstrap/after_install"),
    // plugins.storage: the installer's disk engine.
    installer("/plugins/storage/devices/*/partition_table"),
    installer("/plugins/storage/devices/*/selector/path"),
    installer("/plugins/storage/devices/*/selector/serial"),
    installer("/plugins/storage/devices/*/selector/model"),
    installer("/plugins/storage/devices/*/selector/min_size"),
    installer("/plugins/storage/devices/*/selector/max_size"),
    installer("/plugins/storage/devices/*/partitions/*/number"),
    installer("/plugins/storage/devices/*/partitions/*/start"),
    installer("/plugins/storage/devices/*/partitions/*/size"),
    installer("/plugins/storage/devices/*/partitions/*/type"),
    installer("/plugins/storage/devices/*/partitions/*/label"),
    installer("/plugins/storage/devices/*/partitions/*/filesystem"),
    installer("/plugins/storage/devices/*/partitions/*/mount"),
    installer("/plugins/storage/devices/*/partitions/*/options"),
    installer("/plugins/storage/filesystems/*/type"),
    installer("/plugins/storage/filesystems/*/label"),
    installer("/plugins/storage/filesystems/*/uuid"),
    installer("/plugins/storage/filesystems/*/raid"),
    installer("/plugins/storage/filesystems/*/devices/*"),
    installer("/plugins/storage/btrfs_subvolumes/*/*/name"),
    installer("/plugins/storage/btrfs_subvolumes/*/*/mount"),
    installer("/plugins/storage/btrfs_subvolumes/*/*/compression"),
    installer("/plugins/storage/btrfs_subvolumes/*/*/nodatacow"),
    installer("/plugins/storage/mounts/*/device"),
    installer("/plugins/storage/mounts/*/subvol"),
    installer("/plugins/storage/mounts/*/fstype"),
    installer("/plugins/storage/mounts/*/options"),
    // plugins.network (map form).
    plugin("/plugins/network/interfaces/*/type", "network"),
    plugin("/plugins/network/interfaces/*/state", "network"),
    plugin("/plugins/network/interfaces/*/address", "network"),
    plugin("/plugins/network/interfaces/*/address/*", "network"),
    plugin("/plugins/network/interfaces/*/gateway", "network"),
    plugin("/plugins/network/interfaces/*/gateway6", "network"),
    plugin("/plugins/network/interfaces/*/dhcp", "network"),
    plugin("/plugins/network/interfaces/*/dhcp6", "network"),
    plugin("/plugins/network/interfaces/*/dns/*", "network"),
    plugin("/plugins/network/interfaces/*/mtu", "network"),
    plugin("/plugins/network/interfaces/*/mac", "network"),
    applied_if("/plugins/network/interfaces/*/bridge_ports", "network", on_bridge, IFACE_KIND),
    plugin("/plugins/network/interfaces/*/bridge_ports/*", "network"),
    applied_if("/plugins/network/interfaces/*/ports", "network", on_bridge, IFACE_KIND),
    plugin("/plugins/network/interfaces/*/ports/*", "network"),
    applied_if("/plugins/network/interfaces/*/flows", "flows", on_ovs_bridge, FLOWS_KIND),
    plugin("/plugins/network/interfaces/*/flows/*", "flows"),
    applied_if("/plugins/network/interfaces/*/paths", "flows", on_ovs_bridge, PATHS_KIND),
    plugin("/plugins/network/interfaces/*/paths/socket/port", "flows"),
    plugin("/plugins/network/interfaces/*/paths/socket/networks/*", "flows"),
    plugin("/plugins/network/interfaces/*/paths/mesh/port", "flows"),
    plugin("/plugins/network/interfaces/*/paths/mesh/networks/*", "flows"),
    plugin("/plugins/network/interfaces/*/ports/*/name", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/type", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/peer", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/tag", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/trunks/*", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/interfaces/*", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/bond_mode", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/lacp", "network"),
    plugin("/plugins/network/interfaces/*/ports/*/miimon", "network"),
    applied_if("/plugins/network/interfaces/*/datapath_type", "network", on_ovs_bridge, IFACE_KIND),
    applied_if("/plugins/network/interfaces/*/slaves", "network", on_bond, IFACE_KIND),
    plugin("/plugins/network/interfaces/*/slaves/*", "network"),
    applied_if("/plugins/network/interfaces/*/mode", "network", on_bond, IFACE_KIND),
    applied_if("/plugins/network/interfaces/*/miimon", "network", on_bond, IFACE_KIND),
    applied_if("/plugins/network/interfaces/*/lacp", "network", on_bond, IFACE_KIND),
    applied_if("/plugins/network/interfaces/*/id", "network", on_vlan, IFACE_KIND),
    applied_if("/plugins/network/interfaces/*/base", "network", on_vlan, IFACE_KIND),
    applied_if("/plugins/network/interfaces/*/peer", "network", on_veth, IFACE_KIND),
    doc("/plugins/network/interfaces/*/comment"),
    // Bonds: every entry is a bond whatever its `type`.
    applied_if("/plugins/network/bonds/*/type", "network", |_, v| v.as_str() == Some("bond") || v.as_str() == Some("ethernet"), "an entry of bonds is always a bond; remove the type"),
    plugin("/plugins/network/bonds/*/state", "network"),
    plugin("/plugins/network/bonds/*/address", "network"),
    plugin("/plugins/network/bonds/*/address/*", "network"),
    plugin("/plugins/network/bonds/*/gateway", "network"),
    plugin("/plugins/network/bonds/*/gateway6", "network"),
    plugin("/plugins/network/bonds/*/dhcp", "network"),
    plugin("/plugins/network/bonds/*/dhcp6", "network"),
    plugin("/plugins/network/bonds/*/dns/*", "network"),
    plugin("/plugins/network/bonds/*/mtu", "network"),
    plugin("/plugins/network/bonds/*/mac", "network"),
    applied_if("/plugins/network/bonds/*/datapath_type", "network", never, IFACE_KIND),
    applied_if("/plugins/network/bonds/*/bridge_ports", "network", never, IFACE_KIND),
    applied_if("/plugins/network/bonds/*/ports", "network", never, IFACE_KIND),
    applied_if("/plugins/network/bonds/*/flows", "flows", never, FLOWS_KIND),
    applied_if("/plugins/network/bonds/*/paths", "flows", never, PATHS_KIND),
    plugin("/plugins/network/bonds/*/slaves/*", "network"),
    plugin("/plugins/network/bonds/*/mode", "network"),
    plugin("/plugins/network/bonds/*/miimon", "network"),
    plugin("/plugins/network/bonds/*/lacp", "network"),
    applied_if("/plugins/network/bonds/*/id", "network", never, IFACE_KIND),
    applied_if("/plugins/network/bonds/*/base", "network", never, IFACE_KIND),
    applied_if("/plugins/network/bonds/*/peer", "network", never, IFACE_KIND),
    doc("/plugins/network/bonds/*/comment"),
    plugin("/plugins/network/routes/*/to", "network"),
    plugin("/plugins/network/routes/*/via", "network"),
    plugin("/plugins/network/routes/*/dev", "network"),
    plugin("/plugins/network/routes/*/metric", "network"),
    plugin("/plugins/network/dns/servers/*", "network"),
    plugin("/plugins/network/dns/search/*", "network"),
    plugin("/plugins/network/ovsdb", "network"),
    plugin("/plugins/network/prune", "network"),
    // plugins.net (list form).
    plugin("/plugins/net/interfaces/*/name", "network"),
    plugin("/plugins/net/interfaces/*/type", "network"),
    plugin("/plugins/net/interfaces/*/state", "network"),
    applied_if("/plugins/net/interfaces/*/ports", "network", on_bridge, IFACE_KIND),
    applied_if("/plugins/net/interfaces/*/flows", "flows", on_ovs_bridge, FLOWS_KIND),
    plugin("/plugins/net/interfaces/*/flows/*", "flows"),
    applied_if("/plugins/net/interfaces/*/paths", "flows", on_ovs_bridge, PATHS_KIND),
    plugin("/plugins/net/interfaces/*/paths/socket/port", "flows"),
    plugin("/plugins/net/interfaces/*/paths/socket/networks/*", "flows"),
    plugin("/plugins/net/interfaces/*/paths/mesh/port", "flows"),
    plugin("/plugins/net/interfaces/*/paths/mesh/networks/*", "flows"),
    plugin("/plugins/net/interfaces/*/ports/*", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/name", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/type", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/peer", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/tag", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/trunks/*", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/interfaces/*", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/bond_mode", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/lacp", "network"),
    plugin("/plugins/net/interfaces/*/ports/*/miimon", "network"),
    applied_if("/plugins/net/interfaces/*/datapath_type", "network", on_ovs_bridge, IFACE_KIND),
    plugin("/plugins/net/interfaces/*/ipv4/enabled", "network"),
    plugin("/plugins/net/interfaces/*/ipv4/dhcp", "network"),
    plugin("/plugins/net/interfaces/*/ipv4/address/*/ip", "network"),
    plugin("/plugins/net/interfaces/*/ipv4/address/*/prefix", "network"),
    plugin("/plugins/net/interfaces/*/ipv4/gateway", "network"),
    plugin("/plugins/net/interfaces/*/ipv4/dns/*", "network"),
    plugin("/plugins/net/interfaces/*/ipv6/enabled", "network"),
    plugin("/plugins/net/interfaces/*/ipv6/dhcp", "network"),
    plugin("/plugins/net/interfaces/*/ipv6/address/*/ip", "network"),
    plugin("/plugins/net/interfaces/*/ipv6/address/*/prefix", "network"),
    plugin("/plugins/net/interfaces/*/ipv6/gateway", "network"),
    plugin("/plugins/net/interfaces/*/ipv6/dns/*", "network"),
    plugin("/plugins/net/interfaces/*/mtu", "network"),
    plugin("/plugins/net/interfaces/*/mac", "network"),
    applied_if("/plugins/net/interfaces/*/slaves", "network", on_bond, IFACE_KIND),
    plugin("/plugins/net/interfaces/*/slaves/*", "network"),
    applied_if("/plugins/net/interfaces/*/mode", "network", on_bond, IFACE_KIND),
    applied_if("/plugins/net/interfaces/*/miimon", "network", on_bond, IFACE_KIND),
    applied_if("/plugins/net/interfaces/*/lacp", "network", on_bond, IFACE_KIND),
    applied_if("/plugins/net/interfaces/*/id", "network", on_vlan, IFACE_KIND),
    applied_if("/plugins/net/interfaces/*/base", "network", on_vlan, IFACE_KIND),
    applied_if("/plugins/net/interfaces/*/peer", "network", on_veth, IFACE_KIND),
    doc("/plugins/net/interfaces/*/comment"),
    plugin("/plugins/net/routes/*/to", "network"),
    plugin("/plugins/net/routes/*/via", "network"),
    plugin("/plugins/net/routes/*/dev", "network"),
    plugin("/plugins/net/routes/*/metric", "network"),
    plugin("/plugins/net/dns/servers/*", "network"),
    plugin("/plugins/net/dns/search/*", "network"),
    plugin("/plugins/net/ovsdb", "network"),
    plugin("/plugins/net/prune", "network"),
    // plugins.systemd.
    plugin("/plugins/firewall/default_policy/input", "firewall"),
    plugin("/plugins/firewall/default_policy/forward", "firewall"),
    plugin("/plugins/firewall/default_policy/output", "firewall"),
    plugin("/plugins/firewall/management_floor", "firewall"),
    plugin("/plugins/firewall/ssh_port", "firewall"),
    plugin("/plugins/firewall/rules/*/port", "firewall"),
    plugin("/plugins/firewall/rules/*/proto", "firewall"),
    plugin("/plugins/firewall/rules/*/action", "firewall"),
    plugin("/plugins/firewall/rules/*/source", "firewall"),
    plugin("/plugins/firewall/rules/*/source/*", "firewall"),
    plugin("/plugins/firewall/rules/*/iface", "firewall"),
    plugin("/plugins/firewall/rules/*/comment", "firewall"),
    plugin("/plugins/firewall/masquerade/*/source", "firewall"),
    plugin("/plugins/firewall/masquerade/*/out_iface", "firewall"),
    plugin("/plugins/firewall/masquerade/*/comment", "firewall"),
    plugin("/plugins/systemd/services/*/state", "systemd"),
    plugin("/plugins/systemd/units/*/active_state", "systemd"),
    plugin("/plugins/systemd/units/*/enabled", "systemd"),
    plugin("/plugins/systemd/units/*/masked", "systemd"),
    plugin("/plugins/systemd/timers/*/on_calendar", "systemd"),
    plugin("/plugins/systemd/timers/*/unit", "systemd"),
    plugin("/plugins/systemd/timers/*/description", "systemd"),
    plugin("/plugins/systemd/timers/*/persistent", "systemd"),
    plugin("/plugins/systemd/timers/*/enabled", "systemd"),
    plugin("/plugins/systemd/custom_units/*/content", "systemd"),
    plugin("/plugins/systemd/custom_units/*/enabled", "systemd"),
    plugin("/plugins/systemd/custom_units/*/active_state", "systemd"),
    // plugins.users.
    plugin("/plugins/users/accounts/*/uid", "users"),
    plugin("/plugins/users/accounts/*/gid", "users"),
    plugin("/plugins/users/accounts/*/shell", "users"),
    plugin("/plugins/users/accounts/*/home", "users"),
    plugin("/plugins/users/accounts/*/comment", "users"),
    plugin("/plugins/users/accounts/*/groups/*", "users"),
    plugin("/plugins/users/accounts/*/ssh_authorized_keys/*", "users"),
    plugin("/plugins/users/accounts/*/password_hash", "users"),
    plugin("/plugins/users/accounts/*/system", "users"),
    plugin("/plugins/users/accounts/*/state", "users"),
    plugin("/plugins/users/groups/*/gid", "users"),
    plugin("/plugins/users/groups/*/system", "users"),
    plugin("/plugins/users/groups/*/state", "users"),
    plugin("/plugins/users/prune", "users"),
    // plugins.packagekit.
    plugin("/plugins/packagekit/manifest", "packages"),
    plugin("/plugins/packagekit/packages/*", "packages"),
    plugin("/plugins/packagekit/additional_packages/*", "packages"),
    plugin("/plugins/packagekit/remove/*", "packages"),
    plugin("/plugins/packagekit/sources/*/uri", "packages"),
    plugin("/plugins/packagekit/sources/*/suite", "packages"),
    plugin("/plugins/packagekit/sources/*/components/*", "packages"),
    plugin("/plugins/packagekit/sources/*/trusted", "packages"),
    plugin("/plugins/packagekit/sources/*/signed_by", "packages"),
    // plugins.opdbus: the installer lays it out, the storage plugin keeps
    // the subvolumes.
    plugin("/plugins/opdbus/root", "storage"),
    plugin("/plugins/opdbus/subvolumes/*", "storage"),
    installer("/plugins/opdbus/subvolumes/*/compression"),
    installer("/plugins/opdbus/plugins/*"),
    installer("/plugins/opdbus/sockets"),
    // audit.enabled false: the agent keeps no audit log (agent-only mode).
    plugin("/plugins/opdbus/audit/enabled", "storage"),
    plugin("/plugins/opdbus/audit/witness", "storage"),
    plugin("/plugins/opdbus/audit/witness/url", "storage"),
    plugin("/plugins/opdbus/audit/witness/fingerprint", "storage"),
    applied_if("/plugins/opdbus/audit/database", "storage", default_audit_db, "the agent keeps its audit chain in <state-dir>/@timing/blockchain.db; remove audit.database"),
    installer("/plugins/opdbus/templates/*"),
    not_yet("/plugins/opdbus/templates/*/suite", "storage", "the installer creates the template's subvolume empty and nothing builds its contents yet"),
    not_yet("/plugins/opdbus/templates/*/packages", "storage", "the installer creates the template's subvolume empty and nothing builds its contents yet"),
    plugin("/plugins/opdbus/templates/*/netmaker", "netmaker"),
    // Sections no plugin of this version applies.
    // plugins.lxc: the map form; the list form (containers known by
    // their OVS port) is not applied.
    plugin("/plugins/lxc/containers/*/template", "lxc"),
    not_yet("/plugins/lxc/containers/*/storage", "lxc", "containers are btrfs snapshots under --lxc-path; remove storage"),
    plugin("/plugins/lxc/containers/*/config/memory", "lxc"),
    plugin("/plugins/lxc/containers/*/config/cpus", "lxc"),
    not_yet("/plugins/lxc/containers/*/config/rootfs", "lxc", "a container's rootfs is a btrfs snapshot without a size limit (no quota is set); remove rootfs"),
    plugin("/plugins/lxc/containers/*/config/network/name", "lxc"),
    plugin("/plugins/lxc/containers/*/config/network/bridge", "lxc"),
    plugin("/plugins/lxc/containers/*/config/network/ip", "lxc"),
    plugin("/plugins/lxc/containers/*/config/network/gateway", "lxc"),
    not_yet("/plugins/lxc/containers/*/config/network/model", "lxc", "an LXC container always gets a veth; model is for VMs, remove it"),
    plugin("/plugins/lxc/containers/*/autostart", "lxc"),
    plugin("/plugins/lxc/containers/*/unprivileged", "lxc"),
    plugin("/plugins/lxc/containers/*/state", "lxc"),
    not_yet("/plugins/lxc/containers/*/id", "lxc", "the list form of containers (known by their OVS port) is not applied; use the map form name -> {template, config, state}"),
    not_yet("/plugins/lxc/containers/*/veth", "lxc", "the list form of containers (known by their OVS port) is not applied; use the map form name -> {template, config, state}"),
    not_yet("/plugins/lxc/containers/*/bridge", "lxc", "the list form of containers (known by their OVS port) is not applied; use the map form name -> {template, config, state}"),
    not_yet("/plugins/lxc/containers/*/running", "lxc", "the list form of containers (known by their OVS port) is not applied; use the map form name -> {template, config, state}"),
    not_yet("/plugins/kvm", "vms", "no VM plugin exists yet: no KVM guest is created, started or stopped"),
    // plugins.proxmox: the proxmox plugin, over the PVE REST API.
    plugin("/plugins/proxmox/node", "proxmox"),
    plugin("/plugins/proxmox/api/url", "proxmox"),
    plugin("/plugins/proxmox/api/token_file", "proxmox"),
    plugin("/plugins/proxmox/api/fingerprint", "proxmox"),
    plugin("/plugins/proxmox/api/task_timeout", "proxmox"),
    plugin("/plugins/proxmox/vms/*/vmid", "proxmox"),
    plugin("/plugins/proxmox/vms/*/name", "proxmox"),
    plugin("/plugins/proxmox/vms/*/node", "proxmox"),
    plugin("/plugins/proxmox/vms/*/state", "proxmox"),
    plugin("/plugins/proxmox/vms/*/cores", "proxmox"),
    plugin("/plugins/proxmox/vms/*/memory", "proxmox"),
    plugin("/plugins/proxmox/vms/*/cpu", "proxmox"),
    plugin("/plugins/proxmox/vms/*/disk/storage", "proxmox"),
    plugin("/plugins/proxmox/vms/*/disk/size", "proxmox"),
    plugin("/plugins/proxmox/vms/*/disks/*/storage", "proxmox"),
    plugin("/plugins/proxmox/vms/*/disks/*/size", "proxmox"),
    plugin("/plugins/proxmox/vms/*/network/bridge", "proxmox"),
    plugin("/plugins/proxmox/vms/*/network/model", "proxmox"),
    plugin("/plugins/proxmox/vms/*/network/ip", "proxmox"),
    plugin("/plugins/proxmox/vms/*/network/gateway", "proxmox"),
    not_yet("/plugins/proxmox/vms/*/network/name", "proxmox", "a VM's NIC has no name in PVE (the guest names it); remove name"),
    plugin("/plugins/proxmox/vms/*/nics/*/bridge", "proxmox"),
    plugin("/plugins/proxmox/vms/*/nics/*/model", "proxmox"),
    plugin("/plugins/proxmox/vms/*/nics/*/ip", "proxmox"),
    plugin("/plugins/proxmox/vms/*/nics/*/gateway", "proxmox"),
    not_yet("/plugins/proxmox/vms/*/nics/*/name", "proxmox", "a VM's NIC has no name in PVE (the guest names it); remove name"),
    plugin("/plugins/proxmox/vms/*/boot", "proxmox"),
    plugin("/plugins/proxmox/vms/*/ostype", "proxmox"),
    plugin("/plugins/proxmox/vms/*/comment", "proxmox"),
    not_yet("/plugins/proxmox/vms/*/cpu_mitigations", "proxmox", "mitigations are a guest kernel setting PVE does not manage: put mitigations=off on the guest's kernel command line"),
    plugin("/plugins/proxmox/vms/*/ha/enabled", "proxmox"),
    plugin("/plugins/proxmox/vms/*/ha/group", "proxmox"),
    plugin("/plugins/proxmox/vms/*/ha/state", "proxmox"),
    plugin("/plugins/proxmox/vms/*/ha/max_restart", "proxmox"),
    plugin("/plugins/proxmox/vms/*/ha/max_relocate", "proxmox"),
    plugin("/plugins/proxmox/vms/*/ha/comment", "proxmox"),
    plugin("/plugins/proxmox/containers/*/vmid", "proxmox"),
    plugin("/plugins/proxmox/containers/*/name", "proxmox"),
    plugin("/plugins/proxmox/containers/*/node", "proxmox"),
    plugin("/plugins/proxmox/containers/*/state", "proxmox"),
    plugin("/plugins/proxmox/containers/*/cores", "proxmox"),
    plugin("/plugins/proxmox/containers/*/memory", "proxmox"),
    plugin("/plugins/proxmox/containers/*/rootfs/storage", "proxmox"),
    plugin("/plugins/proxmox/containers/*/rootfs/size", "proxmox"),
    plugin("/plugins/proxmox/containers/*/network/name", "proxmox"),
    plugin("/plugins/proxmox/containers/*/network/bridge", "proxmox"),
    plugin("/plugins/proxmox/containers/*/network/ip", "proxmox"),
    plugin("/plugins/proxmox/containers/*/network/gateway", "proxmox"),
    not_yet("/plugins/proxmox/containers/*/network/model", "proxmox", "a container's NIC is a veth: it has no model; remove model"),
    plugin("/plugins/proxmox/containers/*/ostemplate", "proxmox"),
    plugin("/plugins/proxmox/containers/*/comment", "proxmox"),
    plugin("/plugins/proxmox/containers/*/ha/enabled", "proxmox"),
    plugin("/plugins/proxmox/containers/*/ha/group", "proxmox"),
    plugin("/plugins/proxmox/containers/*/ha/state", "proxmox"),
    plugin("/plugins/proxmox/containers/*/ha/max_restart", "proxmox"),
    plugin("/plugins/proxmox/containers/*/ha/max_relocate", "proxmox"),
    plugin("/plugins/proxmox/containers/*/ha/comment", "proxmox"),
    plugin("/plugins/proxmox/storage/*/id", "proxmox"),
    plugin("/plugins/proxmox/storage/*/type", "proxmox"),
    plugin("/plugins/proxmox/storage/*/state", "proxmox"),
    plugin("/plugins/proxmox/storage/*/content/*", "proxmox"),
    plugin("/plugins/proxmox/storage/*/thinpool", "proxmox"),
    plugin("/plugins/proxmox/storage/*/vgname", "proxmox"),
    plugin("/plugins/proxmox/storage/*/server", "proxmox"),
    plugin("/plugins/proxmox/storage/*/export", "proxmox"),
    plugin("/plugins/proxmox/storage/*/path", "proxmox"),
    // plugins.proxmox.network becomes interfaces of the network plugin,
    // the one writer of /etc/network/interfaces.
    plugin("/plugins/proxmox/network/*/iface", "network"),
    plugin("/plugins/proxmox/network/*/type", "network"),
    plugin("/plugins/proxmox/network/*/bridge_ports", "network"),
    plugin("/plugins/proxmox/network/*/bridge_ports/*", "network"),
    plugin("/plugins/proxmox/network/*/address", "network"),
    plugin("/plugins/proxmox/network/*/netmask", "network"),
    plugin("/plugins/proxmox/network/*/gateway", "network"),
    doc("/plugins/proxmox/network/*/comment"),
    plugin("/plugins/proxmox/cluster/nodes/*/name", "proxmox"),
    plugin("/plugins/proxmox/cluster/nodes/*/ip", "proxmox"),
    plugin("/plugins/proxmox/cluster/join/peer", "proxmox"),
    plugin("/plugins/proxmox/cluster/join/fingerprint", "proxmox"),
    plugin("/plugins/proxmox/cluster/join/password_file", "proxmox"),
    plugin("/plugins/proxmox/cluster/join/link0", "proxmox"),
    plugin("/plugins/proxmox/cluster/enabled", "proxmox"),
    plugin("/plugins/proxmox/cluster/name", "proxmox"),
    plugin("/plugins/proxmox/backups/*/id", "proxmox"),
    plugin("/plugins/proxmox/backups/*/schedule", "proxmox"),
    plugin("/plugins/proxmox/backups/*/time", "proxmox"),
    plugin("/plugins/proxmox/backups/*/storage", "proxmox"),
    plugin("/plugins/proxmox/backups/*/mode", "proxmox"),
    plugin("/plugins/proxmox/backups/*/compression", "proxmox"),
    plugin("/plugins/proxmox/backups/*/vms/*", "proxmox"),
    plugin("/plugins/proxmox/backups/*/containers/*", "proxmox"),
    plugin("/plugins/proxmox/backups/*/retention/keep_daily", "proxmox"),
    plugin("/plugins/proxmox/backups/*/retention/keep_weekly", "proxmox"),
    plugin("/plugins/proxmox/backups/*/retention/keep_monthly", "proxmox"),
    // plugins.wireguard.
    plugin("/plugins/wireguard/interfaces/*/address", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/address/*", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/listen_port", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/private_key_file", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/mtu", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/peers/*/public_key", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/peers/*/endpoint", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/peers/*/allowed_ips/*", "wireguard"),
    plugin("/plugins/wireguard/interfaces/*/peers/*/persistent_keepalive", "wireguard"),
    // plugins.netmaker: the key and enroll unit into templates, the host's
    // own join (reported as not applied on a host without netclient).
    plugin("/plugins/netmaker/enabled", "netmaker"),
    // The enrollment key names the server netclient talks to.
    doc("/plugins/netmaker/server"),
    plugin("/plugins/netmaker/network", "netmaker"),
    plugin("/plugins/netmaker/join_key_file", "netmaker"),
    plugin("/plugins/netmaker/templates/*", "netmaker"),
];

/// A part of a state this version does not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Unapplied {
    /// RFC 6901 pointer into the state.
    pub pointer: String,
    /// The plugin whose section holds it, or that will apply it.
    pub plugin: String,
    /// Why, and what to do.
    pub why: String,
    /// Not applied because of this host (a tool it lacks), not because
    /// this version cannot: reported by the plugin at query time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_host: bool,
}

impl Unapplied {
    /// A part `plugin` cannot apply on this host (see [`Unapplied::on_host`]).
    pub fn on_host(pointer: impl Into<String>, plugin: &str, why: impl Into<String>) -> Self {
        Unapplied {
            pointer: pointer.into(),
            plugin: plugin.to_string(),
            why: why.into(),
            on_host: true,
        }
    }
}

impl std::fmt::Display for Unapplied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.on_host {
            NOT_APPLIED_HERE
        } else {
            NOT_APPLIED
        };
        write!(f, "{}: {}; {}", self.pointer, what, self.why)
    }
}

/// The message every unapplied part carries.
pub const NOT_APPLIED: &str = "not applied by this version of op-dbus";
/// The message of a part a plugin could not apply on this host.
pub const NOT_APPLIED_HERE: &str = "not applied on this host";

/// The parts of `state` that are set (not empty) and not applied, in table
/// order.
pub fn unapplied(state: &State) -> Vec<Unapplied> {
    let doc = serde_json::to_value(state).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for row in TABLE {
        let By::NotYet { owner, unless, why } = row.by else {
            continue;
        };
        let tokens: Vec<&str> = row.pointer.split('/').skip(1).collect();
        let mut hits = Vec::new();
        walk(&doc, &Value::Null, &tokens, String::new(), &mut hits);
        for (pointer, parent, value) in hits {
            let ignored = match unless {
                None => !is_empty(value),
                Some(applied) => !value.is_null() && !applied(parent, value),
            };
            if !ignored {
                continue;
            }
            out.push(Unapplied {
                pointer,
                plugin: owner.to_string(),
                why: why.to_string(),
                on_host: false,
            });
        }
    }
    out
}

fn walk<'a>(
    v: &'a Value,
    parent: &'a Value,
    tokens: &[&str],
    at: String,
    out: &mut Vec<(String, &'a Value, &'a Value)>,
) {
    let Some((first, rest)) = tokens.split_first() else {
        out.push((at, parent, v));
        return;
    };
    let children: Vec<(String, &Value)> = match (v, *first) {
        (Value::Object(m), "*") => m.iter().map(|(k, c)| (k.clone(), c)).collect(),
        (Value::Array(a), "*") => a
            .iter()
            .enumerate()
            .map(|(i, c)| (i.to_string(), c))
            .collect(),
        (Value::Object(m), key) => m
            .get(key)
            .map(|c| (key.to_string(), c))
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    for (token, child) in children {
        let mut p = at.clone();
        push_token(&mut p, &token);
        walk(child, v, rest, p, out);
    }
}

/// Null, false, "", and containers holding only empty values.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_empty),
        Value::Object(m) => m.values().all(is_empty),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value path the schema allows, `*` for map keys and indices.
    fn schema_paths() -> Vec<String> {
        let schema = crate::schema();
        let mut out = Vec::new();
        leaves(&schema, &schema, String::new(), &mut out, 0);
        out.sort();
        out.dedup();
        out
    }

    fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/$defs/");
                resolve(root, &root["$defs"][name])
            }
            None => s,
        }
    }

    fn leaves(root: &Value, s: &Value, at: String, out: &mut Vec<String>, depth: usize) {
        assert!(depth < 30, "schema too deep at {at}");
        let s = resolve(root, s);
        if s.get("type").and_then(Value::as_str) == Some("null") {
            return; // the `None` of an optional section
        }
        let mut inner = false;
        if let Some(branches) = s
            .get("anyOf")
            .or_else(|| s.get("oneOf"))
            .and_then(Value::as_array)
        {
            for b in branches {
                leaves(root, b, at.clone(), out, depth + 1);
            }
            inner = true;
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                leaves(root, p, format!("{at}/{k}"), out, depth + 1);
            }
            inner = true;
        }
        if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
            leaves(root, ap, format!("{at}/*"), out, depth + 1);
            inner = true;
        }
        if let Some(items) = s.get("items") {
            leaves(root, items, format!("{at}/*"), out, depth + 1);
            inner = true;
        }
        if !inner {
            out.push(at);
        }
    }

    fn covered(path: &str) -> bool {
        let p: Vec<&str> = path.split('/').collect();
        TABLE.iter().any(|row| {
            let r: Vec<&str> = row.pointer.split('/').collect();
            let subtree = matches!(row.by, By::NotYet { .. });
            (r.len() == p.len() || (subtree && r.len() < p.len()))
                && r.iter().zip(&p).all(|(a, b)| a == b)
        })
    }

    #[test]
    fn every_value_of_the_schema_has_a_row() {
        let missing: Vec<String> = schema_paths().into_iter().filter(|p| !covered(p)).collect();
        assert!(
            missing.is_empty(),
            "no row in coverage::TABLE for:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn every_row_names_a_value_of_the_schema() {
        let paths = schema_paths();
        for row in TABLE {
            let r: Vec<&str> = row.pointer.split('/').collect();
            assert!(
                paths.iter().any(|p| {
                    let p: Vec<&str> = p.split('/').collect();
                    p.len() >= r.len() && r.iter().zip(&p).all(|(a, b)| a == b)
                }),
                "row {} matches nothing in the schema",
                row.pointer
            );
        }
    }

    fn state(json: &str) -> State {
        crate::parse::parse_only(json).expect("parses")
    }

    #[test]
    fn lists_only_what_is_set() {
        let s = state(
            r#"{"version": 1, "plugins": {
                "firewall": {"default_policy": {"input": "drop"}, "rules": [{"port": 22, "proto": "tcp", "action": "accept"}]},
                "lxc": {"containers": {}},
                "netmaker": {"enabled": false},
                "packagekit": {"manifest": "m.json", "packages": ["vim"]},
                "network": {"interfaces": {
                    "br0": {"type": "bridge", "bridge_ports": ["eth0"], "mac": "52:54:00:12:34:56"},
                    "eth1": {"slaves": ["eth2"]},
                    "ovs0": {"type": "ovs-bridge", "ports": [{"name": "p1", "tag": 10}, "p2"]}
                }},
                "opdbus": {"audit": {"enabled": false}},
                "proxmox": {"vms": [{"vmid": 100, "ha": {"enabled": true}, "cpu_mitigations": "off"}]}
            }}"#,
        );
        let got: Vec<String> = unapplied(&s).into_iter().map(|u| u.pointer).collect();
        assert_eq!(
            got,
            [
                "/plugins/network/interfaces/eth1/slaves",
                "/plugins/proxmox/vms/0/cpu_mitigations",
            ]
        );
    }

    #[test]
    fn a_state_of_applied_parts_lists_nothing() {
        let s = state(
            r#"{"version": 1, "bootstrap": {"hostname": "h"}, "plugins": {
                "network": {"interfaces": {"br0": {"type": "bridge", "bridge_ports": "eth0", "address": "10.0.0.1/24"}},
                            "bonds": {"bond0": {"slaves": ["eth1"], "mode": "active-backup"}}},
                "opdbus": {}, "firewall": {}, "proxmox": {}
            }}"#,
        );
        assert_eq!(unapplied(&s), []);
    }
}
