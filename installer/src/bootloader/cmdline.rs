//! The installed system's kernel command line: root by UUID, the root
//! subvolume, the state's arguments, and the `console=` arguments the
//! installer itself was booted with (as debian-installer does).

/// `console=` arguments of a kernel command line, in order.
pub fn console_args(proc_cmdline: &str) -> Vec<String> {
    proc_cmdline
        .split_whitespace()
        .filter(|a| a.starts_with("console="))
        .map(str::to_string)
        .collect()
}

/// `root=UUID=… [rootflags=subvol=…[,degraded]] rw` + the state's
/// arguments + live consoles the state does not already name. `degraded`
/// lets a mirrored root mount with a member missing (the initramfs mounts
/// `/` before fstab is read).
pub fn kernel_cmdline(
    root_uuid: &str,
    root_subvol: Option<&str>,
    degraded: bool,
    state_args: &str,
    live_consoles: &[String],
) -> String {
    let mut args = vec![format!("root=UUID={root_uuid}")];
    let mut flags: Vec<String> = root_subvol
        .map(|sv| format!("subvol={sv}"))
        .into_iter()
        .collect();
    if degraded {
        flags.push("degraded".into());
    }
    if !flags.is_empty() {
        args.push(format!("rootflags={}", flags.join(",")));
    }
    args.push("rw".into());
    let state: Vec<&str> = state_args.split_whitespace().collect();
    args.extend(state.iter().map(|s| s.to_string()));
    for c in live_consoles {
        if !state.contains(&c.as_str()) {
            args.push(c.clone());
        }
    }
    args.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_consoles_are_appended_once() {
        let live = console_args(
            "BOOT_IMAGE=/live/vmlinuz boot=live console=tty0 console=ttyS0,115200 opdbus.auto",
        );
        assert_eq!(live, ["console=tty0", "console=ttyS0,115200"]);
        let c = kernel_cmdline(
            "abcd",
            Some("@"),
            false,
            "quiet console=ttyS0,115200",
            &live,
        );
        assert_eq!(
            c,
            "root=UUID=abcd rootflags=subvol=@ rw quiet console=ttyS0,115200 console=tty0"
        );
    }

    #[test]
    fn plain_root_has_no_rootflags() {
        assert_eq!(kernel_cmdline("u", None, false, "", &[]), "root=UUID=u rw");
    }

    #[test]
    fn a_mirrored_root_mounts_degraded() {
        assert_eq!(
            kernel_cmdline("u", Some("@"), true, "", &[]),
            "root=UUID=u rootflags=subvol=@,degraded rw"
        );
        assert_eq!(
            kernel_cmdline("u", None, true, "", &[]),
            "root=UUID=u rootflags=degraded rw"
        );
    }
}
