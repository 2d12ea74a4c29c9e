//! `op-dbus-iso customize`: a new ISO with another state and kernel
//! arguments, the squashfs, payload and boot images copied unchanged. Only
//! `/opdbus/state.json`, `/opdbus/menu.json` and `/boot/grub/grub.cfg` change.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::{build, menu, xorriso};

/// Writes `output` from `input` with `state` embedded and, when given,
/// `kargs` as the extra kernel arguments of every entry.
pub fn customize(
    input: &Path,
    state: &Path,
    kargs: Option<&str>,
    output: &Path,
) -> anyhow::Result<()> {
    let bytes =
        fs::read(state).with_context(|| format!("reading the state {}", state.display()))?;
    let _: opdbus_state::State = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a valid state.json (run `op-dbus-install validate` on it)",
            state.display()
        )
    })?;
    let work = tempfile::tempdir().context("creating a work directory")?;
    let menu_file = work.path().join("menu.json");
    xorriso::extract(input, "/opdbus/menu.json", &menu_file).with_context(|| {
        format!(
            "{} is not an op-dbus ISO (no /opdbus/menu.json)",
            input.display()
        )
    })?;
    let text = fs::read_to_string(&menu_file).context("reading the ISO's menu.json")?;
    let mut m: menu::Menu = serde_json::from_str(&text).context("parsing the ISO's menu.json")?;
    if let Some(k) = kargs {
        m.extra_kargs = k.trim().to_string();
    }
    let root = work.path().join("iso");
    build::write_menu(&root, &m)?;
    let state_copy = root.join("opdbus/state.json");
    fs::write(&state_copy, &bytes).context("staging the new state")?;
    let replace: Vec<(&str, PathBuf)> = vec![
        (menu::STATE_ISO_PATH, state_copy),
        ("/opdbus/menu.json", root.join("opdbus/menu.json")),
        ("/boot/grub/grub.cfg", root.join("boot/grub/grub.cfg")),
    ];
    xorriso::replace_files(input, output, &replace)
}
