//! The users plugin against fake roots a hostile user (uid 1000, owner of
//! their home) or a hostile tree prepared: symlinks planted in `~/.ssh`, a
//! home or `.ssh` that is a symlink, `etc` pointing out of the root. Every
//! test checks that nothing outside the user's own files changed: sentinels
//! outside the root keep their content and owner, the root's shadow stays.

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use opdbus_agent::engine::{Context, DesiredState, Engine, RunReport};
use opdbus_agent::plugins::users::UsersPlugin;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF9QkkNXDsXqqgHhb1uLz4eyLqcW9gWSjcwj/PfKm5gC alice@a";
const SHADOW: &str = "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n";

struct Fake {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
}

/// A root with the account `alice` (1000:1000) in the databases, and
/// `outside/` next to it for sentinels.
fn fake() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    let root = base.join("root");
    seed_etc(&root.join("etc"));
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::create_dir_all(root.join("home")).unwrap();
    Fake {
        _dir: dir,
        base,
        root,
    }
}

fn seed_etc(etc: &Path) {
    std::fs::create_dir_all(etc).unwrap();
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(etc.join("shadow"), SHADOW).unwrap();
    std::fs::set_permissions(etc.join("shadow"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(etc.join("shadow"), Some(0), Some(42)).unwrap();
    std::fs::write(
        etc.join("group"),
        "root:x:0:\nshadow:x:42:\nalice:x:1000:\n",
    )
    .unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\nshadow:*::\nalice:!::\n").unwrap();
}

/// A directory owned by alice, as `useradd -m` leaves it.
fn user_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(path, Some(1000), Some(1000)).unwrap();
}

/// A root-owned file outside the root whose content and owner must survive.
fn sentinel(path: &Path) {
    std::fs::write(path, "sentinel: not for alice\n").unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn assert_sentinel(path: &Path) {
    let m = std::fs::symlink_metadata(path).unwrap();
    assert!(m.is_file(), "{} replaced", path.display());
    assert_eq!(
        std::fs::read_to_string(path).unwrap(),
        "sentinel: not for alice\n",
        "{} was written",
        path.display()
    );
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        (0, 0, 0o600),
        "{} was chowned or chmodded",
        path.display()
    );
}

fn assert_shadow_intact(root: &Path) {
    let p = root.join("etc/shadow");
    let m = std::fs::symlink_metadata(&p).unwrap();
    assert!(m.is_file());
    assert_eq!(std::fs::read_to_string(&p).unwrap(), SHADOW);
    assert_eq!((m.uid(), m.gid()), (0, 42), "shadow handed to someone");
}

/// Every entry below `dir` with its content (files) or target (links).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                std::fs::read_to_string(&p).unwrap_or_default()
            };
            out.push(format!(
                "{} {}:{} {:o} {what}",
                p.display(),
                m.uid(),
                m.gid(),
                m.permissions().mode() & 0o7777
            ));
        }
    }
    out.sort();
    out
}

async fn apply_keys(root: &Path, state_dir: &Path) -> RunReport {
    let mut engine = Engine::new();
    engine.register(UsersPlugin);
    let mut ctx = Context::new(state_dir).with_root(root);
    ctx.retry.backoff = std::time::Duration::from_millis(1);
    let st = DesiredState::from_json(
        &serde_json::json!({
            "version": 1,
            "plugins": {"users": {"accounts": {"alice": {
                "uid": 1000, "ssh_authorized_keys": [KEY]
            }}}}
        })
        .to_string(),
        "test state",
    )
    .unwrap();
    engine.apply(&ctx, &st).await
}

