//! Everything `install` can check without writing is checked before the
//! disk is touched: the real binary on a marked image, tier 1 (no root:
//! nothing may reach the disk phase).

use crate::cli_common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use cli_common::*;

struct Case {
    payload: PathBuf,
    agent: PathBuf,
    templates: PathBuf,
}

/// Runs `install` with `case` and checks: exit 1, the message names
/// `expect`, and not one marked byte of the image changed.
fn refused(dir: &Path, case: &Case, expect: &[&str]) {
    refused_with(dir, case, |_| {}, &[], expect)
}

/// [`refused`] for the default state edited by `edit`, with `extra` flags.
fn refused_with(
    dir: &Path,
    case: &Case,
    edit: impl FnOnce(&mut serde_json::Value),
    extra: &[&OsStr],
    expect: &[&str],
) {
    let st = state(dir, edit);
    let img = marked_image(dir, "disk.img", 4 * GIB);
    let before = marks(&img);
    let mount = dir.join("mnt");
    let disk = format!("/dev/vda={}", img.display());
    let args: Vec<&OsStr> = [
        OsStr::new("install"),
        st.as_os_str(),
        OsStr::new("--disk"),
        OsStr::new(&disk),
        OsStr::new("--yes"),
        OsStr::new("--payload"),
        case.payload.as_os_str(),
        OsStr::new("--agent"),
        case.agent.as_os_str(),
        OsStr::new("--templates"),
        case.templates.as_os_str(),
        OsStr::new("--mount-at"),
        mount.as_os_str(),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .collect();
    let out = run(&args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in: {err}");
    }
    assert!(!err.contains("==> disk"), "reached the disk phase: {err}");
    assert_eq!(marks(&img), before, "the image was written: {err}");
}

fn good(dir: &Path) -> Case {
    let payload = dir.join("base.tar.zst");
    std::fs::write(&payload, b"not really zstd").unwrap();
    // Its real digest: the checksum holds, the contents are what is wrong.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"not really zstd"));
    std::fs::write(
        dir.join("base.tar.zst.sha256"),
        format!("{digest}  base.tar.zst\n"),
    )
    .unwrap();
    let agent = dir.join("op-dbus-agent");
    std::fs::write(&agent, b"#!/bin/sh\n").unwrap();
    Case {
        payload,
        agent,
        templates: repo().join("templates"),
    }
}

#[test]
fn a_mistyped_payload_is_noticed_before_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = good(dir.path());
    c.payload = dir.path().join("typo.tar.zst");
    refused(
        dir.path(),
        &c,
        &[
            "the payload",
            "typo.tar.zst",
            "cannot be read",
            "check --payload",
        ],
    );
    c.payload = dir.path().to_path_buf();
    refused(dir.path(), &c, &["is not a regular file"]);
}

#[test]
fn a_missing_or_ill_formed_checksum_is_noticed_before_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let c = good(dir.path());
    let sidecar = dir.path().join("base.tar.zst.sha256");
    std::fs::remove_file(&sidecar).unwrap();
    refused(
        dir.path(),
        &c,
        &["checksum file", "base.tar.zst.sha256", "copy it along"],
    );
    std::fs::write(&sidecar, "abc123  base.tar.zst\n").unwrap();
    refused(dir.path(), &c, &["does not hold a sha256 digest"]);
}

#[test]
fn missing_agent_and_templates_are_noticed_before_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = good(dir.path());
    c.agent = dir.path().join("no-agent");
    refused(dir.path(), &c, &["the agent binary", "no-agent", "--agent"]);
    let mut c = good(dir.path());
    let t = dir.path().join("templates");
    std::fs::create_dir_all(t.join("systemd")).unwrap();
    c.templates = t;
    refused(
        dir.path(),
        &c,
        &["the template", "op-dbus-agent.service", "--templates"],
    );
}

#[test]
fn a_payload_that_cannot_boot_is_noticed_before_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = good(dir.path());
    // Not a zstd stream (its checksum holds).
    refused(dir.path(), &c, &["listing payload", "zstd-compressed tar"]);
    // A flipped byte: named as corrupt by its digest, before any listing.
    std::fs::write(&c.payload, b"not really zstD").unwrap();
    refused(dir.path(), &c, &["is corrupt: sha256 is"]);
    std::fs::write(&c.payload, b"not really zstd").unwrap();
    let tree = base_tree(dir.path());
    std::fs::remove_file(tree.join("usr/lib/systemd/boot/efi/systemd-bootx64.efi")).unwrap();
    c.payload = payload(dir.path(), "no-efi.tar.zst", &tree);
    refused(
        dir.path(),
        &c,
        &[
            "lacks systemd-boot's EFI binary (systemd-boot-efi)",
            "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        ],
    );
    for f in std::fs::read_dir(tree.join("boot")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    c.payload = payload(dir.path(), "no-kernel.tar.zst", &tree);
    refused(
        dir.path(),
        &c,
        &["lacks a kernel (linux-image)", "/boot/vmlinuz-*"],
    );
}

/// The default state turned into a Proxmox VE 9 install with a static address.
fn proxmox(v: &mut serde_json::Value) {
    v["bootstrap"]["distribution"] = "proxmox".into();
    v["bootstrap"]["suite"] = "trixie".into();
    v["plugins"]["network"] = serde_json::json!({"interfaces": {"vmbr0": {
        "type": "bridge", "bridge_ports": ["ens18"],
        "address": "192.0.2.10/24", "gateway": "192.0.2.1"}}});
}

#[test]
fn a_proxmox_install_without_the_release_key_on_the_medium_stops_before_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    refused_with(
        dir.path(),
        &good(dir.path()),
        proxmox,
        &[OsStr::new("--proxmox-keys"), keys.as_os_str()],
        &[
            "the Proxmox release key",
            "proxmox-release-trixie.gpg",
            "op-dbus-iso build --proxmox-key",
            "24B30F06ECC1836A4E5EFECBA7BCD1420BFE778E",
        ],
    );
}

#[test]
fn a_proxmox_release_key_that_is_not_proxmoxs_stops_before_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(
        keys.join("proxmox-release-trixie.gpg"),
        b"someone else's key",
    )
    .unwrap();
    refused_with(
        dir.path(),
        &good(dir.path()),
        proxmox,
        &[OsStr::new("--proxmox-keys"), keys.as_os_str()],
        &["proxmox-release-trixie.gpg"],
    );
}
