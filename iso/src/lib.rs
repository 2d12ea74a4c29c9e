//! op-dbus-iso: builds the hybrid UEFI+BIOS live ISO carrying the installer,
//! the agent, the target payload and the state, and customizes built ISOs.
//! One module per piece of the medium; `build` and `customize` orchestrate.

pub mod boot;
pub mod build;
pub mod cli;
pub mod customize;
pub mod layer;
pub mod live;
pub mod menu;
pub mod xorriso;
