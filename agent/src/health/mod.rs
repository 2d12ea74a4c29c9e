//! Host health the status reports beside the reconcile: conditions an
//! operator must act on (a mirrored disk gone) that are warnings, not
//! failures, so they never change an exit code. Read from the kernel each
//! time the status is written or read.

pub mod btrfs;

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One degraded storage array, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Degraded {
    /// A mounted btrfs with member devices missing.
    Btrfs(btrfs::Degraded),
}

impl std::fmt::Display for Degraded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Degraded::Btrfs(d) => d.fmt(f),
        }
    }
}

/// The degraded arrays of this host now, from `/sys` and this process's
/// `/proc/self/mountinfo`.
pub fn degraded() -> Result<Vec<Degraded>, btrfs::ScanError> {
    Ok(
        btrfs::degraded(Path::new("/sys"), Path::new("/proc/self/mountinfo"))?
            .into_iter()
            .map(Degraded::Btrfs)
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_is_tagged_by_kind() {
        let d = Degraded::Btrfs(btrfs::Degraded {
            uuid: "96109988-6352-4323-b85e-f709b8dd4567".into(),
            label: Some("root".into()),
            mounts: vec!["/".into()],
            devices_total: 2,
            devices_missing: 1,
            missing_devids: vec![2],
            present: vec!["/dev/vda3".into()],
            errors: vec![],
        });
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"btrfs","uuid":"96109988-6352-4323-b85e-f709b8dd4567","label":"root","mounts":["/"],"devices_total":2,"devices_missing":1,"missing_devids":[2],"present":["/dev/vda3"]}"#
        );
        assert_eq!(serde_json::from_str::<Degraded>(&json).unwrap(), d);
    }
}
