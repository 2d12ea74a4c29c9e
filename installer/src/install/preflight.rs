//! Checks made before the first write to a disk: everything an install will
//! read later (payload and its checksum, agent binary, templates, build
//! tools) is looked at now, so a typo costs a message, not a wiped disk.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use opdbus_state::model::{Bootloader, Distribution, State};

use super::{BaseSource, InstallOptions};
use crate::bootloader;
use crate::payload::{self, BuildTool};

/// The templates `handoff` copies into the target, relative to the templates
/// folder.
pub const TEMPLATE_FILES: [&str; 5] = [
    "systemd/op-dbus-agent.service",
    "systemd/op-dbus-result.service",
    "systemd/op-dbus-firewall.service",
    "dbus/org.opdbus.conf",
    "kernel/zzz-op-dbus",
];

/// Opens `path` for reading and checks it is a regular file: what a later
/// step will need from it.
fn readable_file(path: &Path, what: &str, fix: &str) -> Result<File> {
    let f = File::open(path)
        .with_context(|| format!("{what} {} cannot be read; {fix}", path.display()))?;
    let md = f
        .metadata()
        .with_context(|| format!("looking at {what} {}", path.display()))?;
    if !md.is_file() {
        bail!("{what} {} is not a regular file; {fix}", path.display());
    }
    Ok(f)
}

/// Everything that can be checked without writing; an error names the file
/// and what to do.
pub fn preflight(state: &State, source: &BaseSource, opts: &InstallOptions) -> Result<()> {
    match source {
        BaseSource::Payload(p) => {
            readable_file(
                p,
                "the payload",
                "check --payload (a rootfs tar.zst built by `op-dbus-install payload`)",
            )?;
            let pinned = state
                .bootstrap
                .as_ref()
                .and_then(|b| b.payload.as_ref())
                .and_then(|p| p.sha256.as_deref());
            match pinned {
                Some(sha) => {
                    if payload::parse_sha256sum(sha).is_none() {
                        bail!("bootstrap.payload.sha256 in the state is not a sha256 digest (64 hex digits)");
                    }
                }
                None => {
                    let sidecar = payload::sidecar_path(p);
                    readable_file(
                        &sidecar,
                        "the payload's checksum file",
                        "`op-dbus-install payload` writes it next to the payload; copy it along",
                    )?;
                    payload::extract::read_sidecar(p)?;
                }
            }
        }
        BaseSource::Debootstrap { .. } => {
            if BuildTool::detect().is_none() {
                bail!("--debootstrap needs mmdebstrap or debootstrap on PATH: run `apt-get install mmdebstrap`, or pass --payload FILE");
            }
        }
    }
    let agent = readable_file(
        &opts.agent_binary,
        "the agent binary",
        "build it, or pass --agent",
    )?;
    if state.plugins.users.is_some() {
        use std::os::unix::fs::PermissionsExt;
        let mode = agent.metadata()?.permissions().mode();
        if mode & 0o111 == 0 {
            bail!(
                "the agent binary {} is not executable and the state's users are created by running it; chmod +x it, or pass --agent",
                opts.agent_binary.display()
            );
        }
    }
    if let Some(p) = &opts.agent_package {
        readable_file(
            p,
            "the agent package",
            "build it with ci/build-debs, or pass --agent-package",
        )?;
    }
    for rel in TEMPLATE_FILES {
        let path: PathBuf = opts.templates.join(rel);
        readable_file(
            &path,
            "the template",
            "pass --templates DIR (the repository's templates/ folder)",
        )?;
    }
    if let Some(b) = state
        .bootstrap
        .as_ref()
        .filter(|b| b.distribution == Distribution::Proxmox)
    {
        proxmox_key(b, &opts.proxmox_keys)?;
    }
    if let BaseSource::Payload(p) = source {
        // The digest first: a corrupt payload is named as such, and nothing
        // is listed or written from bytes that were not the ones built.
        payload::extract::verify_file(p, &super::expected_sha256(state))?;
        crate::interrupt::check()?;
        payload_has_what_boots(state, p)?;
    }
    Ok(())
}

