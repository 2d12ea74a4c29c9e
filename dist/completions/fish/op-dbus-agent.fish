# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_op_dbus_agent_global_optspecs
    string join \n v/verbose state-dir= ovsdb= layout= lxc-path= h/help V/version
end

function __fish_op_dbus_agent_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_op_dbus_agent_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_op_dbus_agent_using_subcommand
    set -l cmd (__fish_op_dbus_agent_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -s V -l version -d 'Print version'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "validate" -d 'Check state files (same as the installer\'s validate)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "query" -d 'Current state of what the plugins manage, as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "diff" -d 'The actions an apply would take'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "discover" -d 'A state.json describing the running host (diff of it here is empty)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "apply" -d 'Apply, verify, and record to the audit chain'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "confirm" -d 'Keep a change applied with --confirm-timeout'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "rollback" -d 'Re-apply the desired state an earlier block recorded, as a new transaction'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "run" -d 'First reconcile once per installation, then stay resident'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "status" -d 'Exit 0 done, 1 failed, 2 still running'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "audit" -d 'The hash-chained audit log'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "container" -d 'LXC containers as btrfs snapshots of a template'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "template" -d 'Container templates (btrfs subvolumes under the layout\'s @templates)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -l strict -d 'Treat warnings (malformed SSH keys, a root nobody can log in as) as errors'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -l json -d 'Print `{"ok": bool, "lines": [...]}` on stdout instead of the lines'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand validate" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l state -d 'State file naming what to query' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l plugin -d 'Only this plugin' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l root -d 'Root of the managed system (files such as /etc/passwd are read below it)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l bus -d 'D-Bus address to use instead of the system bus (tests: a private bus)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand query" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -l root -d 'Root of the managed system (files such as /etc/passwd are read below it)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -l bus -d 'D-Bus address to use instead of the system bus (tests: a private bus)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -l json -d 'The actions as JSON (per plugin)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand diff" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -l plugin -d 'Only this plugin (repeatable); default: every plugin that can discover' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -s o -l output -d 'Write the state here (mode 0600, replaced) instead of standard output' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -l root -d 'Root of the managed system (files such as /etc/passwd are read below it)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -l bus -d 'D-Bus address to use instead of the system bus (tests: a private bus)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand discover" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l confirm-timeout -d 'Keep the whole change only if `op-dbus-agent confirm` runs within N seconds; otherwise (or on SIGHUP, SIGTERM, SIGINT) every plugin is restored. Implied as 120 when run over SSH and the firewall change turns the input policy to drop or stops accepting sshd\'s port' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l plugin -d 'Apply only these plugins (repeatable), e.g. `--plugin users --root /mnt` as the installer does before first boot' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l root -d 'Root of the managed system (files such as /etc/passwd are read below it)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l bus -d 'D-Bus address to use instead of the system bus (tests: a private bus)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l dry-run -d 'Plan only: print the actions, change nothing'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l no-rollback -d 'Take no checkpoints: a failed apply is not rolled back (debugging)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l skip-ssh-confirm -d 'Over SSH, apply a firewall change that may lock you out without waiting for `op-dbus-agent confirm` (no implied --confirm-timeout)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l json -d 'Print the run report as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -l allow-unapplied -d 'Exit 0 even when the state sets parts this version does not apply (they are still listed under "not applied")'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand apply" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand confirm" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand confirm" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand confirm" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand confirm" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand confirm" -l json -d 'Print `{"confirmed": "..."}` on stdout'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand confirm" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand confirm" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l to-block -d 'The block whose desired state to apply again (see `audit list`)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l secrets-from -d 'A JSON file (e.g. the state file of then) holding secrets the block recorded only as fingerprints; repeatable. The host\'s /etc/shadow and /etc/wireguard/*.conf below --root are always searched' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l root -d 'Root of the managed system (files such as /etc/passwd are read below it)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l bus -d 'D-Bus address to use instead of the system bus (tests: a private bus)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l dry-run -d 'Print the actions the rollback would take; change nothing'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -l json -d 'Print the run report (or, with --dry-run, the actions) as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l state -d 'The state to keep the host at' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l drift-interval -d 'Seconds between two drift checks of every plugin (resident mode)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l root -d 'Root of the managed system (files such as /etc/passwd are read below it)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l bus -d 'D-Bus address to use instead of the system bus (tests: a private bus)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l once -d 'Exit after the first reconcile instead of staying resident'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l force -d 'Reconcile even when the first-boot marker says it already ran'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -l allow-unapplied -d 'Exit 0 even when the state sets parts this version does not apply'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand run" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l timeout -d 'Give up waiting after N seconds (exit 2)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l wait -d 'Poll until the first reconcile is no longer running'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l json -d 'Print the status file as one JSON line'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -l result-line -d 'Print `OPDBUS-RESULT {json}` (one line)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand status" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "list" -d 'Print the records (one line per action, with its block), oldest first'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "verify" -d 'Check records, blocks, Merkle roots and the signed checkpoints; exit 1 naming the first bad block'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "export" -d 'Print blocks and records as one JSON document, each record with its Merkle inclusion proof against the latest signed checkpoint'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "checkpoint" -d 'Print the latest signed checkpoint (tree size, root, block, time, key, signature) as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "archive" -d 'Move the blocks stamped before DATE (never the last block) into a file with their inclusion proofs and a signed checkpoint; the database keeps their Merkle leaves so it still verifies'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "compact" -d 'Shrink the database without touching anything hashed: drop the stored Merkle frontiers of all blocks but the last, merge the full-text index, truncate the WAL, VACUUM'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "search" -d 'Full-text search over resources, actions, results and notes, with time phrases: today, yesterday, this|last week, this|last month, last N days, since|before|on YYYY-MM-DD'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and not __fish_seen_subcommand_from list verify export checkpoint archive compact search help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -l range -d 'Only the records of these blocks: `A..B` (inclusive), `A..`, `..B` or `N`' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -l json -d 'One JSON array instead of a table'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l checkpoint -d 'Also check the log against this checkpoint kept elsewhere (the output of `audit checkpoint`): signature, key, RFC 9162 consistency proof' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l state -d 'With --current: the state file the last block applied (its hash must be the block\'s); needed when the block keeps only the hash' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l archive -d 'Check this file written by `audit archive` on its own instead of the database: hashes, links, roots, inclusion proofs and its signed checkpoint (against this host\'s key when it has one)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l root -d 'Root of the managed system (files such as /etc/passwd are read below it)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l bus -d 'D-Bus address to use instead of the system bus (tests: a private bus)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l json -d 'Print the verification report as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -l current -d 'Also check that the host, as the plugins query it, still equals the desired state the last block applied (exit 1 with the differences)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from export" -l range -d 'Only these blocks: `A..B` (inclusive), `A..`, `..B` or `N`' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from export" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from export" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from export" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from export" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from export" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from checkpoint" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from checkpoint" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from checkpoint" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from checkpoint" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from checkpoint" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from checkpoint" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -l before -d '`YYYY-MM-DD` (00:00 UTC) or `@UNIX-SECONDS`' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -l output -d 'Where to write the archive (must not exist; default `<state-dir>/audit-archives/blocks-A-B.json`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from archive" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from compact" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from compact" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from compact" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from compact" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from compact" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from compact" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from search" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from search" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from search" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from search" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from search" -l json -d 'One JSON array instead of a table'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from search" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from search" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "list" -d 'Print the records (one line per action, with its block), oldest first'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check records, blocks, Merkle roots and the signed checkpoints; exit 1 naming the first bad block'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "export" -d 'Print blocks and records as one JSON document, each record with its Merkle inclusion proof against the latest signed checkpoint'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "checkpoint" -d 'Print the latest signed checkpoint (tree size, root, block, time, key, signature) as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "archive" -d 'Move the blocks stamped before DATE (never the last block) into a file with their inclusion proofs and a signed checkpoint; the database keeps their Merkle leaves so it still verifies'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "compact" -d 'Shrink the database without touching anything hashed: drop the stored Merkle frontiers of all blocks but the last, merge the full-text index, truncate the WAL, VACUUM'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "search" -d 'Full-text search over resources, actions, results and notes, with time phrases: today, yesterday, this|last week, this|last month, last N days, since|before|on YYYY-MM-DD'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -f -a "create" -d 'Snapshot a template into a new container and write its LXC config'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -f -a "list" -d 'The containers under --lxc-path, with state and whether op-dbus made them'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -f -a "start" -d 'Start a container'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -f -a "stop" -d 'Stop a container (clean shutdown, killed after 10 s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -f -a "delete" -d 'Delete a container op-dbus created (never a template, never another\'s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and not __fish_seen_subcommand_from create list start stop delete help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l template -d 'Template under <layout>/@templates' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l network -d '`bridge=BR[,ip=CIDR][,gw=IP]`: a veth on the host bridge BR' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l memory -d 'Memory limit (512M, 2G)' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l cpus -d 'CPU limit in whole CPUs' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l autostart -d 'Start the container when the host boots (lxc.start.auto)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l start -d 'Start it right away'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -l unprivileged -d 'Container root is host uid/gid 100000 and up (an id map; the rootfs is idmapped, not chowned; root:100000:65536 reserved in /etc/subuid and /etc/subgid)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from list" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from list" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from list" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from list" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from list" -l json
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from list" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from start" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from start" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from start" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from start" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from start" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from stop" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from stop" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from stop" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from stop" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from stop" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from delete" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from delete" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from delete" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from delete" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from delete" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from delete" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "create" -d 'Snapshot a template into a new container and write its LXC config'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "list" -d 'The containers under --lxc-path, with state and whether op-dbus made them'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start a container'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop a container (clean shutdown, killed after 10 s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "delete" -d 'Delete a container op-dbus created (never a template, never another\'s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand container; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -f -a "list" -d 'The templates under <layout>/@templates'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -f -a "create" -d 'Make a read-only template from a directory or a tarball'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and not __fish_seen_subcommand_from list create help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from list" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from list" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from list" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from list" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from list" -l json
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from list" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from create" -l from -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from create" -l state-dir -d 'Where the agent keeps its audit database, markers, status and checkpoints' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from create" -l ovsdb -d 'OVSDB server socket, as unix:PATH' -r
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from create" -l layout -d 'The op-dbus layout root (templates under its `@templates`)' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from create" -l lxc-path -d 'LXC\'s container directory' -r -F
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from create" -s v -l verbose -d 'Log at debug level (RUST_LOG overrides)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from help" -f -a "list" -d 'The templates under <layout>/@templates'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from help" -f -a "create" -d 'Make a read-only template from a directory or a tarball'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand template; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "validate" -d 'Check state files (same as the installer\'s validate)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "query" -d 'Current state of what the plugins manage, as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "diff" -d 'The actions an apply would take'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "discover" -d 'A state.json describing the running host (diff of it here is empty)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "apply" -d 'Apply, verify, and record to the audit chain'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "confirm" -d 'Keep a change applied with --confirm-timeout'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "rollback" -d 'Re-apply the desired state an earlier block recorded, as a new transaction'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "run" -d 'First reconcile once per installation, then stay resident'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "status" -d 'Exit 0 done, 1 failed, 2 still running'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "audit" -d 'The hash-chained audit log'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "container" -d 'LXC containers as btrfs snapshots of a template'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "template" -d 'Container templates (btrfs subvolumes under the layout\'s @templates)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and not __fish_seen_subcommand_from validate query diff discover apply confirm rollback run status audit container template help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "list" -d 'Print the records (one line per action, with its block), oldest first'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Check records, blocks, Merkle roots and the signed checkpoints; exit 1 naming the first bad block'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "export" -d 'Print blocks and records as one JSON document, each record with its Merkle inclusion proof against the latest signed checkpoint'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "checkpoint" -d 'Print the latest signed checkpoint (tree size, root, block, time, key, signature) as JSON'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "archive" -d 'Move the blocks stamped before DATE (never the last block) into a file with their inclusion proofs and a signed checkpoint; the database keeps their Merkle leaves so it still verifies'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "compact" -d 'Shrink the database without touching anything hashed: drop the stored Merkle frontiers of all blocks but the last, merge the full-text index, truncate the WAL, VACUUM'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "search" -d 'Full-text search over resources, actions, results and notes, with time phrases: today, yesterday, this|last week, this|last month, last N days, since|before|on YYYY-MM-DD'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "create" -d 'Snapshot a template into a new container and write its LXC config'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "list" -d 'The containers under --lxc-path, with state and whether op-dbus made them'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "start" -d 'Start a container'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "stop" -d 'Stop a container (clean shutdown, killed after 10 s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from container" -f -a "delete" -d 'Delete a container op-dbus created (never a template, never another\'s)'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from template" -f -a "list" -d 'The templates under <layout>/@templates'
complete -c op-dbus-agent -n "__fish_op_dbus_agent_using_subcommand help; and __fish_seen_subcommand_from template" -f -a "create" -d 'Make a read-only template from a directory or a tarball'
