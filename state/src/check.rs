//! The `validate` command shared by `op-dbus-install` and `op-dbus-agent`:
//! checks files and returns the lines to print and the verdict, so both
//! binaries stay thin.

use std::path::Path;

use crate::diag::Severity;
use crate::parse::{parse_str, Failure};

/// What `validate FILE...` prints and whether it succeeds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Diagnostics (`FILE:LINE:COL: /pointer: message`), then one summary line per file.
    pub lines: Vec<String>,
    /// No errors (and, with `strict`, no warnings) in any file.
    pub ok: bool,
}

impl Report {
    /// `validate --json`: `{"ok": bool, "lines": [...]}`, the same lines.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({ "ok": self.ok, "lines": self.lines })
    }
}

/// Validates every file; with `strict`, warnings count as errors.
pub fn check_files<P: AsRef<Path>>(paths: &[P], strict: bool) -> Report {
    let mut report = Report {
        lines: Vec::new(),
        ok: true,
    };
    for path in paths {
        let path = path.as_ref();
        let file = path.display().to_string();
        match crate::read::read_state_text(path) {
            Ok(text) => report.merge(check_text(&text, &file, strict)),
            Err(e) => {
                report.lines.push(crate::parse::read_line(&file, &e));
                report.ok = false;
            }
        }
    }
    report
}

/// Validates one document; `file` names it in the lines.
pub fn check_text(text: &str, file: &str, strict: bool) -> Report {
    let diagnostics = match parse_str(text, file) {
        Ok(loaded) => loaded.warnings,
        Err(Failure::Invalid { diagnostics, .. }) => diagnostics,
        Err(f @ Failure::Read { .. }) => {
            return Report {
                lines: f.lines(),
                ok: false,
            }
        }
    };
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    let mut lines: Vec<String> = diagnostics.iter().map(|d| d.render(file)).collect();
    let ok = errors == 0 && (!strict || warnings == 0);
    let summary = match (errors, warnings) {
        (0, 0) => format!("{file}: valid"),
        (0, w) if strict => format!("{file}: invalid: {w} warning(s), fatal with --strict"),
        (0, w) => format!("{file}: valid, {w} warning(s)"),
        (e, 0) => format!("{file}: invalid: {e} error(s)"),
        (e, w) => format!("{file}: invalid: {e} error(s), {w} warning(s)"),
    };
    lines.push(summary);
    Report { lines, ok }
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.lines.extend(other.lines);
        self.ok &= other.ok;
    }
}
