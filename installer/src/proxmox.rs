//! Proxmox VE on top of the Debian base: the Proxmox repository and its
//! release key for the suite, apt pinning, non-interactive answers, the
//! `proxmox-ve` install inside the target, and the `/etc/hosts` PVE requires.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};

use crate::target::{write_identity, Chroot, Root};

/// Proxmox's no-subscription repository (the default source of `proxmox-ve`).
pub const DEFAULT_REPO_URL: &str = "http://download.proxmox.com/debian/pve";
/// The component installs use: free, no subscription key needed.
pub const COMPONENT: &str = "pve-no-subscription";
/// Where the target keeps the repository key; the sources entry names it in
/// `signed-by`, so the key is trusted for this repository only.
pub const KEYRING_PATH: &str = "/usr/share/keyrings/proxmox-archive-keyring.gpg";
/// The pinning file for the Proxmox origin.
pub const PREFERENCES_PATH: &str = "/etc/apt/preferences.d/proxmox.pref";
/// Between 500 (Debian's default) and 1000: Proxmox's build of a package
/// Debian also ships (qemu, lxc, zfs, corosync, ifupdown2…) is the candidate
/// even when Debian's version compares higher, but an installed package is
/// never downgraded (that takes 1000 or more).
pub const PIN_PRIORITY: u16 = 990;
/// Installed next to `proxmox-ve` unless the options say otherwise, as the
/// Proxmox guide "Install Proxmox VE on Debian" does.
pub const DEFAULT_EXTRA_PACKAGES: [&str; 3] = ["postfix", "open-iscsi", "chrony"];

/// How a published release key file is pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDigest {
    Sha512(&'static str),
    Sha256(&'static str),
}

/// Where the live medium carries Proxmox's release keys, one
/// `proxmox-release-SUITE.gpg` per suite (`op-dbus-iso build --proxmox-key`).
pub const MEDIUM_KEYS: &str = "/usr/share/op-dbus";

/// The release key file for `suite` in the folder `dir`.
pub fn medium_keyring(dir: &Path, suite: &str) -> PathBuf {
    dir.join(format!("proxmox-release-{suite}.gpg"))
}

/// Proxmox's signing key for one Debian suite, as published by Proxmox.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseKey {
    pub suite: &'static str,
    pub pve_major: u8,
    /// Where Proxmox publishes the binary keyring.
    pub url: &'static str,
    /// The digest of that file given in Proxmox's install guide.
    pub digest: KeyDigest,
    /// The OpenPGP fingerprint of the release key it holds.
    pub fingerprint: &'static str,
}

/// Release keys as Proxmox's guides "Install Proxmox VE on Debian 12
/// Bookworm" (SHA-512 of the file) and "... on Debian 13 Trixie" (SHA-256)
/// give them; values cross-checked against several independent public
/// copies, not fetched from proxmox.com (unreachable from the build machines).
pub const RELEASE_KEYS: [ReleaseKey; 2] = [
    ReleaseKey {
        suite: "bookworm",
        pve_major: 8,
        url: "https://enterprise.proxmox.com/debian/proxmox-release-bookworm.gpg",
        digest: KeyDigest::Sha512(
            "7da6fe34168adc6e479327ba517796d4702fa2f8b4f0a9833f5ea6e6b48f6507\
             a6da403a274fe201595edc86a84463d50383d07f64bdde2e3658108db7d6dc87",
        ),
        fingerprint: "F4E136C67CDCE41AE6DE6FC81140AF8F639E0C39",
    },
    ReleaseKey {
        suite: "trixie",
        pve_major: 9,
        url: "https://enterprise.proxmox.com/debian/proxmox-archive-keyring-trixie.gpg",
        digest: KeyDigest::Sha256(
            "136673be77aba35dcce385b28737689ad64fd785a797e57897589aed08db6e45",
        ),
        fingerprint: "24B30F06ECC1836A4E5EFECBA7BCD1420BFE778E",
    },
];

