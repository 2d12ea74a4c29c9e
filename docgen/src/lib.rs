//! The man pages and shell completions of the three binaries, generated
//! from their clap definitions. They are committed under `dist/` so that
//! packaging needs no build step for them; `tests/stale.rs` fails when they
//! no longer match the code, and `opdbus-docgen` rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

/// Where the generated files live, relative to the workspace root.
pub const DIST: &str = "dist";

/// The binaries and their clap definitions.
pub fn commands() -> Vec<clap::Command> {
    vec![
        opdbus_installer::cli::Cli::command(),
        opdbus_agent::cli::Cli::command(),
        opdbus_iso::cli::Cli::command(),
    ]
}

/// Every generated file, by path relative to [`DIST`]: `man/NAME.1` for
/// each command and each of its subcommands (`op-dbus-agent-audit-list.1`),
/// and `completions/{bash/NAME, zsh/_NAME, fish/NAME.fish}`, the names
/// bash-completion, zsh and fish look up.
pub fn generate() -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for cmd in commands() {
        let name = cmd.get_name().to_string();
        let mut built = cmd.clone().disable_help_subcommand(true);
        built.build();
        man_pages(&built, &mut files).with_context(|| format!("man pages of {name}"))?;
        for (shell, file) in [
            (Shell::Bash, format!("bash/{name}")),
            (Shell::Zsh, format!("zsh/_{name}")),
            (Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut out);
            files.insert(Path::new("completions").join(file), out);
        }
    }
    Ok(files)
}

fn man_pages(cmd: &clap::Command, files: &mut BTreeMap<PathBuf, Vec<u8>>) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, files)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).manual("op-dbus");
    let mut out = Vec::new();
    man.render(&mut out)?;
    files.insert(Path::new("man").join(man.get_filename()), out);
    Ok(())
}

/// The files under `dist` now, by relative path (what [`generate`] is
/// compared with: a page of a removed subcommand is stale too).
pub fn on_disk(dist: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) -> anyhow::Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            if path.is_dir() {
                walk(root, &path, files)?;
            } else {
                let data =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                files.insert(rel, data);
            }
        }
        Ok(())
    }
    let mut files = BTreeMap::new();
    walk(dist, dist, &mut files)?;
    Ok(files)
}

/// Replaces the generated files under `dist` (removing stale ones) and
/// returns how many were written.
pub fn write(dist: &Path) -> anyhow::Result<usize> {
    let files = generate()?;
    for sub in ["man", "completions"] {
        let dir = dist.join(sub);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
        }
    }
    for (rel, data) in &files {
        let path = dist.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files.len())
}
