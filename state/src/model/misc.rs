//! `plugins.packagekit`, `plugins.firewall` and `plugins.netmaker`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageKit {
    /// A JSON manifest of package names to install (proxmox-extractor output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// Packages to install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// More packages to install (roadmap spelling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_packages: Vec<String>,
    /// Packages to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    /// apt repositories, written as one deb822 file
    /// (`/etc/apt/sources.list.d/op-dbus.sources`) before the package lists
    /// are refreshed; no sources leaves the system's own apt sources alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<AptSource>,
}

/// One apt repository: `Types: deb`, `URIs`, `Suites`, `Components`, and
/// either `Signed-By` (a keyring on the managed system) or `Trusted: yes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AptSource {
    /// `http://`, `https://` or `file:` URL of the repository.
    pub uri: String,
    /// Suite (`bookworm`), or a path ending in `/` for a flat repository
    /// (`./`), which takes no components.
    pub suite: String,
    /// Components (`main`); empty for a flat repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<String>,
    /// Accept the repository unsigned (`Trusted: yes`): for a local
    /// repository the state hands the host; exclusive with `signed_by`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trusted: bool,
    /// Absolute path of the OpenPGP keyring that signs the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

/// The host firewall: one nftables table (`inet opdbus`) the agent owns.
/// Before the rules come loopback accepted, established/related accepted,
/// invalid dropped and, unless `management_floor` is false, the SSH port
/// (while ssh is enabled) and 8006 on Proxmox accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<FirewallRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_policy: Option<DefaultPolicy>,
    /// Accept the SSH port (while ssh is enabled) and 8006 on Proxmox before
    /// the rules; `false` turns that floor off (loopback, established and
    /// invalid stay).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub management_floor: bool,
    /// The port sshd listens on (default 22): what the floor accepts and what
    /// `validate` checks is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u32>,
    /// Source NAT: traffic from `source` leaving through `out_iface` takes
    /// that interface's address (containers on an internal bridge).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masquerade: Vec<Masquerade>,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall {
            rules: Vec::new(),
            default_policy: None,
            management_floor: true,
            ssh_port: None,
            masquerade: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirewallRule {
    /// A destination port (`22`) or a range (`"8000-8100"`); needs `proto`
    /// tcp or udp (without `proto` both are matched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    pub action: Verdict,
    /// Source address or CIDR, or a list of them (one family per rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Sources>,
    /// Input interface name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A port as a number or a `"LOW-HIGH"` range (also a single `"22"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum PortSpec {
    Number(i64),
    Text(String),
}

impl PortSpec {
    /// The inclusive range, or a message saying what is wrong.
    pub fn range(&self) -> Result<(u16, u16), String> {
        let one = |n: i64| -> Result<u16, String> {
            if (1..=65535).contains(&n) {
                Ok(n as u16)
            } else {
                Err(format!("port {n} is out of range"))
            }
        };
        match self {
            PortSpec::Number(n) => one(*n).map(|p| (p, p)),
            PortSpec::Text(t) => {
                let num = |s: &str| -> Result<u16, String> {
                    let n: i64 = s
                        .trim()
                        .parse()
                        .map_err(|_| format!("port {t:?} is not a number or a LOW-HIGH range"))?;
                    one(n)
                };
                let (lo, hi) = match t.split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => {
                        let p = num(t)?;
                        (p, p)
                    }
                };
                if lo > hi {
                    return Err(format!("port range {t} is reversed"));
                }
                Ok((lo, hi))
            }
        }
    }
}

/// One address or CIDR, or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Sources {
    One(String),
    Many(Vec<String>),
}

impl Sources {
    pub fn items(&self) -> Vec<&str> {
        match self {
            Sources::One(s) => vec![s.as_str()],
            Sources::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Masquerade {
    /// Source network (CIDR), such as an internal bridge's `10.0.0.0/24`.
    pub source: String,
    /// The interface the traffic leaves through (the uplink bridge).
    pub out_iface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Accept,
    Drop,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultPolicy {
    #[serde(default = "accept")]
    pub input: Verdict,
    #[serde(default = "accept")]
    pub forward: Verdict,
    #[serde(default = "accept")]
    pub output: Verdict,
}

fn accept() -> Verdict {
    Verdict::Accept
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Netmaker {
    #[serde(default)]
    pub enabled: bool,
    /// Netmaker server API URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// File holding the enrollment key (the key itself never goes in state.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_key_file: Option<String>,
    /// Container templates that get the key and the enroll unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<String>,
}
