//! Tests of the hostname1, timedate1 and locale1 adapters against fakes on a
//! private dbus-daemon: property reads, the exact setter calls and errors.

use crate::dbus_daemon;
use crate::fake_settings;

use dbus_daemon::PrivateBus;
use fake_settings::{FakeSettings, Settings};
use opdbus_agent::dbus::{Error, Hostname, Locale, Timedate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_reads_and_sets_static_hostname() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSettings::serve(bus.address(), Settings::default())
        .await
        .unwrap();
    let conn = bus.connect().await.unwrap();
    let hostname = Hostname::new(&conn).await.unwrap();

    assert_eq!(hostname.static_hostname().await.unwrap(), "localhost");
    hostname.set_static_hostname("pve1").await.unwrap();
    assert_eq!(hostname.static_hostname().await.unwrap(), "pve1");
    assert_eq!(fake.settings().static_hostname, "pve1");
    assert_eq!(fake.calls(), ["SetStaticHostname(pve1, false)"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timedate_sets_timezone_and_reports_rejection() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSettings::serve(bus.address(), Settings::default())
        .await
        .unwrap();
    let conn = bus.connect().await.unwrap();
    let timedate = Timedate::new(&conn).await.unwrap();

    assert_eq!(timedate.timezone().await.unwrap(), "Etc/UTC");
    timedate.set_timezone("Europe/Berlin").await.unwrap();
    assert_eq!(timedate.timezone().await.unwrap(), "Europe/Berlin");

    let err = timedate.set_timezone("Mars").await.unwrap_err();
    assert!(matches!(err, Error::Call { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "calling org.freedesktop.timedate1.SetTimezone('Mars') failed"
    );
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        source.contains("Invalid or not installed time zone 'Mars'"),
        "{source}"
    );
    assert_eq!(fake.settings().timezone, "Europe/Berlin");
    assert_eq!(
        fake.calls(),
        [
            "SetTimezone(Europe/Berlin, false)",
            "SetTimezone(Mars, false)"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locale_sets_variables_and_console_keymap() {
    let bus = PrivateBus::start().unwrap();
    let fake = FakeSettings::serve(bus.address(), Settings::default())
        .await
        .unwrap();
    let conn = bus.connect().await.unwrap();
    let locale = Locale::new(&conn).await.unwrap();

    assert_eq!(locale.locale().await.unwrap(), ["LANG=C.UTF-8"]);
    assert_eq!(locale.vconsole_keymap().await.unwrap(), "us");

    locale
        .set_locale(&["LANG=de_DE.UTF-8", "LC_TIME=en_GB.UTF-8"])
        .await
        .unwrap();
    locale.set_vconsole_keyboard("de", "", true).await.unwrap();

    assert_eq!(
        locale.locale().await.unwrap(),
        ["LANG=de_DE.UTF-8", "LC_TIME=en_GB.UTF-8"]
    );
    assert_eq!(locale.vconsole_keymap().await.unwrap(), "de");
    assert_eq!(
        fake.calls(),
        [
            r#"SetLocale(["LANG=de_DE.UTF-8", "LC_TIME=en_GB.UTF-8"], false)"#,
            "SetVConsoleKeyboard(de, , true, false)",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_service_is_a_call_error() {
    let bus = PrivateBus::start().unwrap();
    let conn = bus.connect().await.unwrap();
    let hostname = Hostname::new(&conn).await.unwrap();
    let err = hostname.static_hostname().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "reading org.freedesktop.hostname1.StaticHostname failed"
    );
}
