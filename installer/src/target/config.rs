//! Files that make the installed system this machine: hostname and hosts,
//! timezone, locale, keyboard, machine-id, root password, the first-boot
//! network, and the state the agent applies. All written through [`Root`].

use anyhow::{bail, Result};

use super::Root;

/// `/etc/hostname` and `/etc/hosts`. With a static address (Proxmox VE
/// requires one), the node's name resolves to it; otherwise to 127.0.1.1 as
/// Debian's installer does.
pub fn write_identity(
    root: &Root,
    hostname: &str,
    domain: Option<&str>,
    address: Option<std::net::IpAddr>,
) -> Result<()> {
    root.write("/etc/hostname", format!("{hostname}\n"), 0o644)?;
    let names = match domain {
        Some(d) if !d.is_empty() => format!("{hostname}.{d} {hostname}"),
        _ => hostname.to_string(),
    };
    let own = address.map_or_else(|| "127.0.1.1".to_string(), |a| a.to_string());
    let hosts = format!(
        "127.0.0.1\tlocalhost\n{own}\t{names}\n\n\
         # The following lines are desirable for IPv6 capable hosts\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n"
    );
    root.write("/etc/hosts", hosts, 0o644)
}

/// `/etc/localtime` and `/etc/timezone`; the zone must exist in the target.
pub fn write_timezone(root: &Root, zone: &str) -> Result<()> {
    let zonefile = format!("/usr/share/zoneinfo/{zone}");
    if zone != "UTC" && !root.exists(&zonefile) {
        bail!("timezone {zone:?} does not exist in the target ({zonefile} is missing); use a name from /usr/share/zoneinfo such as \"Europe/Berlin\"");
    }
    root.symlink(&zonefile, "/etc/localtime")?;
    root.write("/etc/timezone", format!("{zone}\n"), 0o644)
}

/// `/etc/default/locale`, and the locale enabled in `/etc/locale.gen` (the
/// caller runs `locale-gen` in a chroot when [`locale_needs_generation`]).
pub fn write_locale(root: &Root, locale: &str) -> Result<()> {
    root.write("/etc/default/locale", format!("LANG={locale}\n"), 0o644)?;
    if locale_needs_generation(locale) {
        let gen = root.read_to_string("/etc/locale.gen").unwrap_or_default();
        let charset = locale.split_once('.').map_or("UTF-8", |(_, c)| c);
        let line = format!(
            "{locale} {}",
            charset.to_uppercase().replace("UTF8", "UTF-8")
        );
        root.write("/etc/locale.gen", enable_locale_line(&gen, &line), 0o644)?;
    }
    Ok(())
}

/// Locales other than C/POSIX need `locale-gen` inside the target.
pub fn locale_needs_generation(locale: &str) -> bool {
    !matches!(locale, "C" | "POSIX" | "C.UTF-8" | "C.utf8")
}