/// What [`install_proxmox`] needs to know.
#[derive(Debug, Clone)]
pub struct ProxmoxOptions {
    /// Debian suite of the base system: `bookworm` (PVE 8) or `trixie` (PVE 9).
    pub suite: String,
    pub hostname: String,
    pub domain: Option<String>,
    /// The node's static address; PVE refuses a name that resolves to loopback.
    pub address: Option<IpAddr>,
    /// Another repository (a mirror, a local test repository) instead of
    /// [`DEFAULT_REPO_URL`]; it then needs its own `keyring`.
    pub repo_url: Option<String>,
    /// The keyring file to trust for the repository. For Proxmox's own
    /// repository it must be the published release key of the suite.
    pub keyring: Option<PathBuf>,
    /// Installed along with `proxmox-ve`.
    pub extra_packages: Vec<String>,
}

impl ProxmoxOptions {
    /// Options for Proxmox's repository with the default extra packages.
    pub fn new(suite: &str, hostname: &str) -> Self {
        ProxmoxOptions {
            suite: suite.to_string(),
            hostname: hostname.to_string(),
            domain: None,
            address: None,
            repo_url: None,
            keyring: None,
            extra_packages: DEFAULT_EXTRA_PACKAGES.map(String::from).to_vec(),
        }
    }

    fn fqdn(&self) -> String {
        match self.domain.as_deref() {
            Some(d) if !d.is_empty() => format!("{}.{d}", self.hostname),
            _ => self.hostname.clone(),
        }
    }
}

/// What was set up, for the install report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProxmoxReport {
    pub pve_major: u8,
    /// The repository as a one-line sources entry.
    pub repo_line: String,
    /// The sources file that holds it in the target.
    pub sources_file: String,
    /// The apt origin pinned in [`PREFERENCES_PATH`] (empty for `file:`).
    pub pinned_origin: String,
    /// Versions of `proxmox-ve`, the extra packages and Proxmox kernels.
    pub packages: BTreeMap<String, String>,
    /// The subscription-only repository `pve-manager` ships, disabled.
    pub disabled_enterprise_repo: Option<String>,
    pub os_prober_removed: bool,
}

/// Failures the operator must act on.
#[derive(Debug, thiserror::Error)]
pub enum ProxmoxError {
    #[error(
        "Proxmox VE is not built for Debian suite '{0}': use bookworm (Proxmox VE 8) or trixie (Proxmox VE 9)"
    )]
    UnsupportedSuite(String),
    #[error(
        "Proxmox VE needs a static address for the node: give the bridge in plugins.network an address"
    )]
    MissingAddress,
    #[error(
        "no keyring for the Proxmox repository of {suite}, and the installer does not download it: \
         fetch {url} on a connected machine (release key fingerprint {fingerprint}) and give it as the Proxmox keyring"
    )]
    MissingKeyring {
        suite: String,
        url: &'static str,
        fingerprint: &'static str,
    },
    #[error("a repository other than Proxmox's ({0}) needs its keyring given explicitly")]
    MissingCustomKeyring(String),
    #[error(
        "{path} is not Proxmox's release key for {suite}: its digest is {actual}, Proxmox publishes {expected} \
         for {url}; download that file again"
    )]
    KeyringMismatch {
        path: PathBuf,
        suite: String,
        actual: String,
        expected: &'static str,
        url: &'static str,
    },
    #[error(
        "/etc/hosts in the target does not resolve '{hostname}' to {address} first: {found}; \
         Proxmox VE's cluster filesystem will not start"
    )]
    HostsWrong {
        hostname: String,
        address: IpAddr,
        found: String,
    },
}

/// The release key Proxmox publishes for a suite.
pub fn release_key(suite: &str) -> Result<&'static ReleaseKey, ProxmoxError> {
    RELEASE_KEYS
        .iter()
        .find(|k| k.suite == suite)
        .ok_or_else(|| ProxmoxError::UnsupportedSuite(suite.to_string()))
}

/// The published release key whose digest `data` has, if any.
pub fn identify_release_key(data: &[u8]) -> Option<&'static ReleaseKey> {
    RELEASE_KEYS.iter().find(|k| match k.digest {
        KeyDigest::Sha512(e) => hex::encode(Sha512::digest(data)) == e,
        KeyDigest::Sha256(e) => hex::encode(Sha256::digest(data)) == e,
    })
}

