//! The wizard's answers as plain data, and where they start: fresh defaults
//! for a new install, or the values an existing state already has (`--from`),
//! read through the typed model so defaults the file leaves out count too.

use opdbus_state::model::{Distribution, Firmware, InterfaceType, State};

use super::machine::Candidate;
use crate::inventory;

/// The layout of the system disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The storage section of the `--from` file, unchanged.
    Keep,
    /// ESP/BIOS boot plus btrfs with @, @home, @var_log, @op-dbus.
    Btrfs,
    /// ESP/BIOS boot plus one ext4 root.
    Ext4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    /// No interface is configured by the state.
    Unmanaged,
    /// The network section of the `--from` file, unchanged (a form the
    /// wizard cannot edit, such as `plugins.net`).
    Keep,
    Dhcp,
    Static,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub mode: NetMode,
    pub nic: String,
    /// `ADDRESS/PREFIX` (static only).
    pub address: String,
    pub gateway: String,
    /// Servers separated by spaces.
    pub dns: String,
    /// Bridge carrying the address with `nic` as its port; empty for none.
    pub bridge: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootPassword {
    /// The hash already in the file (or none), unchanged.
    Keep,
    /// A new crypt(3) hash.
    Hash(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answers {
    /// Kernel name of the target disk (`sda`).
    pub disk: String,
    /// The state's key for the system device (`/dev/sda`).
    pub device_key: String,
    pub distribution: Distribution,
    pub suite: String,
    pub firmware: Firmware,
    pub layout: Layout,
    pub hostname: String,
    /// Empty for none.
    pub domain: String,
    pub timezone: String,
    pub locale: String,
    pub keyboard: String,
    pub net: Net,
    pub root_password: RootPassword,
    /// Whether a root password hash exists in the file.
    pub has_root_password: bool,
    /// Administrator account; empty for none.
    pub admin: String,
    /// Its SSH public key; empty for none.
    pub ssh_key: String,
}

fn first_selectable(disks: &[Candidate]) -> String {
    disks
        .iter()
        .find(|c| c.selectable())
        .or(disks.first())
        .map(|c| c.disk.name.clone())
        .unwrap_or_default()
}

impl Answers {
    /// Defaults for a new install.
    pub fn fresh(disks: &[Candidate], nics: &[String]) -> Answers {
        let disk = first_selectable(disks);
        Answers {
            device_key: format!("/dev/{disk}"),
            disk,
            distribution: Distribution::Debian,
            suite: "bookworm".into(),
            firmware: Firmware::Both,
            layout: Layout::Btrfs,
            hostname: "opdbus".into(),
            domain: String::new(),
            timezone: "UTC".into(),
            locale: "C.UTF-8".into(),
            keyboard: "us".into(),
            net: Net {
                mode: NetMode::Dhcp,
                nic: nics.first().cloned().unwrap_or_default(),
                address: String::new(),
                gateway: String::new(),
                dns: String::new(),
                bridge: String::new(),
            },
            root_password: RootPassword::Keep,
            has_root_password: false,
            admin: "admin".into(),
            ssh_key: String::new(),
        }
    }

    /// The answers `state` already gives.
    pub fn from_state(state: &State, disks: &[Candidate], nics: &[String]) -> Answers {
        let mut a = Answers::fresh(disks, nics);
        let storage = state
            .plugins
            .storage
            .as_ref()
            .filter(|s| !s.devices.is_empty());
        if let Some(s) = storage {
            a.layout = Layout::Keep;
            let key = state
                .bootstrap
                .as_ref()
                .and_then(|b| b.device.clone())
                .filter(|k| s.devices.contains_key(k))
                .or_else(|| s.devices.keys().next().cloned())
                .unwrap_or_default();
            let infos: Vec<_> = disks.iter().map(|c| c.disk.clone()).collect();
            let by_selector = s
                .devices
                .get(&key)
                .and_then(|d| d.selector.as_ref())
                .and_then(|sel| inventory::select(&key, sel, &infos).ok())
                .map(|d| d.name.clone());
            let by_name = key
                .rsplit('/')
                .next()
                .filter(|n| infos.iter().any(|d| d.name == *n))
                .map(String::from);
            if let Some(name) = by_selector.or(by_name) {
                a.disk = name;
            }
            a.device_key = key;
        }
        if let Some(b) = &state.bootstrap {
            a.distribution = b.distribution;
            a.suite = b.suite.clone();
            a.firmware = b.firmware;
            a.hostname = b.hostname.clone();
            a.domain = b.domain.clone().unwrap_or_default();
            a.timezone = b.timezone.clone();
            a.locale = b.locale.clone();
            a.keyboard = b.keyboard.clone();
            a.has_root_password = b.root_password_hash.is_some();
        }
        a.net = net_from_state(state, nics);
        let (admin, key) = admin_from_state(state);
        a.admin = admin;
        a.ssh_key = key;
        a
    }
}

/// The interface that carries the host's address: the one with a gateway,
/// else the first with an address or DHCP.
fn net_from_state(state: &State, nics: &[String]) -> Net {
    let mut net = Net {
        mode: NetMode::Unmanaged,
        nic: nics.first().cloned().unwrap_or_default(),
        address: String::new(),
        gateway: String::new(),
        dns: String::new(),
        bridge: String::new(),
    };
    if state.plugins.net.is_some() {
        net.mode = NetMode::Keep;
        return net;
    }
    let Some(n) = &state.plugins.network else {
        return net;
    };
    let carries = |i: &opdbus_state::model::Interface| {
        matches!(i.kind, InterfaceType::Ethernet | InterfaceType::Bridge)
            && (i.dhcp || !i.address.is_empty())
    };
    let primary = n
        .interfaces
        .iter()
        .find(|(_, i)| carries(i) && i.gateway.is_some())
        .or_else(|| n.interfaces.iter().find(|(_, i)| carries(i)));
    let Some((name, iface)) = primary else {
        net.mode = if n.interfaces.is_empty() {
            NetMode::Unmanaged
        } else {
            NetMode::Keep
        };
        return net;
    };
    let addresses: Vec<&String> = iface.address.iter().collect();
    if addresses.len() > 1 {
        net.mode = NetMode::Keep;
        return net;
    }
    if iface.kind == InterfaceType::Bridge {
        let ports: Vec<&String> = iface.bridge_ports.iter().collect();
        if ports.len() != 1 {
            net.mode = NetMode::Keep;
            return net;
        }
        net.bridge = name.clone();
        net.nic = ports[0].clone();
    } else {
        net.nic = name.clone();
    }
    net.mode = if iface.dhcp {
        NetMode::Dhcp
    } else {
        NetMode::Static
    };
    net.address = addresses.first().map(|s| s.to_string()).unwrap_or_default();
    net.gateway = iface.gateway.clone().unwrap_or_default();
    net.dns = iface.dns.join(" ");
    net
}

/// The administrator: the first regular account in group sudo, else the
/// first regular account; and its first SSH key.
fn admin_from_state(state: &State) -> (String, String) {
    let Some(u) = &state.plugins.users else {
        return (String::new(), String::new());
    };
    let regular = |a: &&opdbus_state::model::Account| !a.system;
    let found = u
        .accounts
        .iter()
        .find(|(_, a)| regular(a) && a.groups.iter().any(|g| g == "sudo"))
        .or_else(|| u.accounts.iter().find(|(_, a)| regular(a)));
    match found {
        Some((name, a)) => (
            name.clone(),
            a.ssh_authorized_keys.first().cloned().unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    }
}
