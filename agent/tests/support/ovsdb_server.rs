//! A private, unprivileged ovsdb-server for tests: its own database and
//! socket in a temp dir, SIGTERM on drop (ENVIRONMENT.md shows the flags).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use opdbus_common::Task;

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

pub struct OvsdbServer {
    dir: tempfile::TempDir,
    pid: Option<i32>,
}

impl OvsdbServer {
    /// Creates the database and starts the server; waits for its socket.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ovsdb")
            .tempdir()
            .expect("temp dir");
        let mut server = OvsdbServer { dir, pid: None };
        let d = server.dir.path().to_path_buf();
        Task::new("ovsdb-tool")
            .arg("create")
            .arg(d.join("conf.db"))
            .arg(SCHEMA)
            .run()
            .expect("ovsdb-tool create (package openvswitch-switch)");
        Task::new("ovsdb-server")
            .arg(d.join("conf.db"))
            .arg(format!("--remote=punix:{}", d.join("db.sock").display()))
            .arg(format!("--unixctl={}", d.join("ovsdb.ctl").display()))
            .arg(format!("--pidfile={}", d.join("ovsdb.pid").display()))
            .arg(format!("--log-file={}", d.join("ovsdb.log").display()))
            .arg("--detach")
            .run()
            .expect("starting ovsdb-server");
        let pid = std::fs::read_to_string(d.join("ovsdb.pid")).expect("pidfile");
        server.pid = Some(pid.trim().parse().expect("pid"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.socket().exists() {
            assert!(
                Instant::now() < deadline,
                "ovsdb-server socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("db.sock")
    }

    pub fn addr(&self) -> String {
        format!("unix:{}", self.socket().display())
    }

    /// `ovs-vsctl` against this server; see [`vsctl_at`].
    pub fn vsctl(&self, args: &[&str]) -> String {
        vsctl_at(&self.socket(), args)
    }
}

/// `ovs-vsctl --no-wait` against the server listening on `sock`: output
/// trimmed, surrounding quotes removed (an empty string prints as `""`).
pub fn vsctl_at(sock: &Path, args: &[&str]) -> String {
    Task::new("ovs-vsctl")
        .arg(format!("--db=unix:{}", sock.display()))
        .arg("--no-wait")
        .arg("--timeout=10")
        .args(args)
        .read()
        .expect("ovs-vsctl")
        .trim()
        .trim_matches('"')
        .to_string()
}

impl Drop for OvsdbServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}
