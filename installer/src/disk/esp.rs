//! The EFI system partition: FAT32 over the partition's byte range of the
//! disk, written in user space by the project's one FAT writer
//! ([`opdbus_common::fat`]).

pub use opdbus_common::fat::{FatError as EspError, Location as EspLocation, Volume as Esp};

use opdbus_common::fat;

/// Formats the range as FAT32 with the volume serial `uuid` (`XXXX-XXXX`)
/// and an optional label (at most 11 characters, upper-cased; `EFI` when
/// unset).
pub fn format(loc: &EspLocation, uuid: &str, label: Option<&str>) -> Result<(), EspError> {
    let id = fat::volume_id(uuid).ok_or_else(|| EspError::BadUuid(uuid.to_string()))?;
    fat::format(
        loc,
        &fat::Format {
            fat32: true,
            volume_id: Some(id),
            label: Some(label.unwrap_or("EFI").to_string()),
        },
    )
}
