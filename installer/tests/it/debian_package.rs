//! The Debian packages: the installer's hand-off installs `op-dbus-agent`
//! into a clean Debian root (the real bookworm payload, cached under
//! `OPDBUS_CACHE` or `target/opdbus-cache/`) with the root's own dpkg, no
//! systemd running: `dpkg -s` lists it, files and modes are right, units are
//! enabled, an upgrade keeps an operator's disable, remove and purge work.
//! The installer package's content is checked unprivileged (tier 1).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use opdbus_common::deb;
use opdbus_installer::payload::{
    build_payload, extract_payload, Distribution, ExpectedSha256, PayloadSpec,
};
use opdbus_installer::target::Root;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cache_dir() -> PathBuf {
    std::env::var_os("OPDBUS_CACHE")
        .map_or_else(|| repo().join("target/opdbus-cache"), PathBuf::from)
}

/// The agent built beside this test's installer binary.
fn agent_binary() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_op-dbus-install")).with_file_name("op-dbus-agent");
    assert!(
        p.is_file(),
        "{} missing: cargo build -p opdbus-agent first",
        p.display()
    );
    p
}

fn inputs(version: &str) -> deb::Inputs {
    deb::Inputs {
        agent: agent_binary(),
        installer: Some(PathBuf::from(env!("CARGO_BIN_EXE_op-dbus-install"))),
        templates: repo().join("templates"),
        dist: Some(repo().join("dist")),
        version: version.into(),
    }
}

/// `chroot ROOT CMD...`: exit status and stdout.
fn in_root(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("chroot")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn dpkg_field(root: &Path, field: &str) -> String {
    let (ok, out) = in_root(
        root,
        &[
            "dpkg-query",
            "-W",
            &format!("-f=${{{field}}}"),
            "op-dbus-agent",
        ],
    );
    assert!(ok, "dpkg-query: {out}");
    out
}

#[test]
#[ignore = "privileged: extracts the bookworm payload (mmdebstrap once) and runs dpkg in a chroot"]
fn the_agent_package_installs_upgrades_and_purges_in_a_clean_debian_root() {
    let _cache = crate::cli_common::PAYLOAD_CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let spec = PayloadSpec::new(Distribution::Debian, "bookworm", None, &[]);
    let payload =
        build_payload(&spec, &dir.path().join("base.tar.zst"), Some(&cache_dir())).unwrap();
    let tree = dir.path().join("root");
    fs::create_dir(&tree).unwrap();
    extract_payload(&payload.path, &ExpectedSha256::Sidecar, &tree, false).unwrap();
    assert!(!tree.join("run/systemd/system").exists());
    let root = Root::open(&tree).unwrap();

    // The hand-off's path without a prebuilt package: built from the binary.
    let t0 = std::time::Instant::now();
    opdbus_installer::install::install_agent_package(
        &root,
        None,
        &agent_binary(),
        &repo().join("templates"),
    )
    .unwrap();
    eprintln!(
        "packaged and installed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(dpkg_field(&tree, "db:Status-Abbrev").trim(), "ii");
    assert_eq!(dpkg_field(&tree, "Version"), env!("CARGO_PKG_VERSION"));
    let (ok, out) = in_root(&tree, &["dpkg", "-s", "op-dbus-agent"]);
    assert!(ok && out.contains("Status: install ok installed"), "{out}");
    assert!(
        !tree.join("var/cache/op-dbus/op-dbus-agent.deb").exists(),
        "the copied .deb stays behind"
    );

    // Files and modes, owned by root.
    for (path, want) in [
        ("usr/bin/op-dbus-agent", 0o755),
        ("lib/systemd/system/op-dbus-agent.service", 0o644),
        ("lib/systemd/system/op-dbus-result.service", 0o644),
        ("usr/share/dbus-1/system.d/org.opdbus.conf", 0o644),
        ("usr/share/bash-completion/completions/op-dbus-agent", 0o644),
        ("usr/share/zsh/vendor-completions/_op-dbus-agent", 0o644),
        (
            "usr/share/fish/vendor_completions.d/op-dbus-agent.fish",
            0o644,
        ),
        ("var/lib/op-dbus", 0o700),
        ("etc/op-dbus", 0o700),
    ] {
        let p = tree.join(path);
        assert_eq!(mode(&p), want, "{path}");
        assert_eq!(fs::metadata(&p).unwrap().uid(), 0, "{path}");
    }
    assert_eq!(
        fs::read(tree.join("usr/bin/op-dbus-agent")).unwrap(),
        fs::read(agent_binary()).unwrap()
    );
    let (ok, out) = in_root(&tree, &["dpkg", "--verify", "op-dbus-agent"]);
    // Only what the payload's path-exclude keeps out may be missing.
    let unexpected: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("missing     /usr/share/man/"))
        .collect();
    assert!(ok && unexpected.is_empty(), "dpkg --verify: {out}");
    let (ok, out) = in_root(&tree, &["/usr/bin/op-dbus-agent", "--version"]);
    assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    // Enabled by the postinst (deb-systemd-helper, no systemd running).
    for unit in deb::AGENT_UNITS {
        let link = tree.join(format!("etc/systemd/system/multi-user.target.wants/{unit}"));
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new(&format!("/lib/systemd/system/{unit}")),
            "{unit} is not enabled"
        );
    }

    // An operator disables the result unit; an upgrade keeps that and
    // carries the new version.
    let (ok, out) = in_root(&tree, &["systemctl", "disable", "op-dbus-result.service"]);
    assert!(ok, "{out}");
    let newer = format!("{}+1", env!("CARGO_PKG_VERSION"));
    let pkg = deb::build_into(&deb::agent_package(&inputs(&newer)).unwrap(), dir.path()).unwrap();
    // The payload's dpkg excludes /usr/share/man: the pages are in the
    // package for hosts that keep them.
    let listing = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&pkg)
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    for page in [
        "op-dbus-agent.1",
        "op-dbus-agent-apply.1",
        "op-dbus-agent-audit-verify.1",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with("-rw-r--r-- root/root")
                    && l.ends_with(&format!(" ./usr/share/man/man1/{page}"))),
            "{page} is not in the package:\n{listing}"
        );
    }
    fs::write(tree.join("var/lib/op-dbus/audit.db"), "chain").unwrap();
    opdbus_installer::install::install_agent_package(
        &root,
        Some(&pkg),
        &agent_binary(),
        &repo().join("templates"),
    )
    .unwrap();
    assert_eq!(dpkg_field(&tree, "Version"), newer);
    assert!(tree
        .join("etc/systemd/system/multi-user.target.wants/op-dbus-agent.service")
        .is_symlink());
    assert!(
        !tree
            .join("etc/systemd/system/multi-user.target.wants/op-dbus-result.service")
            .exists(),
        "the upgrade re-enabled a unit the operator disabled"
    );

    // Remove keeps the state; purge removes it and the enablement.
    let (ok, out) = in_root(&tree, &["dpkg", "-r", "op-dbus-agent"]);
    assert!(ok, "dpkg -r: {out}");
    assert!(!tree.join("usr/bin/op-dbus-agent").exists());
    assert!(
        tree.join("var/lib/op-dbus/audit.db").exists(),
        "remove deleted the audit chain"
    );
    let (ok, out) = in_root(&tree, &["dpkg", "-P", "op-dbus-agent"]);
    assert!(ok, "dpkg -P: {out}");
    assert!(!tree.join("var/lib/op-dbus").exists());
    assert!(!tree
        .join("etc/systemd/system/multi-user.target.wants/op-dbus-agent.service")
        .exists());
    let (ok, _) = in_root(&tree, &["dpkg", "-s", "op-dbus-agent"]);
    assert!(!ok, "dpkg still knows the purged package");
}

