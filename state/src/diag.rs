//! Diagnostics: what is wrong, where (JSON pointer and line:column) and what
//! to do. Rendered one per line as `FILE:LINE:COL: /pointer: message; hint`.

use std::fmt;

use serde::Serialize;

/// Errors make a state invalid; warnings are printed and fatal only with `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a state file. `line` and `column` are 1-based (bytes
/// within the line); 0 means the position is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// RFC 6901 pointer of the offending value (`""` is the whole document).
    pub pointer: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without a source position (filled in by `locate`).
    pub fn new(severity: Severity, pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity,
            pointer: pointer.into(),
            line: 0,
            column: 0,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The one-line form: `FILE:LINE:COL: /pointer: [warning: ]message[; hint]`.
    pub fn render(&self, file: &str) -> String {
        format!("{file}:{self}")
    }
}

/// Everything after `FILE:`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{}:{}: {}: ", self.line, self.column, pointer)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// Appends one RFC 6901 reference token (`~` -> `~0`, `/` -> `~1`) to `out`.
pub fn push_token(out: &mut String, token: &str) {
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
}

/// Builds a pointer from unescaped tokens: `pointer(&["a/b", "0"])` is `/a~1b/0`.
pub fn pointer<S: AsRef<str>>(tokens: &[S]) -> String {
    let mut out = String::new();
    for t in tokens {
        push_token(&mut out, t.as_ref());
    }
    out
}

/// `base` with one more token.
pub fn child(base: &str, token: impl fmt::Display) -> String {
    let mut out = String::with_capacity(base.len() + 8);
    out.push_str(base);
    push_token(&mut out, &token.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_tokens() {
        assert_eq!(
            pointer(&["devices", "/dev/sda", "a~b"]),
            "/devices/~1dev~1sda/a~0b"
        );
        assert_eq!(child("/x", 3), "/x/3");
    }

    #[test]
    fn renders_one_line() {
        let d = Diagnostic {
            line: 3,
            column: 7,
            ..Diagnostic::new(Severity::Warning, "/a/0", "bad")
        }
        .with_hint("fix it");
        assert_eq!(d.render("s.json"), "s.json:3:7: /a/0: warning: bad; fix it");
        assert_eq!(
            Diagnostic::new(Severity::Error, "", "x").render("f"),
            "f:0:0: /: x"
        );
    }
}
