//! `op-dbus-install schema`: prints the JSON Schema of state.json, generated
//! from the model types (committed at state-examples/state.schema.json).

use std::process::ExitCode;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    let text = serde_json::to_string_pretty(&opdbus_state::schema())
        .context("serializing the JSON Schema")?;
    println!("{text}");
    Ok(ExitCode::SUCCESS)
}
