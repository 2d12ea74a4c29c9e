//! The configure, handoff and layout steps against a target whose payload
//! made `etc`, `var` and `root` symlinks to host directories (`etc ->
//! /some/host/dir`, as a tampered but correctly checksummed payload can):
//! every write must land inside the target, the host directories stay as
//! they were.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use opdbus_installer::target::{self, FirstBootNetwork, Root};

/// A host directory with a few files that must not change.
struct HostDir {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl HostDir {
    fn new() -> Self {
        let d = tempfile::Builder::new()
            .prefix("opdbus-host-")
            .tempdir()
            .unwrap();
        let path = d.path().canonicalize().unwrap();
        fs::write(path.join("shadow"), "root:HOSTHASH:19000:0:99999:7:::\n").unwrap();
        fs::write(path.join("hostname"), "host\n").unwrap();
        HostDir { _dir: d, path }
    }

    fn listing(&self) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = walk(&self.path)
            .into_iter()
            .map(|p| {
                let data = fs::read(&p).unwrap_or_default();
                (
                    p.strip_prefix(&self.path).unwrap().display().to_string(),
                    data,
                )
            })
            .collect();
        v.sort();
        v
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

/// Every configure step, each run on its own so one failure does not hide
/// the writes of the others.
fn configure_everything(root: &Root) -> Vec<anyhow::Result<()>> {
    let steps: Vec<Box<dyn Fn() -> anyhow::Result<()>>> = vec![
        Box::new(|| root.write("/etc/fstab", "UUID=x / btrfs defaults 0 0\n", 0o644)),
        Box::new(|| target::write_identity(root, "node1", Some("example.com"), None)),
        Box::new(|| target::write_timezone(root, "UTC")),
        Box::new(|| target::write_locale(root, "en_US.UTF-8")),
        Box::new(|| target::write_keyboard(root, "us")),
        Box::new(|| target::reset_machine_id(root)),
        Box::new(|| target::set_root_password_hash(root, "$y$j9T$new$hash")),
        Box::new(|| target::write_root_authorized_keys(root, &["ssh-ed25519 AAAA test".into()])),
        Box::new(|| {
            target::write_first_boot_network(root, &FirstBootNetwork::Dhcp { except: vec![] })
        }),
        Box::new(|| {
            root.write(
                "/etc/systemd/system/op-dbus-agent.service",
                "[Unit]\n",
                0o644,
            )
        }),
        Box::new(|| target::enable_unit(root, "op-dbus-agent.service", "multi-user.target")),
        Box::new(|| root.write("/etc/op-dbus/state.json", "{}", 0o600)),
        Box::new(|| {
            opdbus_common::layout::create(
                root.rootdir(),
                &(&opdbus_state::model::HostLayout::default()).into(),
            )
            .map(|_| ())
        }),
    ];
    steps.iter().map(|f| f()).collect()
}

#[test]
fn etc_symlinked_to_the_host_keeps_every_write_in_the_target() {
    let host = HostDir::new();
    let host_var = HostDir::new();
    let host_root = HostDir::new();
    let before = (host.listing(), host_var.listing(), host_root.listing());
    let t = tempfile::tempdir().unwrap();
    let tree = t.path();
    symlink(&host.path, tree.join("etc")).unwrap();
    symlink(&host_var.path, tree.join("var")).unwrap();
    symlink(&host_root.path, tree.join("root")).unwrap();
    fs::create_dir_all(tree.join("usr/lib/systemd/system")).unwrap();
    fs::write(
        tree.join("usr/lib/systemd/system/systemd-networkd.service"),
        "[Unit]\n",
    )
    .unwrap();
    let root = Root::open(tree).unwrap();

    // The links dangle inside the target: the writes fail, the host is untouched.
    let results = configure_everything(&root);
    assert!(results.iter().any(|r| r.is_err()));
    assert_eq!(
        before,
        (host.listing(), host_var.listing(), host_root.listing())
    );

    // With the links' targets present inside the target, as after a chroot,
    // everything lands there.
    let inside = tree.join(host.path.strip_prefix("/").unwrap());
    fs::create_dir_all(&inside).unwrap();
    fs::write(inside.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    fs::create_dir_all(tree.join(host_var.path.strip_prefix("/").unwrap())).unwrap();
    fs::create_dir_all(tree.join(host_root.path.strip_prefix("/").unwrap())).unwrap();
    for r in configure_everything(&root) {
        r.unwrap();
    }
    assert_eq!(
        before,
        (host.listing(), host_var.listing(), host_root.listing())
    );
    assert_eq!(
        fs::read_to_string(inside.join("hostname")).unwrap(),
        "node1\n"
    );
    assert!(fs::read_to_string(inside.join("shadow"))
        .unwrap()
        .starts_with("root:$y$j9T$new$hash:"));
    assert!(fs::read_to_string(inside.join("fstab"))
        .unwrap()
        .contains("UUID=x"));
}

#[test]
fn final_symlinks_in_the_target_are_replaced_not_written_through() {
    let host = HostDir::new();
    let before = host.listing();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path();
    fs::create_dir_all(tree.join("etc")).unwrap();
    for name in ["hostname", "hosts", "fstab", "machine-id", "timezone"] {
        symlink(host.path.join(name), tree.join("etc").join(name)).unwrap();
    }
    // A shadow that is a symlink to the host's is refused, not read.
    symlink(host.path.join("shadow"), tree.join("etc/shadow")).unwrap();
    let root = Root::open(tree).unwrap();
    root.write("/etc/fstab", "x\n", 0o644).unwrap();
    target::write_identity(&root, "node1", None, None).unwrap();
    target::reset_machine_id(&root).unwrap();
    target::write_timezone(&root, "UTC").unwrap();
    assert!(target::set_root_password_hash(&root, "$y$x").is_err());
    assert_eq!(before, host.listing());
    assert_eq!(
        fs::read_to_string(tree.join("etc/hostname")).unwrap(),
        "node1\n"
    );
}

fn mounted_on(dir: &Path) -> bool {
    let dir = dir.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir))
}

#[test]
#[ignore = "privileged: bind-mounts /dev, /proc, /sys and /run into a temp dir"]
fn chroot_mounts_only_on_real_directories_of_the_target() {
    let host = HostDir::new();
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().canonicalize().unwrap();
    symlink(&host.path, tree.join("proc")).unwrap();
    let root = Root::open(&tree).unwrap();
    // proc -> host dir: refused, and the binds made before it are released.
    let err = format!("{:#}", target::Chroot::enter(&root).unwrap_err());
    assert!(err.contains("not a symlink"), "{err}");
    assert!(!mounted_on(&host.path), "bind-mounted onto the host dir");
    assert!(!mounted_on(&tree.join("dev")), "dev left mounted");

    fs::remove_file(tree.join("proc")).unwrap();
    let chroot = target::Chroot::enter(&root).unwrap();
    for d in ["dev", "proc", "sys", "run"] {
        assert!(mounted_on(&tree.join(d)), "{d} not mounted");
    }
    chroot.close().unwrap();
    for d in ["dev", "proc", "sys", "run"] {
        assert!(!mounted_on(&tree.join(d)), "{d} left mounted");
    }
}
