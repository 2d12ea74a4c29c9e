//! A real payload: mmdebstrap of Debian bookworm from this host's apt sources
//! (cached under `OPDBUS_CACHE` or `target/opdbus-cache/`), its content
//! checked, then extracted with the installer's extractor.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use opdbus_installer::payload::{
    build_payload, extract_payload, parse_sha256sum, sidecar_path, Distribution, ExpectedSha256,
    PayloadSpec,
};

fn cache_dir() -> PathBuf {
    std::env::var_os("OPDBUS_CACHE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/opdbus-cache"),
        PathBuf::from,
    )
}

#[test]
#[ignore = "privileged: runs mmdebstrap --mode=root of bookworm (about 1-2 min the first time)"]
fn bookworm_payload_has_kernel_systemd_btrfs_and_extracts() {
    let _cache = crate::cli_common::PAYLOAD_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let spec = PayloadSpec::new(Distribution::Debian, "bookworm", None, &[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("base.tar.zst");
    let info = build_payload(&spec, &out, Some(&cache_dir())).unwrap();
    assert_eq!(info.path, out);
    assert_eq!(info.size, fs::metadata(&out).unwrap().len());
    let sidecar = fs::read_to_string(sidecar_path(&out)).unwrap();
    assert_eq!(sidecar, format!("{}  base.tar.zst\n", info.sha256));
    assert_eq!(parse_sha256sum(&sidecar).as_deref(), Some(&*info.sha256));

    // Content, read straight from the tarball.
    let mut archive = tar::Archive::new(zstd::Decoder::new(fs::File::open(&out).unwrap()).unwrap());
    let mut paths = BTreeSet::new();
    let mut os_release = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path == "etc/os-release" || path == "usr/lib/os-release" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            os_release.push_str(&text);
        }
        paths.insert(path);
    }
    assert!(
        paths.iter().any(|p| p.starts_with("boot/vmlinuz-")),
        "no kernel in /boot"
    );
    for p in ["usr/lib/systemd/systemd", "usr/bin/btrfs", "etc/os-release"] {
        assert!(paths.contains(p), "{p} missing from the payload");
    }
    assert!(
        os_release.contains("VERSION_CODENAME=bookworm"),
        "{os_release}"
    );
    assert!(
        !paths.iter().any(|p| p.starts_with("usr/share/man/man1/")),
        "man pages should be excluded"
    );

    // And through the installer's extractor.
    let root = dir.path().join("root");
    let report = extract_payload(&out, &ExpectedSha256::Sidecar, &root, false).unwrap();
    assert_eq!(report.sha256, info.sha256);
    assert!(report.entries as usize >= paths.len() - 1);
    let systemd = fs::metadata(root.join("usr/lib/systemd/systemd")).unwrap();
    assert!(systemd.is_file() && systemd.mode() & 0o111 != 0);
    assert_eq!(
        fs::read_link(root.join("bin")).unwrap(),
        PathBuf::from("usr/bin")
    );
    let null = fs::symlink_metadata(root.join("dev/null"));
    if let Ok(null) = null {
        assert!(null.file_type().is_char_device());
    }
    // A second build with the same spec comes from the cache.
    let again =
        build_payload(&spec, &dir.path().join("again.tar.zst"), Some(&cache_dir())).unwrap();
    assert!(again.from_cache);
    assert_eq!(again.sha256, info.sha256);
}
