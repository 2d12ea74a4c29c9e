//! The Proxmox VE path against a real Debian base (the cached payload) and a
//! local apt repository built here: a stand-in `proxmox-ve`, signed with a
//! throwaway key, served to the chroot as `file:/srv/repo`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use opdbus_common::Task;
use opdbus_installer::proxmox::{install_proxmox, ProxmoxOptions, PREFERENCES_PATH};
use opdbus_installer::target::Root;
use sha2::{Digest, Sha256};

const SUITE_COMPONENT: &str = "pve-no-subscription";

/// The newest cached base-system payload, if a payload test built one.
fn cached_payload() -> Option<PathBuf> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/opdbus-cache");
    fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
}

/// A temporary directory removed at the end, unless something is still
/// mounted below it (then it is left in place rather than descended into).
struct Scratch(Option<tempfile::TempDir>);

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("opdbus-pve-")
            .tempdir_in("/var/tmp")
            .expect("creating a scratch directory in /var/tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Scratch(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().expect("scratch dir").path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else { return };
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = dir.path().to_string_lossy().into_owned();
        if mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| m.starts_with(&prefix))
        {
            eprintln!("leaving {prefix} in place: something is still mounted below it");
            std::mem::forget(dir);
        }
    }
}

/// A GnuPG home with one signing key; its agent is stopped on drop.
struct SigningKey {
    home: PathBuf,
    uid: String,
}

impl SigningKey {
    fn generate(home: PathBuf, uid: &str) -> Self {
        fs::create_dir_all(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o700)).unwrap();
        let key = SigningKey {
            home,
            uid: uid.to_string(),
        };
        key.gpg()
            .args(["--passphrase", "", "--pinentry-mode", "loopback"])
            .args(["--quick-gen-key", uid, "ed25519", "sign", "never"])
            .run()
            .expect("generating a throwaway signing key");
        key
    }

    fn gpg(&self) -> Task {
        Task::new("gpg").env("GNUPGHOME", &self.home).arg("--batch")
    }

    /// The public key as a binary keyring, as Proxmox publishes theirs.
    fn export(&self, to: &Path) {
        let out = self.gpg().args(["--export", &self.uid]).output().unwrap();
        assert!(
            !out.stdout.is_empty(),
            "gpg exported no key for {}",
            self.uid
        );
        fs::write(to, out.stdout).unwrap();
    }

    fn clearsign(&self, release: &Path, inrelease: &Path) {
        self.gpg()
            .args([
                "--yes",
                "--local-user",
                &self.uid,
                "--clearsign",
                "--output",
            ])
            .arg(inrelease)
            .arg(release)
            .run()
            .expect("signing the Release file");
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        let _ = Task::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .run();
    }
}

