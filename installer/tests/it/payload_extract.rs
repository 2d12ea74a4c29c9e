//! Streaming payload extraction against small tar.zst archives built here with
//! the tar crate: what must survive (modes, links, xattrs, fifos, nodes,
//! owners) and what must be refused (a corrupted payload).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use opdbus_installer::payload::{
    extract_payload, sha256sum_line, sidecar_path, ExpectedSha256, ExtractError,
};
use sha2::{Digest, Sha256};

const MTIME: u64 = 1_600_000_000;

fn header(kind: tar::EntryType, mode: u32, uid: u32, gid: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid.into());
    h.set_gid(gid.into());
    h.set_mtime(MTIME);
    h.set_size(0);
    h
}

/// Writes `entries` as a tar.zst plus its `.sha256`; returns the digest.
fn write_payload(path: &Path, fill: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> String {
    let mut b = tar::Builder::new(Vec::new());
    fill(&mut b);
    let tar = b.into_inner().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    fs::write(path, &zst).unwrap();
    let sha = hex::encode(Sha256::digest(&zst));
    fs::write(sidecar_path(path), sha256sum_line(&sha, path)).unwrap();
    sha
}

fn me() -> (u32, u32) {
    (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    )
}

fn common_entries(b: &mut tar::Builder<Vec<u8>>, uid: u32, gid: u32) {
    let dir = |b: &mut tar::Builder<Vec<u8>>, path: &str, mode| {
        let mut h = header(tar::EntryType::Directory, mode, uid, gid);
        b.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    dir(b, "./", 0o755);
    dir(b, "./etc/", 0o755);
    // xattrs travel as pax records in front of the file's header.
    b.append_pax_extensions([("SCHILY.xattr.user.test", &b"hello"[..])])
        .unwrap();
    let data = b"#!/bin/sh\necho payload\n";
    let mut h = header(tar::EntryType::Regular, 0o754, uid, gid);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, "./etc/tool", &data[..]).unwrap();
    let mut h = header(tar::EntryType::Symlink, 0o777, uid, gid);
    b.append_link(&mut h, "./etc/link", "tool").unwrap();
    let mut h = header(tar::EntryType::Link, 0o754, uid, gid);
    b.append_link(&mut h, "./etc/hard", "./etc/tool").unwrap();
    let mut h = header(tar::EntryType::Fifo, 0o640, uid, gid);
    b.append_data(&mut h, "./etc/fifo", std::io::empty())
        .unwrap();
    // A read-only directory listed before its content: applied last.
    dir(b, "./ro/", 0o500);
    let mut h = header(tar::EntryType::Regular, 0o600, uid, gid);
    h.set_size(2);
    b.append_data(&mut h, "./ro/inner", &b"ok"[..]).unwrap();
}

#[test]
fn extraction_keeps_modes_links_xattrs_and_fifos() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("small.tar.zst");
    let (uid, gid) = me();
    let sha = write_payload(&payload, |b| common_entries(b, uid, gid));
    let root = dir.path().join("target");

    let report = extract_payload(&payload, &ExpectedSha256::Sidecar, &root, false).unwrap();
    assert_eq!(report.sha256, sha);
    assert_eq!(report.bytes, fs::metadata(&payload).unwrap().len());
    assert_eq!(report.entries, 8);

    let tool = root.join("etc/tool");
    let m = fs::symlink_metadata(&tool).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o754);
    assert_eq!(m.mtime(), MTIME as i64);
    assert_eq!(fs::read(&tool).unwrap(), b"#!/bin/sh\necho payload\n");
    assert_eq!(
        xattr::get(&tool, "user.test").unwrap().as_deref(),
        Some(&b"hello"[..])
    );

    let link = root.join("etc/link");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("tool"));

    let hard = fs::symlink_metadata(root.join("etc/hard")).unwrap();
    assert_eq!(hard.ino(), m.ino(), "hard link shares the inode");
    assert_eq!(hard.nlink(), 2);

    let fifo = fs::symlink_metadata(root.join("etc/fifo")).unwrap();
    assert!(
        fifo.file_type().is_fifo(),
        "fifo became {:?}",
        fifo.file_type()
    );
    assert_eq!(fifo.mode() & 0o7777, 0o640);
    assert_eq!(fifo.mtime(), MTIME as i64);

    let ro = fs::symlink_metadata(root.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o500);
    assert_eq!(fs::read(root.join("ro/inner")).unwrap(), b"ok");

    // Extracting again over the same tree replaces what is there.
    fs::write(root.join("etc/hard"), b"stale").unwrap_or(());
    extract_payload(&payload, &ExpectedSha256::Sidecar, &root, false).unwrap();
    assert_eq!(
        fs::symlink_metadata(root.join("etc/hard")).unwrap().ino(),
        fs::symlink_metadata(&tool).unwrap().ino()
    );
    // Make the tree removable for the tempdir cleanup when not root.
    fs::set_permissions(
        root.join("ro"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
}

/// Incompressible content so a flipped byte lands inside compressed data.
fn noisy_payload(path: &Path) -> String {
    let (uid, gid) = me();
    write_payload(path, |b| {
        let mut data = Vec::with_capacity(1 << 20);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while data.len() < 1 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        for i in 0..4 {
            let mut h = header(tar::EntryType::Regular, 0o644, uid, gid);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, format!("blob{i}"), &data[..])
                .unwrap();
        }
    })
}

