//! `op-dbus-install payload --state STATE --output FILE`: builds the offline
//! base-system payload (tar.zst) and `FILE.sha256` from the state's
//! `bootstrap` section; flags override single fields.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::payload::{build_payload, Distribution, PayloadSpec};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// State file whose `bootstrap` section (distribution, suite, mirror,
    /// packages) describes the payload; without it: Debian bookworm.
    #[arg(long, value_name = "STATE")]
    pub state: Option<PathBuf>,
    /// Payload file to write (tar.zst); FILE.sha256 is written next to it.
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// Directory of earlier builds, keyed by spec and mirror; reused when the
    /// checksum still matches.
    #[arg(long, value_name = "DIR", env = "OPDBUS_CACHE")]
    pub cache: Option<PathBuf>,
    /// Debian suite (overrides the state).
    #[arg(long)]
    pub suite: Option<String>,
    /// Mirror URL (overrides the state; default: this host's apt sources).
    #[arg(long)]
    pub mirror: Option<String>,
    /// Extra package (repeatable; added to the state's list).
    #[arg(long = "package", value_name = "NAME")]
    pub packages: Vec<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The spec the arguments describe (pure; reads only the state file).
pub fn spec_from_args(args: &Args) -> anyhow::Result<PayloadSpec> {
    let (mut distribution, mut suite, mut mirror, mut packages) = (
        Distribution::Debian,
        "bookworm".to_string(),
        None,
        Vec::new(),
    );
    if let Some(path) = &args.state {
        // The state crate's errors name the file already.
        let loaded = opdbus_state::load(path)?;
        let state = loaded.state;
        if let Some(b) = state.bootstrap {
            distribution = match b.distribution {
                opdbus_state::model::Distribution::Debian => Distribution::Debian,
                opdbus_state::model::Distribution::Proxmox => Distribution::Proxmox,
            };
            suite = b.suite;
            mirror = b.mirror;
            packages = b.packages;
        }
    }
    if let Some(s) = &args.suite {
        suite = s.clone();
    }
    if let Some(m) = &args.mirror {
        mirror = Some(m.clone());
    }
    packages.extend(args.packages.iter().cloned());
    Ok(PayloadSpec::new(distribution, &suite, mirror, &packages))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = spec_from_args(&args)?;
    let info = build_payload(&spec, &args.output, args.cache.as_deref())
        .with_context(|| format!("building payload {}", args.output.display()))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "path": info.path,
                "sha256": info.sha256,
                "size": info.size,
                "cache_key": info.cache_key,
                "from_cache": info.from_cache,
            })
        );
    } else {
        println!(
            "{}: {:.1} MiB, sha256 {}{}",
            info.path.display(),
            info.size as f64 / (1024.0 * 1024.0),
            info.sha256,
            if info.from_cache { " (from cache)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn flags_override_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.json");
        std::fs::write(
            &state,
            r#"{"version":1,"bootstrap":{"hostname":"h","distribution":"proxmox",
               "suite":"bookworm","mirror":"http://m.example/debian","packages":["vim"]},
               "plugins":{"network":{"interfaces":{"vmbr0":{"type":"bridge",
               "address":"192.0.2.10/24"}}}}}"#,
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--state",
            state.to_str().unwrap(),
            "--output",
            "/tmp/p.tar.zst",
            "--suite",
            "trixie",
            "--package",
            "htop",
        ])
        .unwrap();
        let spec = spec_from_args(&cli.args).unwrap();
        assert_eq!(spec.distribution, Distribution::Proxmox);
        assert_eq!(spec.suite, "trixie");
        assert_eq!(spec.mirror.as_deref(), Some("http://m.example/debian"));
        assert!(spec
            .packages
            .ends_with(&["vim".to_string(), "htop".to_string()]));
    }

    #[test]
    fn without_state_it_is_debian_bookworm_from_host_sources() {
        let cli = Cli::try_parse_from(["x", "--output", "p.tar.zst"]).unwrap();
        let spec = spec_from_args(&cli.args).unwrap();
        assert_eq!(spec.distribution, Distribution::Debian);
        assert_eq!(spec.suite, "bookworm");
        assert_eq!(spec.mirror, None);
    }
}
