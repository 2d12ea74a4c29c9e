# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_op_dbus_install_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_op_dbus_install_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_op_dbus_install_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_op_dbus_install_using_subcommand
    set -l cmd (__fish_op_dbus_install_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -s V -l version -d 'Print version'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "validate" -d 'Check state files; errors as FILE:LINE:COL: /json/pointer: message'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "schema" -d 'Print the JSON Schema of state.json'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "plan" -d 'Print the resolved install plan; pure, writes nothing'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "disk" -d 'Run only the disk phase: partitions, ESP, btrfs, subvolumes, mounts'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "payload" -d 'Build the offline base-system payload (tar.zst and .sha256)'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "install" -d 'The whole install'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "wizard" -d 'Interactive editor that writes a valid state.json'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "auto" -d 'Live-ISO entry: read opdbus.* from the kernel command line and install unattended'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "boot-sync" -d 'On an installed system: boot entries for every kernel in /boot (run by the kernel package hooks)'
complete -c op-dbus-install -n "__fish_op_dbus_install_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand validate" -l strict -d 'Treat warnings (malformed SSH keys, a root nobody can log in as) as errors'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand validate" -l json -d 'Print `{"ok": bool, "lines": [...]}` on stdout instead of the lines'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand validate" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand validate" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand schema" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand schema" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand plan" -l disk -d 'Map a device key of the state to a block device or image file' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand plan" -l uuid-seed -d 'Derive UUIDs from this seed instead of at random (reproducible plans)' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand plan" -l sys -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand plan" -l dev -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand plan" -l json -d 'Print the plan as JSON'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand plan" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand plan" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l mount-at -d 'Leave the installed system\'s tree mounted here' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l disk -d 'Map a device key of the state to a block device or image file' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l uuid-seed -d 'Derive UUIDs from this seed instead of at random (reproducible plans)' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l sys -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l dev -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l yes -d 'Allow wiping what is on the targets'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l reformat -d 'Replace filesystems of the planned type too (needs --yes); by default they are kept and their UUIDs used'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l dry-run -d 'Print the plan and what would change; write nothing'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -l json -d 'Print the report (and with --dry-run the plan) as JSON on stdout'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand disk" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -l state -d 'State file whose `bootstrap` section (distribution, suite, mirror, packages) describes the payload; without it: Debian bookworm' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -s o -l output -d 'Payload file to write (tar.zst); FILE.sha256 is written next to it' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -l cache -d 'Directory of earlier builds, keyed by spec and mirror; reused when the checksum still matches' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -l suite -d 'Debian suite (overrides the state)' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -l mirror -d 'Mirror URL (overrides the state; default: this host\'s apt sources)' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -l package -d 'Extra package (repeatable; added to the state\'s list)' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -l json -d 'Print the result as JSON on stdout'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand payload" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l payload -d 'Base system from this rootfs tar.zst (FILE.sha256 beside it)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l cache -d 'Cache folder for --debootstrap payloads' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l report -d 'Also write the install report here' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l mount-at -d 'Where to mount the target while installing' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l agent -d 'The agent binary to install (default: op-dbus-agent next to this binary)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l agent-package -d 'The op-dbus-agent .deb to install into the target (default: the live medium\'s /usr/share/op-dbus/packages/op-dbus-agent.deb, else one built from --agent)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l templates -d 'The templates folder (default: /usr/share/op-dbus/templates, else ./templates)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l proxmox-keys -d 'Folder holding Proxmox\'s release keys (`proxmox-release-SUITE.gpg`), where `op-dbus-iso build --proxmox-key` puts them' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l disk -d 'Map a device key of the state to a block device or image file' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l uuid-seed -d 'Derive UUIDs from this seed instead of at random (reproducible plans)' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l sys -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l dev -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l debootstrap -d 'Build the base system now with mmdebstrap (or debootstrap)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l yes -d 'Allow wiping the target disks'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l reformat -d 'Replace filesystems of the planned type too (needs --yes); by default they are kept and their UUIDs used'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l json-progress -d 'One JSON object per phase event on stdout'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -l json -d 'Print the install report (install.json) as JSON on stdout at the end'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand install" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand wizard" -l from -d 'Start from this state: every question defaults to its value, and everything the wizard does not ask about is kept as it is' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand wizard" -l output -d 'Where to write the state (atomically, mode 0600)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand wizard" -l sys -d 'sysfs root to read disks and NICs from (tests)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand wizard" -l dev -d '/dev root to read by-id links from (tests)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand wizard" -l zoneinfo -d 'tz database to check timezones against' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand wizard" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand wizard" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -l cmdline -d 'Kernel command line to read (a file, for tests)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -l network-timeout -d 'Seconds to keep retrying an http(s) state URL while the network comes up' -r
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -l save-to -d 'Where the fetched state is saved (the install and its logs read it there)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -l force -d 'Run even when `opdbus.auto` is absent from the command line'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -l dry-run -d 'Stop after the state is fetched and validated; install nothing'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -l no-finish -d 'Do not power off or reboot at the end, whatever the state says'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand auto" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand boot-sync" -l root -d 'Root of the installed system' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand boot-sync" -l esp -d 'The mounted ESP (default: every ESP the install recorded, mounted below ROOT: /boot/efi, and /boot/efi2… on a mirrored install)' -r -F
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand boot-sync" -l json -d 'Print what was done as JSON'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand boot-sync" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand boot-sync" -s h -l help -d 'Print help'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "validate" -d 'Check state files; errors as FILE:LINE:COL: /json/pointer: message'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "schema" -d 'Print the JSON Schema of state.json'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "plan" -d 'Print the resolved install plan; pure, writes nothing'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "disk" -d 'Run only the disk phase: partitions, ESP, btrfs, subvolumes, mounts'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "payload" -d 'Build the offline base-system payload (tar.zst and .sha256)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "install" -d 'The whole install'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "wizard" -d 'Interactive editor that writes a valid state.json'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "auto" -d 'Live-ISO entry: read opdbus.* from the kernel command line and install unattended'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "boot-sync" -d 'On an installed system: boot entries for every kernel in /boot (run by the kernel package hooks)'
complete -c op-dbus-install -n "__fish_op_dbus_install_using_subcommand help; and not __fish_seen_subcommand_from validate schema plan disk payload install wizard auto boot-sync help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
