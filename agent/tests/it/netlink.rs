//! Privileged tests of the netlink adapter: each runs in a fresh network
//! namespace, changes it through `Netlink`, and checks the result with
//! `ip -n NS -j`, independently of the adapter's own queries.

use crate::netns;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use netns::NetNs;
use opdbus_agent::netlink::{BondMode, LinkKind, Netlink, NetlinkError, RouteSpec};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn flags(link: &serde_json::Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// br0 (up, 10.0.0.1/24 + fd00::1/64) with port v0 of veth pair v0/v1 (up).
async fn build_topology(nl: &Netlink) {
    nl.create_veth("v0", "v1").await.unwrap();
    nl.create_bridge("br0").await.unwrap();
    nl.set_master("v0", "br0").await.unwrap();
    for l in ["v0", "v1", "br0"] {
        nl.set_up(l).await.unwrap();
    }
    nl.add_address("br0", net("10.0.0.1/24")).await.unwrap();
    nl.add_address("br0", net("fd00::1/64")).await.unwrap();
}

#[test]
#[ignore = "privileged: network namespace"]
fn veth_pair_up_with_mtu() {
    let ns = NetNs::new();
    let links = ns.run(|nl| async move {
        nl.create_veth("v0", "v1").await.unwrap();
        for l in ["v0", "v1"] {
            nl.set_mtu(l, 1400).await.unwrap();
            nl.set_up(l).await.unwrap();
        }
        nl.links().await.unwrap()
    });
    for (name, peer) in [("v0", "v1"), ("v1", "v0")] {
        let link = ns.link(name).expect("veth end exists");
        assert_eq!(link["mtu"], 1400, "{name}: {link}");
        assert!(flags(&link).contains(&"UP".to_string()), "{name}: {link}");
        assert_eq!(link["linkinfo"]["info_kind"], "veth");

        let mine = links.iter().find(|l| l.name == name).unwrap();
        assert_eq!(mine.kind, LinkKind::Veth);
        assert_eq!(mine.mtu, Some(1400));
        assert!(mine.up);
        assert_eq!(mine.veth_peer.as_deref(), Some(peer));
        assert_eq!(mine.mac.as_deref(), link["address"].as_str());
    }
    let lo = links.iter().find(|l| l.name == "lo").unwrap();
    assert_eq!(lo.kind, LinkKind::Loopback);
}

#[test]
#[ignore = "privileged: network namespace"]
fn bridge_with_veth_port_then_detached() {
    let ns = NetNs::new();
    ns.run(|nl| async move {
        nl.create_veth("v0", "v1").await.unwrap();
        nl.create_bridge("br0").await.unwrap();
        nl.set_up("br0").await.unwrap();
        nl.set_master("v0", "br0").await.unwrap();
        let br = nl.link("br0").await.unwrap().unwrap();
        assert_eq!(br.kind, LinkKind::Bridge);
        assert!(br.up);
        let v0 = nl.link("v0").await.unwrap().unwrap();
        assert_eq!(v0.master.as_deref(), Some("br0"));
        assert_eq!(v0.master_index, Some(br.index));
        assert!(!v0.up, "created links start down");
    });
    let v0 = ns.link("v0").unwrap();
    assert_eq!(v0["master"], "br0", "{v0}");
    assert_eq!(ns.link("br0").unwrap()["linkinfo"]["info_kind"], "bridge");

    ns.run(|nl| async move {
        nl.set_nomaster("v0").await.unwrap();
        assert_eq!(nl.link("v0").await.unwrap().unwrap().master, None);
    });
    let v0 = ns.link("v0").unwrap();
    assert!(v0.get("master").is_none(), "{v0}");
}

#[test]
#[ignore = "privileged: network namespace"]
fn v4_and_v6_addresses_on_bridge() {
    let ns = NetNs::new();
    let (addrs, all) = ns.run(|nl| async move {
        build_topology(&nl).await;
        // v1 gets a kernel-made fe80:: address once the pair has carrier.
        let mut all = Vec::new();
        for _ in 0..50 {
            all = nl.all_addresses().await.unwrap();
            if all.iter().any(|a| a.ifname == "v1" && a.link_local) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (nl.addresses().await.unwrap(), all)
    });
    let seen = ns.addrs("br0");
    assert!(seen.contains(&"10.0.0.1/24".to_string()), "{seen:?}");
    assert!(seen.contains(&"fd00::1/64".to_string()), "{seen:?}");

    let br0: Vec<String> = addrs
        .iter()
        .filter(|a| a.ifname == "br0")
        .map(|a| a.addr.to_string())
        .collect();
    assert_eq!(br0, ["10.0.0.1/24", "fd00::1/64"]);
    assert!(addrs.iter().all(|a| !a.link_local));
    assert!(addrs
        .iter()
        .any(|a| a.ifname == "lo" && a.addr == net("127.0.0.1/8")));
    assert!(
        all.iter()
            .any(|a| a.ifname == "v1" && a.link_local && a.addr.prefix_len() == 64),
        "all_addresses includes the link-local address: {all:?}"
    );
    let ll = all
        .iter()
        .find(|a| a.ifname == "v1" && a.link_local)
        .unwrap();
    let kernel_v1 = ns.addrs("v1");
    assert!(
        kernel_v1.contains(&ll.addr.to_string()),
        "{kernel_v1:?} vs {ll:?}"
    );

    // Deleting one address leaves the other.
    ns.run(|nl| async move {
        nl.delete_address("br0", net("10.0.0.1/24")).await.unwrap();
    });
    let left: Vec<String> = ns
        .addrs("br0")
        .into_iter()
        .filter(|a| !a.starts_with("fe80:"))
        .collect();
    assert_eq!(left, ["fd00::1/64"]);
}

#[test]
#[ignore = "privileged: network namespace"]
fn default_and_static_routes() {
    let ns = NetNs::new();
    let routes = ns.run(|nl| async move {
        build_topology(&nl).await;
        nl.add_default_route(ip("10.0.0.254"), None).await.unwrap();
        nl.add_route(&RouteSpec {
            dst: net("10.1.0.0/16"),
            gateway: Some(ip("10.0.0.253")),
            dev: Some("br0".into()),
            metric: Some(100),
        })
        .await
        .unwrap();
        nl.add_route(&RouteSpec {
            dst: net("fd01::/64"),
            gateway: Some(ip("fd00::fe")),
            dev: None,
            metric: None,
        })
        .await
        .unwrap();
        nl.add_default_route(ip("fd00::ff"), Some("br0"))
            .await
            .unwrap();
        let routes = nl.routes().await.unwrap();
        // snapshot() agrees with the separate queries (on what cannot change
        // in between: kernel-made link-local addresses and routes can).
        let snap = nl.snapshot().await.unwrap();
        let stable_routes = |r: &[opdbus_agent::netlink::RouteInfo]| {
            r.iter()
                .filter(|r| r.protocol == "static")
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(stable_routes(&snap.routes), stable_routes(&routes));
        assert_eq!(stable_routes(&routes).len(), 4);
        let names = |l: &[opdbus_agent::netlink::LinkInfo]| {
            l.iter().map(|l| l.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&snap.links), names(&nl.links().await.unwrap()));
        let mut global = snap.addresses.clone();
        global.retain(|a| !a.link_local);
        assert_eq!(global, nl.addresses().await.unwrap());
        routes
    });

    let v4 = ns.routes("-4");
    let default = v4
        .iter()
        .find(|r| r["dst"] == "default")
        .expect("default route");
    assert_eq!(default["gateway"], "10.0.0.254");
    assert_eq!(default["dev"], "br0");
    let stat = v4
        .iter()
        .find(|r| r["dst"] == "10.1.0.0/16")
        .expect("static route");
    assert_eq!(stat["gateway"], "10.0.0.253");
    assert_eq!(stat["metric"], 100);
    let v6 = ns.routes("-6");
    let r6 = v6
        .iter()
        .find(|r| r["dst"] == "fd01::/64")
        .expect("v6 route");
    assert_eq!(r6["gateway"], "fd00::fe");
    let d6 = v6
        .iter()
        .find(|r| r["dst"] == "default")
        .expect("v6 default");
    assert_eq!(d6["gateway"], "fd00::ff");

    let mine = routes.iter().find(|r| r.dst == net("0.0.0.0/0")).unwrap();
    assert_eq!(mine.gateway, Some(ip("10.0.0.254")));
    assert_eq!(mine.oif.as_deref(), Some("br0"));
    assert_eq!(mine.protocol, "static");
    let mine = routes.iter().find(|r| r.dst == net("10.1.0.0/16")).unwrap();
    assert_eq!(mine.metric, Some(100));
    let connected = routes.iter().find(|r| r.dst == net("10.0.0.0/24")).unwrap();
    assert_eq!(connected.protocol, "kernel");
    assert_eq!(connected.gateway, None);
    assert!(routes
        .iter()
        .any(|r| r.dst == net("::/0") && r.gateway == Some(ip("fd00::ff"))));
    assert!(routes.iter().any(|r| r.dst == net("fd01::/64")));
}

#[test]
#[ignore = "privileged: network namespace"]
fn delete_everything_leaves_only_lo() {
    let ns = NetNs::new();
    ns.run(|nl| async move {
        build_topology(&nl).await;
        nl.add_default_route(ip("10.0.0.254"), Some("br0"))
            .await
            .unwrap();
        let r6 = RouteSpec {
            dst: net("fd01::/64"),
            gateway: Some(ip("fd00::fe")),
            dev: Some("br0".into()),
            metric: None,
        };
        nl.add_route(&r6).await.unwrap();

        // Routes first, looked up from the adapter's own query as a plugin would.
        for r in nl.routes().await.unwrap() {
            if r.protocol == "static" {
                nl.delete_route(&r.spec()).await.unwrap();
            }
        }
        assert!(nl
            .routes()
            .await
            .unwrap()
            .iter()
            .all(|r| r.protocol != "static"));
        nl.delete_address("br0", net("fd00::1/64")).await.unwrap();
        nl.delete_address("br0", net("10.0.0.1/24")).await.unwrap();
        nl.set_down("br0").await.unwrap();
        nl.set_nomaster("v0").await.unwrap();
        for l in ["v0", "br0"] {
            nl.delete_link(l).await.unwrap();
        }
        let names: Vec<String> = nl
            .links()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["lo"]);
    });
    assert_eq!(ns.link_names(), ["lo"]);
    let addrs = ns.ip_json(&["addr", "show"]);
    let ifnames: Vec<&str> = addrs
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| !l["addr_info"].as_array().unwrap().is_empty())
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    assert_eq!(ifnames, ["lo"]);
    assert!(ns.routes("-4").is_empty(), "{:?}", ns.routes("-4"));
    assert!(ns.routes("-6").is_empty(), "{:?}", ns.routes("-6"));
}

#[test]
#[ignore = "privileged: network namespace"]
fn errors_name_the_object() {
    let ns = NetNs::new();
    ns.run(|nl| async move {
        let err = nl.add_address("nosuch0", net("10.0.0.1/24")).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "adding address 10.0.0.1/24 to nosuch0: no link named 'nosuch0'"
        );
        assert!(err.is_missing());

        let err = nl.set_mtu("nosuch0", 1400).await.unwrap_err();
        assert_eq!(err.to_string(), "setting mtu 1400 on nosuch0: no link named 'nosuch0'");

        nl.create_bridge("br0").await.unwrap();
        let err = nl.create_bridge("br0").await.unwrap_err();
        assert!(err.is_already_exists(), "{err:?}");
        assert_eq!(chain(&err), "creating bridge br0: File exists (os error 17)");

        let err = nl.set_master("br0", "nosuch1").await.unwrap_err();
        assert_eq!(err.to_string(), "attaching br0 to nosuch1: no link named 'nosuch1'");

        nl.set_up("br0").await.unwrap();
        nl.add_address("br0", net("10.0.0.1/24")).await.unwrap();
        let err = nl.add_address("br0", net("10.0.0.1/24")).await.unwrap_err();
        assert_eq!(chain(&err), "adding address 10.0.0.1/24 to br0: File exists (os error 17)");

        let err = nl.add_default_route(ip("192.168.9.1"), None).await.unwrap_err();
        assert!(
            chain(&err).starts_with("adding route default via 192.168.9.1: Network is unreachable"),
            "{}",
            chain(&err)
        );
        let err = nl
            .delete_route(&RouteSpec {
                dst: net("10.9.0.0/16"),
                gateway: None,
                dev: None,
                metric: None,
            })
            .await
            .unwrap_err();
        assert!(err.is_missing(), "{err:?}");
        assert!(chain(&err).starts_with("deleting route 10.9.0.0/16: "), "{}", chain(&err));

        let err = nl
            .add_route(&RouteSpec {
                dst: net("10.1.2.3/16"),
                gateway: Some(ip("10.0.0.2")),
                dev: None,
                metric: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "adding route 10.1.2.3/16 via 10.0.0.2: destination 10.1.2.3/16 has host bits set; write 10.1.0.0/16"
        );

        let err = nl.create_dummy("much-too-long-name").await.unwrap_err();
        assert!(matches!(err, NetlinkError::InvalidLinkName(_)), "{err:?}");
    });
    assert_eq!(ns.link_names(), ["lo", "br0"]);
}

/// Bond, VLAN and dummy need the bonding / 8021q / dummy modules, which this
/// host lacks: then the error must say which link and which module. Where the
/// kernel has them (the QEMU guest), the link must come out as asked.
#[test]
#[ignore = "privileged: network namespace"]
fn bond_vlan_dummy_create_or_explain() {
    let ns = NetNs::new();
    ns.run(|nl| async move {
        match nl.create_dummy("dummy0").await {
            Ok(()) => {
                let dummy = nl.link("dummy0").await.unwrap().unwrap();
                assert_eq!(dummy.kind, LinkKind::Dummy);
            }
            Err(err) => assert_eq!(
                err.to_string(),
                "creating dummy dummy0: the running kernel has no 'dummy' link type \
                 (load its module with `modprobe dummy`, or use a kernel that has it)"
            ),
        }
        match nl.create_bond("bond0", BondMode::Ieee8023ad, Some(100)).await {
            Ok(()) => {
                let bond = nl.link("bond0").await.unwrap().unwrap();
                assert_eq!(bond.kind, LinkKind::Bond);
                let info = bond.bond.unwrap();
                assert_eq!(info.mode, Some(BondMode::Ieee8023ad));
                assert_eq!(info.miimon, Some(100));
            }
            Err(err) => {
                assert!(matches!(err, NetlinkError::UnsupportedKind { .. }), "{err:?}");
                assert_eq!(
                    err.to_string(),
                    "creating bond bond0 (mode 802.3ad): the running kernel has no 'bond' \
                     link type (load its module with `modprobe bonding`, or use a kernel that has it)"
                );
            }
        }
        nl.create_veth("eth9", "eth9p").await.unwrap();
        match nl.create_vlan("eth9.100", "eth9", 100).await {
            Ok(()) => {
                let vlan = nl.link("eth9.100").await.unwrap().unwrap();
                assert_eq!(vlan.kind, LinkKind::Vlan);
                let info = vlan.vlan.unwrap();
                assert_eq!((info.id, info.base_name.as_deref()), (100, Some("eth9")));
            }
            Err(err) => {
                assert!(matches!(err, NetlinkError::UnsupportedKind { .. }), "{err:?}");
                let msg = err.to_string();
                assert!(
                    msg.starts_with("creating vlan eth9.100 (id 100 on eth9): the running kernel has no 'vlan'"),
                    "{msg}"
                );
                assert!(msg.contains("modprobe 8021q"), "{msg}");
            }
        }
        let err = nl.create_vlan("nosuch0.5", "nosuch0", 5).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "creating vlan nosuch0.5 (id 5 on nosuch0): no link named 'nosuch0'"
        );
    });
}

