//! `plugins.opdbus`: the op-dbus host layout of seed 001: subvolumes under
//! /var/lib/op-dbus with their compression, the audit database, sockets,
//! plugin skeletons and container templates.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostLayout {
    #[serde(default = "default_root")]
    pub root: String,
    /// Subvolumes below `root` (`@cache`, `@timing`, ...) with their
    /// `btrfs.compression` property. Defaults to seed 001's seven.
    #[serde(default = "default_subvolumes")]
    pub subvolumes: BTreeMap<String, LayoutSubvolume>,
    /// Per-plugin skeletons under `@plugins/NAME` (plugin.toml, state/, cache/).
    #[serde(default = "default_plugins")]
    pub plugins: Vec<String>,
    /// Create `sockets/{containers,plugins,api}`.
    #[serde(default = "yes")]
    pub sockets: bool,
    #[serde(default)]
    pub audit: AuditSettings,
    /// Container templates under `@templates/NAME`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, ContainerTemplate>,
}

impl Default for HostLayout {
    fn default() -> Self {
        HostLayout {
            root: default_root(),
            subvolumes: default_subvolumes(),
            plugins: default_plugins(),
            sockets: true,
            audit: AuditSettings::default(),
            templates: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayoutSubvolume {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Path of the SQLite chain below `root`.
    #[serde(default = "default_audit_db")]
    pub database: String,
    /// A remote witness that receives every signed checkpoint over HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<AuditWitness>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            database: default_audit_db(),
            witness: None,
        }
    }
}

/// Where checkpoints are sent (`POST url`, the checkpoint as JSON) and the
/// server certificate pinned by its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditWitness {
    /// `https://HOST[:PORT]/PATH`.
    pub url: String,
    /// SHA-256 of the witness's certificate (DER), 64 hex digits, colons allowed.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerTemplate {
    #[serde(default = "default_suite")]
    pub suite: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Embed the Netmaker join key and enroll unit.
    #[serde(default)]
    pub netmaker: bool,
}

fn yes() -> bool {
    true
}
fn default_root() -> String {
    "/var/lib/op-dbus".into()
}
fn default_audit_db() -> String {
    "@timing/blockchain.db".into()
}
fn default_suite() -> String {
    "bookworm".into()
}
fn default_plugins() -> Vec<String> {
    ["lxc", "netmaker", "ovs", "systemd"]
        .map(String::from)
        .to_vec()
}
fn default_subvolumes() -> BTreeMap<String, LayoutSubvolume> {
    [
        ("@cache", "zstd:3"),
        ("@timing", "zstd:3"),
        ("@vectors", "zstd:3"),
        ("@state", "zstd:1"),
        ("@snapshots", "zstd:1"),
        ("@plugins", "zstd:1"),
        ("@templates", "zstd:1"),
    ]
    .into_iter()
    .map(|(n, c)| {
        (
            n.to_string(),
            LayoutSubvolume {
                compression: Some(c.to_string()),
            },
        )
    })
    .collect()
}
