//! What the agent created, per plugin and kind: `<state-dir>/ownership.json`
//! (0600, replaced atomically). Pruning deletes only what is recorded here
//! (or what the state names for deletion): a bridge made by docker or a veth
//! pair made by hand is never the agent's to remove. Firewall rules, flows
//! and containers record themselves the same way.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub const OWNERSHIP_FILE: &str = "ownership.json";

/// One object the agent created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owned {
    pub plugin: String,
    /// `link`, `ovs-bridge`, `rule`, `container`, ...
    pub kind: String,
    /// The object's name.
    pub id: String,
    /// A kernel index (ifindex) telling this object from a later one of the
    /// same name; `None` when the kind has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl Owned {
    /// Whether this record is the object `id` with `index` (an index missing
    /// on either side matches by name alone).
    pub fn is(&self, id: &str, index: Option<u32>) -> bool {
        self.id == id && (self.index.is_none() || index.is_none() || self.index == index)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Registry {
    version: u32,
    owned: Vec<Owned>,
}

/// The registry of one state dir.
#[derive(Debug, Clone)]
pub struct Ownership {
    dir: PathBuf,
}

impl Ownership {
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: state_dir.into(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(OWNERSHIP_FILE)
    }

    fn load(&self) -> anyhow::Result<Registry> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text).with_context(|| {
            format!(
                "parsing the ownership registry {} (restore it or remove it: then nothing counts as created by op-dbus and prune deletes nothing)",
                path.display()
            )
        })
    }

    fn store(&self, reg: &Registry) -> anyhow::Result<()> {
        super::state_dir::write(&self.dir, OWNERSHIP_FILE, &serde_json::to_vec_pretty(reg)?)
    }

    /// Records that `plugin` created `id` of `kind` (replacing an older record of it).
    pub fn record(
        &self,
        plugin: &str,
        kind: &str,
        id: &str,
        index: Option<u32>,
    ) -> anyhow::Result<()> {
        self.record_all(&[Owned {
            plugin: plugin.to_string(),
            kind: kind.to_string(),
            id: id.to_string(),
            index,
        }])
    }

    /// Records several created objects in one write of the registry (each
    /// write is synced: an apply that creates ten bridges pays one, not ten).
    pub fn record_all(&self, objects: &[Owned]) -> anyhow::Result<()> {
        if objects.is_empty() {
            return Ok(());
        }
        let mut reg = self.load()?;
        reg.version = 1;
        for new in objects {
            reg.owned
                .retain(|o| !(o.plugin == new.plugin && o.kind == new.kind && o.id == new.id));
            reg.owned.push(new.clone());
        }
        self.store(&reg)
    }

    /// Drops the record of `id` (after the plugin deleted it).
    pub fn forget(&self, plugin: &str, kind: &str, id: &str) -> anyhow::Result<()> {
        let mut reg = self.load()?;
        let before = reg.owned.len();
        reg.owned
            .retain(|o| !(o.plugin == plugin && o.kind == kind && o.id == id));
        if reg.owned.len() == before {
            return Ok(());
        }
        self.store(&reg)
    }

    /// Drops every record of `kind` whose id starts with `prefix` (the ports
    /// of a deleted bridge: `BRIDGE/`).
    pub fn forget_under(&self, plugin: &str, kind: &str, prefix: &str) -> anyhow::Result<()> {
        let mut reg = self.load()?;
        let before = reg.owned.len();
        reg.owned
            .retain(|o| !(o.plugin == plugin && o.kind == kind && o.id.starts_with(prefix)));
        if reg.owned.len() == before {
            return Ok(());
        }
        self.store(&reg)
    }

    /// What `plugin` created of `kind`.
    pub fn owned(&self, plugin: &str, kind: &str) -> anyhow::Result<Vec<Owned>> {
        Ok(self
            .load()?
            .owned
            .into_iter()
            .filter(|o| o.plugin == plugin && o.kind == kind)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_owned_forget_round_trip_with_private_mode() -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let reg = Ownership::new(dir.path().join("state"));
        assert!(reg.owned("network", "link")?.is_empty());
        reg.record("network", "link", "br0", Some(7))?;
        reg.record("network", "link", "br0", Some(9))?;
        reg.record("firewall", "rule", "r1", None)?;
        let links = reg.owned("network", "link")?;
        assert_eq!(links.len(), 1);
        assert!(links[0].is("br0", Some(9)) && !links[0].is("br0", Some(7)));
        let mode = std::fs::metadata(reg.path())?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        reg.forget("network", "link", "br0")?;
        assert!(reg.owned("network", "link")?.is_empty());
        assert_eq!(reg.owned("firewall", "rule")?.len(), 1);
        Ok(())
    }

    #[test]
    fn record_all_is_one_write_with_the_same_result() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let reg = Ownership::new(dir.path().join("state"));
        reg.record("network", "link", "br0", Some(3))?;
        let owned = |id: &str, index| Owned {
            plugin: "network".into(),
            kind: "link".into(),
            id: id.into(),
            index,
        };
        let before = std::fs::metadata(reg.path())?.modified()?;
        reg.record_all(&[
            owned("br0", Some(4)),
            owned("br1", Some(5)),
            owned("br1", Some(6)),
        ])?;
        let links = reg.owned("network", "link")?;
        assert_eq!(links, vec![owned("br0", Some(4)), owned("br1", Some(6))]);
        assert!(std::fs::metadata(reg.path())?.modified()? >= before);
        reg.record_all(&[])?;
        assert_eq!(reg.owned("network", "link")?.len(), 2);
        Ok(())
    }
}
