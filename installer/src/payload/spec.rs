//! What goes into a payload: distribution, suite, architecture, mirror and
//! package list. The spec's [`PayloadSpec::cache_key`] names a built payload
//! in the cache, so equal specs reuse one build.

use sha2::{Digest, Sha256};

use super::mirror::Mirror;

/// The distribution the payload prepares. A Proxmox VE payload is the Debian
/// base of the matching suite; `proxmox-ve` itself is installed afterwards from
/// the Proxmox repository by the install step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Distribution {
    Debian,
    Proxmox,
}

impl Distribution {
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::Debian => "debian",
            Distribution::Proxmox => "proxmox",
        }
    }

    /// Parses the state's spelling (`debian`, `proxmox`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "debian" => Some(Distribution::Debian),
            "proxmox" | "proxmox-ve" | "pve" => Some(Distribution::Proxmox),
            _ => None,
        }
    }
}

/// Packages every installed system needs, on top of `--variant=minbase`:
/// kernel and initramfs, systemd as init, the tools the installer and the
/// agent call inside the target, and both bootloaders' files.
pub const BASE_PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "initramfs-tools",
    "systemd",
    "systemd-sysv",
    "dbus",
    "udev",
    "kmod",
    "btrfs-progs",
    // The agent links libbtrfsutil (container snapshots); its package depends on it.
    "libbtrfsutil1",
    "e2fsprogs",
    "dosfstools",
    "iproute2",
    "nftables",
    "openssh-server",
    "ca-certificates",
    "locales",
    "tzdata",
    "keyboard-configuration",
    "sudo",
    "openvswitch-switch",
    // Containers from the @templates (the agent's lxc plugin runs them).
    "lxc",
    // The packages plugin installs through PackageKit over D-Bus (packagekitd
    // is started by D-Bus activation); without it the agent falls back to apt.
    "packagekit",
    "grub-pc-bin",
    "grub2-common",
    "grub-efi-amd64-bin",
    "systemd-boot-efi",
];

/// Everything that determines a payload's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadSpec {
    pub distribution: Distribution,
    /// Debian suite: `bookworm`, `trixie`.
    pub suite: String,
    /// Debian architecture; only `amd64` is supported today.
    pub arch: String,
    /// Explicit mirror URL; `None` means the build host's apt sources.
    pub mirror: Option<String>,
    /// The full package list: [`BASE_PACKAGES`] plus the state's extras.
    pub packages: Vec<String>,
}

impl PayloadSpec {
    /// A spec with the base package list plus `extra` packages (deduplicated,
    /// in a stable order).
    pub fn new(
        distribution: Distribution,
        suite: &str,
        mirror: Option<String>,
        extra: &[String],
    ) -> Self {
        let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
        for p in extra {
            let p = p.trim();
            if !p.is_empty() && !packages.iter().any(|q| q == p) {
                packages.push(p.to_string());
            }
        }
        PayloadSpec {
            distribution,
            suite: suite.to_string(),
            arch: "amd64".to_string(),
            mirror,
            packages,
        }
    }

    /// A stable name for the payload this spec builds from `mirror` (the
    /// resolved one): hex sha256 over a versioned, order-independent text form.
    pub fn cache_key(&self, mirror: &Mirror) -> String {
        let mut packages: Vec<&str> = self.packages.iter().map(String::as_str).collect();
        packages.sort_unstable();
        packages.dedup();
        let text = format!(
            "opdbus-payload-v1\ndistribution={}\nsuite={}\narch={}\nmirror={}\nsigned-by={}\npackages={}\n",
            self.distribution.as_str(),
            self.suite,
            self.arch,
            mirror.uri,
            mirror.signed_by.as_deref().unwrap_or(""),
            packages.join(","),
        );
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mirror() -> Mirror {
        Mirror::explicit("http://archive.example/debian")
    }

    #[test]
    fn base_list_has_what_the_install_needs_and_extras_are_appended_once() {
        let spec = PayloadSpec::new(
            Distribution::Debian,
            "bookworm",
            None,
            &["vim".into(), "sudo".into(), " ".into(), "vim".into()],
        );
        for p in [
            "linux-image-amd64",
            "systemd-sysv",
            "btrfs-progs",
            "systemd-boot-efi",
        ] {
            assert!(spec.packages.iter().any(|q| q == p), "{p} missing");
        }
        assert_eq!(spec.packages.len(), BASE_PACKAGES.len() + 1);
        assert_eq!(spec.packages.last().unwrap(), "vim");
        assert_eq!(spec.arch, "amd64");
    }

    #[test]
    fn cache_key_is_stable_and_sensitive_to_content() {
        let a = PayloadSpec::new(Distribution::Debian, "bookworm", None, &["vim".into()]);
        let key = a.cache_key(&mirror());
        assert_eq!(key.len(), 64);
        assert_eq!(key, a.clone().cache_key(&mirror()));

        // Package order does not matter.
        let mut b = a.clone();
        b.packages.reverse();
        assert_eq!(b.cache_key(&mirror()), key);

        let mut c = a.clone();
        c.suite = "trixie".into();
        assert_ne!(c.cache_key(&mirror()), key);
        let d = PayloadSpec::new(Distribution::Proxmox, "bookworm", None, &["vim".into()]);
        assert_ne!(d.cache_key(&mirror()), key);
        assert_ne!(
            a.cache_key(&Mirror::explicit("http://other.example/debian")),
            key
        );
        let e = PayloadSpec::new(Distribution::Debian, "bookworm", None, &[]);
        assert_ne!(e.cache_key(&mirror()), key);
    }

    #[test]
    fn distribution_parses_state_spelling() {
        assert_eq!(Distribution::parse("debian"), Some(Distribution::Debian));
        assert_eq!(Distribution::parse("Proxmox"), Some(Distribution::Proxmox));
        assert_eq!(Distribution::parse("ubuntu"), None);
    }
}