/// The attack of issue 12 item 10: alice plants the agent's temp name as a
/// symlink to a root-owned file and removes her authorized_keys.
#[tokio::test]
#[ignore = "privileged: a fake root with a home owned by uid 1000"]
async fn planted_temp_symlinks_are_not_followed() {
    let f = fake();
    let home = f.root.join("home/alice");
    user_dir(&home);
    user_dir(&home.join(".ssh"));
    let outside = f.base.join("outside/secret");
    sentinel(&outside);
    // the name the agent used to write through, and a few more guesses
    symlink(&outside, home.join(".ssh/.authorized_keys.opdbus-tmp")).unwrap();
    symlink(
        f.root.join("etc/shadow"),
        home.join(".ssh/.authorized_keys.tmp"),
    )
    .unwrap();

    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(report.ok, "{:#?}", report);
    assert_sentinel(&outside);
    assert_shadow_intact(&f.root);
    let keys = home.join(".ssh/authorized_keys");
    let m = std::fs::symlink_metadata(&keys).unwrap();
    assert!(m.is_file());
    assert_eq!(
        (m.uid(), m.gid(), m.permissions().mode() & 0o7777),
        (1000, 1000, 0o600)
    );
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), format!("{KEY}\n"));
}

/// authorized_keys itself a symlink to a secret: the agent neither reads the
/// secret into the user's key list nor writes through the link.
#[tokio::test]
#[ignore = "privileged: a fake root with a home owned by uid 1000"]
async fn authorized_keys_symlink_is_neither_read_nor_followed() {
    let f = fake();
    let home = f.root.join("home/alice");
    user_dir(&home);
    user_dir(&home.join(".ssh"));
    let outside = f.base.join("outside/secret");
    sentinel(&outside);
    symlink(&outside, home.join(".ssh/authorized_keys")).unwrap();

    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(report.ok, "{:#?}", report);
    assert_sentinel(&outside);
    let keys = home.join(".ssh/authorized_keys");
    assert!(std::fs::symlink_metadata(&keys).unwrap().is_file());
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        format!("{KEY}\n"),
        "the secret behind the link became one of alice's keys"
    );
}

/// authorized_keys a hard link to the root's shadow (same filesystem; the
/// kernel's protected_hardlinks guards only the running system, not a
/// target tree): not read as keys, replaced by rename, shadow untouched.
#[tokio::test]
#[ignore = "privileged: a fake root with a home owned by uid 1000"]
async fn authorized_keys_hard_link_is_not_read() {
    let f = fake();
    let home = f.root.join("home/alice");
    user_dir(&home);
    user_dir(&home.join(".ssh"));
    std::fs::hard_link(f.root.join("etc/shadow"), home.join(".ssh/authorized_keys")).unwrap();

    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(report.ok, "{:#?}", report);
    assert_shadow_intact(&f.root);
    assert_eq!(
        std::fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap(),
        format!("{KEY}\n"),
        "lines of shadow became alice's keys"
    );
}

