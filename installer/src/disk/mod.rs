//! The disk engine: the plan (pure data and layout math) and the executor
//! that partitions, formats (ESP in userspace, btrfs, ext4, swap), creates
//! subvolumes and mounts the target tree, re-runnable and safe to fail.

pub mod blockdev;
pub mod btrfs;
pub mod esp;
pub mod execute;
pub mod fs;
pub mod fstab;
pub mod layout;
pub mod loopdev;
pub mod mount;
pub mod partition;
pub mod plan;

pub use execute::{
    execute, inspect, Action, ExecOptions, ExecReport, Execution, Item, ItemReport, ItemStatus,
    MountedTarget, TargetMap,
};
pub use fstab::fstab;
pub use layout::{plan_layout, Firmware, LayoutError, LayoutSpec, SizeSpec, UuidSource};
pub use plan::DiskPlan;
