//! firewall plugin: `plugins.firewall` as one nftables table, `inet
//! opdbus`, the only one it owns (other tables, such as Proxmox's or
//! Docker's, are listed and never touched).
//!
//! The table is replaced whole in one nftables transaction: the kernel
//! checks the whole batch and commits all of it or nothing, so a rejected
//! rule leaves the previous rules in force (a separate `nft -c` pass would
//! do the same work twice; [`FirewallPlugin::check_first`] turns it on).
//! The agent sends that batch itself ([`netlink`]: no `nft` process, no
//! JSON parse, no cache fetch); a rule without a native encoding, or an
//! `nft` run in another namespace, sends it through `nft -j -f`.
//! `query` reads the live table back, `diff` compares it rule by rule (each
//! rule's comment carries the tag `opdbus:NAME`), so a re-apply is a no-op
//! and a rule deleted by hand is drift. The checkpoint is the previous
//! table as nft JSON; `restore` loads it back in one transaction. The
//! effect is ephemeral: the applied table is also written to
//! [`BOOT_FILE`], which `op-dbus-firewall.service` loads at boot before
//! `network-pre.target`.

pub mod discover;
pub mod lockout;
pub mod netlink;
pub mod nft;
/// The rendering, shared with the installer (which writes the boot file
/// into the target before first boot).
pub use opdbus_state::nft as render;

use std::collections::HashMap;
use std::fmt;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{ActionError, ActionResult, Context, Persistence, Plugin, PluginAction};
pub use nft::Nft;
use opdbus_common::rootfs::RootDir;
use opdbus_state::State;
pub use render::{Chain, Rule, Table};

/// The batch the boot unit loads, below the context's root.
pub const BOOT_FILE: &str = render::BOOT_FILE;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Desired {
    pub table: Table,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Current {
    /// The live table, `None` when it does not exist.
    pub table: Option<Table>,
    /// The listing as nft printed it (what a checkpoint keeps).
    pub listing: Option<Vec<Value>>,
    /// Objects in the table that are neither chains nor rules.
    pub other: Vec<String>,
    /// The other tables (`family name`), left alone.
    pub foreign: Vec<String>,
    /// The boot file's content, `None` when it is missing.
    pub boot_file: Option<String>,
}

/// What a restore puts back: the previous listing and boot file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub listing: Option<Vec<Value>>,
    pub boot_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    AddChain {
        chain: String,
        hook: String,
        policy: String,
    },
    SetPolicy {
        chain: String,
        from: String,
        to: String,
    },
    DeleteChain {
        chain: String,
    },
    AddRule {
        chain: String,
        comment: String,
        rule: String,
    },
    DeleteRule {
        chain: String,
        handle: Option<u64>,
        comment: String,
        rule: String,
    },
    /// The rules are the same but in another order.
    Reorder {
        chain: String,
    },
    DeleteObject {
        object: String,
    },
    /// Replaces the table in one transaction and writes the boot file: the
    /// action that carries out all the lines above it.
    Replace {
        table: Table,
        /// Other tables, left alone (said in the diff).
        foreign: Vec<String>,
    },
    /// Only the boot file differs from what is loaded.
    WriteBootFile {
        table: Table,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = format!("{} {}", render::FAMILY, render::TABLE);
        match self {
            Action::AddChain {
                chain,
                hook,
                policy,
            } => write!(
                f,
                "add chain {chain} (hook {hook}, policy {policy}) to table {t}"
            ),
            Action::SetPolicy { chain, from, to } => {
                write!(f, "set the policy of chain {chain} from {from} to {to}")
            }
            Action::DeleteChain { chain } => write!(f, "delete chain {chain} from table {t}"),
            Action::AddRule {
                chain,
                comment,
                rule,
            } => write!(f, "add rule to {chain}: {rule} (comment {comment:?})"),
            Action::DeleteRule {
                chain,
                handle,
                comment,
                rule,
            } => {
                write!(f, "delete rule from {chain}: {rule}")?;
                if let Some(h) = handle {
                    write!(f, " (handle {h})")?;
                }
                if !comment.is_empty() {
                    write!(f, " (comment {comment:?})")?;
                }
                Ok(())
            }
            Action::Reorder { chain } => write!(f, "put the rules of chain {chain} back in order"),
            Action::DeleteObject { object } => write!(f, "delete {object} from table {t}"),
            Action::Replace { table, foreign } => {
                write!(
                    f,
                    "replace table {t} in one nftables transaction ({} rules) and write {BOOT_FILE}",
                    table.rule_count()
                )?;
                if foreign.is_empty() {
                    write!(f, "; no other table exists")
                } else {
                    write!(f, "; other tables left alone: {}", foreign.join(", "))
                }
            }
            Action::WriteBootFile { .. } => {
                write!(f, "write {BOOT_FILE} (the table the boot unit loads)")
            }
        }
    }
}

