//! The LXC configuration of a container op-dbus made: rendered from a
//! [`Spec`] (pure, pinned by tests) and read back from the file, so `query`
//! compares what LXC will really use. Cgroup limits are written for the
//! hierarchy the host has (v2 `lxc.cgroup2.*`, else v1 `lxc.cgroup.*`).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// CFS period the CPU limit is expressed in (100 ms, the kernel default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The comment line that marks a configuration op-dbus wrote.
pub const MARKER: &str = "# op-dbus.template = ";

/// The container's one network interface: a veth on a host bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub bridge: String,
    /// Name inside the container (`eth0` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ADDR/PREFIX`; `None` leaves addressing to the container (DHCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

impl Nic {
    /// Parses `bridge=BR[,ip=CIDR][,gw=IP][,name=IF]` (the CLI's `--network`).
    pub fn parse(text: &str) -> anyhow::Result<Nic> {
        if text == "socket" || text == "mesh" {
            anyhow::bail!(
                "--network {text} is not supported yet; use --network bridge=BR[,ip=CIDR][,gw=IP]"
            );
        }
        let mut nic = Nic::default();
        for part in text.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                anyhow::anyhow!("--network {text:?}: {part:?} is not KEY=VALUE; use bridge=BR[,ip=CIDR][,gw=IP]")
            })?;
            match k {
                "bridge" => nic.bridge = v.to_string(),
                "ip" => nic.ip = Some(v.to_string()),
                "gw" | "gateway" => nic.gateway = Some(v.to_string()),
                "name" => nic.name = Some(v.to_string()),
                _ => anyhow::bail!(
                    "--network {text:?}: unknown key {k:?}; the keys are bridge, ip, gw, name"
                ),
            }
        }
        nic.validate()?;
        Ok(nic)
    }

    /// Checks names and addresses, so nothing odd reaches the config file.
    pub fn validate(&self) -> anyhow::Result<()> {
        super::validate_ifname("bridge", &self.bridge)?;
        if let Some(n) = &self.name {
            super::validate_ifname("interface name", n)?;
        }
        if let Some(ip) = &self.ip {
            ip.parse::<ipnet::IpNet>().map_err(|_| {
                anyhow::anyhow!("network address {ip:?} is not ADDRESS/PREFIX, such as 10.0.0.2/24")
            })?;
        }
        if let Some(gw) = &self.gateway {
            gw.parse::<IpAddr>()
                .map_err(|_| anyhow::anyhow!("gateway {gw:?} is not an IP address"))?;
        }
        Ok(())
    }
}

/// Everything op-dbus decides about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub template: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Nic>,
    /// Memory limit in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub autostart: bool,
    /// Container root is host uid/gid [`super::idmap::BASE`] and up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unprivileged: bool,
}

/// Which cgroup hierarchy holds the memory and cpu controllers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cgroups {
    V1,
    V2,
}

impl Cgroups {
    /// v2 when the unified hierarchy at /sys/fs/cgroup has the memory controller.
    pub fn detect() -> Cgroups {
        match std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") {
            Ok(c) if c.split_whitespace().any(|w| w == "memory") => Cgroups::V2,
            _ => Cgroups::V1,
        }
    }
}

/// Whether LXC can confine containers with its AppArmor profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppArmor {
    /// Not in the kernel, or LXC's profiles are loaded: LXC decides.
    Default,
    /// On in the kernel without LXC's profiles (the `apparmor` package is
    /// missing): LXC would fail to change to `lxc-container-default`.
    WithoutLxcProfiles,
}

impl AppArmor {
    pub fn detect() -> AppArmor {
        let on = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|t| t.trim() == "Y");
        let loaded = std::fs::read_to_string("/sys/kernel/security/apparmor/profiles")
            .is_ok_and(|t| t.contains("lxc-container-default"));
        if on && !loaded {
            AppArmor::WithoutLxcProfiles
        } else {
            AppArmor::Default
        }
    }
}

/// A stable MAC in LXC's own prefix (00:16:3e), from the container's name,
/// so a DHCP server hands the same container the same address.
pub fn mac_for(name: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(name.as_bytes());
    format!("00:16:3e:{:02x}:{:02x}:{:02x}", h[0] & 0x7f, h[1], h[2])
}

