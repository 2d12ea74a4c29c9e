//! Netlink adapter: queries and changes links, addresses and routes of the
//! network namespace it was opened in, through rtnetlink. It applies single
//! changes; diffing, ordering and rollback belong to the network plugin.

mod error;
mod parse;
mod resolv;
mod types;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{LinkExtentMask, LinkMessage};
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    AddressMessageBuilder, LinkBond, LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec,
    LinkVeth, LinkVlan, RouteMessageBuilder,
};

pub use error::NetlinkError;
pub use resolv::{render_resolv_conf, write_resolv_conf};
pub use types::{
    AddrInfo, BondInfo, BondMode, LinkInfo, LinkKind, NetSnapshot, OperState, RouteInfo, RouteSpec,
    VlanInfo,
};

pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

/// How a single link is looked up.
#[derive(Clone, Copy)]
enum LinkKey<'a> {
    Name(&'a str),
    Index(u32),
}

/// A handle on one rtnetlink socket. Cheap to clone; all clones share the
/// socket, its connection task and the link index cache.
///
/// The cache maps link names to ifindexes. Every link dump and look-up fills
/// it, so an apply never lists the links again to act on one it already
/// knows. It lives as long as the handle (the network plugin opens one per
/// query and per apply); deleting a link clears it, and an operation whose
/// cached index went stale meanwhile (ENODEV) looks the name up once more.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    indices: Arc<Mutex<HashMap<String, u32>>>,
}

/// Link dumps and look-ups skip the statistics blocks (as `ip link show`
/// without `-s` does): nothing here reads them, and they are most of a
/// link message.
fn skip_stats(req: rtnetlink::LinkGetRequest) -> rtnetlink::LinkGetRequest {
    req.set_filter_mask(AddressFamily::Unspec, vec![LinkExtentMask::SkipStats])
}

