//! Hostile payloads built here with the tar crate, byte by byte where the
//! crate would refuse the name: each tries to reach a sentinel directory
//! outside the target (through symlinks, `..`, absolute links, a directory
//! swapped for a symlink) or to outgrow the target (a huge sparse entry, a
//! zstd bomb, too many entries). The sentinel must stay as it was.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use opdbus_installer::payload::{
    extract_payload, extract_payload_with, sha256sum_line, sidecar_path, ExpectedSha256,
    ExtractError, ExtractLimits,
};
use sha2::{Digest, Sha256};

/// A host directory with one file that no extraction may touch.
struct Sentinel {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    victim: PathBuf,
}

impl Sentinel {
    fn new() -> Self {
        let d = tempfile::Builder::new()
            .prefix("opdbus-host-")
            .tempdir()
            .unwrap();
        let dir = d.path().canonicalize().unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, b"host data\n").unwrap();
        Sentinel {
            _dir: d,
            dir,
            victim,
        }
    }

    /// The host directory holds exactly the victim, unchanged, unlinked.
    fn assert_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["victim"], "something was written into the host dir");
        assert_eq!(fs::read(&self.victim).unwrap(), b"host data\n");
        let m = fs::symlink_metadata(&self.victim).unwrap();
        assert_eq!(
            m.nlink(),
            1,
            "the host file was hard-linked into the target"
        );
        assert_eq!(m.mode() & 0o7777, 0o644, "the host file's mode changed");
    }
}

/// A header whose name and link name are written as raw bytes (the tar
/// crate refuses `..` and absolute names, a hostile builder does not).
fn raw(kind: tar::EntryType, name: &str, link: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o600
    });
    h.set_uid(u64::from(nix::unistd::geteuid().as_raw()));
    h.set_gid(u64::from(nix::unistd::getegid().as_raw()));
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    let old = h.as_old_mut();
    old.name = [0; 100];
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname = [0; 100];
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    h
}

/// The running user as owner (the extractor refuses entries without one).
fn owned(h: &mut tar::Header) {
    h.set_uid(u64::from(nix::unistd::geteuid().as_raw()));
    h.set_gid(u64::from(nix::unistd::getegid().as_raw()));
    h.set_mtime(1_600_000_000);
}

fn append(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let h = raw(kind, name, link, data.len() as u64);
    b.append(&h, data).unwrap();
}

/// Writes a tar.zst with a correct `.sha256` next to it.
fn payload(dir: &Path, fill: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    fill(&mut b);
    let tar = b.into_inner().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let path = dir.join("hostile.tar.zst");
    fs::write(&path, &zst).unwrap();
    let sha = hex::encode(Sha256::digest(&zst));
    fs::write(sidecar_path(&path), sha256sum_line(&sha, &path)).unwrap();
    path
}

fn extract(p: &Path, target: &Path) -> Result<(), ExtractError> {
    extract_payload(p, &ExpectedSha256::Sidecar, target, false).map(|_| ())
}

fn rel(p: &Path) -> String {
    p.to_str().unwrap().trim_start_matches('/').to_string()
}

#[test]
fn symlink_then_hard_link_does_not_remove_the_host_file() {
    let host = Sentinel::new();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let p = payload(work.path(), |b| {
        append(b, tar::EntryType::Regular, "file", "", b"payload\n");
        append(
            b,
            tar::EntryType::Symlink,
            "x",
            host.dir.to_str().unwrap(),
            b"",
        );
        append(b, tar::EntryType::Link, "x/victim", "file", b"");
    });
    let _ = extract(&p, &target);
    host.assert_untouched();
}

#[test]
fn a_tampered_payload_writes_nothing() {
    let host = Sentinel::new();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let p = payload(work.path(), |b| {
        append(b, tar::EntryType::Regular, "file", "", b"payload\n");
        append(
            b,
            tar::EntryType::Symlink,
            "x",
            host.dir.to_str().unwrap(),
            b"",
        );
        append(b, tar::EntryType::Link, "x/victim", "file", b"");
    });
    fs::write(sidecar_path(&p), sha256sum_line(&"0".repeat(64), &p)).unwrap();
    let err = extract(&p, &target).unwrap_err();
    assert!(matches!(err, ExtractError::Corrupt { .. }), "{err:?}");
    assert!(
        !err.target_written(),
        "a local payload is verified before extraction"
    );
    let written: Vec<_> = fs::read_dir(&target)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        written.is_empty(),
        "entries written before the checksum: {written:?}"
    );
    host.assert_untouched();
}

