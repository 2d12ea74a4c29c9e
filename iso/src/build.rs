//! `op-dbus-iso build`: the stages in order (state, live system, payload,
//! op-dbus layer, boot images, ISO), each behind a progress line, then a
//! summary with sizes and hashes.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::{boot, layer, live, menu, xorriso};

/// Everything `build` needs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub state: PathBuf,
    pub output: PathBuf,
    pub auto: bool,
    pub cache: Option<PathBuf>,
    pub installer: PathBuf,
    pub agent: PathBuf,
    pub templates: PathBuf,
    /// Reuse this payload (with its `.sha256`) instead of building one.
    pub payload: Option<PathBuf>,
    pub kargs: String,
    /// `--proxmox-key`, checked.
    pub proxmox_keys: Vec<layer::ProxmoxKey>,
}

/// What a build produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub iso: PathBuf,
    pub iso_size: u64,
    pub iso_sha256: String,
    pub squashfs_sha256: String,
    pub live_from_cache: bool,
    pub layer_sha256: String,
    pub payload_sha256: String,
    pub payload_from_cache: bool,
    pub state_sha256: String,
    /// Seconds per stage.
    pub stages: Vec<(String, f64)>,
}

/// Hex sha256 and size of a file.
pub fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// One progress line per stage.
struct Stages {
    total: usize,
    done: usize,
    timings: Vec<(String, f64)>,
}