/// Checks a keyring file's bytes against the digest Proxmox publishes.
pub fn verify_release_key(key: &ReleaseKey, path: &Path, data: &[u8]) -> Result<(), ProxmoxError> {
    let (actual, expected) = match key.digest {
        KeyDigest::Sha512(e) => (hex::encode(Sha512::digest(data)), e),
        KeyDigest::Sha256(e) => (hex::encode(Sha256::digest(data)), e),
    };
    if actual == expected {
        Ok(())
    } else {
        Err(ProxmoxError::KeyringMismatch {
            path: path.to_path_buf(),
            suite: key.suite.to_string(),
            actual,
            expected,
            url: key.url,
        })
    }
}

/// The host apt compares `Pin: origin` with: the URL's host, empty for
/// `file:` and other local sources.
pub fn apt_origin(repo_url: &str) -> String {
    let Some((_, rest)) = repo_url.split_once("://") else {
        return String::new();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or_default().to_string();
    }
    host_port.split(':').next().unwrap_or_default().to_string()
}

/// The one-line sources entry.
pub fn repo_line(repo_url: &str, suite: &str) -> String {
    format!("deb [signed-by={KEYRING_PATH}] {repo_url} {suite} {COMPONENT}")
}

/// The sources file and its content: one-line `.list` for PVE 8 as its
/// guide writes it, deb822 `.sources` for PVE 9 (trixie's apt prefers it).
pub fn sources_file(repo_url: &str, key: &ReleaseKey) -> (String, String) {
    if key.pve_major >= 9 {
        (
            "/etc/apt/sources.list.d/proxmox.sources".into(),
            format!(
                "# Proxmox VE {}, written by op-dbus-install\nTypes: deb\nURIs: {repo_url}\n\
                 Suites: {}\nComponents: {COMPONENT}\nSigned-By: {KEYRING_PATH}\n",
                key.pve_major, key.suite
            ),
        )
    } else {
        (
            "/etc/apt/sources.list.d/pve-install-repo.list".into(),
            format!(
                "# Proxmox VE {}, written by op-dbus-install\n{}\n",
                key.pve_major,
                repo_line(repo_url, key.suite)
            ),
        )
    }
}

/// The apt preferences pinning the repository's origin.
pub fn preferences(origin: &str) -> String {
    format!(
        "# Written by op-dbus-install: Proxmox VE's builds win over Debian's\n\
         # (priority above 500) without downgrading installed packages (below 1000).\n\
         Package: *\nPin: origin \"{origin}\"\nPin-Priority: {PIN_PRIORITY}\n"
    )
}

/// Answers for the packages that would otherwise ask (debconf-set-selections).
pub fn debconf_selections(fqdn: &str) -> String {
    format!(
        "postfix postfix/main_mailer_type select Local only\n\
         postfix postfix/mailname string {fqdn}\n\
         postfix postfix/destinations string $myhostname, {fqdn}, localhost.localdomain, localhost\n\
         open-iscsi open-iscsi/remove_even_with_active_sessions boolean false\n\
         open-iscsi open-iscsi/upgrade_even_with_failed_sessions boolean false\n"
    )
}

/// Checks that the first `/etc/hosts` line naming the host carries `address`.
pub fn check_hosts(hosts: &str, hostname: &str, address: IpAddr) -> Result<(), ProxmoxError> {
    let first = hosts.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let addr = fields.next()?;
        fields
            .any(|n| n == hostname || n.split('.').next() == Some(hostname))
            .then(|| addr.to_string())
    });
    match first {
        Some(a) if a.parse::<IpAddr>().ok() == Some(address) => Ok(()),
        other => Err(ProxmoxError::HostsWrong {
            hostname: hostname.to_string(),
            address,
            found: other.map_or_else(
                || "no line names it".to_string(),
                |a| format!("its first line has {a}"),
            ),
        }),
    }
}