#[test]
fn symlink_then_file_below_it_stays_in_the_target() {
    let host = Sentinel::new();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let p = payload(work.path(), |b| {
        // The link's target exists inside the target too (made first).
        append(
            b,
            tar::EntryType::Directory,
            &format!("{}/", rel(&host.dir)),
            "",
            b"",
        );
        append(
            b,
            tar::EntryType::Symlink,
            "x",
            host.dir.to_str().unwrap(),
            b"",
        );
        append(b, tar::EntryType::Regular, "x/victim", "", b"planted\n");
        append(b, tar::EntryType::Regular, "x/planted", "", b"planted\n");
        append(b, tar::EntryType::Directory, "x/sub/", "", b"");
        append(b, tar::EntryType::Fifo, "x/fifo", "", b"");
        append(b, tar::EntryType::Symlink, "x/link", "/etc/passwd", b"");
    });
    extract(&p, &target).unwrap();
    host.assert_untouched();
    // As after a chroot: the absolute link resolves inside the target.
    let inside = target.join(rel(&host.dir));
    assert_eq!(fs::read(inside.join("planted")).unwrap(), b"planted\n");
    assert!(inside.join("sub").is_dir());
}

#[test]
fn dot_dot_entries_are_refused() {
    let host = Sentinel::new();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let up = format!("a/{}{}", "../".repeat(16), rel(&host.dir));
    for (kind, name, link) in [
        (
            tar::EntryType::Regular,
            format!("{up}/planted"),
            String::new(),
        ),
        (
            tar::EntryType::Regular,
            format!("{up}/victim"),
            String::new(),
        ),
        (tar::EntryType::Symlink, format!("{up}/planted"), "x".into()),
        (
            tar::EntryType::Directory,
            format!("{up}/sub/"),
            String::new(),
        ),
        (
            tar::EntryType::Link,
            "stolen".into(),
            format!("{up}/victim"),
        ),
    ] {
        let p = payload(work.path(), |b| {
            append(b, tar::EntryType::Directory, "a/", "", b"");
            append(b, kind, &name, &link, b"");
        });
        let err = extract(&p, &target).unwrap_err();
        let msg = format!("{err}");
        assert!(msg.contains("'..'"), "{kind:?} {name}: {msg}");
        host.assert_untouched();
    }
}

#[test]
fn absolute_hard_link_targets_resolve_inside_the_target() {
    let host = Sentinel::new();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let p = payload(work.path(), |b| {
        append(
            b,
            tar::EntryType::Link,
            "stolen",
            host.victim.to_str().unwrap(),
            b"",
        );
    });
    // The link's target does not exist inside the target: an error, and
    // the host file is not linked in (it could be chmod'ed through it).
    assert!(extract(&p, &target).is_err());
    host.assert_untouched();
    assert!(fs::symlink_metadata(target.join("stolen")).is_err());

    // Through a symlink planted first, too.
    let p = payload(work.path(), |b| {
        append(
            b,
            tar::EntryType::Symlink,
            "h",
            host.dir.to_str().unwrap(),
            b"",
        );
        append(b, tar::EntryType::Link, "stolen", "h/victim", b"");
    });
    assert!(extract(&p, &target).is_err());
    host.assert_untouched();
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_followed_out() {
    let host = Sentinel::new();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let p = payload(work.path(), |b| {
        append(b, tar::EntryType::Directory, "d/", "", b"");
        append(
            b,
            tar::EntryType::Symlink,
            "d",
            host.dir.to_str().unwrap(),
            b"",
        );
        append(b, tar::EntryType::Regular, "d/planted", "", b"planted\n");
        append(b, tar::EntryType::Regular, "d/victim", "", b"planted\n");
    });
    let _ = extract(&p, &target);
    host.assert_untouched();
}

#[test]
fn an_existing_symlink_in_the_target_is_not_followed_out() {
    // A re-run over a tree whose /etc an earlier payload made a symlink.
    let host = Sentinel::new();
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    fs::create_dir_all(&target).unwrap();
    std::os::unix::fs::symlink(&host.dir, target.join("etc")).unwrap();
    let p = payload(work.path(), |b| {
        append(b, tar::EntryType::Regular, "etc/victim", "", b"planted\n");
        append(b, tar::EntryType::Link, "etc/planted", "etc/victim", b"");
    });
    // etc dangles inside the target: an error, nothing on the host.
    assert!(extract(&p, &target).is_err());
    host.assert_untouched();
}

#[test]
fn a_huge_sparse_entry_is_refused_before_writing() {
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    let p = payload(work.path(), |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNUSparse);
        h.set_path("huge").unwrap();
        h.set_mode(0o644);
        owned(&mut h);
        h.set_size(512);
        let g = h.as_gnu_mut().unwrap();
        g.set_real_size(1 << 40);
        g.sparse[0].set_offset((1 << 40) - 512);
        g.sparse[0].set_length(512);
        h.set_cksum();
        b.append(&h, &[7u8; 512][..]).unwrap();
    });
    let err = extract(&p, &target).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExtractError::TooBig { .. }), "{err:?}");
    assert!(msg.contains("huge"), "{msg}");
    assert!(msg.contains("1099511627776 bytes"), "{msg}");
    assert!(fs::symlink_metadata(target.join("huge")).is_err());
}