/// The configuration file for `spec`, its rootfs at `rootfs`; `extra` are
/// the template's own lines (`config/lxc.conf`), copied in so the container
/// does not depend on the template staying put.
pub fn render(
    spec: &Spec,
    rootfs: &Path,
    cgroups: Cgroups,
    apparmor: AppArmor,
    extra: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by op-dbus-agent; `op-dbus-agent container` manages it."
    );
    let _ = writeln!(s, "{MARKER}{}", spec.template);
    let common = "/usr/share/lxc/config/common.conf";
    let _ = writeln!(s, "lxc.include = {common}");
    if spec.unprivileged {
        use super::idmap::{BASE, COUNT};
        let _ = writeln!(s, "lxc.include = /usr/share/lxc/config/userns.conf");
        let _ = writeln!(s, "lxc.idmap = u 0 {BASE} {COUNT}");
        let _ = writeln!(s, "lxc.idmap = g 0 {BASE} {COUNT}");
        // An idmapped mount of the snapshot: no chown of the rootfs.
        let _ = writeln!(s, "lxc.rootfs.options = idmap=container");
    }
    if apparmor == AppArmor::WithoutLxcProfiles {
        let _ = writeln!(
            s,
            "# AppArmor is on but LXC's profiles are not loaded (no apparmor package)."
        );
        let _ = writeln!(s, "lxc.apparmor.profile = unconfined");
    }
    let _ = writeln!(s, "lxc.arch = linux64");
    let _ = writeln!(s, "lxc.uts.name = {}", spec.name);
    let _ = writeln!(s, "lxc.rootfs.path = dir:{}", rootfs.display());
    match &spec.network {
        Some(n) => {
            let _ = writeln!(s, "lxc.net.0.type = veth");
            let _ = writeln!(s, "lxc.net.0.link = {}", n.bridge);
            let _ = writeln!(s, "lxc.net.0.flags = up");
            let _ = writeln!(
                s,
                "lxc.net.0.name = {}",
                n.name.as_deref().unwrap_or("eth0")
            );
            let _ = writeln!(s, "lxc.net.0.hwaddr = {}", mac_for(&spec.name));
            if let Some(ip) = &n.ip {
                let _ = writeln!(s, "lxc.net.0.ipv4.address = {ip}");
            }
            if let Some(gw) = &n.gateway {
                let _ = writeln!(s, "lxc.net.0.ipv4.gateway = {gw}");
            }
        }
        None => {
            let _ = writeln!(s, "lxc.net.0.type = empty");
        }
    }
    if let Some(m) = spec.memory {
        match cgroups {
            Cgroups::V2 => writeln!(s, "lxc.cgroup2.memory.max = {m}"),
            Cgroups::V1 => writeln!(s, "lxc.cgroup.memory.limit_in_bytes = {m}"),
        }
        .ok();
    }
    if let Some(c) = spec.cpus {
        let quota = u64::from(c) * CPU_PERIOD_US;
        match cgroups {
            Cgroups::V2 => writeln!(s, "lxc.cgroup2.cpu.max = {quota} {CPU_PERIOD_US}"),
            Cgroups::V1 => writeln!(
                s,
                "lxc.cgroup.cpu.cfs_quota_us = {quota}\nlxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_US}"
            ),
        }
        .ok();
    }
    let _ = writeln!(s, "lxc.start.auto = {}", u8::from(spec.autostart));
    if !extra.trim().is_empty() {
        let _ = writeln!(s, "# From the template's config/lxc.conf:");
        for line in extra.lines() {
            let _ = writeln!(s, "{line}");
        }
    }
    s
}

/// What a configuration file says, as far as op-dbus manages it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parsed {
    /// From the op-dbus marker; `None` for a container op-dbus did not write.
    pub template: Option<String>,
    pub rootfs: Option<PathBuf>,
    pub network: Option<Nic>,
    pub memory: Option<u64>,
    pub cpus: Option<u32>,
    pub autostart: bool,
    #[serde(default)]
    pub unprivileged: bool,
}

