//! External commands go through [`Task`]: it logs the command line at debug,
//! captures stderr, and turns a non-zero exit into an error that carries the
//! command, the exit status and the tail of stderr.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("cannot start `{cmdline}` (is it installed?)")]
    Spawn {
        cmdline: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmdline}` failed with {status}: {stderr}")]
    Failed {
        cmdline: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("writing standard input of `{cmdline}`")]
    Stdin {
        cmdline: String,
        #[source]
        source: std::io::Error,
    },
}

/// One external command, described before it runs.
pub struct Task {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

impl Task {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let mut cmd = Command::new(program);
        // Tools must not prompt or translate their messages: we parse and show them.
        cmd.env("LC_ALL", "C.UTF-8");
        Task { cmd, stdin: None }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, val);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    /// Bytes fed to the command's standard input.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// The command line as a shell user would read it (for logs and errors).
    pub fn cmdline(&self) -> String {
        let mut parts: Vec<OsString> = vec![self.cmd.get_program().to_owned()];
        parts.extend(self.cmd.get_args().map(OsStr::to_owned));
        parts
            .iter()
            .map(|p| {
                let s = p.to_string_lossy();
                if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '\'') {
                    format!("'{}'", s.replace('\'', r"'\''"))
                } else {
                    s.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion; stdout is returned, stderr goes into the error.
    pub fn output(mut self) -> Result<Output, TaskError> {
        let cmdline = self.cmdline();
        tracing::debug!(command = %cmdline, "running");
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child =
            crate::interrupt::spawn_tracked(&mut self.cmd).map_err(|source| TaskError::Spawn {
                cmdline: cmdline.clone(),
                source,
            })?;
        let pid = child.id();
        if let (Some(data), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            if let Err(source) = pipe.write_all(&data) {
                drop(pipe);
                let _ = child.kill();
                let _ = child.wait();
                crate::interrupt::untrack(pid);
                return Err(TaskError::Stdin { cmdline, source });
            }
        }
        let out = child.wait_with_output();
        crate::interrupt::untrack(pid);
        let out = out.map_err(|source| TaskError::Spawn {
            cmdline: cmdline.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(TaskError::Failed {
                cmdline,
                status: out.status,
                stderr: tail(&out.stderr),
            });
        }
        Ok(out)
    }

    /// Runs to completion, returning stdout as text.
    pub fn read(self) -> Result<String, TaskError> {
        let out = self.output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs to completion, discarding stdout.
    pub fn run(self) -> Result<(), TaskError> {
        self.output().map(drop)
    }

    /// Runs with stdout and stderr inherited (long tools whose output the
    /// operator should see, such as mmdebstrap).
    pub fn run_inherit(mut self) -> Result<(), TaskError> {
        let cmdline = self.cmdline();
        tracing::debug!(command = %cmdline, "running");
        self.cmd.stdin(Stdio::null());
        let mut child =
            crate::interrupt::spawn_tracked(&mut self.cmd).map_err(|source| TaskError::Spawn {
                cmdline: cmdline.clone(),
                source,
            })?;
        let status = child.wait();
        crate::interrupt::untrack(child.id());
        let status = status.map_err(|source| TaskError::Spawn {
            cmdline: cmdline.clone(),
            source,
        })?;
        if !status.success() {
            return Err(TaskError::Failed {
                cmdline,
                status,
                stderr: "(see the output above)".into(),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cmdline())
    }
}

/// The last few lines of a command's stderr, trimmed for an error message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(8);
    let joined = lines[start..].join("\n");
    if joined.is_empty() {
        "(no error output)".into()
    } else {
        joined
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn failing_command_carries_stderr_and_status() {
        let err = Task::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .run()
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c 'echo boom >&2; exit 3'` failed"),
            "{msg}"
        );
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.ends_with("boom"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = Task::new("/nonexistent/tool").run().unwrap_err();
        assert!(matches!(err, TaskError::Spawn { .. }));
    }

    #[test]
    fn stdin_is_fed_and_stdout_read() {
        let out = Task::new("cat").stdin("hello").read().unwrap();
        assert_eq!(out, "hello");
    }
}
