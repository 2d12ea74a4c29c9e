//! `op-dbus-install wizard`: asks for an install step by step and writes a
//! state.json the validator accepts. With `--from` it edits an existing file
//! and changes only what the answers change (see `edit`).

pub mod answers;
pub mod checks;
pub mod edit;
pub mod machine;
pub mod output;
pub mod review;
pub mod ui;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use opdbus_state::model::{DiskSelector, State};
use serde_json::Value;

use answers::{Answers, Layout, NetMode};
use machine::Candidate;

/// Where the wizard reads the machine and writes its result.
#[derive(Debug, Clone)]
pub struct Options {
    /// An existing state to edit.
    pub from: Option<PathBuf>,
    pub output: PathBuf,
    /// sysfs root (`/sys`): disks and network interfaces.
    pub sys: PathBuf,
    /// devfs root (`/dev`): by-id links.
    pub dev: PathBuf,
    /// tz database for checking timezones (`/usr/share/zoneinfo`).
    pub zoneinfo: PathBuf,
}

/// What the operator chose at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The state was written to `path`.
    Written { path: PathBuf },
    /// The state was written and the operator confirmed installing it onto
    /// `disk` (erasing it) now.
    Install {
        path: PathBuf,
        key: String,
        disk: PathBuf,
    },
}

/// The file to edit: its JSON document (kept verbatim) and its typed form.
struct Base {
    doc: Value,
    state: State,
}

fn load_base(path: &Path) -> Result<Base> {
    let file = path.display().to_string();
    let text = opdbus_state::read_state_text(path)
        .map_err(|e| anyhow::anyhow!("{}", opdbus_state::parse::read_line(&file, &e)))?;
    let state = opdbus_state::parse::parse_only(&text).map_err(|d| {
        anyhow::anyhow!(
            "{}\nfix the file (or start without --from) and run the wizard again",
            d.render(&file)
        )
    })?;
    let doc: Value = serde_json::from_str(&text).with_context(|| format!("parsing {file}"))?;
    Ok(Base { doc, state })
}

/// The selector to store for the system disk: None keeps the file's one when
/// it already names the chosen disk.
fn selector_for(base: Option<&Base>, a: &Answers, disks: &[Candidate]) -> Option<DiskSelector> {
    let chosen = disks.iter().find(|c| c.disk.name == a.disk)?;
    if a.layout == Layout::Keep {
        let infos: Vec<_> = disks.iter().map(|c| c.disk.clone()).collect();
        let existing = base
            .and_then(|b| b.state.plugins.storage.as_ref())
            .and_then(|s| s.devices.get(&a.device_key))
            .and_then(|d| d.selector.as_ref());
        if let Some(sel) = existing {
            if crate::inventory::select(&a.device_key, sel, &infos).is_ok_and(|d| d.name == a.disk)
            {
                return None;
            }
        }
    }
    Some(chosen.disk.stable_selector())
}

/// The document for the current answers.
fn build(base: Option<&Base>, orig: Option<&Answers>, a: &Answers, disks: &[Candidate]) -> Value {
    let empty = Value::Object(serde_json::Map::new());
    let doc = base.map(|b| &b.doc).unwrap_or(&empty);
    edit::apply(doc, orig, a, selector_for(base, a, disks).as_ref())
}

/// The disk plan for `doc` on the chosen disk, or a summary from the state.
fn preview(doc: &Value, a: &Answers, disks: &[Candidate]) -> String {
    let state: State = match serde_json::from_value(doc.clone()) {
        Ok(s) => s,
        Err(e) => return format!("(no plan: {e})"),
    };
    let mut sizes = BTreeMap::new();
    if let Some(c) = disks.iter().find(|c| c.disk.name == a.disk) {
        sizes.insert(a.device_key.clone(), c.disk.size);
    }
    if let Some(s) = &state.plugins.storage {
        let infos: Vec<_> = disks.iter().map(|c| c.disk.clone()).collect();
        for (k, d) in &s.devices {
            if sizes.contains_key(k) {
                continue;
            }
            if let Some(found) = d
                .selector
                .as_ref()
                .and_then(|sel| crate::inventory::select(k, sel, &infos).ok())
            {
                sizes.insert(k.clone(), found.size);
            }
        }
    }
    match review::disk_plan(&state, &sizes) {
        Ok(plan) => review::render_plan(&plan),
        Err(e) => format!(
            "(the plan cannot be computed here: {e:#})\nLayout as written in the state:\n{}",
            review::render_state_summary(&state)
        ),
    }
}

