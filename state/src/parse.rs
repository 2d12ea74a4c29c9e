//! Reading state.json: serde errors with the JSON pointer of the offending
//! value, then semantic validation with positions from `crate::position`.

use std::fmt;
use std::path::Path;

use serde_path_to_error::Segment;

use crate::diag::{push_token, Diagnostic, Severity};
use crate::position::Positions;
use crate::State;

/// A parsed state that has no errors (it may carry warnings).
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The name diagnostics use for the file.
    pub file: String,
    pub state: State,
    pub warnings: Vec<Diagnostic>,
}

/// Why a state file was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The file could not be read.
    #[error("reading state file {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Syntax, type or semantic errors (warnings found alongside are included).
    #[error("{}", render_all(file, diagnostics))]
    Invalid {
        file: String,
        diagnostics: Vec<Diagnostic>,
    },
}

impl Failure {
    /// The diagnostics, one rendered line each (a read error is one line too).
    pub fn lines(&self) -> Vec<String> {
        match self {
            Failure::Read { file, source } => {
                vec![format!("{file}: cannot read the file: {source}")]
            }
            Failure::Invalid { file, diagnostics } => {
                diagnostics.iter().map(|d| d.render(file)).collect()
            }
        }
    }
}

fn render_all(file: &str, diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(|d| d.render(file)).collect();
    lines.join("\n")
}

/// Reads, parses and validates a state file.
pub fn load(path: &Path) -> Result<Loaded, Failure> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Failure::Read {
        file: file.clone(),
        source,
    })?;
    parse_str(&text, &file)
}

/// Parses and validates `text`; `file` is the name used in diagnostics.
pub fn parse_str(text: &str, file: &str) -> Result<Loaded, Failure> {
    let state = parse_only(text).map_err(|d| Failure::Invalid {
        file: file.to_string(),
        diagnostics: vec![d],
    })?;
    let mut diagnostics = crate::validate::validate(&state);
    if !diagnostics.is_empty() {
        locate(text, &mut diagnostics);
    }
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err(Failure::Invalid {
            file: file.to_string(),
            diagnostics,
        });
    }
    Ok(Loaded {
        file: file.to_string(),
        state,
        warnings: diagnostics,
    })
}

/// Parses without semantic validation; a serde error becomes one diagnostic.
pub fn parse_only(text: &str) -> Result<State, Diagnostic> {
    let mut de = serde_json::Deserializer::from_str(text);
    let state: State = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let pointer = to_pointer(err.path());
        serde_diagnostic(pointer, err.inner())
    })?;
    // Trailing characters after the document.
    de.end()
        .map_err(|err| serde_diagnostic(String::new(), &err))?;
    Ok(state)
}

/// Fills in line:column of diagnostics from their pointers.
pub fn locate(text: &str, diagnostics: &mut [Diagnostic]) {
    let wanted: Vec<&str> = diagnostics.iter().map(|d| d.pointer.as_str()).collect();
    let positions = Positions::scan_for(text, &wanted);
    for d in diagnostics.iter_mut() {
        if let Some(pos) = positions.locate(&d.pointer) {
            d.line = pos.line;
            d.column = pos.column;
        }
    }
}

fn to_pointer(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => push_token(&mut out, &index.to_string()),
            Segment::Map { key } => push_token(&mut out, key),
            Segment::Enum { variant } => push_token(&mut out, variant),
            // Inside a value serde had not identified yet (syntax errors).
            Segment::Unknown => break,
        }
    }
    out
}

fn serde_diagnostic(pointer: String, err: &serde_json::Error) -> Diagnostic {
    use serde_json::error::Category;
    let full = err.to_string();
    // serde_json appends " at line L column C"; we print the position up front.
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    let (message, hint) = match err.classify() {
        Category::Syntax => (
            format!("syntax error: {message}"),
            "state.json must be plain JSON: no comments, no trailing commas, keys in double quotes",
        ),
        Category::Eof => (
            format!("syntax error: {message}"),
            "the file ends early: close every { and [",
        ),
        Category::Io => (message, "check that the file is readable UTF-8 text"),
        Category::Data if message.starts_with("unknown field") => (
            message,
            "remove the field or fix its spelling; `op-dbus-install schema` prints every allowed field",
        ),
        Category::Data if message.starts_with("missing field") => {
            (message, "add the field; `op-dbus-install schema` shows what it takes")
        }
        Category::Data => (
            message,
            "fix the value's type or spelling; `op-dbus-install schema` shows what it takes",
        ),
    };
    Diagnostic {
        severity: Severity::Error,
        pointer,
        line: err.line(),
        // serde_json reports column 0 right after a line break.
        column: err.column().max(1),
        message,
        hint: Some(hint.to_string()),
    }
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render_all(&self.file, &self.warnings))
    }
}
