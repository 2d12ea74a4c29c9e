//! One logging setup for every binary: `tracing` to stderr without timestamps
//! (journald adds its own), level from `RUST_LOG`, default `info`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `verbose` raises the default to debug.
pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .try_init();
}
