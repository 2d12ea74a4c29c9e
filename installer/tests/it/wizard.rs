//! `op-dbus-install wizard` driven through a real pseudo-terminal (80x25,
//! TERM=linux) on a fake machine: disks and NICs from a temporary sysfs/dev
//! tree, a temporary tz database.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rexpect::process::{Signal, WaitStatus};
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use serde_json::Value;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK379F1K6o11P4CsVMl0rTpg/eLx/J105HAW+2oEStJB wizard-test";
const PASSWORD: &str = "Tr0ub4dor&3-wizard";
const ENTER: &str = "\r";
const DOWN: &str = "j";
const UP: &str = "k";

/// A fake machine: sda (200G, by-id link), sdb (10G), sdc (1G, read-only);
/// NICs lo, ens3, ens4; zoneinfo with UTC and Europe/Berlin.
struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (name, serial, model, sectors, ro) in [
            ("sda", "S1", "Samsung SSD", 419_430_400u64, "0"),
            ("sdb", "S2", "WDC HDD", 20_971_520, "0"),
            ("sdc", "S3", "Flash", 2_097_152, "1"),
        ] {
            let b = root.join("sys/block").join(name);
            fs::create_dir_all(b.join("device")).unwrap();
            fs::write(b.join("size"), format!("{sectors}\n")).unwrap();
            fs::write(b.join("removable"), "0\n").unwrap();
            fs::write(b.join("ro"), format!("{ro}\n")).unwrap();
            fs::write(b.join("device/serial"), format!("{serial}\n")).unwrap();
            fs::write(b.join("device/model"), format!("{model}\n")).unwrap();
            fs::create_dir_all(root.join("dev")).unwrap();
            fs::write(root.join("dev").join(name), "").unwrap();
        }
        fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
        std::os::unix::fs::symlink("../../sda", root.join("dev/disk/by-id/ata-Samsung_SSD_S1"))
            .unwrap();
        for nic in ["lo", "ens3", "ens4"] {
            fs::create_dir_all(root.join("sys/class/net").join(nic)).unwrap();
        }
        fs::create_dir_all(root.join("zoneinfo/Europe")).unwrap();
        fs::write(root.join("zoneinfo/UTC"), "TZif").unwrap();
        fs::write(root.join("zoneinfo/Europe/Berlin"), "TZif").unwrap();
        fs::create_dir_all(root.join("out")).unwrap();
        Machine { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn output(&self) -> PathBuf {
        self.path("out/state.json")
    }

    /// Starts the wizard in an 80x25 pty with TERM=linux. SIGINT is reset
    /// to its default first: a harness started in the background by a
    /// non-interactive shell (`cmd &`) hands its children SIGINT ignored,
    /// and Ctrl-C would then do nothing.
    fn spawn(&self, extra: &[&str]) -> PtySession {
        let mut cmd = Command::new("env");
        cmd.arg("--default-signal=INT")
            .arg("sh")
            .arg("-c")
            .arg("stty rows 25 cols 80 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_op-dbus-install"))
            .arg("wizard")
            .arg("--output")
            .arg(self.output())
            .arg("--sys")
            .arg(self.path("sys"))
            .arg("--dev")
            .arg(self.path("dev"))
            .arg("--zoneinfo")
            .arg(self.path("zoneinfo"))
            .args(extra)
            .env("TERM", "linux")
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG");
        spawn_with_options(
            cmd,
            Options::new()
                .timeout_ms(Some(15_000))
                .strip_ansi_escape_codes(true),
        )
        .unwrap()
    }

    /// Files left in the output directory (the result and any temp file).
    fn leftovers(&self) -> Vec<String> {
        fs::read_dir(self.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Waits for `prompt`, then types `keys`.
fn answer(p: &mut PtySession, prompt: &str, keys: &[&str]) {
    p.exp_string(prompt)
        .unwrap_or_else(|e| panic!("waiting for {prompt:?}: {e}"));
    for k in keys {
        p.send(k).unwrap();
    }
    p.flush().unwrap();
}

fn exit_status(p: &mut PtySession) -> WaitStatus {
    p.exp_eof().unwrap();
    p.process().wait().unwrap()
}

#[test]
fn new_install_writes_a_valid_state_with_a_hashed_password() {
    let m = Machine::new();
    let mut p = m.spawn(&[]);
    // The read-only disk is listed, marked, and refused.
    p.exp_string("Install on:").unwrap();
    answer(&mut p, "[read-only]", &[DOWN, DOWN, ENTER]);
    p.exp_string("/dev/sdc cannot be used (read-only)").unwrap();
    answer(&mut p, "Install on:", &[UP, UP, ENTER]);
    answer(&mut p, "Distribution:", &[DOWN, ENTER]); // Debian 13 (trixie)
    answer(&mut p, "Firmware:", &[UP, UP, ENTER]); // UEFI
    answer(&mut p, "Layout:", &[ENTER]); // btrfs
    p.exp_string("199.5G").unwrap();
    answer(&mut p, "Use this layout?", &[ENTER]);
    answer(&mut p, "Hostname [opdbus]:", &["node1", ENTER]);
    answer(&mut p, "Domain (Enter for none):", &["example.com", ENTER]);
    answer(&mut p, "Timezone [UTC]:", &["Europe/Berlin", ENTER]);
    answer(&mut p, "Locale [C.UTF-8]:", &["en_US.UTF-8", ENTER]);
    answer(&mut p, "Keyboard [us]:", &["de", ENTER]);
    answer(&mut p, "Network:", &[DOWN, ENTER]); // static
    answer(&mut p, "Interface:", &[DOWN, ENTER]); // ens4
    answer(&mut p, "Address/prefix:", &["192.168.7.10/24", ENTER]);
    answer(&mut p, "Gateway (Enter for none):", &["192.168.7.1", ENTER]);
    answer(
        &mut p,
        "DNS servers (Enter for none):",
        &["192.168.7.1 1.1.1.1", ENTER],
    );
    answer(&mut p, "Bridge (Enter for none):", &["br0", ENTER]);
    answer(&mut p, "Root password:", &[PASSWORD, ENTER]);
    answer(&mut p, "Repeat the root password:", &[PASSWORD, ENTER]);
    answer(
        &mut p,
        "Admin user (group sudo) (- for none) [admin]:",
        &["ops", ENTER],
    );
    answer(&mut p, "SSH public key (Enter for none):", &[KEY, ENTER]);
    p.exp_string("== Review ==").unwrap();
    p.exp_string("Host node1.example.com | debian trixie | firmware uefi")
        .unwrap();
    answer(&mut p, "Next:", &[ENTER]);
    p.exp_string("Wrote ").unwrap();
    let status = exit_status(&mut p);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");

    let out = m.output();
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(m.leftovers(), ["state.json"]);
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        !text.contains(PASSWORD),
        "the password is in the file in plain text"
    );
    let loaded =
        opdbus_state::parse_str(&text, "state.json").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(loaded.warnings.is_empty(), "{}", loaded);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let b = &doc["bootstrap"];
    assert_eq!(b["hostname"], "node1");
    assert_eq!(b["domain"], "example.com");
    assert_eq!(b["suite"], "trixie");
    assert_eq!(b["firmware"], "uefi");
    assert_eq!(b["timezone"], "Europe/Berlin");
    assert_eq!(b["keyboard"], "de");
    assert_eq!(b["device"], "/dev/sda");
    let hash = b["root_password_hash"].as_str().unwrap();
    assert!(hash.starts_with("$6$"), "{hash}");
    sha_crypt::sha512_check(PASSWORD, hash).expect("the hash verifies the password");
    let dev = &doc["plugins"]["storage"]["devices"]["/dev/sda"];
    let selector = dev["selector"]["path"].as_str().unwrap();
    assert_eq!(
        Path::new(selector),
        m.path("dev/disk/by-id/ata-Samsung_SSD_S1")
    );
    let types: Vec<&str> = dev["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["efi", "linux"], "UEFI only: no BIOS boot partition");
    let subvols: Vec<&str> = doc["plugins"]["storage"]["btrfs_subvolumes"]["/dev/sda2"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(subvols, ["@", "@home", "@var_log", "@op-dbus"]);
    let ifaces = &doc["plugins"]["network"]["interfaces"];
    assert_eq!(ifaces["br0"]["bridge_ports"], serde_json::json!(["ens4"]));
    assert_eq!(ifaces["br0"]["address"], "192.168.7.10/24");
    assert_eq!(ifaces["br0"]["gateway"], "192.168.7.1");
    assert_eq!(ifaces["ens4"]["type"], "ethernet");
    let ops = &doc["plugins"]["users"]["accounts"]["ops"];
    assert_eq!(ops["groups"], serde_json::json!(["sudo"]));
    assert_eq!(ops["ssh_authorized_keys"], serde_json::json!([KEY]));
}

#[test]
fn from_an_example_accepting_every_default_changes_only_the_disk_selector() {
    let m = Machine::new();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/complete-server.json");
    let input_text = fs::read_to_string(&example).unwrap();
    let input: Value = serde_json::from_str(&input_text).unwrap();
    // The example's timezone must pass the (fake) tz database check.
    fs::create_dir_all(m.path("zoneinfo/America")).unwrap();
    fs::write(m.path("zoneinfo/America/New_York"), "TZif").unwrap();
    let mut p = m.spawn(&["--from", example.to_str().unwrap()]);
    let prompts = [
        "Install on:",
        "Distribution:",
        "Firmware:",
        "Layout:",
        "Use this layout?",
        "Hostname [pve-node1]:",
        "Domain (- for none) [example.com]:",
        "Timezone [America/New_York]:",
        "Locale [en_US.UTF-8]:",
        "Keyboard [us]:",
        "Network:",
        "Interface:",
        "Address/prefix [192.168.1.100/24]:",
        "Gateway (- for none) [192.168.1.1]:",
        "DNS servers (- for none) [8.8.8.8 1.1.1.1]:",
        "Bridge (- for none) [vmbr0]:",
        "Set a root password? [y/N]",
        "Admin user (group sudo) (- for none) [admin]:",
        "SSH public key (- for none) [ssh-ed25519 AAAA...]:",
        "Next:",
    ];
    for prompt in prompts {
        answer(&mut p, prompt, &[ENTER]);
    }
    p.exp_string("Wrote ").unwrap();
    let status = exit_status(&mut p);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");

    let text = fs::read_to_string(m.output()).unwrap();
    let out: Value = serde_json::from_str(&text).unwrap();
    // The one field the wizard must set: the chosen disk's stable selector.
    let mut expected = input.clone();
    expected["plugins"]["storage"]["devices"]["/dev/sda"]
        .as_object_mut()
        .unwrap()
        .insert(
            "selector".into(),
            serde_json::json!({"path": m.path("dev/disk/by-id/ata-Samsung_SSD_S1")}),
        );
    assert_eq!(out, expected);
    // Same keys in the same order everywhere.
    assert_eq!(
        serde_json::to_string(&out).unwrap(),
        serde_json::to_string(&expected).unwrap()
    );
    opdbus_state::parse_str(&text, "state.json").unwrap();
}

#[test]
fn an_invalid_hostname_is_asked_again() {
    let m = Machine::new();
    let mut p = m.spawn(&[]);
    for prompt in [
        "Install on:",
        "Distribution:",
        "Firmware:",
        "Layout:",
        "Use this layout?",
    ] {
        answer(&mut p, prompt, &[ENTER]);
    }
    answer(&mut p, "Hostname [opdbus]:", &["web_01.lan", ENTER]);
    p.exp_string("error: hostname \"web_01.lan\" is not a valid RFC 1123 label")
        .unwrap();
    answer(&mut p, "Hostname [opdbus]:", &["-web", ENTER]);
    p.exp_string("error: hostname \"-web\" is not a valid RFC 1123 label")
        .unwrap();
    answer(&mut p, "Hostname [opdbus]:", &["web-01", ENTER]);
    p.exp_string("Hostname: web-01").unwrap();
    // Leave with Ctrl-C at the next (line-editing) prompt: nothing written.
    answer(&mut p, "Domain (Enter for none):", &["\x03"]);
    let status = exit_status(&mut p);
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGINT, _)),
        "{status:?}"
    );
    assert!(m.leftovers().is_empty(), "{:?}", m.leftovers());
}

