//! The install's container template on a loop-backed btrfs: `debian-base`
//! built from the real bookworm payload (cached under `OPDBUS_CACHE` or
//! `target/opdbus-cache/`) by the installer's template step, as the install
//! runs it after the hand-off. Privileged (loop device, btrfs).

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use opdbus_common::containers::btrfs;
use opdbus_common::Task;
use opdbus_installer::payload::{
    build_payload, extract_payload, Distribution, ExpectedSha256, PayloadSpec,
};
use opdbus_installer::target::Root;
use opdbus_installer::templates::{build_templates, BaseSnapshot, PVE_TEMPLATE_CACHE};

fn cache_dir() -> PathBuf {
    std::env::var_os("OPDBUS_CACHE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/opdbus-cache"),
        PathBuf::from,
    )
}

/// A btrfs on a loop device mounted at `mnt`; Drop unmounts and detaches.
struct LoopBtrfs {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    dev: String,
}

impl LoopBtrfs {
    fn new(size: u64) -> LoopBtrfs {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("btrfs.img");
        fs::File::create(&img).unwrap().set_len(size).unwrap();
        let dev = Task::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .read()
            .unwrap()
            .trim()
            .to_string();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let fs = LoopBtrfs {
            _dir: dir,
            mnt,
            dev,
        };
        Task::new("mkfs.btrfs").args(["-q", &fs.dev]).run().unwrap();
        Task::new("mount").arg(&fs.dev).arg(&fs.mnt).run().unwrap();
        fs
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        if !Command::new("umount")
            .arg("-R")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success())
        {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH6templatetestkeyxxxxxxxxxxxxxxxxxxxxxxxxx admin@h6";

fn state(distribution: &str) -> opdbus_state::State {
    opdbus_state::parse::parse_only(&format!(
        r#"{{"version": 1, "bootstrap": {{"hostname": "tplhost", "domain": "example.org",
            "distribution": "{distribution}", "timezone": "Europe/Berlin", "locale": "en_GB.UTF-8",
            "root_ssh_authorized_keys": ["{KEY}"]}}}}"#
    ))
    .unwrap()
}

fn du_mb(p: &Path) -> String {
    Task::new("du")
        .args(["-sm"])
        .arg(p)
        .read()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "privileged: loop device, btrfs, the bookworm payload (mmdebstrap once)"]
