//! The packages plugin without PackageKit, for real: a bookworm chroot made
//! with mmdebstrap (the only network use: the host's Debian mirror, as for
//! the payload; cached under `target/opdbus-cache/`), its own apt sources
//! removed, a local flat repository of two `.deb`s built with `dpkg-deb`
//! inside it, and the plugin applied with `--root` at the chroot: sources
//! written, install, re-apply no-op, removal, an unknown package failing
//! with apt's message while nothing else changes; the host's dpkg database
//! and mounts untouched. Privileged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opdbus_agent::engine::{Context, DesiredState, Engine, PluginOutcome};
use opdbus_agent::plugins::packages::{PackagesPlugin, SOURCES_FILE};
use opdbus_common::Task;

const A: &str = "opdbus-test-hello";
const B: &str = "opdbus-test-extra";

fn cache_dir() -> PathBuf {
    std::env::var_os("OPDBUS_CACHE").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/opdbus-cache"),
        PathBuf::from,
    )
}

/// The first `URIs:` of the host's Debian sources (never a host name in code).
fn host_mirror() -> String {
    let text = fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|u| u.split_whitespace().next())
        .expect("a URIs: line in debian.sources")
        .to_string()
}

/// Mount points below `root`, deepest first (from /proc/self/mountinfo).
fn mounts_below(root: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|m| m.starts_with(root))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out
}

/// The chroot in a temp dir. Drop unmounts anything left below it before the
/// directory is removed (a bind of /dev left there would otherwise be
/// emptied by the removal).
struct Chroot {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for m in mounts_below(&self.root) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        if !mounts_below(&self.root).is_empty() {
            // Never remove a tree that still has mounts in it.
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().unwrap(),
            ));
        }
    }
}

fn chroot() -> Chroot {
    let cache = cache_dir();
    fs::create_dir_all(&cache).unwrap();
    let tarball = cache.join("agent-apt-chroot-bookworm.tar");
    if !tarball.exists() {
        let part = cache.join("agent-apt-chroot-bookworm.tar.part");
        Task::new("mmdebstrap")
            .args(["--mode=root", "--variant=apt", "--format=tar", "--quiet"])
            .arg("bookworm")
            .arg(&part)
            .arg(host_mirror())
            .run()
            .expect("mmdebstrap of a bookworm apt chroot");
        fs::rename(&part, &tarball).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    Task::new("tar")
        .args(["-xpf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .run()
        .unwrap();
    // Only the state's repository: no mirror is reached from here on.
    let _ = fs::remove_file(root.join("etc/apt/sources.list"));
    for d in ["etc/apt/sources.list.d", "var/lib/apt/lists"] {
        for e in fs::read_dir(root.join(d)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                fs::remove_file(p).unwrap();
            }
        }
    }
    Chroot { dir, root }
}

/// A flat repository at `<root>/srv/opdbus-repo`: two `.deb`s, `Packages`
/// and an unsigned `Release` (the state marks the source trusted).
fn local_repo(root: &Path, work: &Path) {
    let repo = root.join("srv/opdbus-repo");
    fs::create_dir_all(&repo).unwrap();
    for name in [A, B] {
        let pkg = work.join(name);
        fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
        fs::create_dir_all(pkg.join("usr/share").join(name)).unwrap();
        fs::write(
            pkg.join("usr/share").join(name).join("README"),
            format!("{name}, built by the op-dbus test\n"),
        )
        .unwrap();
        fs::write(
            pkg.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: op-dbus tests <root@localhost>\n\
                 Description: op-dbus test package\n"
            ),
        )
        .unwrap();
        Task::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&pkg)
            .arg(repo.join(format!("{name}_1.0_all.deb")))
            .run()
            .unwrap();
    }
    let packages = Task::new("dpkg-scanpackages")
        .args(["--multiversion", "."])
        .current_dir(&repo)
        .read()
        .unwrap();
    fs::write(repo.join("Packages"), &packages).unwrap();
    let sum = Task::new("sha256sum")
        .arg("Packages")
        .current_dir(&repo)
        .read()
        .unwrap();
    let hash = sum.split_whitespace().next().unwrap();
    fs::write(
        repo.join("Release"),
        format!(
            "Origin: op-dbus-test\nLabel: op-dbus-test\nSHA256:\n {hash} {} Packages\n",
            packages.len()
        ),
    )
    .unwrap();
}

