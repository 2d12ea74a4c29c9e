//! `op-dbus-agent discover [--plugin P]… [--output FILE]`: a state.json
//! describing the running host (the plugins that can describe what they
//! manage without a desired state), validated strictly; `diff` of it on the
//! same host is empty.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::query::{runtime, TargetArgs};
use super::Global;
use crate::engine::ApplyOptions;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this plugin (repeatable); default: every plugin that can discover.
    #[arg(long = "plugin", value_name = "P")]
    pub plugins: Vec<String>,
    /// Write the state here (mode 0600, replaced) instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<ExitCode> {
    let ctx = args.target.context(global, ApplyOptions::default());
    let engine = crate::plugins::standard();
    let d = runtime()?.block_on(engine.discover(&ctx, &args.plugins))?;
    for c in &d.contributions {
        if c.sections.is_empty() {
            tracing::debug!("plugin {}: nothing discovered", c.plugin);
        } else {
            tracing::info!(
                "plugin {}: plugins.{}",
                c.plugin,
                c.sections.join(", plugins.")
            );
        }
    }
    let text = d.text();
    match &args.output {
        None => print!("{text}"),
        Some(path) => write_file(path, &text)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to a temporary file beside `path` (0600), then renames it.
fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("--output {}: not a file path", path.display()))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("replacing {} with the discovered state", path.display()))
}
