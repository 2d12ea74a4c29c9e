//! `opdbus-docgen [DIR]`: rewrites the man pages and shell completions under
//! DIR (default: the workspace's `dist/`) from the clap definitions.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dist = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(opdbus_docgen::DIST)
        });
    match opdbus_docgen::write(&dist) {
        Ok(n) => {
            println!("{n} files written under {}", dist.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("opdbus-docgen: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