/// The error and its sources, joined like anyhow's `{:#}`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// The adapter caches link indices for the life of a handle; a link that is
/// deleted and made again behind its back (a new index) is still acted on
/// by name, and `link()` by name reports the veth peer and master.
#[test]
#[ignore = "privileged: network namespace"]
fn cached_index_follows_a_link_recreated_behind_its_back() {
    let ns = NetNs::new();
    let name = ns.name().to_string();
    ns.run(|nl| async move {
        nl.create_bridge("cz0").await.unwrap();
        let old = nl.index_of("test", "cz0").await.unwrap();
        nl.set_up("cz0").await.unwrap();
        for args in [
            &["link", "del", "cz0"][..],
            &["link", "add", "cz0", "type", "bridge"][..],
        ] {
            opdbus_common::Task::new("ip")
                .args(["-n", &name])
                .args(args)
                .run()
                .unwrap();
        }
        nl.add_address("cz0", net("10.93.0.1/24")).await.unwrap();
        nl.set_up("cz0").await.unwrap();
        let now = nl.link("cz0").await.unwrap().unwrap();
        assert_ne!(now.index, old, "the kernel gave the new bridge a new index");
        assert!(now.up);

        nl.create_veth("cz1", "cz2").await.unwrap();
        nl.set_master("cz1", "cz0").await.unwrap();
        let cz1 = nl.link("cz1").await.unwrap().unwrap();
        assert_eq!(cz1.master.as_deref(), Some("cz0"));
        assert_eq!(cz1.veth_peer.as_deref(), Some("cz2"));
        nl.delete_link("cz2").await.unwrap();
        assert!(
            nl.link("cz1").await.unwrap().is_none(),
            "a veth goes with its peer"
        );
        assert!(nl.index_of("test", "cz1").await.is_err());
    });
    let addrs = ns.addrs("cz0");
    assert!(addrs.iter().any(|a| a == "10.93.0.1/24"), "{addrs:?}");
}