impl Netlink {
    /// Opens a route socket and spawns its connection task on the current
    /// tokio runtime (panics outside one). The socket stays bound to the
    /// network namespace of the calling thread at this moment.
    pub fn new() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Netlink {
            handle,
            indices: Arc::default(),
        })
    }

    // ---- the link index cache ---------------------------------------------

    fn cached(&self, name: &str) -> Option<u32> {
        self.indices.lock().ok()?.get(name).copied()
    }

    fn cached_name(&self, index: u32) -> Option<String> {
        let map = self.indices.lock().ok()?;
        map.iter()
            .find(|(_, i)| **i == index)
            .map(|(n, _)| n.clone())
    }

    fn remember(&self, name: &str, index: u32) {
        if let Ok(mut map) = self.indices.lock() {
            map.insert(name.to_string(), index);
        }
    }

    fn forget_all(&self) {
        if let Ok(mut map) = self.indices.lock() {
            map.clear();
        }
    }

    // ---- queries -------------------------------------------------------

    /// Dumps every link; the cache then holds exactly these links.
    async fn link_messages(&self) -> Result<Vec<LinkMessage>> {
        let msgs: Vec<LinkMessage> = skip_stats(self.handle.link().get())
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnl("listing links", e))?;
        if let Ok(mut map) = self.indices.lock() {
            map.clear();
            for m in &msgs {
                if let Some(n) = parse::link_name(m) {
                    map.insert(n.to_string(), m.header.index);
                }
            }
        }
        Ok(msgs)
    }

    /// The message of one link, by name or index; `None` when it does not exist.
    async fn link_message(&self, op: &str, by: LinkKey<'_>) -> Result<Option<LinkMessage>> {
        let req = skip_stats(self.handle.link().get());
        let req = match by {
            LinkKey::Name(name) => req.match_name(name.to_string()),
            LinkKey::Index(index) => req.match_index(index),
        };
        let found: Result<Vec<LinkMessage>, _> = req.execute().try_collect().await;
        match found {
            Ok(mut msgs) if !msgs.is_empty() => {
                let m = msgs.swap_remove(0);
                if let Some(n) = parse::link_name(&m) {
                    self.remember(n, m.header.index);
                }
                Ok(Some(m))
            }
            Ok(_) => Ok(None),
            Err(e) => {
                let e = NetlinkError::from_rtnl(op, e);
                if e.is_missing() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn names(msgs: &[LinkMessage]) -> HashMap<u32, String> {
        msgs.iter()
            .filter_map(|m| parse::link_name(m).map(|n| (m.header.index, n.to_string())))
            .collect()
    }

    async fn address_messages(&self) -> Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnl("listing addresses", e))
    }

    async fn route_messages(&self) -> Result<Vec<RouteMessage>> {
        let mut msgs: Vec<RouteMessage> = Vec::new();
        for (family, dump) in [
            ("IPv4", RouteMessageBuilder::<Ipv4Addr>::new().build()),
            ("IPv6", RouteMessageBuilder::<Ipv6Addr>::new().build()),
        ] {
            let part: Vec<_> = self
                .handle
                .route()
                .get(dump)
                .execute()
                .try_collect()
                .await
                .map_err(|e| NetlinkError::from_rtnl(format!("listing {family} routes"), e))?;
            msgs.extend(part);
        }
        Ok(msgs)
    }

    /// All links, sorted by index.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        Ok(parse::links(&self.link_messages().await?))
    }

    /// The link named `name`, if it exists: one look-up by name (plus one
    /// per master or peer the cache cannot name), not a dump.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        if types::check_link_name(name).is_err() {
            return Ok(None);
        }
        let op = format!("looking up link {name}");
        let Some(msg) = self.link_message(&op, LinkKey::Name(name)).await? else {
            return Ok(None);
        };
        let mut names = HashMap::from([(msg.header.index, name.to_string())]);
        for index in parse::referenced(&msg) {
            let known = match self.cached_name(index) {
                Some(n) => Some(n),
                None => self
                    .link_message(&op, LinkKey::Index(index))
                    .await?
                    .and_then(|m| parse::link_name(&m).map(str::to_string)),
            };
            if let Some(n) = known {
                names.insert(index, n);
            }
        }
        Ok(Some(parse::one_link(&msg, &names)))
    }

    /// IPv4 and IPv6 addresses, without the IPv6 link-local ones the kernel
    /// makes by itself.
    pub async fn addresses(&self) -> Result<Vec<AddrInfo>> {
        let mut all = self.all_addresses().await?;
        all.retain(|a| !a.link_local);
        Ok(all)
    }

    /// IPv4 and IPv6 addresses, link-local ones included (marked).
    pub async fn all_addresses(&self) -> Result<Vec<AddrInfo>> {
        let names = Self::names(&self.link_messages().await?);
        Ok(parse::addresses(&self.address_messages().await?, &names))
    }

    /// Unicast routes of the main table, IPv4 then IPv6.
    pub async fn routes(&self) -> Result<Vec<RouteInfo>> {
        let names = Self::names(&self.link_messages().await?);
        Ok(parse::routes(&self.route_messages().await?, &names))
    }

    /// Links, all addresses and routes in four dumps instead of six.
    pub async fn snapshot(&self) -> Result<NetSnapshot> {
        let link_msgs = self.link_messages().await?;
        let names = Self::names(&link_msgs);
        Ok(NetSnapshot {
            links: parse::links(&link_msgs),
            addresses: parse::addresses(&self.address_messages().await?, &names),
            routes: parse::routes(&self.route_messages().await?, &names),
        })
    }

    /// The ifindex of `name` (from the cache when it is there); `op` names
    /// the operation for the error.
    pub async fn index_of(&self, op: &str, name: &str) -> Result<u32> {
        let not_found = || NetlinkError::LinkNotFound {
            op: op.to_string(),
            name: name.to_string(),
        };
        types::check_link_name(name).map_err(|_| not_found())?;
        if let Some(index) = self.cached(name) {
            return Ok(index);
        }
        match self.link_message(op, LinkKey::Name(name)).await? {
            Some(m) => Ok(m.header.index),
            None => Err(not_found()),
        }
    }

    /// Runs `f` with the ifindex of `name`. When the index came from the
    /// cache and the kernel no longer knows it (the link was deleted and
    /// perhaps made again behind the agent's back), the name is looked up
    /// once more and `f` tried again.
    async fn with_index<T, F, Fut>(&self, op: &str, name: &str, f: F) -> Result<T>
    where
        F: Fn(u32) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let was_cached = self.cached(name).is_some();
        let index = self.index_of(op, name).await?;
        match f(index).await {
            Err(e) if was_cached && e.errno() == Some(libc::ENODEV) => {
                self.forget_all();
                let index = self.index_of(op, name).await?;
                f(index).await
            }
            r => r,
        }
    }

    // ---- links ---------------------------------------------------------

    async fn add_link(
        &self,
        op: String,
        kind: (&'static str, &'static str),
        msg: LinkMessage,
    ) -> Result<()> {
        tracing::debug!("{op}");
        self.handle.link().add(msg).execute().await.map_err(|e| {
            let err = NetlinkError::from_rtnl(op.clone(), e);
            if err.errno() == Some(libc::EOPNOTSUPP) {
                NetlinkError::UnsupportedKind {
                    op,
                    kind: kind.0,
                    module: kind.1,
                }
            } else {
                err
            }
        })
    }

    /// Creates a Linux bridge, administratively down.
    pub async fn create_bridge(&self, name: &str) -> Result<()> {
        types::check_link_name(name)?;
        let msg = LinkMessageBuilder::<LinkBridge>::new(name).build();
        self.add_link(format!("creating bridge {name}"), ("bridge", "bridge"), msg)
            .await
    }

    /// Creates a veth pair `name` <-> `peer`, both administratively down.
    pub async fn create_veth(&self, name: &str, peer: &str) -> Result<()> {
        types::check_link_name(name)?;
        types::check_link_name(peer)?;
        let msg = LinkVeth::new(name, peer).build();
        self.add_link(
            format!("creating veth pair {name}/{peer}"),
            ("veth", "veth"),
            msg,
        )
        .await
    }

    /// Creates a bond with `mode` and, when given, MII link monitoring every
    /// `miimon` milliseconds; administratively down.
    pub async fn create_bond(&self, name: &str, mode: BondMode, miimon: Option<u32>) -> Result<()> {
        types::check_link_name(name)?;
        let mut builder = LinkBond::new(name).mode(parse::kernel_bond_mode(mode));
        if let Some(ms) = miimon {
            builder = builder.miimon(ms);
        }
        self.add_link(
            format!("creating bond {name} (mode {mode})"),
            ("bond", "bonding"),
            builder.build(),
        )
        .await
    }

    /// Creates VLAN `id` on `base` named `name`; administratively down.
    pub async fn create_vlan(&self, name: &str, base: &str, id: u16) -> Result<()> {
        types::check_link_name(name)?;
        let op = format!("creating vlan {name} (id {id} on {base})");
        let base_index = self.index_of(&op, base).await?;
        let msg = LinkVlan::new(name, base_index, id).build();
        self.add_link(op, ("vlan", "8021q"), msg).await
    }

    /// Creates a dummy link; administratively down.
    pub async fn create_dummy(&self, name: &str) -> Result<()> {
        types::check_link_name(name)?;
        let msg = LinkDummy::new(name).build();
        self.add_link(format!("creating dummy {name}"), ("dummy", "dummy"), msg)
            .await
    }

    /// Deletes a link (for a veth, both ends go).
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        let op = format!("deleting link {name}");
        let index = self.index_of(&op, name).await?;
        tracing::debug!("{op}");
        let r = self
            .handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnl(op, e));
        // Its index, and a veth peer's, are gone.
        self.forget_all();
        r
    }

    async fn set_link(
        &self,
        op: String,
        name: &str,
        build: impl Fn(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec>,
    ) -> Result<()> {
        tracing::debug!("{op}");
        self.with_index(&op, name, |index| {
            let msg = build(LinkUnspec::new_with_index(index)).build();
            let req = self.handle.link().set(msg).execute();
            async {
                req.await
                    .map_err(|e| NetlinkError::from_rtnl(op.clone(), e))
            }
        })
        .await
    }

    /// Sets a link administratively up.
    pub async fn set_up(&self, name: &str) -> Result<()> {
        self.set_link(format!("setting {name} up"), name, |b| b.up())
            .await
    }

    /// Sets a link administratively down.
    pub async fn set_down(&self, name: &str) -> Result<()> {
        self.set_link(format!("setting {name} down"), name, |b| b.down())
            .await
    }

    pub async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        self.set_link(format!("setting mtu {mtu} on {name}"), name, |b| b.mtu(mtu))
            .await
    }

    /// Sets the hardware address (`aa:bb:cc:dd:ee:ff`) of a link.
    pub async fn set_mac(&self, name: &str, mac: &str) -> Result<()> {
        let bytes: Vec<u8> = mac
            .split(':')
            .map(|h| u8::from_str_radix(h, 16))
            .collect::<std::result::Result<_, _>>()
            .ok()
            .filter(|b: &Vec<u8>| b.len() == 6)
            .ok_or_else(|| NetlinkError::InvalidMac(mac.to_string()))?;
        self.set_link(
            format!("setting the MAC address of {name} to {mac}"),
            name,
            |b| b.address(bytes.clone()),
        )
        .await
    }

    /// Enslaves `name` to the bridge or bond `master`. Bond ports must be
    /// down when attached (a kernel rule).
    pub async fn set_master(&self, name: &str, master: &str) -> Result<()> {
        let op = format!("attaching {name} to {master}");
        let master_index = self.index_of(&op, master).await?;
        self.set_link(op, name, |b| b.controller(master_index))
            .await
    }

    /// Detaches `name` from its bridge or bond.
    pub async fn set_nomaster(&self, name: &str) -> Result<()> {
        self.set_link(format!("detaching {name} from its master"), name, |b| {
            b.nocontroller()
        })
        .await
    }

    // ---- addresses -----------------------------------------------------

    /// Adds `addr` (host address with prefix, e.g. `10.0.0.1/24`) to `ifname`.
    pub async fn add_address(&self, ifname: &str, addr: IpNet) -> Result<()> {
        let op = format!("adding address {addr} to {ifname}");
        tracing::debug!("{op}");
        self.with_index(&op, ifname, |index| {
            let req = self
                .handle
                .address()
                .add(index, addr.addr(), addr.prefix_len())
                .execute();
            async {
                req.await
                    .map_err(|e| NetlinkError::from_rtnl(op.clone(), e))
            }
        })
        .await
    }

    pub async fn delete_address(&self, ifname: &str, addr: IpNet) -> Result<()> {
        let op = format!("deleting address {addr} from {ifname}");
        let index = self.index_of(&op, ifname).await?;
        tracing::debug!("{op}");
        let msg = match addr {
            IpNet::V4(n) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(n.addr(), n.prefix_len())
                .build(),
            IpNet::V6(n) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(n.addr(), n.prefix_len())
                .build(),
        };
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnl(op, e))
    }

    // ---- routes --------------------------------------------------------

    async fn route_message(
        &self,
        op: &str,
        spec: &RouteSpec,
        for_delete: bool,
    ) -> Result<RouteMessage> {
        let invalid = |reason: String| NetlinkError::InvalidRoute {
            op: op.to_string(),
            reason,
        };
        if spec.dst != spec.dst.trunc() {
            return Err(invalid(format!(
                "destination {} has host bits set; write {}",
                spec.dst,
                spec.dst.trunc()
            )));
        }
        let oif = match &spec.dev {
            Some(dev) => Some(self.index_of(op, dev).await?),
            None => None,
        };
        if !for_delete && spec.gateway.is_none() && oif.is_none() {
            return Err(invalid("a route needs a gateway or a device".to_string()));
        }
        let msg = match (spec.dst, spec.gateway) {
            (IpNet::V4(dst), gw) => {
                let mut b = RouteMessageBuilder::<Ipv4Addr>::new();
                if dst.prefix_len() > 0 {
                    b = b.destination_prefix(dst.addr(), dst.prefix_len());
                }
                match gw {
                    Some(IpAddr::V4(gw)) => {
                        finish_route(b.gateway(gw), oif, spec.metric, for_delete)
                    }
                    Some(IpAddr::V6(gw)) => {
                        return Err(invalid(format!(
                            "IPv6 gateway {gw} for an IPv4 destination"
                        )))
                    }
                    None => finish_route(b.scope(RouteScope::Link), oif, spec.metric, for_delete),
                }
            }
            (IpNet::V6(dst), gw) => {
                let mut b = RouteMessageBuilder::<Ipv6Addr>::new();
                if dst.prefix_len() > 0 {
                    b = b.destination_prefix(dst.addr(), dst.prefix_len());
                }
                match gw {
                    Some(IpAddr::V6(gw)) => {
                        finish_route(b.gateway(gw), oif, spec.metric, for_delete)
                    }
                    Some(IpAddr::V4(gw)) => {
                        return Err(invalid(format!(
                            "IPv4 gateway {gw} for an IPv6 destination"
                        )))
                    }
                    None => finish_route(b, oif, spec.metric, for_delete),
                }
            }
        };
        Ok(msg)
    }

    /// Adds a route to the main table (fails with EEXIST if it exists).
    pub async fn add_route(&self, spec: &RouteSpec) -> Result<()> {
        let op = format!("adding route {spec}");
        let msg = self.route_message(&op, spec, false).await?;
        tracing::debug!("{op}");
        self.handle
            .route()
            .add(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnl(op, e))
    }

    /// Adds a route, or replaces the one with the same destination and metric.
    pub async fn replace_route(&self, spec: &RouteSpec) -> Result<()> {
        let op = format!("replacing route {spec}");
        let msg = self.route_message(&op, spec, false).await?;
        tracing::debug!("{op}");
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnl(op, e))
    }

    /// Adds a default route via `gateway` (family from the gateway), optionally on `dev`.
    pub async fn add_default_route(&self, gateway: IpAddr, dev: Option<&str>) -> Result<()> {
        let mut spec = RouteSpec::default_via(gateway);
        spec.dev = dev.map(str::to_string);
        self.add_route(&spec).await
    }

    /// Deletes a route of the main table; unset fields of `spec` match anything.
    pub async fn delete_route(&self, spec: &RouteSpec) -> Result<()> {
        let op = format!("deleting route {spec}");
        let msg = self.route_message(&op, spec, true).await?;
        tracing::debug!("{op}");
        self.handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnl(op, e))
    }
}

/// Sets the parts of a route message common to both address families.
fn finish_route<T>(
    builder: RouteMessageBuilder<T>,
    oif: Option<u32>,
    metric: Option<u32>,
    for_delete: bool,
) -> RouteMessage {
    let mut b = builder;
    if let Some(oif) = oif {
        b = b.output_interface(oif);
    }
    if let Some(metric) = metric {
        b = b.priority(metric);
    }
    if for_delete {
        // Match any protocol and scope, as `ip route del` does.
        b = b
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere)
            .kind(RouteType::Unicast);
    }
    b.build()
}