fn summary(a: &Answers) -> String {
    let net = match a.net.mode {
        NetMode::Keep => "as in the file".to_string(),
        NetMode::Unmanaged => "not configured".to_string(),
        NetMode::Dhcp => format!("DHCP on {}", a.net.nic),
        NetMode::Static => format!("{} gw {} on {}", a.net.address, a.net.gateway, a.net.nic),
    };
    let bridge =
        if a.net.bridge.is_empty() || matches!(a.net.mode, NetMode::Keep | NetMode::Unmanaged) {
            String::new()
        } else {
            format!(" via bridge {}", a.net.bridge)
        };
    format!(
        "Host {}{} | {} {} | firmware {} | {} {} {}\nNetwork: {net}{bridge} | admin: {}",
        a.hostname,
        if a.domain.is_empty() {
            String::new()
        } else {
            format!(".{}", a.domain)
        },
        edit::distribution_name(a.distribution),
        a.suite,
        edit::firmware_name(a.firmware),
        a.timezone,
        a.locale,
        a.keyboard,
        if a.admin.is_empty() { "none" } else { &a.admin },
    )
}

/// Runs the wizard until the state is written (or the operator aborts).
pub fn run(opts: &Options) -> Result<Outcome> {
    let theme = ui::theme();
    let theme = theme.as_ref();
    let disks = ui::spin("Reading disks", || {
        machine::candidates(&opts.sys, &opts.dev)
    });
    let nics = machine::nics(&opts.sys);
    if !disks.iter().any(Candidate::selectable) {
        let seen: Vec<String> = disks.iter().map(Candidate::line).collect();
        bail!(
            "no disk of this machine can be installed on (disks seen: {}); attach a disk that is not in use",
            if seen.is_empty() { "none".to_string() } else { seen.join("; ") }
        );
    }
    let base = opts.from.as_deref().map(load_base).transpose()?;
    let orig = base
        .as_ref()
        .map(|b| Answers::from_state(&b.state, &disks, &nics));
    let keep_key = orig
        .as_ref()
        .filter(|o| o.layout == Layout::Keep)
        .map(|o| o.device_key.clone());
    let can_keep_net = orig
        .as_ref()
        .is_some_and(|o| o.net.mode != NetMode::Unmanaged);
    let mut a = orig
        .clone()
        .unwrap_or_else(|| Answers::fresh(&disks, &nics));
    if !disks
        .iter()
        .any(|c| c.disk.name == a.disk && c.selectable())
    {
        a.disk = disks
            .iter()
            .find(|c| c.selectable())
            .map(|c| c.disk.name.clone())
            .unwrap_or_default();
    }
    loop {
        ui::disk(theme, &mut a, &disks)?;
        ui::system(theme, &mut a)?;
        let preview_of =
            |a: &Answers| preview(&build(base.as_ref(), orig.as_ref(), a, &disks), a, &disks);
        ui::layout(theme, &mut a, keep_key.as_deref(), &preview_of)?;
        ui::identity(theme, &mut a, &opts.zoneinfo)?;
        ui::network(theme, &mut a, &nics, can_keep_net)?;
        ui::root_password(theme, &mut a, base.is_some())?;
        ui::admin(theme, &mut a)?;

        let doc = build(base.as_ref(), orig.as_ref(), &a, &disks);
        let mut text = serde_json::to_string_pretty(&doc).context("serializing the state")?;
        text.push('\n');
        let file = opts.output.display().to_string();
        let checked = ui::spin("Validating", || opdbus_state::parse_str(&text, &file));
        ui::heading("Review");
        match checked {
            Err(failure) => {
                for line in failure.lines() {
                    eprintln!("{line}");
                }
                eprintln!("The answers make an invalid state; nothing was written. Going back to change them.");
                continue;
            }
            Ok(loaded) => {
                for w in &loaded.warnings {
                    eprintln!("{}", w.render(&file));
                }
            }
        }
        eprintln!("{}", summary(&a));
        eprint!("{}", preview(&doc, &a, &disks));
        match ui::next(theme, &opts.output)? {
            ui::Next::Back => continue,
            next => {
                let disk = disks
                    .iter()
                    .find(|c| c.disk.name == a.disk)
                    .map(|c| c.disk.path.clone())
                    .unwrap_or_default();
                let install = next == ui::Next::Install
                    && ui::confirm(
                        theme,
                        &format!(
                            "Everything on {} will be erased. Install now?",
                            disk.display()
                        ),
                        false,
                    )?;
                output::write_atomic(&opts.output, &text)?;
                eprintln!("Wrote {}", opts.output.display());
                let path = opts.output.clone();
                if !install {
                    eprintln!(
                        "To install: op-dbus-install install {} --disk {}={}",
                        path.display(),
                        a.device_key,
                        disk.display()
                    );
                    return Ok(Outcome::Written { path });
                }
                return Ok(Outcome::Install {
                    path,
                    key: a.device_key.clone(),
                    disk,
                });
            }
        }
    }
}