impl Stages {
    fn run<T>(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        self.done += 1;
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{prefix}] {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(format!("{}/{}", self.done, self.total));
        bar.set_message(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        let start = Instant::now();
        let result = f();
        let secs = start.elapsed().as_secs_f64();
        self.timings.push((name.to_string(), secs));
        match &result {
            Ok(_) => bar.finish_with_message(format!("{name}: done in {secs:.1} s")),
            Err(_) => bar.abandon_with_message(format!("{name}: FAILED after {secs:.1} s")),
        }
        result
    }
}

/// Builds the ISO described by `opts`.
pub fn build(opts: &BuildOptions) -> anyhow::Result<Summary> {
    let mut stages = Stages {
        total: 6,
        done: 0,
        timings: Vec::new(),
    };
    let work = tempfile::Builder::new()
        .prefix("op-dbus-iso-")
        .tempdir_in(
            opts.output
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .context("creating a work directory next to the output")?;
    let cache = match &opts.cache {
        Some(c) => c.clone(),
        None => work.path().join("cache"),
    };
    fs::create_dir_all(&cache)
        .with_context(|| format!("creating the cache directory {}", cache.display()))?;

    let (state_bytes, suite) = stages.run("reading the state", || {
        let (bytes, suite, proxmox) = read_state(&opts.state)?;
        if proxmox && !opts.proxmox_keys.iter().any(|k| k.suite == suite) {
            let key = opdbus_installer::proxmox::release_key(&suite)?;
            anyhow::bail!(
                "{} installs Proxmox VE on {suite}, and no --proxmox-key for {suite} was given: \
                 the installer could not trust Proxmox's repository; download {} (fingerprint {}) \
                 on a connected machine and pass --proxmox-key FILE",
                opts.state.display(),
                key.url,
                key.fingerprint
            );
        }
        Ok((bytes, suite))
    })?;

    let live_image = stages.run("live system (mmdebstrap + squashfs; cached)", || {
        let mirror = opdbus_installer::payload::mirror::host_mirror(Path::new("/"))
            .context("reading the build host's apt sources for the live system's mirror")?;
        let spec = live::LiveSpec::new(&suite, &mirror.uri, mirror.signed_by.as_deref());
        live::build_or_reuse(&spec, &cache)
    })?;

    let payload = stages.run("target payload", || payload(opts, &cache, work.path()))?;

    let layer_file = work.path().join("op-dbus.squashfs");
    stages.run(
        "op-dbus layer (binaries, templates, units, agent package)",
        || {
            let root = work.path().join("layer");
            layer::stage(
                &layer::LayerInputs {
                    installer: opts.installer.clone(),
                    agent: opts.agent.clone(),
                    templates: opts.templates.clone(),
                    proxmox_keys: opts.proxmox_keys.clone(),
                },
                &root,
            )?;
            // The installer installs this package into the target (dpkg -i), so
            // the installed system's dpkg knows the agent and apt can upgrade it.
            let inputs = opdbus_common::deb::Inputs {
                agent: opts.agent.clone(),
                installer: None,
                dist: opdbus_common::deb::Inputs::dist_beside(&opts.templates),
                templates: opts.templates.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let deb = root.join(opdbus_common::deb::LIVE_AGENT_PACKAGE.trim_start_matches('/'));
            fs::create_dir_all(deb.parent().context("the package path has a parent")?)
                .with_context(|| format!("creating the directory of {}", deb.display()))?;
            opdbus_common::deb::build(&opdbus_common::deb::agent_package(&inputs)?, &deb)?;
            layer::pack(&root, &layer_file)
        },
    )?;

    let iso_root = work.path().join("iso");
    let efi_img = work.path().join("efi.img");
    stages.run("boot images (GRUB BIOS + EFI, ESP via fatfs)", || {
        let search_file = format!("/opdbus/medium-{}", uuid::Uuid::new_v4().simple());
        let od = iso_root.join("opdbus");
        fs::create_dir_all(&od).with_context(|| format!("creating {}", od.display()))?;
        fs::write(
            iso_root.join(search_file.trim_start_matches('/')),
            "op-dbus live medium\n",
        )
        .context("writing the medium's search file")?;
        fs::write(od.join("state.json"), &state_bytes).context("writing the embedded state")?;
        let mut m = menu::Menu::new(opts.auto, &search_file);
        m.extra_kargs = opts.kargs.clone();
        write_menu(&iso_root, &m)?;
        boot::bios_tree(&search_file, work.path(), &iso_root)?;
        let efi = work.path().join("BOOTX64.EFI");
        boot::efi_image(&search_file, work.path(), &efi)?;
        let bytes = fs::read(&efi).with_context(|| format!("reading {}", efi.display()))?;
        opdbus_common::fat::write_image(&efi_img, "OPDBUS-EFI", &[("EFI/BOOT/BOOTX64.EFI", bytes)])
            .context("writing the EFI image of the medium")?;
        Ok(())
    })?;

    stages.run("ISO (xorriso)", || {
        let grafts = vec![
            (
                "/live/filesystem.squashfs".to_string(),
                live_image.squashfs.clone(),
            ),
            ("/live/vmlinuz".to_string(), live_image.vmlinuz.clone()),
            ("/live/initrd.img".to_string(), live_image.initrd.clone()),
            ("/live/op-dbus.squashfs".to_string(), layer_file.clone()),
            ("/opdbus/payload.tar.zst".to_string(), payload.0.clone()),
            (
                "/opdbus/payload.tar.zst.sha256".to_string(),
                payload.1.clone(),
            ),
        ];
        let tmp_out = opts.output.with_extension("iso.partial");
        let _ = fs::remove_file(&tmp_out);
        xorriso::assemble(&iso_root, &grafts, &efi_img, &tmp_out)?;
        fs::rename(&tmp_out, &opts.output)
            .with_context(|| format!("moving the ISO into place at {}", opts.output.display()))
    })?;

    let (iso_sha256, iso_size) = hash_file(&opts.output)?;
    Ok(Summary {
        iso: opts.output.clone(),
        iso_size,
        iso_sha256,
        squashfs_sha256: hash_file(&live_image.squashfs)?.0,
        live_from_cache: live_image.from_cache,
        layer_sha256: hash_file(&layer_file)?.0,
        payload_sha256: payload.2,
        payload_from_cache: payload.3,
        state_sha256: hex::encode(Sha256::digest(&state_bytes)),
        stages: stages.timings,
    })
}

/// Reads and checks the state; returns its bytes and the Debian suite.
/// The state's bytes, its suite and whether it installs Proxmox VE.
fn read_state(path: &Path) -> anyhow::Result<(Vec<u8>, String, bool)> {
    let bytes = fs::read(path).with_context(|| format!("reading the state {}", path.display()))?;
    let state: opdbus_state::State = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not a valid state.json (run `op-dbus-install validate {}` for details)",
            path.display(),
            path.display()
        )
    })?;
    let suite = state
        .bootstrap
        .as_ref()
        .map(|b| b.suite.clone())
        .unwrap_or_else(|| "bookworm".into());
    let proxmox = state
        .bootstrap
        .as_ref()
        .is_some_and(|b| b.distribution == opdbus_state::model::Distribution::Proxmox);
    Ok((bytes, suite, proxmox))
}