/// Installs Proxmox VE into a target that already holds a Debian base of
/// `opts.suite`: hosts, key, repository, pinning, answers, packages.
pub fn install_proxmox(root: &Root, opts: &ProxmoxOptions) -> Result<ProxmoxReport> {
    let key = release_key(&opts.suite)?;
    let address = opts.address.ok_or(ProxmoxError::MissingAddress)?;
    let repo_url = opts.repo_url.as_deref().unwrap_or(DEFAULT_REPO_URL);
    let keyring = load_keyring(opts, key, repo_url)?;

    ensure_hosts(root, opts, address)?;
    root.write(KEYRING_PATH, keyring, 0o644)
        .with_context(|| format!("installing the Proxmox keyring as {KEYRING_PATH}"))?;
    let (sources_path, sources) = sources_file(repo_url, key);
    root.write(&sources_path, sources, 0o644)
        .with_context(|| format!("writing the Proxmox repository to {sources_path}"))?;
    let origin = apt_origin(repo_url);
    root.write(PREFERENCES_PATH, preferences(&origin), 0o644)
        .with_context(|| format!("writing apt pinning to {PREFERENCES_PATH}"))?;

    let chroot = Chroot::enter(root).context("entering the target to install Proxmox VE")?;
    let no_daemons = NoDaemons::install(root)?;
    let outcome = install_packages(&chroot, opts, repo_url);
    no_daemons.remove()?;
    chroot
        .close()
        .context("leaving the target after installing Proxmox VE")?;
    let (packages, os_prober_removed) = outcome?;

    let disabled_enterprise_repo = disable_enterprise_repo(root)?;
    Ok(ProxmoxReport {
        pve_major: key.pve_major,
        repo_line: repo_line(repo_url, key.suite),
        sources_file: sources_path,
        pinned_origin: origin,
        packages,
        disabled_enterprise_repo,
        os_prober_removed,
    })
}

/// Makes the node's name resolve to its address, rewriting hosts if needed.
fn ensure_hosts(root: &Root, opts: &ProxmoxOptions, address: IpAddr) -> Result<()> {
    let current = root.read_to_string("/etc/hosts").unwrap_or_default();
    if check_hosts(&current, &opts.hostname, address).is_err() {
        tracing::info!(%address, "writing /etc/hosts with the node's address for Proxmox VE");
        write_identity(root, &opts.hostname, opts.domain.as_deref(), Some(address))
            .context("writing /etc/hosts for Proxmox VE")?;
    }
    let hosts = root.read_to_string("/etc/hosts")?;
    check_hosts(&hosts, &opts.hostname, address)?;
    Ok(())
}

/// Reads the keyring to trust; Proxmox's own repository gets only the
/// published release key of the suite.
fn load_keyring(opts: &ProxmoxOptions, key: &ReleaseKey, repo_url: &str) -> Result<Vec<u8>> {
    let path = match (&opts.keyring, &opts.repo_url) {
        (Some(p), _) => p,
        (None, None) => {
            return Err(ProxmoxError::MissingKeyring {
                suite: key.suite.to_string(),
                url: key.url,
                fingerprint: key.fingerprint,
            }
            .into())
        }
        (None, Some(url)) => return Err(ProxmoxError::MissingCustomKeyring(url.clone()).into()),
    };
    let data = std::fs::read(path)
        .with_context(|| format!("reading the Proxmox keyring {}", path.display()))?;
    if repo_url == DEFAULT_REPO_URL {
        verify_release_key(key, path, &data)?;
    }
    Ok(data)
}

