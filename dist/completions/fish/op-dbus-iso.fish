# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_op_dbus_iso_global_optspecs
    string join \n v/verbose h/help V/version
end

function __fish_op_dbus_iso_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_op_dbus_iso_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_op_dbus_iso_using_subcommand
    set -l cmd (__fish_op_dbus_iso_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c op-dbus-iso -n "__fish_op_dbus_iso_needs_command" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_needs_command" -s h -l help -d 'Print help'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_needs_command" -s V -l version -d 'Print version'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_needs_command" -f -a "build" -d 'Build a hybrid UEFI+BIOS live ISO'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_needs_command" -f -a "customize" -d 'Replace the embedded state and kernel arguments of a built ISO'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_needs_command" -f -a "package" -d 'Build the op-dbus-agent and op-dbus-install .deb packages'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l state -d 'State embedded at /opdbus/state.json (its bootstrap section also describes the payload)' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -s o -l output -d 'ISO file to write' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l cache -d 'Cache directory for the live system and the payload' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l installer -d 'The installer binary to put on the medium' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l agent -d 'The agent binary to put on the medium' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l templates -d 'The templates directory (copied to /usr/share/op-dbus/templates; its live/rootfs/ goes to / of the live system)' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l payload -d 'Reuse this payload (tar.zst with FILE.sha256) instead of building one' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l kargs -d 'Extra kernel arguments for every boot entry' -r
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l proxmox-key -d 'A Proxmox repository key for the live medium (repeatable): FILE, one of the release keys Proxmox publishes (recognised by its digest), or SUITE=FILE for the key of another Proxmox repository. Needed when the state installs Proxmox VE' -r
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l auto -d 'Make "Automated install" the default entry, with a 3 s timeout'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -l json -d 'Print the summary as JSON on stdout'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand build" -s h -l help -d 'Print help'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand customize" -l state -d 'New state for /opdbus/state.json' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand customize" -l kargs -d 'Extra kernel arguments for every entry (replace the earlier ones)' -r
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand customize" -s o -l output -d 'ISO file to write' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand customize" -l json -d 'Print the result as JSON on stdout'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand customize" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand customize" -s h -l help -d 'Print help'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -l agent -d 'The agent binary to package' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -l installer -d 'The installer binary to package' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -l templates -d 'The templates directory (units, D-Bus policy, host layout)' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -l dist -d 'Generated man pages and completions (`cargo run -p opdbus-docgen`)' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -s o -l output-dir -d 'Directory the packages are written to (NAME_VERSION_ARCH.deb)' -r -F
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -l json -d 'Print the built packages as JSON on stdout'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand package" -s h -l help -d 'Print help'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand help; and not __fish_seen_subcommand_from build customize package help" -f -a "build" -d 'Build a hybrid UEFI+BIOS live ISO'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand help; and not __fish_seen_subcommand_from build customize package help" -f -a "customize" -d 'Replace the embedded state and kernel arguments of a built ISO'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand help; and not __fish_seen_subcommand_from build customize package help" -f -a "package" -d 'Build the op-dbus-agent and op-dbus-install .deb packages'
complete -c op-dbus-iso -n "__fish_op_dbus_iso_using_subcommand help; and not __fish_seen_subcommand_from build customize package help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
