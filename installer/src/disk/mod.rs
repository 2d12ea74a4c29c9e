//! The disk engine: plan data, partitioning, ESP, btrfs, mounts (placeholder).
