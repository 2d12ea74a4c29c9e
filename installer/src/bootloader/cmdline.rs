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

/// `root=UUID=… [rootflags=subvol=…] rw` + the state's arguments + live
/// consoles the state does not already name.
pub fn kernel_cmdline(
    root_uuid: &str,
    root_subvol: Option<&str>,
    state_args: &str,
    live_consoles: &[String],
) -> String {
    let mut args = vec![format!("root=UUID={root_uuid}")];
    if let Some(sv) = root_subvol {
        args.push(format!("rootflags=subvol={sv}"));
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
        let c = kernel_cmdline("abcd", Some("@"), "quiet console=ttyS0,115200", &live);
        assert_eq!(
            c,
            "root=UUID=abcd rootflags=subvol=@ rw quiet console=ttyS0,115200 console=tty0"
        );
    }

    #[test]
    fn plain_root_has_no_rootflags() {
        assert_eq!(kernel_cmdline("u", None, "", &[]), "root=UUID=u rw");
    }
}
