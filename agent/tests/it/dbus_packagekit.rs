//! Tests of the PackageKit adapter against a fake PackageKit on a private
//! dbus-daemon: availability, Resolve collecting Package signals until
//! Finished, install/remove and ErrorCode turning into errors.

use crate::dbus_daemon;
use crate::fake_packagekit;

use dbus_daemon::PrivateBus;
use fake_packagekit::{FakePackageKit, ERROR_PACKAGE_NOT_FOUND, ERROR_PACKAGE_NOT_INSTALLED};
use opdbus_agent::dbus::packagekit::{filter, info, transaction_flag};
use opdbus_agent::dbus::{Error, PackageKit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_follows_owner_or_activation() {
    let empty = PrivateBus::start().unwrap();
    let conn = empty.connect().await.unwrap();
    assert!(!PackageKit::is_available(&conn).await.unwrap());

    let _fake = FakePackageKit::serve(empty.address()).await.unwrap();
    assert!(PackageKit::is_available(&conn).await.unwrap());

    let activatable = PrivateBus::start_with_activatable(&["org.freedesktop.PackageKit"]).unwrap();
    let conn = activatable.connect().await.unwrap();
    assert!(PackageKit::is_available(&conn).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_collects_packages_until_finished() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("curl", "7.88.1-10", true);
    fake.add_package("htop", "3.2.2-2", false);
    let conn = bus.connect().await.unwrap();
    let pk = PackageKit::new(&conn).await.unwrap();

    let found = pk
        .resolve(filter::NONE, &["curl", "htop", "nope"])
        .await
        .unwrap();
    let summary: Vec<_> = found
        .iter()
        .map(|p| (p.name(), p.version(), p.info, p.is_installed()))
        .collect();
    assert_eq!(
        summary,
        [
            ("curl", "7.88.1-10", info::INSTALLED, true),
            ("htop", "3.2.2-2", info::AVAILABLE, false)
        ]
    );
    assert_eq!(found[1].package_id, "htop;3.2.2-2;amd64;fake-main");

    let installed = pk
        .resolve(filter::INSTALLED, &["curl", "htop"])
        .await
        .unwrap();
    assert_eq!(installed.len(), 1);
    assert_eq!(installed[0].name(), "curl");

    assert_eq!(
        fake.calls(),
        [
            "CreateTransaction()",
            r#"Resolve(2, ["curl", "htop", "nope"])"#,
            "CreateTransaction()",
            r#"Resolve(4, ["curl", "htop"])"#,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_and_remove_change_the_fake_repository() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("htop", "3.2.2-2", false);
    let conn = bus.connect().await.unwrap();
    let pk = PackageKit::new(&conn).await.unwrap();

    let id = "htop;3.2.2-2;amd64;fake-main";
    let progress = pk
        .install(transaction_flag::ONLY_TRUSTED, &[id])
        .await
        .unwrap();
    assert_eq!(progress[0].info, info::INSTALLING);
    assert!(fake.package("htop").unwrap().installed);

    pk.remove(transaction_flag::NONE, &[id], false, true)
        .await
        .unwrap();
    assert!(!fake.package("htop").unwrap().installed);

    assert_eq!(
        fake.calls(),
        [
            "CreateTransaction()",
            r#"InstallPackages(2, ["htop;3.2.2-2;amd64;fake-main"])"#,
            "CreateTransaction()",
            r#"RemovePackages(0, ["htop;3.2.2-2;amd64;fake-main"], false, true)"#,
        ]
    );
    assert_eq!(fake.log().last().unwrap(), "signal Finished(1)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_code_becomes_an_error() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakePackageKit::serve(bus.address()).await.unwrap();
    fake.add_package("htop", "3.2.2-2", false);
    let conn = bus.connect().await.unwrap();
    let pk = PackageKit::new(&conn).await.unwrap();

    let err = pk
        .install(transaction_flag::NONE, &["ghost;1;amd64;x"])
        .await
        .unwrap_err();
    match &err {
        Error::PackageKit { op, code, details } => {
            assert_eq!(*op, "install");
            assert_eq!(*code, ERROR_PACKAGE_NOT_FOUND);
            assert_eq!(details, "ghost;1;amd64;x not found");
        }
        other => panic!("expected a PackageKit error, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "PackageKit install failed with error code 8: ghost;1;amd64;x not found"
    );

    let err = pk
        .remove(
            transaction_flag::NONE,
            &["htop;3.2.2-2;amd64;fake-main"],
            false,
            false,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PackageKit { code, .. } if code == ERROR_PACKAGE_NOT_INSTALLED),
        "{err:?}"
    );
}
