//! OVSDB client against a real, unprivileged ovsdb-server per test (temp dir,
//! killed on drop); results are read back with ovs-vsctl, not with our client.

use crate::ovsdb_server;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opdbus_agent::ovsdb::vswitch::{self, BridgeSpec, PortKind, PortSpec};
use opdbus_agent::ovsdb::{
    Client, Condition, Datum, MonitorRequest, Operation, OvsdbError, Row, WaitUntil, VSWITCH_DB,
};
use ovsdb_server::{vsctl_at, OvsdbServer};

impl OvsdbServer {
    async fn client(&self) -> Client {
        Client::connect(&self.addr()).await.expect("connecting")
    }
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn spec() -> BridgeSpec {
    BridgeSpec {
        name: "brt0".into(),
        ports: vec![
            PortSpec::new("int0", PortKind::Internal),
            PortSpec::new("eth9", PortKind::System),
            PortSpec::new(
                "patch-a",
                PortKind::Patch {
                    peer: "patch-b".into(),
                },
            ),
        ],
        datapath_type: None,
        hwaddr: None,
    }
}

#[tokio::test]
async fn list_dbs_echo_and_schema() {
    let srv = OvsdbServer::start();
    let c = srv.client().await;
    let dbs = c.list_dbs().await.unwrap();
    assert!(dbs.iter().any(|d| d == "Open_vSwitch"), "{dbs:?}");
    c.echo().await.unwrap();
    let schema = c.get_schema(VSWITCH_DB).await.unwrap();
    assert_eq!(schema["name"], "Open_vSwitch");
    assert!(schema["tables"]["Bridge"].is_object());
    let err = c.get_schema("NoSuchDb").await.unwrap_err();
    assert!(matches!(err, OvsdbError::Rpc { .. }), "{err:?}");
}

#[tokio::test]
async fn connect_to_missing_socket_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix:{}/nope.sock", dir.path().display());
    let err = Client::connect(&addr).await.err().expect("must fail");
    assert!(matches!(err, OvsdbError::Connect { .. }));
    assert!(err.to_string().contains("nope.sock"), "{err}");
}

#[tokio::test]
async fn root_row_is_created_once() {
    let srv = OvsdbServer::start();
    let c = srv.client().await;
    assert_eq!(vswitch::root_uuid(&c).await.unwrap(), None);
    let a = vswitch::ensure_root_row(&c).await.unwrap();
    let b = vswitch::ensure_root_row(&c).await.unwrap();
    assert_eq!(a, b);
    assert_eq!(srv.vsctl(&["get", "Open_vSwitch", ".", "_uuid"]), a);
}

#[tokio::test]
async fn create_bridge_verify_with_vsctl_then_reensure_and_delete() {
    let srv = OvsdbServer::start();
    let c = srv.client().await;
    let report = vswitch::ensure_bridge(&c, &spec()).await.unwrap();
    assert!(report.created_bridge);
    assert_eq!(report.added_ports, ["brt0", "int0", "eth9", "patch-a"]);

    assert_eq!(srv.vsctl(&["list-br"]), "brt0");
    assert_eq!(
        lines(&srv.vsctl(&["list-ports", "brt0"])),
        ["eth9", "int0", "patch-a"]
    );
    assert_eq!(srv.vsctl(&["get", "Interface", "int0", "type"]), "internal");
    assert_eq!(srv.vsctl(&["get", "Interface", "brt0", "type"]), "internal");
    assert_eq!(srv.vsctl(&["get", "Interface", "eth9", "type"]), "");
    assert_eq!(srv.vsctl(&["get", "Interface", "patch-a", "type"]), "patch");
    assert_eq!(
        srv.vsctl(&["get", "Interface", "patch-a", "options:peer"]),
        "patch-b"
    );
    assert_eq!(srv.vsctl(&["port-to-br", "patch-a"]), "brt0");

    // our own reader agrees
    let bridges = vswitch::list_bridges(&c).await.unwrap();
    assert_eq!(bridges.len(), 1);
    let patch = &bridges[0].port("patch-a").unwrap().interfaces[0];
    assert_eq!(patch.kind, "patch");
    assert_eq!(
        patch.options.get("peer").map(String::as_str),
        Some("patch-b")
    );
    assert_eq!(patch.error, None);

    // idempotent: nothing sent, no duplicate rows
    let again = vswitch::ensure_bridge(&c, &spec()).await.unwrap();
    assert!(!again.changed(), "{again:?}");
    let count =
        |table: &str| lines(&srv.vsctl(&["--bare", "--columns=_uuid", "list", table])).len();
    assert_eq!(
        (count("Bridge"), count("Port"), count("Interface")),
        (1, 4, 4)
    );

    // a changed peer and one more port are applied in place
    let mut changed = spec();
    changed.ports[2].kind = PortKind::Patch {
        peer: "patch-c".into(),
    };
    changed
        .ports
        .push(PortSpec::new("int1", PortKind::Internal));
    let r = vswitch::ensure_bridge(&c, &changed).await.unwrap();
    assert_eq!(r.added_ports, ["int1"]);
    assert_eq!(r.updated_interfaces, ["patch-a"]);
    assert_eq!(
        srv.vsctl(&["get", "Interface", "patch-a", "options:peer"]),
        "patch-c"
    );
    assert_eq!(
        lines(&srv.vsctl(&["list-ports", "brt0"])),
        ["eth9", "int0", "int1", "patch-a"]
    );
    assert_eq!(
        (count("Bridge"), count("Port"), count("Interface")),
        (1, 5, 5)
    );

    // delete one port, then the bridge; ports and interfaces go with it
    assert!(vswitch::delete_port(&c, "brt0", "int1").await.unwrap());
    assert_eq!(count("Port"), 4);
    assert!(vswitch::delete_bridge(&c, "brt0").await.unwrap());
    assert_eq!(srv.vsctl(&["list-br"]), "");
    assert_eq!(
        (count("Bridge"), count("Port"), count("Interface")),
        (0, 0, 0)
    );
    assert!(!vswitch::delete_bridge(&c, "brt0").await.unwrap());
}