fn enable_locale_line(gen: &str, line: &str) -> String {
    let mut found = false;
    let mut out: Vec<String> = gen
        .lines()
        .map(|l| {
            let bare = l.trim_start_matches('#').trim();
            if bare == line {
                found = true;
                line.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

/// Console and X keymap: `/etc/vconsole.conf` and `/etc/default/keyboard`.
pub fn write_keyboard(root: &Root, keymap: &str) -> Result<()> {
    root.write("/etc/vconsole.conf", format!("KEYMAP={keymap}\n"), 0o644)?;
    let layout = keymap.split('-').next().unwrap_or(keymap);
    root.write(
        "/etc/default/keyboard",
        format!(
            "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"{layout}\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n"
        ),
        0o644,
    )
}

/// An empty `/etc/machine-id`: systemd generates a fresh one on first boot
/// (and `ConditionFirstBoot=` holds then), so no two installs share an id.
pub fn reset_machine_id(root: &Root) -> Result<()> {
    root.write("/etc/machine-id", "", 0o444)?;
    if root.exists("/var/lib/dbus/machine-id") {
        root.symlink("/etc/machine-id", "/var/lib/dbus/machine-id")?;
    }
    Ok(())
}

/// Sets root's password hash in `/etc/shadow` (`!` locks the password).
pub fn set_root_password_hash(root: &Root, hash: &str) -> Result<()> {
    if hash.contains([':', '\n']) {
        bail!("the root password hash contains ':' or a newline; give a crypt(3) hash such as the output of `mkpasswd -m yescrypt`");
    }
    let shadow = root.read_to_string("/etc/shadow")?;
    let mut found = false;
    let lines: Vec<String> = shadow
        .lines()
        .map(|l| {
            let mut fields: Vec<&str> = l.split(':').collect();
            if fields.first() == Some(&"root") && fields.len() >= 2 {
                found = true;
                fields[1] = hash;
                fields.join(":")
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        bail!("the target's /etc/shadow has no root entry; the base system is incomplete");
    }
    // Debian: root:shadow 0640. The group id of shadow is read from the target.
    let gid = group_id(root, "shadow").unwrap_or(0);
    root.write_owned("/etc/shadow", lines.join("\n") + "\n", 0o640, 0, gid)
}

/// Root's `~/.ssh/authorized_keys` (0600, directory 0700).
pub fn write_root_authorized_keys(root: &Root, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    root.create_dir_all("/root/.ssh", 0o700)?;
    root.set_dir_mode("/root/.ssh", 0o700)?;
    root.write("/root/.ssh/authorized_keys", keys.join("\n") + "\n", 0o600)
}

fn group_id(root: &Root, name: &str) -> Option<u32> {
    root.read_to_string("/etc/group")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
        })
}

/// How the installed system reaches the network before the agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstBootNetwork {
    /// DHCP on every ethernet link except the named ones (which the state
    /// enslaves to bonds or bridges: the agent builds those).
    Dhcp { except: Vec<String> },
    /// A static address on one link.
    Static {
        link: String,
        address: String,
        gateway: Option<String>,
        dns: Vec<String>,
    },
}

/// A systemd-networkd configuration so the agent starts with a link; the
/// agent's network plugin takes links over from it.
pub fn write_first_boot_network(root: &Root, net: &FirstBootNetwork) -> Result<()> {
    let text = match net {
        FirstBootNetwork::Dhcp { except } => {
            let mut m = String::from("[Match]\nType=ether\nName=en* eth*\n");
            for name in except {
                // Several Name= lines: a link must match all of them.
                m.push_str(&format!("Name=!{name}\n"));
            }
            format!("{m}\n[Network]\nDHCP=yes\n\n[Link]\nRequiredForOnline=no\n")
        }
        FirstBootNetwork::Static {
            link,
            address,
            gateway,
            dns,
        } => {
            let mut t = format!("[Match]\nName={link}\n\n[Network]\nAddress={address}\n");
            if let Some(g) = gateway {
                t.push_str(&format!("Gateway={g}\n"));
            }
            for d in dns {
                t.push_str(&format!("DNS={d}\n"));
            }
            t
        }
    };
    root.write(
        "/etc/systemd/network/90-opdbus-first-boot.network",
        format!("# Written by op-dbus-install: the network before op-dbus-agent runs.\n{text}"),
        0o644,
    )?;
    enable_unit(root, "systemd-networkd.service", "multi-user.target")
}

/// Enables a unit the way `systemctl enable` would for `WantedBy=TARGET`,
/// without running systemctl (no systemd in the live environment's chroot).
pub fn enable_unit(root: &Root, unit: &str, wanted_by: &str) -> Result<()> {
    let candidates = [
        format!("/etc/systemd/system/{unit}"),
        format!("/usr/lib/systemd/system/{unit}"),
        format!("/lib/systemd/system/{unit}"),
    ];
    let Some(path) = candidates.iter().find(|p| root.exists(p)) else {
        bail!("cannot enable {unit}: no unit file in the target");
    };
    root.symlink(
        path,
        &format!("/etc/systemd/system/{wanted_by}.wants/{unit}"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn root() -> (tempfile::TempDir, Root) {
        let t = tempfile::tempdir().unwrap();
        let r = Root::open(t.path()).unwrap();
        (t, r)
    }

    #[test]
    fn hosts_names_the_node_with_its_static_address() {
        let (_t, r) = root();
        write_identity(
            &r,
            "pve1",
            Some("example.com"),
            Some("192.168.1.10".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(r.read_to_string("/etc/hostname").unwrap(), "pve1\n");
        let hosts = r.read_to_string("/etc/hosts").unwrap();
        assert!(
            hosts.contains("192.168.1.10\tpve1.example.com pve1\n"),
            "{hosts}"
        );
        assert!(!hosts.contains("127.0.1.1"), "{hosts}");
    }

    #[test]
    fn hosts_falls_back_to_loopback_alias() {
        let (_t, r) = root();
        write_identity(&r, "box", None, None).unwrap();
        assert!(r
            .read_to_string("/etc/hosts")
            .unwrap()
            .contains("127.0.1.1\tbox\n"));
    }

    #[test]
    fn timezone_must_exist_in_target() {
        let (_t, r) = root();
        let err = write_timezone(&r, "Mars/Olympus").unwrap_err().to_string();
        assert!(err.contains("Mars/Olympus"), "{err}");
        r.write("/usr/share/zoneinfo/Europe/Berlin", "TZif", 0o644)
            .unwrap();
        write_timezone(&r, "Europe/Berlin").unwrap();
        assert_eq!(
            std::fs::read_link(r.display_path("/etc/localtime"))
                .unwrap()
                .to_str(),
            Some("/usr/share/zoneinfo/Europe/Berlin")
        );
    }

    #[test]
    fn locale_gen_line_is_uncommented_once() {
        let gen = "# en_GB.UTF-8 UTF-8\n# en_US.UTF-8 UTF-8\n";
        let out = enable_locale_line(gen, "en_US.UTF-8 UTF-8");
        assert_eq!(out, "# en_GB.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n");
        assert_eq!(enable_locale_line(&out, "en_US.UTF-8 UTF-8"), out);
    }

    #[test]
    fn root_hash_replaces_only_roots_field() {
        let (_t, r) = root();
        r.write(
            "/etc/shadow",
            "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
            0o640,
        )
        .unwrap();
        set_root_password_hash(&r, "$y$j9T$abc$def").unwrap();
        assert_eq!(
            r.read_to_string("/etc/shadow").unwrap(),
            "root:$y$j9T$abc$def:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
        );
        let mode = std::fs::metadata(r.display_path("/etc/shadow"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(set_root_password_hash(&r, "a:b").is_err());
    }

    #[test]
    fn machine_id_is_emptied() {
        let (_t, r) = root();
        r.write(
            "/etc/machine-id",
            "0123456789abcdef0123456789abcdef\n",
            0o444,
        )
        .unwrap();
        reset_machine_id(&r).unwrap();
        assert_eq!(r.read_to_string("/etc/machine-id").unwrap(), "");
    }

    #[test]
    fn dhcp_network_skips_enslaved_links_and_enables_networkd() {
        let (_t, r) = root();
        r.write(
            "/usr/lib/systemd/system/systemd-networkd.service",
            "[Unit]\n",
            0o644,
        )
        .unwrap();
        write_first_boot_network(
            &r,
            &FirstBootNetwork::Dhcp {
                except: vec!["ens4".into()],
            },
        )
        .unwrap();
        let net = r
            .read_to_string("/etc/systemd/network/90-opdbus-first-boot.network")
            .unwrap();
        assert!(net.contains("Name=en* eth*\nName=!ens4\n"), "{net}");
        assert!(net.contains("DHCP=yes"), "{net}");
        assert!(r
            .display_path("/etc/systemd/system/multi-user.target.wants/systemd-networkd.service")
            .symlink_metadata()
            .is_ok());
    }

    #[test]
    fn enabling_a_missing_unit_fails_clearly() {
        let (_t, r) = root();
        let err = enable_unit(&r, "nope.service", "multi-user.target").unwrap_err();
        assert!(err.to_string().contains("nope.service"));
    }
}
