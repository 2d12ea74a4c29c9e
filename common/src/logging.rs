//! One logging setup for every binary: `tracing` to stderr without timestamps
//! (journald adds its own), level from `RUST_LOG`, default `info`; colour
//! only on a terminal and never with `NO_COLOR`. And one way to print an
//! error chain, each cause once.

use std::error::Error;
use std::ffi::OsStr;
use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `verbose` raises the default to debug.
pub fn init(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = colour_wanted(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Colour codes only when the output is a terminal and `NO_COLOR` is unset
/// or empty (<https://no-color.org>): a log file, a pipe or the journal gets
/// plain text.
pub fn colour_wanted(is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Displays an error and its sources as `outer: cause: root cause`, like
/// anyhow's `{:#}`, but leaves out a cause whose text the message above it
/// already contains: many errors (zbus's, tempfile's, `#[error("…: {0}")]`
/// with `#[source]`) print their source in their own message and return it
/// from `source()` as well, which would name the same cause twice.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            next = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new("1"))));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("renaming to /x: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("writing the state")]
    struct Plain(#[source] std::io::Error);

    fn enoent() -> std::io::Error {
        std::io::Error::from_raw_os_error(2)
    }

    #[test]
    fn a_cause_the_message_already_shows_is_not_repeated() {
        let err = anyhow::Error::new(Repeats(enoent())).context("saving");
        assert_eq!(format!("{err:#}").matches("os error 2").count(), 2);
        assert_eq!(
            Chain(err.as_ref()).to_string(),
            "saving: renaming to /x: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn every_distinct_cause_is_shown_in_order() {
        let err = anyhow::Error::new(Plain(enoent())).context("saving");
        assert_eq!(Chain(err.as_ref()).to_string(), format!("{err:#}"));
        assert_eq!(
            Chain(err.as_ref()).to_string(),
            "saving: writing the state: No such file or directory (os error 2)"
        );
    }
}