#[tokio::test]
async fn operation_errors_name_their_index() {
    let srv = OvsdbServer::start();
    let c = srv.client().await;
    vswitch::ensure_bridge(&c, &spec()).await.unwrap();
    let root = vswitch::root_uuid(&c).await.unwrap().unwrap();

    // A duplicate of the indexed Bridge.name fails the whole transaction at commit.
    let ops = vec![
        Operation::Insert {
            table: "Bridge".into(),
            row: Row::from([("name".into(), Datum::atom("brt0"))]),
            uuid_name: Some("dup".into()),
        },
        Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![Condition::uuid(&root)],
            mutations: vec![opdbus_agent::ovsdb::Mutation::new(
                "bridges",
                opdbus_agent::ovsdb::Mutator::Insert,
                Datum::named_uuid("dup"),
            )],
        },
    ];
    let err = c.transact(VSWITCH_DB, &ops).await.unwrap_err();
    match &err {
        OvsdbError::Operation {
            index,
            error,
            details,
            ..
        } => {
            assert_eq!(*index, 2, "{err}");
            assert_eq!(error, "constraint violation");
            assert!(details.as_deref().unwrap_or("").contains("brt0"), "{err}");
        }
        other => panic!("expected an operation error, got {other:?}"),
    }
    assert_eq!(srv.vsctl(&["list-br"]), "brt0");

    // An operation that fails by itself is named by its own index.
    let ops = vec![
        Operation::Comment("op-dbus test".into()),
        Operation::Wait {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", "brt0")],
            columns: vec!["name".into()],
            until: WaitUntil::Equal,
            rows: vec![],
            timeout_ms: Some(0),
        },
    ];
    let err = c.transact(VSWITCH_DB, &ops).await.unwrap_err();
    assert!(
        matches!(&err, OvsdbError::Operation { index: 1, op, error, .. } if op == "wait" && error == "timed out"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "OVSDB operation 1 (wait) failed: timed out (\"where\" clause test failed)"
    );
}

