//! `discover`: a state.json describing the running host, assembled from the
//! plugins that can describe what they manage without a desired state
//! ([`super::Plugin::discover`]), in [`super::ORDER`], and validated
//! strictly before anyone sees it.

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::{Context, Engine};

/// What one plugin contributed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Contribution {
    pub plugin: String,
    /// The `plugins` keys it filled; empty: it cannot discover, or found nothing.
    pub sections: Vec<String>,
}

/// A discovered state and what each plugin gave.
#[derive(Debug, Clone)]
pub struct Discovery {
    /// The state.json document.
    pub state: Value,
    pub contributions: Vec<Contribution>,
}

impl Discovery {
    /// The document as written to a file: pretty JSON with a final newline.
    pub fn text(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.state).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Merges the plugins' fragments into one state document (pure: golden
/// fixtures pin it). A key two plugins fill is an error naming both.
pub fn assemble(fragments: &[(String, Value)]) -> anyhow::Result<Discovery> {
    let mut plugins = Map::new();
    let mut owner: Vec<(String, String)> = Vec::new();
    let mut contributions = Vec::new();
    for (name, fragment) in fragments {
        let obj = fragment.as_object().with_context(|| {
            format!("plugin '{name}' discovered a {fragment} instead of an object of sections (plugin bug)")
        })?;
        let mut sections = Vec::new();
        for (key, value) in obj {
            if let Some((_, other)) = owner.iter().find(|(k, _)| k == key) {
                anyhow::bail!(
                    "plugins '{other}' and '{name}' both discovered the section plugins.{key} (plugin bug)"
                );
            }
            owner.push((key.clone(), name.clone()));
            plugins.insert(key.clone(), value.clone());
            sections.push(key.clone());
        }
        contributions.push(Contribution {
            plugin: name.clone(),
            sections,
        });
    }
    Ok(Discovery {
        state: json!({
            "version": 1,
            "metadata": {
                "name": "discovered",
                "description": "written by op-dbus-agent discover from the running host",
            },
            "plugins": plugins,
        }),
        contributions,
    })
}

/// Validation of a discovered document: any error fails, and with
/// `strict` any warning too (the plugins described something the state
/// format refuses). Without `strict` the warnings are logged: a part of
/// the host (`--plugin firewall`) may name links of a section left out.
pub fn check(d: &Discovery, strict: bool) -> anyhow::Result<()> {
    let report = opdbus_state::check_text(&d.text(), "discovered state", strict);
    anyhow::ensure!(
        report.ok,
        "the discovered state does not validate (a plugin bug; please report it):\n{}",
        report.lines.join("\n")
    );
    for line in report.lines.iter().filter(|l| l.contains(": warning: ")) {
        tracing::warn!("{line}");
    }
    Ok(())
}

impl Engine {
    /// Asks every plugin (only those in `only`, when not empty) to describe
    /// the host, assembles and validates the result: strictly when every
    /// plugin was asked (see [`check`]).
    pub async fn discover(&self, ctx: &Context, only: &[String]) -> anyhow::Result<Discovery> {
        let names = self.plugin_names();
        if let Some(bad) = only.iter().find(|n| !names.contains(&n.as_str())) {
            anyhow::bail!(
                "no plugin named {bad:?}; the plugins are {}",
                names.join(", ")
            );
        }
        let mut fragments = Vec::new();
        let mut silent = Vec::new();
        for name in names {
            if !only.is_empty() && !only.iter().any(|n| n == name) {
                continue;
            }
            let Some(p) = self.plugin(name) else { continue };
            match p
                .discover_json(ctx)
                .await
                .with_context(|| format!("discovering plugin '{name}'"))?
            {
                Some(fragment) => fragments.push((name.to_string(), fragment)),
                None => silent.push(name.to_string()),
            }
        }
        let mut d = assemble(&fragments)?;
        d.contributions
            .extend(silent.into_iter().map(|plugin| Contribution {
                plugin,
                sections: Vec::new(),
            }));
        check(&d, only.is_empty())?;
        Ok(d)
    }
}