fn install_packages(
    chroot: &Chroot,
    opts: &ProxmoxOptions,
    repo_url: &str,
) -> Result<(BTreeMap<String, String>, bool)> {
    chroot
        .task("debconf-set-selections")
        .stdin(debconf_selections(&opts.fqdn()))
        .run()
        .context("preseeding debconf answers for postfix and open-iscsi")?;
    // A source that fails verification is only a warning by default (apt
    // keeps the previous lists): any failure must stop the install.
    apt(chroot)
        .args(["update", "--error-on=any"])
        .run()
        .with_context(|| {
            format!("updating package lists with the Proxmox repository {repo_url}")
        })?;
    let mut wanted = vec!["proxmox-ve".to_string()];
    wanted.extend(opts.extra_packages.iter().cloned());
    apt(chroot)
        .arg("install")
        .args(&wanted)
        .run()
        .with_context(|| format!("installing {} from {repo_url}", wanted.join(" ")))?;

    let mut installed = installed_packages(chroot)?;
    // Proxmox's guide removes it: it would add every VM's disk to the boot menu.
    let os_prober_removed = installed.contains_key("os-prober");
    if os_prober_removed {
        apt(chroot)
            .args(["remove", "os-prober"])
            .run()
            .context("removing os-prober")?;
        installed.remove("os-prober");
    }
    let packages = installed
        .into_iter()
        .filter(|(name, _)| {
            wanted.contains(name)
                || name.starts_with("proxmox-kernel-")
                || name.starts_with("pve-kernel-")
        })
        .collect();
    Ok((packages, os_prober_removed))
}

/// apt-get inside the target that never asks and keeps existing configuration.
fn apt(chroot: &Chroot) -> opdbus_common::Task {
    chroot
        .task("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env("APT_LISTCHANGES_FRONTEND", "none")
        .args([
            "-y",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
}

/// Installed packages and their versions, read with dpkg-query in the target.
fn installed_packages(chroot: &Chroot) -> Result<BTreeMap<String, String>> {
    let out = chroot
        .task("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Status} ${Version}\\n"])
        .read()
        .context("listing installed packages in the target")?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, status, version) = (f.next()?, f.next()?, f.next()?);
            (status == "installed").then(|| (name.to_string(), version.to_string()))
        })
        .collect())
}

