//! A private `dbus-daemon` for tests: a minimal session-type config in a temp
//! dir, `--nofork --print-address`, the child killed on Drop. Tests connect
//! with [`PrivateBus::connect`]; the fakes in `fake_*.rs` serve on it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// A running `dbus-daemon` on a unix socket in its own temp dir.
pub struct PrivateBus {
    child: Child,
    address: String,
    dir: tempfile::TempDir,
}

impl PrivateBus {
    /// Starts a bus with no activatable services.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_activatable(&[])
    }

    /// Starts a bus whose service dir lists `names` as activatable (their
    /// Exec is /bin/false: they appear in ListActivatableNames, starting them fails).
    pub fn start_with_activatable(names: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("opdbus-test-bus.")
            .tempdir()
            .context("creating the private bus temp dir")?;
        let services = dir.path().join("services");
        std::fs::create_dir(&services).context("creating the bus service dir")?;
        for name in names {
            std::fs::write(
                services.join(format!("{name}.service")),
                format!("[D-BUS Service]\nName={name}\nExec=/bin/false\n"),
            )
            .with_context(|| format!("writing the activation file for {name}"))?;
        }
        let socket = dir.path().join("bus");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket = socket.display(),
                services = services.display(),
            ),
        )
        .context("writing the private bus config")?;

        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1", "--nopidfile", "--nosyslog"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting dbus-daemon (apt package `dbus`)")?;
        let stdout = child.stdout.take().context("taking dbus-daemon stdout")?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let address = line.trim().to_string();
        if read.is_err() || address.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            bail!("dbus-daemon printed no address: {}", stderr.trim());
        }
        Ok(Self {
            child,
            address,
            dir,
        })
    }

    /// The bus address, e.g. "unix:path=/tmp/opdbus-test-bus.XXXX/bus,guid=...".
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A new client connection to this bus.
    pub async fn connect(&self) -> anyhow::Result<zbus::Connection> {
        zbus::connection::Builder::address(self.address.as_str())
            .context("parsing the private bus address")?
            .build()
            .await
            .with_context(|| format!("connecting to the private bus at {}", self.address))
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
