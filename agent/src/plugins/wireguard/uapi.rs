//! The WireGuard configuration protocol of the user-space implementation
//! (`wireguard-go`): `get=1` / `set=1` and `key=value` lines over
//! `/var/run/wireguard/NAME.sock`, keys in hex. Also the `wg(8)` ini form
//! used for kernel devices, so both paths share one [`DeviceConf`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::key;
use crate::engine::secret::fingerprint;

/// Where wireguard-go puts its control sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

pub fn socket_path(name: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// One peer as configured (what the state names, nothing of its statistics).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerConf {
    /// Base64, as `wg` prints it.
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SocketAddr>,
    /// Sorted.
    #[serde(default)]
    pub allowed_ips: Vec<IpNet>,
    /// Seconds; 0 is off.
    #[serde(default)]
    pub keepalive: u16,
}

/// A device's configuration as read back; the private key only as its
/// fingerprint (the key itself never leaves [`get`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
    pub listen_port: u16,
    /// Sorted by public key.
    pub peers: Vec<PeerConf>,
}

/// What `set` sends: the private key (read from its file just before) only
/// when it is to change.
pub struct SetConf<'a> {
    pub private_key: Option<&'a str>,
    pub listen_port: Option<u16>,
    pub peers: &'a [PeerConf],
}

async fn exchange(name: &str, request: &str) -> anyhow::Result<String> {
    let path = socket_path(name);
    let io = async {
        let mut s = UnixStream::connect(&path).await?;
        s.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // A reply ends with an empty line after `errno=N`.
        while !(out.ends_with(b"\n\n") && out.windows(6).any(|w| w == b"errno=")) {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| anyhow::anyhow!("no reply within 5 s"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("talking to wireguard-go at {}", path.display()))?;
    match reply.lines().find_map(|l| l.strip_prefix("errno=")) {
        Some("0") => Ok(reply),
        Some(n) => bail!(
            "wireguard-go at {} refused the request with errno {n}",
            path.display()
        ),
        None => bail!("wireguard-go at {} closed without a reply", path.display()),
    }
}

/// Reads the configuration of a wireguard-go device.
pub async fn get(name: &str) -> anyhow::Result<DeviceConf> {
    let reply = exchange(name, "get=1\n\n").await?;
    parse_get(&reply)
}

fn parse_get(reply: &str) -> anyhow::Result<DeviceConf> {
    let mut conf = DeviceConf::default();
    let mut peer: Option<PeerConf> = None;
    for line in reply.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "private_key" => {
                let b64 = key::hex_to_base64(v).context("decoding the device's private key")?;
                if b64 != key::ZERO_KEY {
                    conf.key_fingerprint = Some(fingerprint(&b64));
                }
            }
            "listen_port" => conf.listen_port = v.parse().context("listen_port")?,
            "public_key" => {
                conf.peers.extend(peer.take());
                peer = Some(PeerConf {
                    public_key: key::hex_to_base64(v).context("decoding a peer's public key")?,
                    endpoint: None,
                    allowed_ips: Vec::new(),
                    keepalive: 0,
                });
            }
            "endpoint" => {
                if let Some(p) = peer.as_mut() {
                    p.endpoint = Some(v.parse().with_context(|| format!("endpoint {v}"))?);
                }
            }
            "allowed_ip" => {
                if let Some(p) = peer.as_mut() {
                    p.allowed_ips
                        .push(v.parse().with_context(|| format!("allowed_ip {v}"))?);
                }
            }
            "persistent_keepalive_interval" => {
                if let Some(p) = peer.as_mut() {
                    p.keepalive = v.parse().context("persistent_keepalive_interval")?;
                }
            }
            _ => {}
        }
    }
    conf.peers.extend(peer);
    conf.normalize();
    Ok(conf)
}

impl DeviceConf {
    pub fn normalize(&mut self) {
        for p in &mut self.peers {
            for a in &mut p.allowed_ips {
                *a = a.trunc();
            }
            p.allowed_ips.sort();
            p.allowed_ips.dedup();
        }
        self.peers.sort();
    }
}

/// The `set=1` request: the peer list is replaced as a whole.
pub fn render_set(c: &SetConf) -> anyhow::Result<String> {
    let mut s = String::from("set=1\n");
    if let Some(k) = c.private_key {
        s += &format!("private_key={}\n", key::base64_to_hex(k)?);
    }
    if let Some(p) = c.listen_port {
        s += &format!("listen_port={p}\n");
    }
    s += "replace_peers=true\n";
    for p in c.peers {
        s += &format!("public_key={}\n", key::base64_to_hex(&p.public_key)?);
        if let Some(e) = p.endpoint {
            s += &format!("endpoint={e}\n");
        }
        s += &format!("persistent_keepalive_interval={}\n", p.keepalive);
        s += "replace_allowed_ips=true\n";
        for a in &p.allowed_ips {
            s += &format!("allowed_ip={a}\n");
        }
    }
    s += "\n";
    Ok(s)
}