/// `pve-manager` ships the subscription-only repository; without a
/// subscription every later `apt-get update` fails on it, so it is disabled.
fn disable_enterprise_repo(root: &Root) -> Result<Option<String>> {
    const LIST: &str = "/etc/apt/sources.list.d/pve-enterprise.list";
    const SOURCES: &str = "/etc/apt/sources.list.d/pve-enterprise.sources";
    if root.exists(LIST) {
        let text = root.read_to_string(LIST)?;
        let disabled: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("deb") {
                    format!("# disabled by op-dbus-install (needs a subscription): {l}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        root.write(LIST, disabled, 0o644)?;
        return Ok(Some(LIST.into()));
    }
    if root.exists(SOURCES) {
        let text = root.read_to_string(SOURCES)?;
        if !text.lines().any(|l| l.trim() == "Enabled: no") {
            root.write(SOURCES, format!("Enabled: no\n{text}"), 0o644)?;
        }
        return Ok(Some(SOURCES.into()));
    }
    Ok(None)
}

/// `/usr/sbin/policy-rc.d` refusing every start while packages install, so
/// maintainer scripts never start services (on a live system /run is bound
/// into the chroot and would reach the live system's init).
struct NoDaemons {
    root: Option<Root>,
}

impl NoDaemons {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn install(root: &Root) -> Result<Self> {
        if root.exists(Self::PATH) {
            return Ok(NoDaemons { root: None });
        }
        root.write(Self::PATH, "#!/bin/sh\nexit 101\n", 0o755)
            .context("writing policy-rc.d to keep services stopped")?;
        Ok(NoDaemons {
            root: Some(root.clone()),
        })
    }

    fn remove(mut self) -> Result<()> {
        match self.root.take() {
            Some(root) => root.remove_file(Self::PATH),
            None => Ok(()),
        }
    }
}

impl Drop for NoDaemons {
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            if let Err(e) = root.remove_file(Self::PATH) {
                tracing::warn!("{e:#}");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_the_host_or_empty_for_local_repositories() {
        assert_eq!(apt_origin(DEFAULT_REPO_URL), "download.proxmox.com");
        assert_eq!(
            apt_origin("https://u:p@mirror.example:8443/pve"),
            "mirror.example"
        );
        assert_eq!(apt_origin("http://[2001:db8::1]:80/pve"), "2001:db8::1");
        assert_eq!(apt_origin("file:/srv/repo"), "");
    }

    #[test]
    fn sources_follow_each_release_guide() {
        let (path, text) = sources_file(DEFAULT_REPO_URL, release_key("bookworm").unwrap());
        assert_eq!(path, "/etc/apt/sources.list.d/pve-install-repo.list");
        assert!(text.contains(
            "deb [signed-by=/usr/share/keyrings/proxmox-archive-keyring.gpg] \
             http://download.proxmox.com/debian/pve bookworm pve-no-subscription\n"
        ));
        let (path, text) = sources_file(DEFAULT_REPO_URL, release_key("trixie").unwrap());
        assert_eq!(path, "/etc/apt/sources.list.d/proxmox.sources");
        assert!(text.contains("Suites: trixie\nComponents: pve-no-subscription\n"));
        assert!(text.contains("Signed-By: /usr/share/keyrings/proxmox-archive-keyring.gpg\n"));
    }

    #[test]
    fn unknown_suite_is_refused_with_the_supported_ones() {
        let err = release_key("bullseye").unwrap_err().to_string();
        assert_eq!(
            err,
            "Proxmox VE is not built for Debian suite 'bullseye': use bookworm (Proxmox VE 8) or trixie (Proxmox VE 9)"
        );
    }

    #[test]
    fn published_digests_are_whole() {
        for key in &RELEASE_KEYS {
            let (hex, len) = match key.digest {
                KeyDigest::Sha512(h) => (h, 128),
                KeyDigest::Sha256(h) => (h, 64),
            };
            assert_eq!(hex.len(), len, "{}", key.suite);
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{}", key.suite);
            assert_eq!(key.fingerprint.len(), 40, "{}", key.suite);
        }
    }

    #[test]
    fn a_wrong_key_file_is_refused() {
        let key = release_key("bookworm").unwrap();
        let err = verify_release_key(key, Path::new("/k.gpg"), b"not a key").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/k.gpg is not Proxmox's release key for bookworm"),
            "{msg}"
        );
        assert!(msg.contains("proxmox-release-bookworm.gpg"), "{msg}");
    }

    #[test]
    fn hosts_must_resolve_the_name_to_the_address_first() {
        let addr: IpAddr = "192.0.2.10".parse().unwrap();
        let good = "127.0.0.1\tlocalhost\n192.0.2.10\tpve1.example.com pve1\n";
        check_hosts(good, "pve1", addr).unwrap();
        let loopback = "127.0.0.1 localhost\n127.0.1.1 pve1\n192.0.2.10 pve1.example.com pve1\n";
        let msg = check_hosts(loopback, "pve1", addr).unwrap_err().to_string();
        assert!(msg.contains("its first line has 127.0.1.1"), "{msg}");
        let missing = check_hosts("127.0.0.1 localhost\n", "pve1", addr).unwrap_err();
        assert!(missing.to_string().contains("no line names it"));
    }

    #[test]
    fn default_install_without_a_key_says_where_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut opts = ProxmoxOptions::new("bookworm", "pve1");
        opts.address = Some("192.0.2.10".parse().unwrap());
        let msg = format!("{:#}", install_proxmox(&root, &opts).unwrap_err());
        assert!(
            msg.contains("https://enterprise.proxmox.com/debian/proxmox-release-bookworm.gpg"),
            "{msg}"
        );
        // Nothing is written into a target whose repository key is missing.
        assert!(!root.exists("/etc/hosts"));
    }

    #[test]
    fn missing_address_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let opts = ProxmoxOptions::new("bookworm", "pve1");
        let msg = install_proxmox(&root, &opts).unwrap_err().to_string();
        assert_eq!(
            msg,
            "Proxmox VE needs a static address for the node: give the bridge in plugins.network an address"
        );
        assert!(!root.exists("/etc/hosts"));
    }

    #[test]
    fn preseed_answers_postfix_with_local_only() {
        let s = debconf_selections("pve1.example.com");
        assert!(s.contains("postfix postfix/main_mailer_type select Local only\n"));
        assert!(s.contains("postfix postfix/mailname string pve1.example.com\n"));
    }
}
