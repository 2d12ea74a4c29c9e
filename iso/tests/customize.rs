//! `customize` on a small ISO assembled from the real pieces (GRUB images,
//! fatfs ESP, xorriso) with stand-in squashfs files: the state and kernel
//! arguments change, everything else (boot equipment, ESP, live files) stays.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use opdbus_common::Task;
use opdbus_iso::{boot, build, customize, menu, xorriso};

fn small_iso(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("iso");
    let search = "/opdbus/medium-test";
    fs::create_dir_all(root.join("opdbus")).unwrap();
    fs::write(root.join("opdbus/medium-test"), "x").unwrap();
    fs::write(
        root.join("opdbus/state.json"),
        include_str!("fixtures/ci-state.json"),
    )
    .unwrap();
    build::write_menu(&root, &menu::Menu::new(true, search)).unwrap();
    boot::bios_tree(search, dir, &root).unwrap();
    let efi = dir.join("BOOTX64.EFI");
    boot::efi_image(search, dir, &efi).unwrap();
    opdbus_common::fat::write_image(
        &dir.join("efi.img"),
        "OPDBUS-EFI",
        &[("EFI/BOOT/BOOTX64.EFI", fs::read(&efi).unwrap())],
    )
    .unwrap();
    let live = dir.join("filesystem.squashfs");
    fs::write(&live, vec![0x5au8; 3 << 20]).unwrap();
    let iso = dir.join("a.iso");
    xorriso::assemble(
        &root,
        &[("/live/filesystem.squashfs".into(), live)],
        &dir.join("efi.img"),
        &iso,
    )
    .unwrap();
    iso
}

fn report(iso: &Path) -> String {
    Task::new("xorriso")
        .args(["-indev"])
        .arg(iso)
        .args(["-report_el_torito", "plain", "-report_system_area", "plain"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap()
}

#[test]
fn customize_replaces_state_and_kargs_only() {
    let dir = tempfile::tempdir().unwrap();
    let iso = small_iso(dir.path());
    let new_state =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ci-state-customized.json");
    let iso2 = dir.path().join("b.iso");
    customize::customize(&iso, &new_state, Some("opdbus.ci=1 quiet"), &iso2).unwrap();

    let out = dir.path().join("state.json");
    xorriso::extract(&iso2, "/opdbus/state.json", &out).unwrap();
    assert_eq!(fs::read(&out).unwrap(), fs::read(&new_state).unwrap());
    let cfg = dir.path().join("grub.cfg");
    xorriso::extract(&iso2, "/boot/grub/grub.cfg", &cfg).unwrap();
    let cfg = fs::read_to_string(&cfg).unwrap();
    assert_eq!(cfg.matches(" opdbus.ci=1 quiet\n").count(), 3, "{cfg}");
    assert!(cfg.contains("set default=auto\nset timeout=3\n"), "{cfg}");

    // The live file and the boot equipment are untouched.
    let sq = dir.path().join("sq");
    xorriso::extract(&iso2, "/live/filesystem.squashfs", &sq).unwrap();
    assert_eq!(fs::read(&sq).unwrap(), vec![0x5au8; 3 << 20]);
    let (before, after) = (report(&iso), report(&iso2));
    for needle in [
        "El Torito img path :   1  /boot/grub/i386-pc/eltorito.img",
        "El Torito boot img :   2  UEFI",
        "grub2-mbr",
        "GPT type GUID      :   2  28732ac11ff8d211ba4b00a0c93ec93b",
    ] {
        assert!(
            before.contains(needle),
            "{needle} missing in the original:\n{before}"
        );
        assert!(
            after.contains(needle),
            "{needle} missing after customize:\n{after}"
        );
    }
    // The original is unchanged.
    xorriso::extract(&iso, "/opdbus/state.json", &out).unwrap();
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        include_str!("fixtures/ci-state.json")
    );

    // A second customize without --kargs keeps the earlier ones.
    let iso3 = dir.path().join("c.iso");
    customize::customize(&iso2, &new_state, None, &iso3).unwrap();
    let cfg3 = dir.path().join("grub3.cfg");
    xorriso::extract(&iso3, "/boot/grub/grub.cfg", &cfg3).unwrap();
    assert_eq!(fs::read_to_string(&cfg3).unwrap(), cfg);
}

#[test]
fn customize_rejects_an_invalid_state_and_a_foreign_iso() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    fs::write(&bad, r#"{"version":1,"nope":1}"#).unwrap();
    let err = customize::customize(
        Path::new("/nonexistent.iso"),
        &bad,
        None,
        &dir.path().join("o.iso"),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("is not a valid state.json"),
        "{err:#}"
    );
}

/// A Proxmox VE state without the release key is refused while the state
/// is read, before the live system (minutes of mmdebstrap) is built.
#[test]
fn a_proxmox_state_without_its_release_key_is_refused_before_the_build() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_op-dbus-iso"))
        .args(["build", "--state"])
        .arg(repo.join("state-examples/proxmox-minimal.json"))
        .arg("--output")
        .arg(dir.path().join("pve.iso"))
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no --proxmox-key for trixie"), "{err}");
    assert!(
        err.contains("24B30F06ECC1836A4E5EFECBA7BCD1420BFE778E"),
        "{err}"
    );
    assert!(!dir.path().join("pve.iso").exists());
    assert!(fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .next()
        .is_none());
}

/// `customize --json` and `package --json` print one JSON document (the
/// real binary; `package` wraps a stand-in ELF, its layout is checked in
/// installer/tests/debian_package.rs).
#[test]
fn customize_and_package_json_parse() {
    let dir = tempfile::tempdir().unwrap();
    let iso = small_iso(dir.path());
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let new_state = repo.join("iso/tests/fixtures/ci-state-customized.json");
    let iso2 = dir.path().join("b.iso");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_op-dbus-iso"))
        .arg("customize")
        .arg(&iso)
        .arg("--state")
        .arg(&new_state)
        .arg("-o")
        .arg(&iso2)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["iso"], iso2.display().to_string());
    assert_eq!(v["iso_size"], fs::metadata(&iso2).unwrap().len());
    assert_eq!(v["iso_sha256"], build::hash_file(&iso2).unwrap().0);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_op-dbus-iso"))
        .current_dir(&repo)
        .args([
            "package",
            "--agent",
            "/usr/bin/true",
            "--installer",
            "/usr/bin/true",
        ])
        .arg("--output-dir")
        .arg(dir.path().join("debs"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["package"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["op-dbus-agent", "op-dbus-install"]);
    for p in v.as_array().unwrap() {
        let path = Path::new(p["path"].as_str().unwrap());
        assert_eq!(p["size"], fs::metadata(path).unwrap().len());
    }
}
