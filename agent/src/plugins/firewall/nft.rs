//! Talks to nftables through libnftables' JSON interface (`nft -j`): list a
//! table, and load a batch atomically (one kernel transaction, optionally
//! checked with `nft -c` first). The command runs with a timeout; its
//! errors say what nftables refused.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::engine::ActionError;

/// How long one `nft` call may take (1,000 rules load in well under a second).
const TIMEOUT: Duration = Duration::from_secs(30);

/// The `nft` command: `["nft"]` on a host; tests put `ip netns exec NS` first.
#[derive(Debug, Clone)]
pub struct Nft {
    pub argv: Vec<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Nft {
            argv: vec!["nft".to_string()],
        }
    }
}

/// What one call gave.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Nft {
    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<Output, ActionError> {
        let (prog, pre) = self
            .argv
            .split_first()
            .ok_or_else(|| ActionError::fatal(anyhow::anyhow!("empty nft command")))?;
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(pre)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let line = format!("{} {}", self.argv.join(" "), args.join(" "));
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ActionError::fatal(anyhow::anyhow!(
                    "running {prog}: not found; install the nftables package (it provides nft)"
                ))
            } else {
                ActionError::fatal(anyhow::Error::new(e).context(format!("running {line}")))
            }
        })?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(data).await.map_err(|e| {
                anyhow::Error::new(e).context(format!("writing the batch to {line}"))
            })?;
            drop(pipe);
        }
        let out = match tokio::time::timeout(TIMEOUT, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| anyhow::Error::new(e).context(format!("waiting for {line}")))?,
            Err(_) => {
                return Err(ActionError::retryable(anyhow::anyhow!(
                    "{line} did not finish within {}s",
                    TIMEOUT.as_secs()
                )))
            }
        };
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// The objects of `table` (`inet opdbus`), without the metainfo; `None`
    /// when the table does not exist.
    pub async fn list_table(&self, family: &str, name: &str) -> anyhow::Result<Option<Vec<Value>>> {
        let out = self
            .run(&["-j", "list", "table", family, name], None)
            .await
            .map_err(|e| e.error)?;
        if !out.ok {
            if out.stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(kernel_error(&out.stderr, &format!("listing table {family} {name}")).error);
        }
        Ok(Some(objects(&out.stdout)?))
    }

    /// `family name` of every table, for the diff's "left alone" note.
    pub async fn list_tables(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .run(&["-j", "list", "tables"], None)
            .await
            .map_err(|e| e.error)?;
        if !out.ok {
            return Err(kernel_error(&out.stderr, "listing the nftables tables").error);
        }
        Ok(objects(&out.stdout)?
            .iter()
            .filter_map(|o| o.get("table"))
            .map(|t| {
                format!(
                    "{} {}",
                    t["family"].as_str().unwrap_or("?"),
                    t["name"].as_str().unwrap_or("?")
                )
            })
            .collect())
    }

    /// Whether `nft` runs in the agent's own network namespace (no command
    /// before it), where the agent's own netlink socket talks to the same
    /// tables.
    pub fn is_local(&self) -> bool {
        self.argv.len() == 1
    }

    /// Checks the JSON batch `data` (`nft -c`) without loading it.
    pub async fn check(&self, data: &[u8]) -> Result<(), ActionError> {
        let check = self.run(&["-c", "-j", "-f", "-"], Some(data)).await?;
        if !check.ok {
            return Err(kernel_error(
                &check.stderr,
                "nftables refused the rule set in its check (nft -c); nothing was changed",
            ));
        }
        Ok(())
    }

    /// Checks the JSON batch `data` (`nft -c`, when `check_first`), then
    /// loads it: one kernel transaction, so a refused rule leaves every
    /// table as it was.
    pub async fn load(&self, data: &[u8], check_first: bool) -> Result<(), ActionError> {
        if check_first {
            self.check(data).await?;
        }
        let out = self.run(&["-j", "-f", "-"], Some(data)).await?;
        if !out.ok {
            return Err(kernel_error(
                &out.stderr,
                "nftables refused the rule set; the transaction was not committed and the previous rules stay",
            ));
        }
        Ok(())
    }
}

fn objects(stdout: &str) -> anyhow::Result<Vec<Value>> {
    let v: Value = serde_json::from_str(stdout)
        .map_err(|e| anyhow::anyhow!("nft -j printed something that is not JSON: {e}"))?;
    Ok(v["nftables"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| o.get("metainfo").is_none())
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

/// An nft failure with what it means: the kernel lacks nf_tables, the
/// resource is busy (retryable), or the batch was refused (fatal).
fn kernel_error(stderr: &str, what: &str) -> ActionError {
    let first = stderr
        .lines()
        .find(|l| l.contains("Error"))
        .unwrap_or(stderr)
        .trim();
    // "Could not process rule: Operation not supported" is one rule the
    // kernel refuses (masquerade in a filter chain), not a missing nf_tables.
    let rule_refused = stderr.contains("Could not process rule");
    if !rule_refused
        && (stderr.contains("Operation not supported") || stderr.contains("Protocol not supported"))
    {
        return ActionError::fatal(anyhow::anyhow!(
            "{what}: this kernel has no nftables support ({first}); load the nf_tables module (modprobe nf_tables) or use a kernel with CONFIG_NF_TABLES"
        ));
    }
    if stderr.contains("Device or resource busy") || stderr.contains("Resource temporarily") {
        return ActionError::retryable(anyhow::anyhow!("{what}: {first}"));
    }
    ActionError::fatal(anyhow::anyhow!("{what}: {first}"))
}