/// Configures a wireguard-go device.
pub async fn set(name: &str, c: &SetConf<'_>) -> anyhow::Result<()> {
    exchange(name, &render_set(c)?).await.map(|_| ())
}

/// The `wg setconf` form of `c` (kernel devices; fed on standard input).
pub fn render_ini(c: &SetConf) -> String {
    let mut s = String::from("[Interface]\n");
    if let Some(k) = c.private_key {
        s += &format!("PrivateKey = {k}\n");
    }
    if let Some(p) = c.listen_port {
        s += &format!("ListenPort = {p}\n");
    }
    for p in c.peers {
        s += &format!("\n[Peer]\nPublicKey = {}\n", p.public_key);
        if let Some(e) = p.endpoint {
            s += &format!("Endpoint = {e}\n");
        }
        if p.keepalive > 0 {
            s += &format!("PersistentKeepalive = {}\n", p.keepalive);
        }
        if !p.allowed_ips.is_empty() {
            let ips: Vec<String> = p.allowed_ips.iter().map(|a| a.to_string()).collect();
            s += &format!("AllowedIPs = {}\n", ips.join(", "));
        }
    }
    s
}

/// Parses `wg showconf` output; the private key is fingerprinted at once.
pub fn parse_ini(text: &str) -> anyhow::Result<DeviceConf> {
    let mut conf = DeviceConf::default();
    let mut peer: Option<PeerConf> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "[Peer]" {
            conf.peers.extend(peer.take());
            peer = Some(PeerConf {
                public_key: String::new(),
                endpoint: None,
                allowed_ips: Vec::new(),
                keepalive: 0,
            });
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match (k, peer.as_mut()) {
            ("PrivateKey", None) => conf.key_fingerprint = Some(fingerprint(v)),
            ("ListenPort", None) => conf.listen_port = v.parse().context("ListenPort")?,
            ("PublicKey", Some(p)) => p.public_key = v.to_string(),
            ("Endpoint", Some(p)) => p.endpoint = v.parse().ok(),
            ("PersistentKeepalive", Some(p)) => p.keepalive = v.parse().unwrap_or(0),
            ("AllowedIPs", Some(p)) => {
                for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                    p.allowed_ips
                        .push(a.parse().with_context(|| format!("AllowedIPs {a}"))?);
                }
            }
            _ => {}
        }
    }
    conf.peers.extend(peer);
    conf.normalize();
    Ok(conf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PEER: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    #[test]
    fn get_reply_is_parsed_without_statistics_and_key() {
        let reply =
            "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n\
            listen_port=51820\n\
            public_key=c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038\n\
            endpoint=10.0.0.2:51821\n\
            last_handshake_time_sec=1\n\
            rx_bytes=100\n\
            persistent_keepalive_interval=25\n\
            allowed_ip=10.10.0.2/32\n\
            allowed_ip=10.20.0.0/16\n\
            protocol_version=1\n\
            errno=0\n\n";
        let c = parse_get(reply).expect("parses");
        assert_eq!(c.listen_port, 51820);
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].public_key, PEER);
        assert_eq!(c.peers[0].keepalive, 25);
        assert_eq!(c.peers[0].allowed_ips.len(), 2);
        let fp = c.key_fingerprint.clone().expect("a key");
        assert!(crate::engine::secret::is_fingerprint(&fp));
        assert!(!serde_json::to_string(&c).unwrap().contains("e84b5a6d"));
    }

    #[test]
    fn set_request_replaces_peers() {
        let peers = [PeerConf {
            public_key: PEER.into(),
            endpoint: Some("10.0.0.2:51821".parse().unwrap()),
            allowed_ips: vec!["10.10.0.2/32".parse().unwrap()],
            keepalive: 0,
        }];
        let s = render_set(&SetConf {
            private_key: None,
            listen_port: Some(51820),
            peers: &peers,
        })
        .unwrap();
        assert_eq!(
            s,
            "set=1\nlisten_port=51820\nreplace_peers=true\n\
             public_key=c53201039adba14be71f886da1d8dbe9eebded08cb111b75340078999aa9f038\n\
             endpoint=10.0.0.2:51821\npersistent_keepalive_interval=0\n\
             replace_allowed_ips=true\nallowed_ip=10.10.0.2/32\n\n"
        );
        let ini = render_ini(&SetConf {
            private_key: None,
            listen_port: Some(51820),
            peers: &peers,
        });
        let back = parse_ini(&ini).unwrap();
        assert_eq!(back.peers, peers);
        assert_eq!(back.listen_port, 51820);
    }
}
