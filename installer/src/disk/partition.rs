//! Partition tables: writes a planned GPT (protective MBR, backup header) with
//! the `gpt` crate or an msdos table with `mbrman` into any file (image or
//! block device), reads them back, and wipes them when an install fails.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};

use uuid::Uuid;

use super::plan::{DevicePlan, TableKind, MIB};

const SECTOR: u64 = 512;

/// A partition as found on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPartition {
    pub number: u32,
    pub start: u64,
    pub size: u64,
    /// GPT type GUID.
    pub type_guid: Option<Uuid>,
    /// GPT unique GUID.
    pub part_guid: Option<Uuid>,
    /// MBR type byte.
    pub mbr_type: Option<u8>,
    pub name: String,
}

/// The partition table found on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundTable {
    /// No GPT and no MBR signature.
    None,
    Gpt {
        disk_guid: Uuid,
        partitions: Vec<FoundPartition>,
    },
    Msdos {
        signature: u32,
        partitions: Vec<FoundPartition>,
    },
}

impl FoundTable {
    /// Whether the table has exactly the plan's kind, ranges and types.
    pub fn matches(&self, plan: &DevicePlan) -> bool {
        let (kind, parts) = match self {
            FoundTable::None => return false,
            FoundTable::Gpt { partitions, .. } => (TableKind::Gpt, partitions),
            FoundTable::Msdos { partitions, .. } => (TableKind::Msdos, partitions),
        };
        if kind != plan.table || parts.len() != plan.partitions.len() {
            return false;
        }
        plan.partitions.iter().all(|p| {
            parts.iter().any(|f| {
                f.number == p.number
                    && f.start == p.start
                    && f.size == p.size
                    && match plan.table {
                        TableKind::Gpt => f.type_guid == Some(p.type_guid),
                        TableKind::Msdos => f.mbr_type == p.mbr_type,
                    }
            })
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("I/O on the partition table")]
    Io(#[from] std::io::Error),
    #[error("GPT: {0}")]
    Gpt(String),
    #[error("msdos table: {0}")]
    Mbr(String),
    #[error("the plan was laid out for {planned} bytes but the disk has {actual}; plan again for this disk")]
    SizeMismatch { planned: u64, actual: u64 },
}

fn gpt_err(e: impl std::fmt::Display) -> PartitionError {
    PartitionError::Gpt(e.to_string())
}

/// Size of a file or block device (seek to its end).
pub fn device_size<D: Seek>(dev: &mut D) -> std::io::Result<u64> {
    dev.seek(SeekFrom::End(0))
}

/// Zeroes the first and the last MiB: removes MBR, GPT headers and entries,
/// so a half-written disk never boots.
pub fn wipe_table<D: Write + Seek>(dev: &mut D) -> std::io::Result<()> {
    let size = device_size(dev)?;
    let zeros = vec![0u8; MIB as usize];
    let head = size.min(MIB);
    dev.seek(SeekFrom::Start(0))?;
    dev.write_all(&zeros[..head as usize])?;
    let tail_start = size.saturating_sub(MIB).max(head);
    dev.seek(SeekFrom::Start(tail_start))?;
    dev.write_all(&zeros[..(size - tail_start) as usize])?;
    dev.flush()
}

/// Writes the planned table to `file` (whole disk or image), replacing any
/// table and the old first/last MiB. Syncs before returning.
pub fn write_table(file: &mut File, plan: &DevicePlan) -> Result<(), PartitionError> {
    let size = device_size(file)?;
    // A bigger disk only leaves space unused; a smaller one cannot hold the plan.
    if size < plan.size {
        return Err(PartitionError::SizeMismatch {
            planned: plan.size,
            actual: size,
        });
    }
    wipe_table(file)?;
    match plan.table {
        TableKind::Gpt => write_gpt(file, plan, size)?,
        TableKind::Msdos => write_mbr(file, plan)?,
    }
    file.sync_all()?;
    Ok(())
}

fn write_gpt(file: &mut File, plan: &DevicePlan, size: u64) -> Result<(), PartitionError> {
    let sectors = size / SECTOR;
    let mbr =
        gpt::mbr::ProtectiveMBR::with_lb_size(u32::try_from(sectors - 1).unwrap_or(0xFFFF_FFFF));
    mbr.overwrite_lba0(file).map_err(gpt_err)?;
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .change_partition_count(true)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, plan.disk_guid)
        .map_err(gpt_err)?;
    let mut map = std::collections::BTreeMap::new();
    for p in &plan.partitions {
        map.insert(
            p.number,
            gpt::partition::Partition {
                part_type_guid: gpt::partition_types::Type {
                    guid: p.type_guid,
                    os: gpt::partition_types::OperatingSystem::None,
                },
                part_guid: p.part_guid.unwrap_or_else(Uuid::new_v4),
                first_lba: p.start / SECTOR,
                last_lba: p.end() / SECTOR - 1,
                flags: 0,
                name: p.label.clone(),
            },
        );
    }
    disk.update_partitions(map).map_err(gpt_err)?;
    let last_usable = disk.header().last_usable;
    if let Some(p) = plan
        .partitions
        .iter()
        .find(|p| p.end() / SECTOR - 1 > last_usable)
    {
        return Err(PartitionError::Gpt(format!(
            "partition {} ends past the last usable sector {last_usable}",
            p.number
        )));
    }
    disk.write().map_err(gpt_err)?;
    Ok(())
}

fn write_mbr(file: &mut File, plan: &DevicePlan) -> Result<(), PartitionError> {
    let mbr_err = |e: mbrman::Error| PartitionError::Mbr(e.to_string());
    let sig = plan.disk_signature.unwrap_or(0).to_le_bytes();
    let mut mbr = mbrman::MBR::new_from(file, SECTOR as u32, sig).map_err(mbr_err)?;
    for (i, p) in plan.partitions.iter().enumerate() {
        let to_u32 = |v: u64| {
            u32::try_from(v / SECTOR)
                .map_err(|_| PartitionError::Mbr("partition beyond 2 TiB".into()))
        };
        mbr[i + 1] = mbrman::MBRPartitionEntry {
            boot: if i == 0 {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: mbrman::CHS::empty(),
            sys: p.mbr_type.unwrap_or(0x83),
            last_chs: mbrman::CHS::empty(),
            starting_lba: to_u32(p.start)?,
            sectors: to_u32(p.size)?,
        };
    }
    mbr.write_into(file).map_err(mbr_err)?;
    Ok(())
}

/// Reads the table on `dev`: GPT first (valid primary or backup header),
/// then an msdos table, else [`FoundTable::None`].
pub fn read_table<D: Read + Write + Seek + std::fmt::Debug>(
    dev: &mut D,
) -> Result<FoundTable, PartitionError> {
    let mut lba0 = [0u8; 512];
    dev.seek(SeekFrom::Start(0))?;
    dev.read_exact(&mut lba0)?;
    if lba0[510..512] != [0x55, 0xAA] {
        // No MBR signature: still look for a (backup) GPT header.
        if !has_gpt_signature(dev)? {
            return Ok(FoundTable::None);
        }
    }
    let protective = lba0[446 + 4] == 0xEE;
    if protective || has_gpt_signature(dev)? {
        let disk = gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            .open_from_device(&mut *dev)
            .map_err(gpt_err)?;
        let partitions = disk
            .partitions()
            .iter()
            .filter(|(_, p)| p.is_used())
            .map(|(n, p)| FoundPartition {
                number: *n,
                start: p.first_lba * SECTOR,
                size: (p.last_lba + 1 - p.first_lba) * SECTOR,
                type_guid: Some(p.part_type_guid.guid),
                part_guid: Some(p.part_guid),
                mbr_type: None,
                name: p.name.clone(),
            })
            .collect();
        return Ok(FoundTable::Gpt {
            disk_guid: *disk.guid(),
            partitions,
        });
    }
    dev.seek(SeekFrom::Start(0))?;
    let mbr = mbrman::MBR::read_from(dev, SECTOR as u32)
        .map_err(|e| PartitionError::Mbr(e.to_string()))?;
    let partitions = mbr
        .header
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| FoundPartition {
            number: i as u32,
            start: u64::from(p.starting_lba) * SECTOR,
            size: u64::from(p.sectors) * SECTOR,
            type_guid: None,
            part_guid: None,
            mbr_type: Some(p.sys),
            name: String::new(),
        })
        .collect();
    Ok(FoundTable::Msdos {
        signature: u32::from_le_bytes(mbr.header.disk_signature),
        partitions,
    })
}

fn has_gpt_signature<D: Read + Seek>(dev: &mut D) -> std::io::Result<bool> {
    let mut sig = [0u8; 8];
    dev.seek(SeekFrom::Start(SECTOR))?;
    dev.read_exact(&mut sig)?;
    if &sig == b"EFI PART" {
        return Ok(true);
    }
    let size = device_size(dev)?;
    if size < SECTOR * 2 {
        return Ok(false);
    }
    dev.seek(SeekFrom::Start(size - SECTOR))?;
    dev.read_exact(&mut sig)?;
    Ok(&sig == b"EFI PART")
}