fn state(packages: &[&str], remove: &[&str]) -> DesiredState {
    let json = serde_json::json!({
        "version": 1,
        "plugins": {"packagekit": {
            "sources": [{"uri": "file:/srv/opdbus-repo", "suite": "./", "trusted": true}],
            "packages": packages,
            "remove": remove,
        }}
    });
    DesiredState::from_json(&json.to_string(), "test state").unwrap()
}

/// `dpkg-query -W` of the chroot's database: installed or not.
fn installed(root: &Path, name: &str) -> bool {
    let out = Command::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.join("var/lib/dpkg").display()
        ))
        .args(["-W", "-f=${db:Status-Status}", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout) == "installed"
}

fn host_knows(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", name])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "privileged: mmdebstrap of a bookworm apt chroot (about 1 min the first time), bind mounts, chroot"]
async fn apt_fallback_in_a_chroot_installs_reapplies_removes_and_refuses_unknown() {
    let c = chroot();
    let root = c.root.clone();
    local_repo(&root, c.dir.path());
    let ctx = Context::new(c.dir.path().join("state")).with_root(&root);
    let mut engine = Engine::new();
    engine.register(PackagesPlugin);

    let report = engine.apply(&ctx, &state(&[A, B], &[])).await;
    assert!(report.ok, "{report:#?}");
    let p = &report.plugins[0];
    assert_eq!(p.outcome, PluginOutcome::Changed);
    let lines: Vec<(String, String, Option<String>)> = p
        .actions
        .iter()
        .map(|a| (a.description.clone(), a.result.clone(), a.detail.clone()))
        .collect();
    let via = Some("via apt-get in the root".to_string());
    assert_eq!(
        lines,
        [
            (
                format!("write apt sources {SOURCES_FILE}"),
                "ok".into(),
                None
            ),
            (format!("install package {B}"), "ok".into(), via.clone()),
            (format!("install package {A}"), "ok".into(), via.clone()),
        ]
    );
    assert!(installed(&root, A) && installed(&root, B));
    assert!(root.join("usr/share").join(A).join("README").is_file());
    let sources = fs::read_to_string(root.join(SOURCES_FILE.trim_start_matches('/'))).unwrap();
    assert!(
        sources.ends_with("Types: deb\nURIs: file:/srv/opdbus-repo\nSuites: ./\nTrusted: yes\n"),
        "{sources}"
    );
    assert!(!host_knows(A), "apt ran on the host");
    assert_eq!(mounts_below(&root), Vec::<PathBuf>::new());

    let again = engine.apply(&ctx, &state(&[A, B], &[])).await;
    assert!(again.ok, "{again:#?}");
    assert!(again.plugins[0].actions.is_empty(), "{again:#?}");

    let removed = engine.apply(&ctx, &state(&[A], &[B])).await;
    assert!(removed.ok, "{removed:#?}");
    assert_eq!(
        removed.plugins[0].actions[0].description,
        format!("remove package {B}")
    );
    assert!(installed(&root, A) && !installed(&root, B));

    let bad = engine
        .apply(&ctx, &state(&[A, B, "opdbus-no-such-package"], &[]))
        .await;
    assert!(!bad.ok);
    let detail = bad.plugins[0]
        .actions
        .iter()
        .filter_map(|a| a.detail.clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        detail.contains("Unable to locate package opdbus-no-such-package"),
        "{bad:#?}"
    );
    assert!(
        installed(&root, A) && !installed(&root, B),
        "nothing else changed"
    );
    assert_eq!(mounts_below(&root), Vec::<PathBuf>::new());
    assert!(!host_knows(A) && !host_knows(B));
}