#[tokio::test]
async fn monitor_reports_drift_from_outside() {
    let srv = OvsdbServer::start();
    let c = srv.client().await;
    vswitch::ensure_bridge(&c, &spec()).await.unwrap();
    let reqs = BTreeMap::from([
        (
            "Bridge".to_string(),
            MonitorRequest::columns(["name", "ports"]),
        ),
        (
            "Interface".to_string(),
            MonitorRequest::columns(["name", "type", "options"]),
        ),
    ]);
    let mut mon = c.monitor(VSWITCH_DB, &reqs).await.unwrap();
    let names: Vec<_> = mon.initial["Bridge"]
        .values()
        .filter_map(|u| u.new.as_ref()?.get("name")?.as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["brt0"]);
    assert_eq!(mon.initial["Interface"].len(), 4);

    // someone changes the bridge behind the agent's back
    let sock = srv.socket();
    tokio::task::spawn_blocking(move || {
        vsctl_at(
            &sock,
            &["set", "Interface", "patch-a", "options:peer=rogue"],
        );
        vsctl_at(&sock, &["add-port", "brt0", "rogue0"]);
    })
    .await
    .unwrap();

    let mut saw_peer = false;
    let mut saw_port = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(saw_peer && saw_port) {
        let left = deadline.saturating_duration_since(Instant::now());
        let upd = mon
            .next_timeout(left)
            .await
            .expect("drift update within 10 s");
        for row in upd.get("Interface").into_iter().flat_map(|t| t.values()) {
            let new = row.new.as_ref();
            if new
                .and_then(|r| r.get("options"))
                .is_some_and(|o| o.string_map().get("peer").map(String::as_str) == Some("rogue"))
            {
                saw_peer = true;
            }
        }
        for row in upd.get("Bridge").into_iter().flat_map(|t| t.values()) {
            if row.old.as_ref().is_some_and(|o| o.contains_key("ports")) {
                saw_port = true;
            }
        }
    }

    c.monitor_cancel(&mon.id).await.unwrap();
    assert!(mon.next_timeout(Duration::from_secs(2)).await.is_none());
    c.echo().await.unwrap();
}

#[tokio::test]
async fn next_cfg_wait_times_out_without_vswitchd_and_sees_cur_cfg() {
    let srv = OvsdbServer::start();
    let c = srv.client().await;
    let (next, applied) = vswitch::sync_vswitchd(&c, Some(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(next, 1);
    assert_eq!(applied, Some(false));
    assert_eq!(srv.vsctl(&["get", "Open_vSwitch", ".", "next_cfg"]), "1");
    assert_eq!(vswitch::bump_next_cfg(&c).await.unwrap(), 2);

    // play ovs-vswitchd: report cur_cfg a little later
    let sock = srv.socket();
    let fake = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        vsctl_at(&sock, &["set", "Open_vSwitch", ".", "cur_cfg=2"]);
    });
    let start = Instant::now();
    assert!(vswitch::wait_cur_cfg(&c, 2, Duration::from_secs(10))
        .await
        .unwrap());
    assert!(start.elapsed() >= Duration::from_millis(250));
    fake.join().unwrap();
}

#[tokio::test]
async fn vlan_tags_trunks_and_datapath_are_set_read_back_and_repaired() {
    let srv = OvsdbServer::start();
    let c = srv.client().await;
    let mut s = spec();
    s.datapath_type = Some("netdev".into());
    s.ports[0] = PortSpec::new("int0", PortKind::Internal).with_vlans(Some(10), &[]);
    s.ports[1] = PortSpec::new("eth9", PortKind::System).with_vlans(None, &[30, 20]);
    vswitch::ensure_bridge(&c, &s).await.unwrap();
    assert_eq!(
        srv.vsctl(&["get", "Bridge", "brt0", "datapath_type"]),
        "netdev"
    );
    assert_eq!(srv.vsctl(&["get", "Port", "int0", "tag"]), "10");
    assert_eq!(srv.vsctl(&["get", "Port", "eth9", "trunks"]), "[20, 30]");
    let b = &vswitch::list_bridges(&c).await.unwrap()[0];
    assert_eq!(b.datapath_type, "netdev");
    assert_eq!(b.port("int0").unwrap().tag, Some(10));
    assert_eq!(b.port("eth9").unwrap().trunks, [20, 30]);
    assert!(!vswitch::ensure_bridge(&c, &s).await.unwrap().changed());

    // Changed by hand: seen and put back in place.
    srv.vsctl(&["set", "Port", "int0", "tag=99"]);
    srv.vsctl(&["clear", "Port", "eth9", "trunks"]);
    srv.vsctl(&["set", "Bridge", "brt0", "datapath_type=system"]);
    let r = vswitch::ensure_bridge(&c, &s).await.unwrap();
    assert_eq!(r.updated_ports, ["int0", "eth9"]);
    assert!(r.updated_bridge);
    assert_eq!(srv.vsctl(&["get", "Port", "int0", "tag"]), "10");
    assert_eq!(srv.vsctl(&["get", "Port", "eth9", "trunks"]), "[20, 30]");
    assert_eq!(
        srv.vsctl(&["get", "Bridge", "brt0", "datapath_type"]),
        "netdev"
    );
}
