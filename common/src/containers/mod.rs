//! Container templates shared by the installer (which fills `debian-base`
//! at install) and the agent (`template create`, `container create`): where
//! they live, their btrfs subvolumes, how one is made, and what is stripped
//! from a host root filesystem so it can serve as a container's.

pub mod btrfs;
pub mod strip;
pub mod template;

use std::path::{Path, PathBuf};

pub use template::Template;

/// Default `--layout` and `--lxc-path`.
pub const DEFAULT_LAYOUT: &str = "/var/lib/op-dbus";
pub const DEFAULT_LXC_PATH: &str = "/var/lib/lxc";

/// Where templates and containers live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// The op-dbus layout root; templates are under `@templates`.
    pub layout: PathBuf,
    /// LXC's container directory (`lxc.lxcpath`).
    pub lxc_path: PathBuf,
    /// Where `subuid` and `subgid` are (`/etc`).
    pub etc: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            layout: PathBuf::from(DEFAULT_LAYOUT),
            lxc_path: PathBuf::from(DEFAULT_LXC_PATH),
            etc: PathBuf::from("/etc"),
        }
    }
}

impl Paths {
    pub fn new(layout: impl Into<PathBuf>, lxc_path: impl Into<PathBuf>) -> Self {
        Self {
            layout: layout.into(),
            lxc_path: lxc_path.into(),
            etc: PathBuf::from("/etc"),
        }
    }

    pub fn templates(&self) -> PathBuf {
        self.layout.join("@templates")
    }

    pub fn template(&self, name: &str) -> PathBuf {
        self.templates().join(name)
    }

    pub fn container(&self, name: &str) -> PathBuf {
        self.lxc_path.join(name)
    }

    /// Whether these are the paths `lxc@NAME.service` uses (LXC's default).
    pub fn is_default_lxc_path(&self) -> bool {
        self.lxc_path == Path::new(DEFAULT_LXC_PATH)
    }
}

/// A container or template name: 1-63 letters, digits, `-`, `_` or `.`,
/// starting with a letter or digit (also the container's hostname and a
/// directory name, so no `/`, no leading `.` or `-`).
pub fn validate_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.contains("..");
    anyhow::ensure!(
        ok,
        "invalid {what} name {name:?}: use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit"
    );
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for good in ["web-01", "debian-12", "a", "db_1.prod"] {
            validate_name("container", good).unwrap();
        }
        for bad in [
            "",
            "-x",
            ".x",
            "a/b",
            "a..b",
            "a b",
            "ü",
            &"x".repeat(64),
            "../etc",
        ] {
            assert!(validate_name("container", bad).is_err(), "{bad:?} accepted");
        }
    }
}
