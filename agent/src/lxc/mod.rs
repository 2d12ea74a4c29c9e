//! LXC containers made from btrfs templates. A template is the subvolume
//! `<layout>/@templates/NAME` holding a read-only `rootfs` subvolume and
//! `config/` (`template.json`, optional `lxc.conf` lines); a container is
//! `<lxc-path>/NAME/{config,rootfs}`, its rootfs a writable snapshot of the
//! template's. What op-dbus created is recorded in the ownership registry
//! (plugin `lxc`, kind `container`); only that is ever deleted.

pub mod config;
pub mod container;
pub mod idmap;
pub mod runner;

pub use config::{Nic, Spec};
pub use container::{Container, Status};
pub use opdbus_common::containers::{
    btrfs, template, validate_name, Paths, Template, DEFAULT_LAYOUT, DEFAULT_LXC_PATH,
};

/// Ownership registry names of what this module creates.
pub const OWNER_PLUGIN: &str = "lxc";
pub const OWNER_KIND: &str = "container";

/// A network interface name as the kernel accepts it (1-15 bytes, no `/`,
/// whitespace, `:` or `=`), so it can go into an LXC config line.
pub fn validate_ifname(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '/' | ':' | '=' | ',' | '#'))
        && name != "."
        && name != "..";
    anyhow::ensure!(
        ok,
        "invalid {what} {name:?}: an interface name is 1-15 characters without '/', ':', '=', ',' or spaces"
    );
    Ok(())
}
