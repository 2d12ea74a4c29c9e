//! The live ISO side of an unattended install: what the kernel command line
//! asks for (`cmdline`) and getting the state from a path, a labelled
//! filesystem or a URL (`fetch`). `op-dbus-install auto` drives both.

pub mod cmdline;
pub mod fetch;

use std::collections::BTreeSet;

pub use cmdline::{parse_cmdline, LiveArgs, StateSource};
pub use fetch::{check_sha256, fetch_state, Pins, RetryPolicy};

/// Where the ISO builder puts the state on the medium, as the live system sees it.
pub const EMBEDDED_STATE: &str = "/run/live/medium/opdbus/state.json";
/// Where the ISO builder puts the payload, as the live system sees it.
pub const EMBEDDED_PAYLOAD: &str = "/run/live/medium/opdbus/payload.tar.zst";
/// The line every console reader (and CI) waits for.
pub const MARKER_START: &str = "OPDBUS-LIVE: auto install starting";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskChoiceError {
    #[error(
        "auto mode wipes a disk only when the state selects exactly one: \
         plugins.storage.devices is empty; add the target disk there"
    )]
    NoDisk,
    #[error(
        "auto mode wipes a disk only when the state selects exactly one: \
         plugins.storage.devices names {} ({}); set bootstrap.device to one of them \
         or use the wizard", names.len(), names.join(", ")
    )]
    Several { names: Vec<String> },
    #[error("bootstrap.device is {device:?}, which plugins.storage.devices does not define")]
    UnknownDevice { device: String },
}

/// The one disk an unattended install may wipe: `bootstrap.device` when
/// set, else the only entry of `plugins.storage.devices`.
pub fn chosen_disk(state: &opdbus_state::State) -> Result<String, DiskChoiceError> {
    let names: BTreeSet<String> = state
        .plugins
        .storage
        .as_ref()
        .map(|s| s.devices.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(device) = state.bootstrap.as_ref().and_then(|b| b.device.clone()) {
        return if names.contains(&device) {
            Ok(device)
        } else {
            Err(DiskChoiceError::UnknownDevice { device })
        };
    }
    let mut it = names.into_iter();
    match (it.next(), it.next()) {
        (None, _) => Err(DiskChoiceError::NoDisk),
        (Some(one), None) => Ok(one),
        (Some(a), Some(b)) => {
            let mut names = vec![a, b];
            names.extend(it);
            Err(DiskChoiceError::Several { names })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn state(json: &str) -> opdbus_state::State {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn exactly_one_disk_is_chosen() {
        let one = state(r#"{"version":1,"plugins":{"storage":{"devices":{"/dev/vda":{}}}}}"#);
        assert_eq!(chosen_disk(&one).unwrap(), "/dev/vda");
    }

    #[test]
    fn zero_or_several_disks_are_refused() {
        let none = state(r#"{"version":1}"#);
        assert_eq!(chosen_disk(&none).unwrap_err(), DiskChoiceError::NoDisk);
        let two = state(
            r#"{"version":1,"plugins":{"storage":{"devices":{"/dev/vda":{},"/dev/vdb":{}}}}}"#,
        );
        assert_eq!(
            chosen_disk(&two).unwrap_err().to_string(),
            "auto mode wipes a disk only when the state selects exactly one: \
             plugins.storage.devices names 2 (/dev/vda, /dev/vdb); set bootstrap.device to \
             one of them or use the wizard"
        );
    }

    #[test]
    fn bootstrap_device_picks_one_of_several() {
        let s = state(
            r#"{"version":1,"bootstrap":{"hostname":"h","device":"/dev/vdb"},
                "plugins":{"storage":{"devices":{"/dev/vda":{},"/dev/vdb":{}}}}}"#,
        );
        assert_eq!(chosen_disk(&s).unwrap(), "/dev/vdb");
        let s = state(
            r#"{"version":1,"bootstrap":{"hostname":"h","device":"/dev/sdz"},
                "plugins":{"storage":{"devices":{"/dev/vda":{}}}}}"#,
        );
        assert!(matches!(
            chosen_disk(&s).unwrap_err(),
            DiskChoiceError::UnknownDevice { .. }
        ));
    }
}