impl PluginAction for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::AddChain { .. } => "add-chain",
            Action::SetPolicy { .. } => "set-policy",
            Action::DeleteChain { .. } => "delete-chain",
            Action::AddRule { .. } => "add-rule",
            Action::DeleteRule { .. } => "delete-rule",
            Action::Reorder { .. } => "reorder-rules",
            Action::DeleteObject { .. } => "delete-object",
            Action::Replace { .. } => "replace-table",
            Action::WriteBootFile { .. } => "write-boot-file",
        }
    }

    fn resource(&self) -> String {
        let t = format!("nft:{} {}", render::FAMILY, render::TABLE);
        match self {
            Action::AddChain { chain, .. }
            | Action::SetPolicy { chain, .. }
            | Action::DeleteChain { chain }
            | Action::Reorder { chain } => format!("{t}/{chain}"),
            Action::AddRule { chain, comment, .. } | Action::DeleteRule { chain, comment, .. } => {
                format!("{t}/{chain}/{comment}")
            }
            Action::DeleteObject { object } => format!("{t}/{object}"),
            Action::Replace { .. } => t,
            Action::WriteBootFile { .. } => format!("file:{BOOT_FILE}"),
        }
    }
}

/// The boot file's content for `table`: the same batch `apply` loads.
pub fn boot_file_text(table: &Table) -> String {
    render::batch_text(table)
}

/// The pure diff: chain by chain, rule by rule; then one `replace-table`
/// (or only `write-boot-file`) that carries them out.
pub fn diff(current: &Current, desired: &Desired) -> Vec<Action> {
    let mut out = Vec::new();
    let empty = Table::default();
    let cur = current.table.as_ref().unwrap_or(&empty);
    for d in &desired.table.chains {
        let Some(c) = cur.chains.iter().find(|c| c.name == d.name) else {
            out.push(Action::AddChain {
                chain: d.name.clone(),
                hook: d.hook.clone(),
                policy: d.policy.clone(),
            });
            for r in &d.rules {
                out.push(add_rule(&d.name, r));
            }
            continue;
        };
        if c.kind != d.kind || c.hook != d.hook || c.prio != d.prio {
            out.push(Action::DeleteChain {
                chain: c.name.clone(),
            });
            out.push(Action::AddChain {
                chain: d.name.clone(),
                hook: d.hook.clone(),
                policy: d.policy.clone(),
            });
        } else if c.policy != d.policy {
            out.push(Action::SetPolicy {
                chain: d.name.clone(),
                from: c.policy.clone(),
                to: d.policy.clone(),
            });
        }
        // Rules keyed by comment and normalized expressions: linear in the
        // number of rules (1,000-rule tables are diffed at every reconcile).
        let mut unmatched: HashMap<String, Vec<&Rule>> = HashMap::new();
        for r in &c.rules {
            unmatched.entry(r.key()).or_default().push(r);
        }
        let mut changed = false;
        for r in &d.rules {
            match unmatched.get_mut(&r.key()).and_then(|v| v.pop()) {
                Some(_) => {}
                None => {
                    changed = true;
                    out.push(add_rule(&d.name, r));
                }
            }
        }
        let mut left: Vec<&Rule> = unmatched.into_values().flatten().collect();
        left.sort_by_key(|r| r.handle);
        for u in &left {
            changed = true;
            out.push(delete_rule(&c.name, u));
        }
        let in_order = c.rules.len() == d.rules.len()
            && c.rules
                .iter()
                .zip(&d.rules)
                .all(|(a, b)| a.key() == b.key());
        if !changed && !in_order {
            out.push(Action::Reorder {
                chain: d.name.clone(),
            });
        }
    }
    for c in &cur.chains {
        if !desired.table.chains.iter().any(|d| d.name == c.name) {
            for r in &c.rules {
                out.push(delete_rule(&c.name, r));
            }
            out.push(Action::DeleteChain {
                chain: c.name.clone(),
            });
        }
    }
    for o in &current.other {
        out.push(Action::DeleteObject { object: o.clone() });
    }
    if !out.is_empty() || current.table.is_none() {
        out.push(Action::Replace {
            table: desired.table.clone(),
            foreign: current.foreign.clone(),
        });
    } else if current.boot_file.as_deref() != Some(boot_file_text(&desired.table).as_str()) {
        out.push(Action::WriteBootFile {
            table: desired.table.clone(),
        });
    }
    out
}

