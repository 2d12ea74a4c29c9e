//! Starting and stopping containers: through systemd over D-Bus
//! (`lxc@NAME.service`) when systemd runs the host and the containers are in
//! LXC's default path (the unit's), else with LXC's own tools.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use super::{Paths, Status};
use opdbus_common::Task;

/// How long a clean stop may take before LXC kills the container.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who starts and stops containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Systemd,
    Lxc,
}

impl Via {
    /// systemd when it runs the host (`/run/systemd/system`) and `paths`
    /// is LXC's default (the one `lxc@.service` uses).
    pub fn detect(paths: &Paths) -> Via {
        if paths.is_default_lxc_path() && Path::new("/run/systemd/system").is_dir() {
            Via::Systemd
        } else {
            Via::Lxc
        }
    }
}

/// The systemd unit that runs container `name`.
pub fn unit(name: &str) -> String {
    format!("lxc@{name}.service")
}

fn lxc(tool: &str, paths: &Paths, name: &str) -> Task {
    Task::new(tool)
        .arg("-n")
        .arg(name)
        .arg("-P")
        .arg(&paths.lxc_path)
}

/// Running or stopped (`lxc-info -s`; anything but RUNNING counts as stopped).
pub fn status(paths: &Paths, name: &str) -> anyhow::Result<Status> {
    let out = lxc("lxc-info", paths, name)
        .args(["-s", "-H"])
        .read()
        .with_context(|| format!("reading the state of container {name:?}"))?;
    Ok(if out.trim() == "RUNNING" {
        Status::Running
    } else {
        Status::Stopped
    })
}

/// Starts `name` in the background and waits until it runs.
pub async fn start(
    ctx: Option<&crate::engine::Context>,
    paths: &Paths,
    name: &str,
) -> anyhow::Result<String> {
    start_via(Via::detect(paths), ctx, paths, name).await
}

/// [`start`] through `via` (systemd needs `ctx` for its bus).
pub async fn start_via(
    via: Via,
    ctx: Option<&crate::engine::Context>,
    paths: &Paths,
    name: &str,
) -> anyhow::Result<String> {
    match (via, ctx) {
        (Via::Systemd, Some(ctx)) => {
            let sd = crate::dbus::Systemd::new(&ctx.bus().await?).await?;
            sd.start(&unit(name)).await?;
            Ok(format!("via systemd ({})", unit(name)))
        }
        _ => {
            lxc("lxc-start", paths, name)
                .arg("-d")
                .run()
                .with_context(|| format!("starting container {name:?}"))?;
            Ok("via lxc-start".to_string())
        }
    }
}

/// Stops `name` cleanly (SIGPWR to its init, killed after [`STOP_TIMEOUT`]).
pub async fn stop(
    ctx: Option<&crate::engine::Context>,
    paths: &Paths,
    name: &str,
) -> anyhow::Result<String> {
    stop_via(Via::detect(paths), ctx, paths, name).await
}

/// [`stop`] through `via`.
pub async fn stop_via(
    via: Via,
    ctx: Option<&crate::engine::Context>,
    paths: &Paths,
    name: &str,
) -> anyhow::Result<String> {
    match (via, ctx) {
        (Via::Systemd, Some(ctx)) => {
            let sd = crate::dbus::Systemd::new(&ctx.bus().await?).await?;
            sd.stop(&unit(name)).await?;
            Ok(format!("via systemd ({})", unit(name)))
        }
        _ => {
            lxc("lxc-stop", paths, name)
                .arg("-t")
                .arg(STOP_TIMEOUT.as_secs().to_string())
                .run()
                .with_context(|| format!("stopping container {name:?}"))?;
            Ok("via lxc-stop".to_string())
        }
    }
}

/// Kills `name` at once (before deleting it).
pub fn kill(paths: &Paths, name: &str) -> anyhow::Result<()> {
    lxc("lxc-stop", paths, name)
        .arg("-k")
        .run()
        .with_context(|| format!("killing container {name:?}"))
}