/// Reads the keys of `text` that [`render`] writes (either cgroup version).
pub fn parse(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut quota = None;
    let mut period = CPU_PERIOD_US;
    for line in text.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix(MARKER) {
            p.template = Some(t.trim().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        fn nic(p: &mut Parsed) -> &mut Nic {
            p.network.get_or_insert_with(Nic::default)
        }
        match k {
            "lxc.rootfs.path" => {
                let path = v.split_once(':').map_or(v, |(_, p)| p);
                p.rootfs = Some(PathBuf::from(path));
            }
            "lxc.net.0.link" => nic(&mut p).bridge = v.to_string(),
            "lxc.net.0.name" if v != "eth0" => nic(&mut p).name = Some(v.to_string()),
            "lxc.net.0.ipv4.address" => nic(&mut p).ip = Some(v.to_string()),
            "lxc.net.0.ipv4.gateway" => nic(&mut p).gateway = Some(v.to_string()),
            "lxc.cgroup2.memory.max" | "lxc.cgroup.memory.limit_in_bytes" => {
                p.memory = v.parse().ok()
            }
            "lxc.cgroup2.cpu.max" => {
                let mut it = v.split_whitespace();
                quota = it.next().and_then(|q| q.parse::<u64>().ok());
                if let Some(per) = it.next().and_then(|q| q.parse().ok()) {
                    period = per;
                }
            }
            "lxc.cgroup.cpu.cfs_quota_us" => quota = v.parse().ok(),
            "lxc.cgroup.cpu.cfs_period_us" => period = v.parse().unwrap_or(CPU_PERIOD_US),
            "lxc.start.auto" => p.autostart = v == "1",
            "lxc.idmap" => p.unprivileged = true,
            _ => {}
        }
    }
    if let Some(q) = quota.filter(|_| period > 0) {
        p.cpus = u32::try_from(q / period).ok();
    }
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            name: "web-01".into(),
            template: "debian-base".into(),
            network: Some(Nic {
                bridge: "vmbr0".into(),
                name: None,
                ip: Some("10.0.0.2/24".into()),
                gateway: Some("10.0.0.1".into()),
            }),
            memory: Some(512 << 20),
            cpus: Some(2),
            autostart: true,
            unprivileged: false,
        }
    }

    #[test]
    fn render_v1_is_pinned_and_parses_back() {
        let text = render(
            &spec(),
            Path::new("/var/lib/lxc/web-01/rootfs"),
            Cgroups::V1,
            AppArmor::Default,
            "lxc.signal.halt = SIGUSR2\n",
        );
        let want = format!(
            "# Written by op-dbus-agent; `op-dbus-agent container` manages it.
# op-dbus.template = debian-base
lxc.include = /usr/share/lxc/config/common.conf
lxc.arch = linux64
lxc.uts.name = web-01
lxc.rootfs.path = dir:/var/lib/lxc/web-01/rootfs
lxc.net.0.type = veth
lxc.net.0.link = vmbr0
lxc.net.0.flags = up
lxc.net.0.name = eth0
lxc.net.0.hwaddr = {}
lxc.net.0.ipv4.address = 10.0.0.2/24
lxc.net.0.ipv4.gateway = 10.0.0.1
lxc.cgroup.memory.limit_in_bytes = 536870912
lxc.cgroup.cpu.cfs_quota_us = 200000
lxc.cgroup.cpu.cfs_period_us = 100000
lxc.start.auto = 1
# From the template's config/lxc.conf:
lxc.signal.halt = SIGUSR2
",
            mac_for("web-01")
        );
        assert_eq!(text, want);
        let p = parse(&text);
        assert_eq!(p.template.as_deref(), Some("debian-base"));
        assert_eq!(p.network, spec().network);
        assert_eq!(
            (p.memory, p.cpus, p.autostart),
            (Some(512 << 20), Some(2), true)
        );
        assert_eq!(p.rootfs, Some(PathBuf::from("/var/lib/lxc/web-01/rootfs")));
    }

    #[test]
    fn render_v2_parses_back_the_same_limits() {
        let text = render(&spec(), Path::new("/r"), Cgroups::V2, AppArmor::Default, "");
        assert!(text.contains("lxc.cgroup2.memory.max = 536870912\n"));
        assert!(text.contains("lxc.cgroup2.cpu.max = 200000 100000\n"));
        let p = parse(&text);
        assert_eq!((p.memory, p.cpus), (Some(512 << 20), Some(2)));
    }

    #[test]
    fn unprivileged_maps_ids_and_idmaps_the_rootfs() {
        let mut sp = spec();
        sp.unprivileged = true;
        let text = render(
            &sp,
            Path::new("/r"),
            Cgroups::V2,
            AppArmor::WithoutLxcProfiles,
            "",
        );
        for want in [
            "lxc.include = /usr/share/lxc/config/userns.conf\n",
            "lxc.idmap = u 0 100000 65536\n",
            "lxc.idmap = g 0 100000 65536\n",
            "lxc.rootfs.options = idmap=container\n",
            "lxc.apparmor.profile = unconfined\n",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        assert!(parse(&text).unprivileged);
        assert!(
            !parse(&render(
                &spec(),
                Path::new("/r"),
                Cgroups::V2,
                AppArmor::Default,
                ""
            ))
            .unprivileged
        );
    }

    #[test]
    fn network_flag_parses_and_refuses_what_it_cannot_do() {
        let n = Nic::parse("bridge=br0,ip=10.1.0.5/24,gw=10.1.0.1").unwrap();
        assert_eq!(n.bridge, "br0");
        assert_eq!(n.ip.as_deref(), Some("10.1.0.5/24"));
        assert_eq!(n.gateway.as_deref(), Some("10.1.0.1"));
        for bad in [
            "ip=10.0.0.1/24",
            "bridge=br0,ip=10.0.0.1",
            "bridge=br0,mtu=9000",
            "bridge=a b",
            "socket",
        ] {
            assert!(Nic::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