#[test]
fn a_zstd_bomb_is_refused_before_writing() {
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    // 1 GiB of zeros: about 32 KB compressed.
    let path = work.path().join("bomb.tar.zst");
    {
        let f = fs::File::create(&path).unwrap();
        let enc = zstd::Encoder::new(f, 1).unwrap().auto_finish();
        let mut b = tar::Builder::new(enc);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        owned(&mut h);
        h.set_size(1 << 30);
        b.append_data(&mut h, "zeros", std::io::repeat(0).take(1 << 30))
            .unwrap();
        b.into_inner().unwrap();
    }
    let sha = hex::encode(Sha256::digest(fs::read(&path).unwrap()));
    fs::write(sidecar_path(&path), sha256sum_line(&sha, &path)).unwrap();
    let size = fs::metadata(&path).unwrap().len();
    assert!(size < 1 << 20, "{size}");
    let err = extract(&path, &target).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExtractError::TooBig { .. }), "{err:?}");
    assert!(
        msg.contains("zeros") && msg.contains("1073741824 bytes"),
        "{msg}"
    );
    assert!(fs::symlink_metadata(target.join("zeros")).is_err());
}

#[test]
fn many_small_files_stop_at_the_byte_and_entry_caps() {
    let work = tempfile::tempdir().unwrap();
    let p = payload(work.path(), |b| {
        for i in 0..64 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            owned(&mut h);
            h.set_size(1 << 20);
            b.append_data(&mut h, format!("f{i}"), &vec![0u8; 1 << 20][..])
                .unwrap();
        }
    });
    let limits = ExtractLimits {
        max_bytes: Some(8 << 20),
        ..ExtractLimits::default()
    };
    let t1 = work.path().join("t1");
    let err = extract_payload_with(&p, &ExpectedSha256::Sidecar, &t1, false, &limits).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExtractError::TooBig { .. }), "{err:?}");
    assert!(msg.contains("8388608"), "{msg}");
    assert!(fs::read_dir(&t1).unwrap().count() <= 8);

    let limits = ExtractLimits {
        max_entries: 10,
        ..ExtractLimits::default()
    };
    let t2 = work.path().join("t2");
    let err = extract_payload_with(&p, &ExpectedSha256::Sidecar, &t2, false, &limits).unwrap_err();
    assert!(err.to_string().contains("more than 10 entries"), "{err}");
    assert_eq!(fs::read_dir(&t2).unwrap().count(), 10);
}

#[test]
fn overlong_paths_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let long = format!("{}/f", vec!["d".repeat(200); 25].join("/"));
    let p = payload(work.path(), |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        owned(&mut h);
        h.set_size(0);
        b.append_data(&mut h, &long, std::io::empty()).unwrap();
    });
    let err = extract(&p, &work.path().join("t")).unwrap_err();
    assert!(err.to_string().contains("longer than 4096 bytes"), "{err}");
}

/// A tmpfs mounted for one test; unmounted on drop, also when it fails.
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
#[ignore = "privileged: mounts a 12 MiB tmpfs as the target"]
fn a_payload_larger_than_the_free_space_stops_before_filling_it() {
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("t");
    fs::create_dir(&target).unwrap();
    nix::mount::mount(
        Some("opdbus-test"),
        &target,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=12m"),
    )
    .unwrap();
    let _guard = Tmpfs(target.clone());
    let p = payload(work.path(), |b| {
        for i in 0..4 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            owned(&mut h);
            h.set_size(8 << 20);
            b.append_data(&mut h, format!("f{i}"), &vec![0u8; 8 << 20][..])
                .unwrap();
        }
    });
    let err = extract(&p, &target).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ExtractError::TooBig { .. }), "{err:?}");
    assert!(
        msg.contains("free space of the target's filesystem"),
        "{msg}"
    );
    assert!(msg.contains("entry 'f1' has 8388608 bytes"), "{msg}");
    assert!(err.target_written());
    // Refused at f1's header: f0 alone was written, the filesystem is not full.
    let names: Vec<_> = fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f0"]);
}
