//! Reading state.json: serde errors with the JSON pointer of the offending
//! value, duplicate object keys refused, then semantic validation with
//! positions from `crate::position`.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_path_to_error::Segment;

use crate::diag::{push_token, Diagnostic, Severity};
use crate::position::Positions;
use crate::read::{read_state_text, ReadError};
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
    /// The file could not be read (not a regular file, too large, ...).
    #[error("reading state file {file}")]
    Read {
        file: String,
        #[source]
        source: ReadError,
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
            Failure::Read { file, source } => vec![read_line(file, source)],
            Failure::Invalid { file, diagnostics } => {
                diagnostics.iter().map(|d| d.render(file)).collect()
            }
        }
    }
}

/// `FILE: cannot read the file: why` (the io error's text included).
pub fn read_line(file: &str, err: &ReadError) -> String {
    match err {
        ReadError::Open(e) | ReadError::Io(e) => format!("{file}: cannot read the file: {e}"),
        other => format!("{file}: cannot read the file: {other}"),
    }
}

fn render_all(file: &str, diagnostics: &[Diagnostic]) -> String {
    let lines: Vec<String> = diagnostics.iter().map(|d| d.render(file)).collect();
    lines.join("\n")
}

/// Reads (regular files only, at most [`crate::read::MAX_STATE_BYTES`]),
/// parses and validates a state file.
pub fn load(path: &Path) -> Result<Loaded, Failure> {
    let file = path.display().to_string();
    let text = read_state_text(path).map_err(|source| Failure::Read {
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

/// Parses without semantic validation; a serde error or a duplicate object
/// key becomes one diagnostic.
pub fn parse_only(text: &str) -> Result<State, Diagnostic> {
    let mut de = serde_json::Deserializer::from_str(text);
    let state: State = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let pointer = to_pointer(err.path());
        serde_diagnostic(pointer, err.inner())
    })?;
    // Trailing characters after the document.
    de.end()
        .map_err(|err| serde_diagnostic(String::new(), &err))?;
    check_unique_keys(text)?;
    Ok(state)
}

/// Refuses a key given twice in one object (maps keep only the last one, so
/// `{"accounts": {"a": ..., "a": ...}}` would silently drop an account).
fn check_unique_keys(text: &str) -> Result<(), Diagnostic> {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, UniqueKeys>(&mut de) {
        Ok(_) => Ok(()),
        Err(err) => {
            let mut pointer = to_pointer(err.path());
            let inner = err.into_inner();
            let full = inner.to_string();
            let message = match full.rfind(" at line ") {
                Some(i) => full[..i].to_string(),
                None => full,
            };
            let key = message
                .strip_prefix(DUPLICATE_KEY)
                .unwrap_or(&message)
                .to_string();
            push_token(&mut pointer, &key);
            Err(Diagnostic {
                severity: Severity::Error,
                pointer,
                line: inner.line(),
                // serde_json stops at the key's closing quote; point at its opening one.
                column: inner.column().saturating_sub(key.len() + 1).max(1),
                message: format!(
                    "duplicate key {key:?}: the object already has a member of that name"
                ),
                hint: Some("keep one of them; tools disagree on which one counts".to_string()),
            })
        }
    }
}

const DUPLICATE_KEY: &str = "duplicate key: ";

/// Walks any JSON value and fails on the first object with a repeated key.
struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("{DUPLICATE_KEY}{key}")));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
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
