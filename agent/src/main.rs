//! `op-dbus-agent`: thin entry point; all logic is in the library.

use std::process::ExitCode;

use clap::Parser;
use opdbus_agent::cli::{self, Cli};
use opdbus_common::logging::Chain;

fn main() -> ExitCode {
    let cli = Cli::parse();
    opdbus_common::logging::init(cli.verbose);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("op-dbus-agent: error: {}", Chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