/// The payload: the given one, or built (and cached) by the installer's
/// payload builder. Returns (file, sidecar, sha256, from_cache).
fn payload(
    opts: &BuildOptions,
    cache: &Path,
    work: &Path,
) -> anyhow::Result<(PathBuf, PathBuf, String, bool)> {
    use opdbus_installer::payload::{parse_sha256sum, sidecar_path};
    if let Some(p) = &opts.payload {
        let sidecar = sidecar_path(p);
        let text = fs::read_to_string(&sidecar).with_context(|| {
            format!(
                "reading {} (a payload needs its .sha256 next to it)",
                sidecar.display()
            )
        })?;
        let sha = parse_sha256sum(&text)
            .with_context(|| format!("{} is not a sha256sum line", sidecar.display()))?;
        return Ok((p.clone(), sidecar, sha, true));
    }
    let args = opdbus_installer::cli::payload::Args {
        state: Some(opts.state.clone()),
        output: work.join("payload.tar.zst"),
        cache: Some(cache.join("payload")),
        suite: None,
        mirror: None,
        packages: Vec::new(),
        json: false,
    };
    let spec = opdbus_installer::cli::payload::spec_from_args(&args)?;
    let info = opdbus_installer::payload::build_payload(&spec, &args.output, args.cache.as_deref())
        .context("building the target payload")?;
    Ok((
        info.path.clone(),
        sidecar_path(&info.path),
        info.sha256,
        info.from_cache,
    ))
}

/// Writes `/opdbus/menu.json` and `/boot/grub/grub.cfg` under `iso_root`.
pub fn write_menu(iso_root: &Path, m: &menu::Menu) -> anyhow::Result<()> {
    let grub = iso_root.join("boot/grub");
    fs::create_dir_all(&grub).with_context(|| format!("creating {}", grub.display()))?;
    fs::create_dir_all(iso_root.join("opdbus")).context("creating /opdbus")?;
    fs::write(grub.join("grub.cfg"), m.grub_cfg()).context("writing grub.cfg")?;
    let json = serde_json::to_string_pretty(m).context("serializing the menu")?;
    fs::write(iso_root.join("opdbus/menu.json"), json + "\n").context("writing menu.json")
}

/// Human-readable summary lines.
pub fn summary_text(s: &Summary) -> String {
    let mut t = format!(
        "ISO      {} ({:.1} MiB)\n  sha256 {}\nsquashfs sha256 {}{}\nlayer    sha256 {}\npayload  sha256 {}{}\nstate    sha256 {}\n",
        s.iso.display(),
        s.iso_size as f64 / 1048576.0,
        s.iso_sha256,
        s.squashfs_sha256,
        if s.live_from_cache { " (from cache)" } else { "" },
        s.layer_sha256,
        s.payload_sha256,
        if s.payload_from_cache { " (reused)" } else { "" },
        s.state_sha256
    );
    for (name, secs) in &s.stages {
        t.push_str(&format!("  {secs:7.1} s  {name}\n"));
    }
    t
}