/// authorized_keys a FIFO: reading it would block the agent forever; it is
/// not read, and the write replaces it with the key file.
#[tokio::test]
#[ignore = "privileged: a fake root with a home owned by uid 1000"]
async fn authorized_keys_fifo_does_not_hang_the_query() {
    let f = fake();
    let home = f.root.join("home/alice");
    user_dir(&home);
    user_dir(&home.join(".ssh"));
    nix::unistd::mkfifo(
        &home.join(".ssh/authorized_keys"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let desired: opdbus_state::model::Users = serde_json::from_value(serde_json::json!({
        "accounts": {"alice": {"uid": 1000, "ssh_authorized_keys": [KEY]}}
    }))
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let root = f.root.clone();
    std::thread::spawn(move || {
        let _ = tx.send(opdbus_agent::plugins::users::query(&root, &desired).is_ok());
    });
    let answered = rx.recv_timeout(std::time::Duration::from_secs(10));
    assert_eq!(answered, Ok(true), "query hung on a FIFO (or failed)");

    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(report.ok, "{:#?}", report);
    assert_eq!(
        std::fs::read_to_string(home.join(".ssh/authorized_keys")).unwrap(),
        format!("{KEY}\n")
    );
}

/// ~/.ssh a symlink to a directory alice must not write: refused, the
/// directory untouched (content, owner, mode).
#[tokio::test]
#[ignore = "privileged: a fake root with a home owned by uid 1000"]
async fn ssh_dir_symlink_is_refused() {
    let f = fake();
    let home = f.root.join("home/alice");
    user_dir(&home);
    let target = f.base.join("outside/rootssh");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    sentinel(&target.join("authorized_keys"));
    symlink(&target, home.join(".ssh")).unwrap();
    let before = tree(&f.base.join("outside"));

    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(!report.ok, "keys written through a symlinked ~/.ssh");
    let failures = report.failures().join("\n");
    assert!(failures.contains(".ssh"), "{failures}");
    assert_eq!(tree(&f.base.join("outside")), before);

    std::fs::remove_file(home.join(".ssh")).unwrap();
    symlink("../../etc", home.join(".ssh")).unwrap();
    let etc_before = tree(&f.root.join("etc"));
    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(!report.ok, "keys written through ~/.ssh -> ../../etc");
    assert_eq!(tree(&f.root.join("etc")), etc_before);
    assert_shadow_intact(&f.root);
}

/// The home itself a symlink to a root-owned directory: refused, nothing
/// created or chowned there.
#[tokio::test]
#[ignore = "privileged: a fake root with a home owned by uid 1000"]
async fn home_symlink_is_refused() {
    let f = fake();
    let target = f.base.join("outside/roothome");
    std::fs::create_dir(&target).unwrap();
    sentinel(&target.join("file"));
    symlink(&target, f.root.join("home/alice")).unwrap();
    let before = tree(&f.base.join("outside"));

    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(!report.ok, "keys written through a symlinked home");
    let failures = report.failures().join("\n");
    assert!(failures.contains("/home/alice"), "{failures}");
    assert_eq!(tree(&f.base.join("outside")), before);
    let m = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "target of the home link chowned"
    );
}

/// A home alice does not own, or one anybody may write, is not trusted.
#[tokio::test]
#[ignore = "privileged: a fake root with a home owned by uid 1000"]
async fn foreign_or_shared_home_is_refused() {
    let f = fake();
    let home = f.root.join("home/alice");
    user_dir(&home);
    std::os::unix::fs::chown(&home, Some(1001), Some(1001)).unwrap();
    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(!report.ok, "keys written into a home owned by uid 1001");
    assert!(!home.join(".ssh").exists());

    std::os::unix::fs::chown(&home, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    let report = apply_keys(&f.root, &f.base.join("state")).await;
    assert!(!report.ok, "keys written into a world-writable home");
    assert!(!home.join(".ssh").exists());
}

/// Issue 12 item 4: `etc` of the root is a symlink to a host directory
/// (absolute, then relative): the account databases there stay as they
/// were, nothing is created next to them, no home appears outside.
#[tokio::test]
#[ignore = "privileged: a fake root whose etc points at a host directory"]
async fn etc_symlink_out_of_root_writes_nothing_there() {
    for relative in [false, true] {
        let f = fake();
        let host_etc = f.base.join("outside/hostetc");
        seed_etc(&host_etc);
        std::fs::remove_dir_all(f.root.join("etc")).unwrap();
        if relative {
            symlink("../outside/hostetc", f.root.join("etc")).unwrap();
        } else {
            symlink(&host_etc, f.root.join("etc")).unwrap();
        }
        let before = tree(&f.base.join("outside"));
        let mut engine = Engine::new();
        engine.register(UsersPlugin);
        let mut ctx = Context::new(f.base.join("state")).with_root(&f.root);
        ctx.retry.backoff = std::time::Duration::from_millis(1);
        let st = DesiredState::from_json(
            &serde_json::json!({
                "version": 1,
                "plugins": {"users": {"accounts": {
                    "evil": {"uid": 0, "password_hash": "!"},
                    "bob": {"uid": 1001, "ssh_authorized_keys": [KEY]}
                }}}
            })
            .to_string(),
            "test state",
        )
        .unwrap();
        let report = engine.apply(&ctx, &st).await;
        assert!(!report.ok, "relative={relative}: {report:#?}");
        let failures = report.failures().join("\n");
        assert!(
            failures.contains("leads nowhere inside the root"),
            "relative={relative}: {failures}"
        );
        assert_eq!(
            tree(&f.base.join("outside")),
            before,
            "relative={relative}: the host directory behind etc changed"
        );
    }
}