fn add_rule(chain: &str, r: &Rule) -> Action {
    Action::AddRule {
        chain: chain.to_string(),
        comment: r.comment.clone(),
        rule: render::describe(&r.expr),
    }
}

fn delete_rule(chain: &str, r: &Rule) -> Action {
    Action::DeleteRule {
        chain: chain.to_string(),
        handle: r.handle,
        comment: r.comment.clone(),
        rule: render::describe(&r.expr),
    }
}

/// The plugin; `nft` is the command it runs (tests run it in a namespace).
#[derive(Debug, Clone, Default)]
pub struct FirewallPlugin {
    pub nft: Nft,
    /// Run `nft -c` on the batch before loading it (off by default). The
    /// load is one kernel transaction either way, checked whole before it
    /// commits (a refused rule changes nothing); the check is a second full
    /// pass through the kernel, which doubled the time of an apply.
    pub check_first: bool,
}

impl FirewallPlugin {
    pub fn with_nft(argv: Vec<String>) -> Self {
        FirewallPlugin {
            nft: Nft { argv },
            ..Self::default()
        }
    }

    /// Loads `table` (`json` is its batch, the boot file): as one netlink
    /// batch from this process when `nft` runs in the agent's own namespace
    /// and every rule has a native encoding, else through `nft -j -f`.
    async fn load(&self, table: &Table, json: &str) -> Result<(), ActionError> {
        if self.nft.is_local() {
            match netlink::encode(table, 1) {
                Ok(batch) => {
                    if self.check_first {
                        self.nft.check(json.as_bytes()).await?;
                    }
                    return netlink::load(&batch);
                }
                Err(e) => tracing::info!("table inet opdbus loaded through nft: {e}"),
            }
        }
        self.nft.load(json.as_bytes(), self.check_first).await
    }

    fn root(ctx: &Context) -> anyhow::Result<RootDir> {
        RootDir::open(&ctx.root).with_context(|| format!("opening the root {}", ctx.root.display()))
    }

    fn read_boot_file(ctx: &Context) -> anyhow::Result<Option<String>> {
        let root = Self::root(ctx)?;
        match root.read_to_string(BOOT_FILE) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "reading {}",
                root.display_path(BOOT_FILE).display()
            ))),
        }
    }

    fn write_boot_file(ctx: &Context, text: Option<&str>) -> anyhow::Result<()> {
        let root = Self::root(ctx)?;
        let shown = root.display_path(BOOT_FILE);
        match text {
            Some(t) => root
                .write_atomic(BOOT_FILE, t.as_bytes(), 0o600, None)
                .with_context(|| format!("writing {}", shown.display())),
            None => root
                .remove_file(BOOT_FILE)
                .with_context(|| format!("removing {}", shown.display())),
        }
    }
}

impl Plugin for FirewallPlugin {
    type Desired = Desired;
    type Current = Current;
    type Action = Action;
    type Checkpoint = Checkpoint;

