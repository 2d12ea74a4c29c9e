//! The installer's integration tests, one module per area, in one test
//! binary (one link instead of one per file). Privileged tests are
//! `#[ignore]`d: run them as root with `-- --ignored`.
#![allow(clippy::unwrap_used)]

mod auto_state;
mod boot_sync;
mod clean_output;
mod cli_common;
mod debian_package;
mod disk_common;
mod disk_exec;
mod disk_map;
mod disk_plan;
mod disk_raid;
mod disk_tables;
mod firewall_boot;
mod install_preflight;
mod interrupt;
mod payload_build;
mod payload_extract;
mod payload_hostile;
mod plan_golden;
mod proxmox;
mod target_confined;
mod templates;
mod validate_cli;
mod wizard;