#[test]
fn ctrl_c_mid_way_leaves_no_file() {
    let m = Machine::new();
    // An existing output must survive an aborted run untouched.
    fs::write(m.output(), "previous\n").unwrap();
    let mut p = m.spawn(&[]);
    for prompt in [
        "Install on:",
        "Distribution:",
        "Firmware:",
        "Layout:",
        "Use this layout?",
    ] {
        answer(&mut p, prompt, &[ENTER]);
    }
    for prompt in ["Hostname", "Domain", "Timezone", "Locale", "Keyboard"] {
        answer(&mut p, prompt, &[ENTER]);
    }
    for prompt in ["Network:", "Interface:", "Bridge"] {
        answer(&mut p, prompt, &[ENTER]);
    }
    answer(&mut p, "Root password:", &[PASSWORD, ENTER]);
    answer(&mut p, "Repeat the root password:", &["\x03"]);
    let status = exit_status(&mut p);
    assert!(
        matches!(status, WaitStatus::Signaled(_, Signal::SIGINT, _)),
        "{status:?}"
    );
    assert_eq!(m.leftovers(), ["state.json"]);
    assert_eq!(fs::read_to_string(m.output()).unwrap(), "previous\n");
}

#[test]
fn go_back_asks_again_with_the_current_answers() {
    let m = Machine::new();
    let mut p = m.spawn(&[]);
    for prompt in ["Install on:", "Distribution:", "Firmware:"] {
        answer(&mut p, prompt, &[ENTER]);
    }
    answer(&mut p, "Layout:", &[DOWN, ENTER]); // ext4
    answer(&mut p, "Use this layout?", &[ENTER]);
    answer(&mut p, "Hostname [opdbus]:", &["first", ENTER]);
    for prompt in [
        "Domain",
        "Timezone",
        "Locale",
        "Keyboard",
        "Network:",
        "Interface:",
        "Bridge",
    ] {
        answer(&mut p, prompt, &[ENTER]);
    }
    answer(&mut p, "Root password:", &[PASSWORD, ENTER]);
    answer(&mut p, "Repeat the root password:", &[PASSWORD, ENTER]);
    answer(&mut p, "Admin user", &[ENTER]);
    answer(&mut p, "SSH public key", &[ENTER]);
    answer(&mut p, "Next:", &[DOWN, DOWN, ENTER]); // Go back
    for prompt in ["Install on:", "Distribution:", "Firmware:"] {
        answer(&mut p, prompt, &[ENTER]);
    }
    p.exp_string("Layout:").unwrap();
    answer(&mut p, "> plain ext4 root", &[ENTER]);
    answer(&mut p, "Use this layout?", &[ENTER]);
    answer(&mut p, "Hostname [first]:", &["second", ENTER]);
    for prompt in [
        "Domain",
        "Timezone",
        "Locale",
        "Keyboard",
        "Network:",
        "Interface:",
        "Bridge",
    ] {
        answer(&mut p, prompt, &[ENTER]);
    }
    answer(
        &mut p,
        "Keep the root password entered before? [Y/n]",
        &[ENTER],
    );
    answer(&mut p, "Admin user", &[ENTER]);
    answer(&mut p, "SSH public key", &[ENTER]);
    answer(&mut p, "Next:", &[ENTER]);
    p.exp_string("Wrote ").unwrap();
    let status = exit_status(&mut p);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
    let doc: Value = serde_json::from_str(&fs::read_to_string(m.output()).unwrap()).unwrap();
    assert_eq!(doc["bootstrap"]["hostname"], "second");
    let hash = doc["bootstrap"]["root_password_hash"].as_str().unwrap();
    sha_crypt::sha512_check(PASSWORD, hash).expect("the first password is kept");
    let parts = doc["plugins"]["storage"]["devices"]["/dev/sda"]["partitions"]
        .as_array()
        .unwrap();
    assert_eq!(parts.last().unwrap()["filesystem"], "ext4");
}