/// Builds the stand-in package and the repository's indexes under `repo`;
/// returns the Release file to sign.
fn build_repository(scratch: &Path, repo: &Path, suite: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proxmox/standin");
    let tree = scratch.join("standin");
    Task::new("cp")
        .args(["-a"])
        .arg(&fixture)
        .arg(&tree)
        .run()
        .unwrap();
    fs::set_permissions(
        tree.join("DEBIAN/postinst"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let pool = repo.join("pool");
    fs::create_dir_all(&pool).unwrap();
    Task::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(pool.join("proxmox-ve_8.9.9-test_all.deb"))
        .run()
        .expect("building the stand-in proxmox-ve package");

    let packages = Task::new("dpkg-scanpackages")
        .args(["--multiversion", "pool", "/dev/null"])
        .current_dir(repo)
        .read()
        .expect("indexing the repository");
    assert!(packages.contains("Package: proxmox-ve"), "{packages}");
    let index_rel = format!("{SUITE_COMPONENT}/binary-amd64/Packages");
    let dist = repo.join("dists").join(suite);
    let index = dist.join(&index_rel);
    fs::create_dir_all(index.parent().unwrap()).unwrap();
    fs::write(&index, &packages).unwrap();

    let date = Task::new("date").args(["-Ru"]).read().unwrap();
    let release = format!(
        "Origin: Proxmox\nLabel: op-dbus test repository\nSuite: {suite}\nCodename: {suite}\n\
         Date: {}\nArchitectures: amd64\nComponents: {SUITE_COMPONENT}\nSHA256:\n {} {} {index_rel}\n",
        date.trim(),
        hex::encode(Sha256::digest(packages.as_bytes())),
        packages.len(),
    );
    let path = dist.join("Release");
    fs::write(&path, release).unwrap();
    path
}

fn os_codename(root: &Root) -> String {
    root.read_to_string("/etc/os-release")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .expect("VERSION_CODENAME in the base system's os-release")
        .trim_matches('"')
        .to_string()
}

#[test]
#[ignore = "privileged: chroot + local apt repository"]
fn proxmox_ve_installs_from_a_signed_repository_and_refuses_a_wrong_key() {
    let Some(payload) = cached_payload() else {
        eprintln!(
            "SKIPPED: no cached base-system payload in target/opdbus-cache/*.tar.zst \
             (the payload tests build it); nothing to install Proxmox VE onto"
        );
        return;
    };
    let scratch = Scratch::new();
    let target = scratch.path().join("root");
    fs::create_dir(&target).unwrap();
    Task::new("tar")
        .args(["--zstd", "-xpf"])
        .arg(&payload)
        .arg("-C")
        .arg(&target)
        .run()
        .expect("extracting the cached payload");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let root = Root::open(&target).unwrap();
    let suite = os_codename(&root);

    // Hermetic: the base's Debian mirror is left out of apt-get update.
    let _ = fs::remove_file(root.display_path("/etc/apt/sources.list"));
    for e in fs::read_dir(root.display_path("/etc/apt/sources.list.d")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }

    let repo = root.display_path("/srv/repo");
    let release = build_repository(scratch.path(), &repo, &suite);
    let good = SigningKey::generate(
        scratch.path().join("gnupg-good"),
        "op-dbus good <good@test.invalid>",
    );
    let bad = SigningKey::generate(
        scratch.path().join("gnupg-bad"),
        "op-dbus bad <bad@test.invalid>",
    );
    let keyring = scratch.path().join("test-keyring.gpg");
    good.export(&keyring);
    let inrelease = release.with_file_name("InRelease");
    good.clearsign(&release, &inrelease);

    let mut opts = ProxmoxOptions::new(&suite, "pve-test");
    opts.domain = Some("example.com".into());
    opts.address = Some("192.0.2.10".parse().unwrap());
    opts.repo_url = Some("file:/srv/repo".into());
    opts.keyring = Some(keyring.clone());
    opts.extra_packages = Vec::new();

    let report = install_proxmox(&root, &opts).expect("installing the stand-in Proxmox VE");

    // Repository, key and pinning as written into the target.
    let sources = root.read_to_string(&report.sources_file).unwrap();
    assert!(
        sources.contains(&format!(
            "deb [signed-by=/usr/share/keyrings/proxmox-archive-keyring.gpg] file:/srv/repo {suite} pve-no-subscription"
        )) || sources.contains("URIs: file:/srv/repo\n"),
        "{sources}"
    );
    assert_eq!(
        fs::read(root.display_path("/usr/share/keyrings/proxmox-archive-keyring.gpg")).unwrap(),
        fs::read(&keyring).unwrap()
    );
    let pref = root.read_to_string(PREFERENCES_PATH).unwrap();
    assert!(
        pref.contains("Package: *\nPin: origin \"\"\nPin-Priority: 990\n"),
        "{pref}"
    );
    assert_eq!(report.pinned_origin, "");

    // The package really went in: its maintainer script ran, dpkg knows it.
    assert_eq!(
        root.read_to_string("/etc/pve-test-installed").unwrap(),
        "configured \n"
    );
    assert_eq!(
        report.packages.get("proxmox-ve").map(String::as_str),
        Some("8.9.9-test")
    );
    let status = Task::new("dpkg-query")
        .arg(format!(
            "--admindir={}",
            root.display_path("/var/lib/dpkg").display()
        ))
        .args(["-W", "-f", "${Version} ${db:Status-Status}", "proxmox-ve"])
        .read()
        .unwrap();
    assert_eq!(status, "8.9.9-test installed");

    // The subscription-only repository the package shipped is disabled,
    // the node's name resolves to its address, no policy-rc.d is left.
    let enterprise = root
        .read_to_string("/etc/apt/sources.list.d/pve-enterprise.list")
        .unwrap();
    assert!(
        enterprise.starts_with("# disabled by op-dbus-install"),
        "{enterprise}"
    );
    let hosts = root.read_to_string("/etc/hosts").unwrap();
    assert!(
        hosts.contains("192.0.2.10\tpve-test.example.com pve-test\n"),
        "{hosts}"
    );
    assert!(!root.exists("/usr/sbin/policy-rc.d"));

    // Signed by a key the target does not trust: apt-get update must fail and
    // the error must name the repository.
    bad.clearsign(&release, &inrelease);
    let err =
        install_proxmox(&root, &opts).expect_err("a wrongly signed repository must be refused");
    let msg = format!("{err:#}");
    eprintln!("wrong key refused: {msg}");
    assert!(
        msg.contains("updating package lists with the Proxmox repository file:/srv/repo"),
        "{msg}"
    );
    assert!(
        msg.contains("apt-get") && msg.contains("file:/srv/repo"),
        "{msg}"
    );
    assert!(!root.exists("/usr/sbin/policy-rc.d"));

    // No bind mount of the chroot survived either run.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*target.to_string_lossy()),
        "mounts left below {}",
        target.display()
    );
}