    fn name(&self) -> &'static str {
        "firewall"
    }

    fn persistence(&self) -> Persistence {
        Persistence::Ephemeral
    }

    fn desired(&self, state: &State) -> anyhow::Result<Option<Desired>> {
        Ok(render::desired_table(state)?.map(|table| Desired { table }))
    }

    async fn query(&self, ctx: &Context, _desired: &Desired) -> anyhow::Result<Current> {
        let (listing, tables) = futures::try_join!(
            self.nft.list_table(render::FAMILY, render::TABLE),
            self.nft.list_tables()
        )?;
        let (table, other) = match &listing {
            Some(objs) => {
                let (t, o) = render::parse_listing(objs);
                (Some(t), o)
            }
            None => (None, Vec::new()),
        };
        let own = format!("{} {}", render::FAMILY, render::TABLE);
        let foreign = tables.into_iter().filter(|t| *t != own).collect();
        Ok(Current {
            table,
            listing,
            other,
            foreign,
            boot_file: Self::read_boot_file(ctx)?,
        })
    }

    fn diff(&self, current: &Current, desired: &Desired) -> Vec<Action> {
        diff(current, desired)
    }

    async fn checkpoint(
        &self,
        _ctx: &Context,
        current: &Current,
        actions: &[Action],
    ) -> anyhow::Result<Option<Checkpoint>> {
        if actions.is_empty() {
            return Ok(None);
        }
        Ok(Some(Checkpoint {
            listing: current.listing.clone(),
            boot_file: current.boot_file.clone(),
        }))
    }

    async fn restore(&self, ctx: &Context, cp: &Checkpoint) -> anyhow::Result<String> {
        let batch = serde_json::to_vec(&render::restore_batch(cp.listing.as_deref()))?;
        self.nft
            .load(&batch, true)
            .await
            .map_err(|e| e.error.context("restoring table inet opdbus"))?;
        Self::write_boot_file(ctx, cp.boot_file.as_deref())?;
        Ok(match &cp.listing {
            Some(objs) => format!(
                "table inet opdbus restored ({} rules)",
                render::parse_listing(objs).0.rule_count()
            ),
            None => "table inet opdbus removed (it did not exist before)".to_string(),
        })
    }

    async fn apply(&self, ctx: &Context, actions: &[Action]) -> Vec<ActionResult> {
        // One transaction carries out every line: run it, then give each
        // line its outcome.
        let outcome: Result<(), ActionError> = async {
            for a in actions {
                match a {
                    Action::Replace { table, .. } => {
                        let text = boot_file_text(table);
                        self.load(table, &text).await?;
                        Self::write_boot_file(ctx, Some(&text))?;
                    }
                    Action::WriteBootFile { table } => {
                        Self::write_boot_file(ctx, Some(&boot_file_text(table)))?;
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => actions
                .iter()
                .map(|a| match a {
                    Action::Replace { .. } | Action::WriteBootFile { .. } => Ok(None),
                    _ => Ok(Some("in the table's one transaction".to_string())),
                })
                .collect(),
            Err(e) => {
                let kind = e.kind;
                let msg = format!("{:#}", e.error);
                let mut first = Some(e);
                actions
                    .iter()
                    .map(|a| match a {
                        Action::Replace { .. } | Action::WriteBootFile { .. } => Err(first
                            .take()
                            .unwrap_or_else(|| ActionError::fatal(anyhow::anyhow!("{msg}")))),
                        _ => Err(ActionError {
                            kind,
                            error: anyhow::anyhow!("not applied: {msg}"),
                        }),
                    })
                    .collect()
            }
        }
    }

    /// The table `inet opdbus` when it exists and its section renders it
    /// again exactly (the plugin's own diff of the two is empty, boot file
    /// included); otherwise the section is left out, with a warning.
    async fn discover(&self, ctx: &Context) -> anyhow::Result<Option<Value>> {
        let current = self
            .query(
                ctx,
                &Desired {
                    table: Table::default(),
                },
            )
            .await?;
        let Some(live) = &current.table else {
            return Ok(None);
        };
        let Some((fw, floor)) = discover::section(live) else {
            tracing::warn!(
                "the table {} {} holds rules op-dbus does not write (added by hand?): plugins.firewall left out",
                render::FAMILY,
                render::TABLE
            );
            return Ok(None);
        };
        let desired = Desired {
            table: render::table(&fw, &floor)?,
        };
        let pending = diff(&current, &desired);
        if !pending.is_empty() {
            let what: Vec<String> = pending.iter().map(ToString::to_string).collect();
            tracing::warn!(
                "the table {} {} differs from what its rules render ({}): plugins.firewall left out",
                render::FAMILY,
                render::TABLE,
                what.join("; ")
            );
            return Ok(None);
        }
        Ok(Some(serde_json::json!({ "firewall": fw })))
    }
}
