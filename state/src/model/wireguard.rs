//! `plugins.wireguard`: WireGuard interfaces keyed by name, each with its
//! addresses, listen port, the file holding its private key (never the key
//! itself) and its peers.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::OneOrMany;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WireGuard {
    /// Interfaces keyed by link name (at most 15 bytes).
    #[serde(default)]
    pub interfaces: BTreeMap<String, WgInterface>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WgInterface {
    /// Addresses in CIDR form on the tunnel link.
    #[serde(
        default,
        alias = "addresses",
        skip_serializing_if = "OneOrMany::is_empty"
    )]
    pub address: OneOrMany<String>,
    /// UDP port to listen on (default: a random port chosen at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Absolute path of the root-only file holding the base64 private key;
    /// generated (mode 0600) when missing. Default /etc/wireguard/NAME.key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<WgPeer>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WgPeer {
    /// The peer's public key, base64 (44 characters).
    pub public_key: String,
    /// `IP:PORT` or `[IPv6]:PORT` where the peer is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Networks routed to this peer, in CIDR form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
    /// Seconds between keepalive packets (0 or absent: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
}
