//! The EFI system partition image (`efi.img`) appended to the ISO: a FAT
//! filesystem written in userspace with `fatfs` (this host's kernel has no
//! vfat), holding `EFI/BOOT/BOOTX64.EFI`.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

const MIB: u64 = 1 << 20;

/// Size of a FAT image that holds `payload` bytes of files with room to spare
/// (whole MiB, at least 4 MiB).
pub fn image_size(payload: u64) -> u64 {
    let with_slack = payload + payload / 8 + 2 * MIB;
    with_slack.div_ceil(MIB).max(4) * MIB
}

/// Writes `image` as a fresh FAT filesystem labelled `label` containing
/// `files`: (path inside the image with `/` separators, bytes).
pub fn write_fat_image(
    image: &Path,
    label: &str,
    files: &[(&str, Vec<u8>)],
) -> Result<(), EspError> {
    let err = |what: &'static str| {
        let path = image.to_path_buf();
        move |source| EspError::Io { what, path, source }
    };
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .map_err(err("creating the FAT image"))?;
    file.set_len(image_size(total))
        .map_err(err("sizing the FAT image"))?;
    let mut vol_label = [b' '; 11];
    for (d, s) in vol_label.iter_mut().zip(label.to_ascii_uppercase().bytes()) {
        *d = s;
    }
    let mut buf = fscommon::BufStream::new(file);
    fatfs::format_volume(
        &mut buf,
        fatfs::FormatVolumeOptions::new().volume_label(vol_label),
    )
    .map_err(err("formatting the FAT image"))?;
    let fs = fatfs::FileSystem::new(buf, fatfs::FsOptions::new())
        .map_err(err("opening the FAT image"))?;
    {
        let root = fs.root_dir();
        for (path, bytes) in files {
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let (name, dirs) = parts.split_last().ok_or_else(|| EspError::Io {
                what: "empty path for the FAT image",
                path: image.to_path_buf(),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            })?;
            let mut dir = root.clone();
            for d in dirs {
                dir = match dir.open_dir(d) {
                    Ok(existing) => existing,
                    Err(_) => dir
                        .create_dir(d)
                        .map_err(err("creating a directory in the FAT image"))?,
                };
            }
            let mut f = dir
                .create_file(name)
                .map_err(err("creating a file in the FAT image"))?;
            f.truncate()
                .map_err(err("truncating a file in the FAT image"))?;
            f.write_all(bytes)
                .map_err(err("writing a file into the FAT image"))?;
            f.flush()
                .map_err(err("writing a file into the FAT image"))?;
        }
    }
    fs.unmount().map_err(err("closing the FAT image"))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn sizes_round_up_to_whole_mib() {
        assert_eq!(image_size(0), 4 * MIB);
        assert_eq!(image_size(6 * MIB) % MIB, 0);
        assert!(image_size(6 * MIB) >= 6 * MIB + 6 * MIB / 8 + 2 * MIB);
    }

    #[test]
    fn files_read_back_through_fatfs() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("efi.img");
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        write_fat_image(
            &img,
            "opdbus-efi",
            &[
                ("EFI/BOOT/BOOTX64.EFI", big.clone()),
                ("EFI/BOOT/grub.cfg", b"x".to_vec()),
            ],
        )
        .unwrap();
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        let fs =
            fatfs::FileSystem::new(fscommon::BufStream::new(f), fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "OPDBUS-EFI");
        let mut got = Vec::new();
        fs.root_dir()
            .open_file("EFI/BOOT/BOOTX64.EFI")
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert_eq!(got, big);
    }

    #[test]
    fn mtools_sees_the_files() {
        if std::process::Command::new("mdir")
            .arg("-V")
            .output()
            .is_err()
        {
            eprintln!("mtools not installed; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("efi.img");
        write_fat_image(&img, "OPDBUS", &[("EFI/BOOT/BOOTX64.EFI", vec![7u8; 1000])]).unwrap();
        let out = std::process::Command::new("mdir")
            .args(["-b", "-i"])
            .arg(&img)
            .arg("::/EFI/BOOT")
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("BOOTX64.EFI"),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