/// The Proxmox release key the install will trust is on the medium, and
/// (for Proxmox's own repository) is the one Proxmox publishes.
fn proxmox_key(b: &opdbus_state::model::Bootstrap, dir: &Path) -> Result<()> {
    let key = crate::proxmox::release_key(&b.suite)?;
    let path = crate::proxmox::medium_keyring(dir, &b.suite);
    let fix = format!(
        "rebuild the ISO with `op-dbus-iso build --proxmox-key FILE` (FILE: {} from a connected machine, fingerprint {})",
        key.url, key.fingerprint
    );
    let mut f = readable_file(&path, "the Proxmox release key", &fix)?;
    let custom_repo = b.mirror.as_deref().is_some_and(|m| m.contains("proxmox"));
    if !custom_repo {
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut data)
            .with_context(|| format!("reading the Proxmox release key {}", path.display()))?;
        crate::proxmox::verify_release_key(key, &path, &data)?;
    }
    Ok(())
}

/// What the bootloader phase will read from the extracted payload, for a
/// Debian install (Proxmox VE brings its kernel and boot packages later).
fn boot_files(state: &State) -> Vec<(&'static str, String)> {
    let Some(b) = state.bootstrap.as_ref() else {
        return Vec::new();
    };
    if b.distribution != Distribution::Debian {
        return Vec::new();
    }
    let mut out = vec![
        ("a kernel (linux-image)", "boot/vmlinuz-".to_string()),
        (
            "an initramfs (initramfs-tools)",
            "boot/initrd.img-".to_string(),
        ),
    ];
    if b.firmware.uefi() && b.bootloader != Bootloader::Grub {
        out.push((
            "systemd-boot's EFI binary (systemd-boot-efi)",
            bootloader::EFI_BINARY.trim_start_matches('/').to_string(),
        ));
    }
    if b.firmware.bios() || b.bootloader == Bootloader::Grub {
        out.push((
            "GRUB's BIOS modules (grub-pc-bin)",
            bootloader::GRUB_BIOS_MODULES
                .trim_start_matches('/')
                .to_string(),
        ));
    }
    out
}

/// Removes from `wanted` every path the tar.zst in `f` lists (a prefix
/// ending in `-` matches any name that starts with it).
fn strike_listed(f: File, wanted: &mut Vec<(&'static str, String)>) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(f)?);
    for entry in archive.entries()? {
        let entry = entry?;
        let path = entry.path()?;
        let name = path.to_string_lossy();
        let name = name.trim_start_matches("./").trim_start_matches('/');
        wanted.retain(|(_, want)| {
            if want.ends_with('-') {
                !name.starts_with(want.as_str())
            } else {
                name != want
            }
        });
        if wanted.is_empty() || crate::interrupt::interrupted().is_some() {
            break;
        }
    }
    Ok(())
}

/// Lists the payload (decompressing it, writing nothing) and checks that it
/// holds every file in [`boot_files`]: a payload that cannot boot is refused
/// before the disk is partitioned, not after it is filled.
fn payload_has_what_boots(state: &State, payload: &Path) -> Result<()> {
    let mut wanted = boot_files(state);
    if wanted.is_empty() {
        return Ok(());
    }
    let f =
        File::open(payload).with_context(|| format!("opening payload {}", payload.display()))?;
    strike_listed(f, &mut wanted).with_context(|| {
        format!(
            "listing payload {} (a zstd-compressed tar) before writing the disk; rebuild it or copy it again",
            payload.display()
        )
    })?;
    crate::interrupt::check()?;
    if let Some((what, path)) = wanted.first() {
        bail!(
            "payload {} lacks {what}: no /{path}{} in it, and the bootloader step needs it; rebuild it with `op-dbus-install payload` or add the package",
            payload.display(),
            if path.ends_with('-') { "*" } else { "" }
        );
    }
    Ok(())
}
