//! `op-dbus-iso`: thin entry point; all logic is in the library.

use std::process::ExitCode;

use clap::Parser;
use opdbus_common::logging::Chain;
use opdbus_iso::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    opdbus_common::logging::init(cli.verbose);
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("op-dbus-iso: error: {}", Chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}