fn the_install_builds_a_read_only_debian_base_template_without_kernel_with_keys_and_timezone() {
    let _cache = crate::cli_common::PAYLOAD_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let spec = PayloadSpec::new(Distribution::Debian, "bookworm", None, &[]);
    let payload =
        build_payload(&spec, &work.path().join("base.tar.zst"), Some(&cache_dir())).unwrap();
    let disk = LoopBtrfs::new(6 << 30);
    // As the install mounts it: /var/log is a subvolume of its own.
    let var_log = disk.mnt.join("var/log");
    btrfs::create(&disk.mnt.join("@var_log")).unwrap();
    fs::create_dir_all(&var_log).unwrap();
    Task::new("mount")
        .args(["-o", "subvol=@var_log", &disk.dev])
        .arg(&var_log)
        .run()
        .unwrap();
    let root = Root::open(&disk.mnt).unwrap();
    // What the install has done by then: the base system, then (after the
    // base snapshot) the host's own files, its layout, its locales.
    extract_payload(&payload.path, &ExpectedSha256::Sidecar, root.dir(), false).unwrap();
    let base = BaseSnapshot::take(
        &root,
        &[disk.mnt.clone(), var_log.clone()],
        "/var/lib/op-dbus",
    )
    .unwrap()
    .expect("the root is a btrfs subvolume");
    // The payload's /var/log (another subvolume) is in the base snapshot,
    // owners and modes kept (btmp: root:utmp 0660).
    let btmp = fs::metadata(base.path().join("var/log/btmp")).unwrap();
    assert_eq!((btmp.mode() & 0o7777, btmp.gid()), (0o660, 43));
    assert!(base.path().join("var/log/journal").is_dir());
    root.write("/etc/opdbus-host-secret", b"host only", 0o600)
        .unwrap();
    root.write("/var/log/host-only.log", b"host only", 0o600)
        .unwrap();
    let st = state("proxmox");
    opdbus_common::layout::create(
        root.rootdir(),
        &(&opdbus_state::model::HostLayout::default()).into(),
    )
    .unwrap();
    // The layout on btrfs: subvolumes with their compression, sockets 0770.
    let cache = disk.mnt.join("var/lib/op-dbus/@cache");
    assert!(btrfs::subvolume(&cache).is_some());
    let prop = Task::new("btrfs")
        .args(["property", "get"])
        .arg(&cache)
        .arg("compression")
        .read()
        .unwrap();
    assert_eq!(prop.trim(), "compression=zstd:3");
    let sockets = fs::metadata(disk.mnt.join("var/lib/op-dbus/sockets")).unwrap();
    assert_eq!(sockets.mode() & 0o7777, 0o770);
    root.write("/usr/lib/locale/locale-archive", b"compiled locales", 0o644)
        .unwrap();

    let t0 = Instant::now();
    let report = build_templates(
        &st,
        &root,
        Some(&base),
        &payload.path,
        &ExpectedSha256::Sidecar,
        Some("192.0.2.10".parse().unwrap()),
    )
    .unwrap()
    .expect("the layout is on btrfs");
    let took = t0.elapsed();
    let snapshot_path = base.path().to_path_buf();
    drop(base);
    assert!(
        !snapshot_path.exists(),
        "the base snapshot is deleted once the template is made"
    );
    let tpl = disk.mnt.join("var/lib/op-dbus/@templates/debian-base");
    let rootfs = tpl.join("rootfs");
    // The template is the base system as laid down, not the host it became.
    assert!(!rootfs.join("etc/opdbus-host-secret").exists());
    assert!(!rootfs.join("var/log/host-only.log").exists());
    assert!(rootfs.join("var/log/btmp").is_file() && rootfs.join("var/log/journal").is_dir());
    assert!(
        btrfs::subvolume(&rootfs).unwrap().parent_uuid.is_some(),
        "the rootfs is a snapshot, not a second extraction"
    );

    // Read-only subvolumes, the rootfs one snapshots.
    let outer = btrfs::subvolume(&tpl).expect("@templates/debian-base is a subvolume");
    let inner = btrfs::subvolume(&rootfs).expect("rootfs is a subvolume");
    assert!(outer.read_only && inner.read_only, "{outer:?} {inner:?}");
    assert!(
        fs::write(rootfs.join("etc/probe"), "x").is_err(),
        "rootfs is writable"
    );

    // No kernel, initramfs, bootloader or firmware, in files or in dpkg.
    let boot: Vec<_> = fs::read_dir(rootfs.join("boot")).unwrap().collect();
    assert!(boot.is_empty(), "/boot not empty: {boot:?}");
    assert!(!rootfs.join("vmlinuz").exists() && !rootfs.join("initrd.img").exists());
    assert_eq!(
        fs::read_dir(rootfs.join("usr/lib/modules")).map_or(0, |d| d.count()),
        0
    );
    let status = fs::read_to_string(rootfs.join("var/lib/dpkg/status")).unwrap();
    for gone in [
        "linux-image-amd64",
        "initramfs-tools",
        "grub-pc-bin",
        "systemd-boot-efi",
    ] {
        assert!(
            !status.contains(&format!("Package: {gone}\n")),
            "{gone} still in dpkg's database"
        );
        assert!(
            report.dropped.iter().any(|d| d == gone),
            "{:?}",
            report.dropped
        );
    }
    for kept in ["systemd", "openssh-server", "lxc", "iproute2"] {
        assert!(
            status.contains(&format!("Package: {kept}\n")),
            "{kept} missing"
        );
    }
    let broken = Command::new("dpkg")
        .arg(format!("--root={}", rootfs.display()))
        .arg("--audit")
        .output()
        .unwrap();
    assert!(
        broken.stdout.is_empty(),
        "dpkg --audit: {}",
        String::from_utf8_lossy(&broken.stdout)
    );

    // The state's timezone, locale and administrator keys; the host link.
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/timezone")).unwrap(),
        "Europe/Berlin\n"
    );
    assert_eq!(
        fs::read_link(rootfs.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/default/locale")).unwrap(),
        "LANG=en_GB.UTF-8\n"
    );
    assert_eq!(
        fs::read(rootfs.join("usr/lib/locale/locale-archive")).unwrap(),
        b"compiled locales"
    );
    let keys = rootfs.join("root/.ssh/authorized_keys");
    assert_eq!(fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
    assert_eq!(fs::metadata(&keys).unwrap().mode() & 0o777, 0o600);
    let host: serde_json::Value =
        serde_json::from_slice(&fs::read(rootfs.join("etc/opdbus/host.json")).unwrap()).unwrap();
    assert_eq!(host["host"], "tplhost");
    assert_eq!(host["address"], "192.0.2.10");
    let lxc_conf = fs::read_to_string(tpl.join("config/lxc.conf")).unwrap();
    assert!(
        lxc_conf.contains("/var/lib/op-dbus/sockets/containers var/lib/op-dbus/sockets/host none bind,create=dir,optional"),
        "{lxc_conf}"
    );
    // Each container gets its own identity.
    assert_eq!(fs::read(rootfs.join("etc/machine-id")).unwrap(), b"");
    assert!(!rootfs.join("etc/hostname").exists());
    let host_keys: Vec<_> = fs::read_dir(rootfs.join("etc/ssh"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("ssh_host_"))
        .collect();
    assert!(host_keys.is_empty(), "{host_keys:?}");
    assert!(rootfs
        .join("etc/systemd/system/ssh.service.wants/opdbus-ssh-hostkeys.service")
        .is_symlink());

    // Proxmox: a real tarball pct can unpack, without kernel and /dev nodes.
    let tarball = report.pve_tarball.clone().unwrap();
    assert_eq!(
        tarball,
        format!("{PVE_TEMPLATE_CACHE}/debian-12-opdbus_1.0-1_amd64.tar.zst")
    );
    let tar_path = disk.mnt.join(tarball.trim_start_matches('/'));
    let mut archive =
        tar::Archive::new(zstd::Decoder::new(fs::File::open(&tar_path).unwrap()).unwrap());
    let mut names = std::collections::BTreeSet::new();
    let mut debian_version = String::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().to_string();
        if p == "./etc/opdbus/host.json" {
            assert_eq!(e.header().uid().unwrap(), 0, "numeric owner root");
        }
        if p == "./etc/debian_version" {
            e.read_to_string(&mut debian_version).unwrap();
        }
        names.insert(p);
    }
    assert!(debian_version.starts_with("12."), "{debian_version:?}");
    for want in [
        "./usr/lib/systemd/systemd",
        "./etc/opdbus/host.json",
        "./dev/",
        "./root/.ssh/authorized_keys",
    ] {
        assert!(names.contains(want), "{want} not in the tarball");
    }
    assert!(!names
        .iter()
        .any(|n| n.starts_with("./boot/vmlinuz") || (n.starts_with("./dev/") && n != "./dev/")));

    // A second run (a re-install that kept the filesystem) keeps it.
    let again = build_templates(
        &st,
        &root,
        None,
        &payload.path,
        &ExpectedSha256::Sidecar,
        None,
    )
    .unwrap()
    .unwrap();
    assert!(again.kept);

    let tar_mb = fs::metadata(&tar_path).unwrap().len() >> 20;
    eprintln!(
        "debian-base: built in {:.1} s (payload {} MB), rootfs {} MB (du), {} packages dropped; Proxmox tarball {} MB",
        took.as_secs_f64(),
        payload.size >> 20,
        du_mb(&rootfs),
        report.dropped.len(),
        tar_mb
    );
}