#[test]
fn a_flipped_byte_is_reported_as_corruption_against_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("noisy.tar.zst");
    let good = noisy_payload(&payload);
    let mut bytes = fs::read(&payload).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::File::create(&payload)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    let bad = hex::encode(Sha256::digest(&bytes));

    let err = extract_payload(
        &payload,
        &ExpectedSha256::Sidecar,
        &dir.path().join("t"),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
    assert!(
        !err.target_written(),
        "a payload file is verified before anything is written"
    );
    assert!(!dir.path().join("t").exists());
    assert_eq!(
        err.to_string(),
        format!(
            "payload {p} is corrupt: sha256 is {bad}, expected {good} (from {p}.sha256); \
             rebuild it or copy it again",
            p = payload.display()
        )
    );
}

#[test]
fn a_valid_stream_with_the_wrong_expected_digest_is_corrupt_too() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("p.tar.zst");
    let actual = noisy_payload(&payload);
    let expected = "0".repeat(64);
    let err = extract_payload(
        &payload,
        &ExpectedSha256::Value {
            sha256: expected.clone(),
            origin: "state.json".into(),
        },
        &dir.path().join("t"),
        false,
    )
    .unwrap_err();
    match &err {
        ExtractError::Corrupt {
            actual: a,
            expected: e,
            origin,
            ..
        } => {
            assert_eq!(a, &actual);
            assert_eq!(e, &expected);
            assert_eq!(origin, "state.json");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A payload file is hashed first: nothing was written.
    assert!(!err.target_written());
    assert!(!dir.path().join("t").exists());
}

#[test]
fn a_stream_is_checked_at_its_end() {
    // A FIFO cannot be hashed before extraction: its digest is checked at
    // the end and the error asks for a wipe.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.tar.zst");
    let actual = noisy_payload(&file);
    let fifo = dir.path().join("fifo.tar.zst");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (src, dst) = (file.clone(), fifo.clone());
    let writer = std::thread::spawn(move || {
        let data = fs::read(&src).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&dst)
            .unwrap()
            .write_all(&data)
            .unwrap();
    });
    let err = extract_payload(
        &fifo,
        &ExpectedSha256::Value {
            sha256: "0".repeat(64),
            origin: "state.json".into(),
        },
        &dir.path().join("t"),
        false,
    )
    .unwrap_err();
    writer.join().unwrap();
    match &err {
        ExtractError::Corrupt { actual: a, .. } => assert_eq!(a, &actual),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.target_written());
    assert!(dir.path().join("t/blob3").exists());
}

#[test]
fn a_missing_sidecar_stops_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("p.tar.zst");
    noisy_payload(&payload);
    fs::remove_file(sidecar_path(&payload)).unwrap();
    let target = dir.path().join("t");
    let err = extract_payload(&payload, &ExpectedSha256::Sidecar, &target, false).unwrap_err();
    assert!(matches!(err, ExtractError::ChecksumFile { .. }), "{err:?}");
    assert!(!err.target_written());
    assert!(!target.exists());
    assert!(err.to_string().contains("p.tar.zst.sha256"), "{err}");
}

#[test]
#[ignore = "privileged: creates a character device node and chowns files to other users"]
fn extraction_keeps_device_nodes_and_ownership() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("nodes.tar.zst");
    write_payload(&payload, |b| {
        common_entries(b, 0, 0);
        let mut h = header(tar::EntryType::Char, 0o666, 0, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "./dev/null", std::io::empty())
            .unwrap();
        let mut h = header(tar::EntryType::Regular, 0o4750, 1234, 5678);
        h.set_size(1);
        b.append_data(&mut h, "./usr/bin/suid", &b"x"[..]).unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 4321, 8765);
        b.append_link(&mut h, "./usr/bin/owned-link", "suid")
            .unwrap();
    });
    let root = dir.path().join("target");
    extract_payload(&payload, &ExpectedSha256::Sidecar, &root, false).unwrap();

    let null = fs::symlink_metadata(root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device(), "{:?}", null.file_type());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    assert_eq!(null.mtime(), MTIME as i64);

    let suid = fs::symlink_metadata(root.join("usr/bin/suid")).unwrap();
    assert_eq!((suid.uid(), suid.gid()), (1234, 5678));
    assert_eq!(suid.mode() & 0o7777, 0o4750, "setuid survives the chown");
    let link = fs::symlink_metadata(root.join("usr/bin/owned-link")).unwrap();
    assert_eq!((link.uid(), link.gid()), (4321, 8765));
    let tool = fs::symlink_metadata(root.join("etc/tool")).unwrap();
    assert_eq!((tool.uid(), tool.gid()), (0, 0));
}