#[test]
fn the_installer_package_carries_binary_templates_docs_and_depends_on_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let p = deb::installer_package(&inputs(env!("CARGO_PKG_VERSION"))).unwrap();
    let deb_file = deb::build_into(&p, dir.path()).unwrap();
    assert_eq!(
        deb_file.file_name().unwrap().to_str().unwrap(),
        format!("op-dbus-install_{}_amd64.deb", env!("CARGO_PKG_VERSION"))
    );
    let field = |f: &str| {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb_file)
            .arg(f)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    assert_eq!(field("Package"), "op-dbus-install");
    let depends = field("Depends");
    for want in [
        format!("op-dbus-agent (= {})", env!("CARGO_PKG_VERSION")),
        "libbtrfsutil1".into(),
        "libc6 (>=".into(),
        "btrfs-progs".into(),
        "mmdebstrap | debootstrap".into(),
    ] {
        assert!(depends.contains(&want), "Depends lacks {want}: {depends}");
    }
    let out = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb_file)
        .output()
        .unwrap();
    let listing = String::from_utf8(out.stdout).unwrap();
    let line = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .to_owned()
    };
    assert!(line("usr/bin/op-dbus-install").starts_with("-rwxr-xr-x root/root"));
    for f in [
        "usr/share/op-dbus/templates/systemd/op-dbus-agent.service",
        "usr/share/op-dbus/templates/dbus/org.opdbus.conf",
        "usr/share/op-dbus/templates/layout/plugin.toml",
        "usr/share/man/man1/op-dbus-install.1",
        "usr/share/man/man1/op-dbus-install-install.1",
        "usr/share/bash-completion/completions/op-dbus-install",
        "usr/share/zsh/vendor-completions/_op-dbus-install",
        "usr/share/fish/vendor_completions.d/op-dbus-install.fish",
    ] {
        assert!(line(f).starts_with("-rw-r--r-- root/root"), "{}", line(f));
    }
    assert!(
        !listing.contains("op-dbus-agent.1"),
        "the agent's man page is in the installer package"
    );
}
