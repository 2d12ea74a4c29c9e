//! The live ISO's kernel command line: `opdbus.auto`, `opdbus.state=`,
//! `opdbus.state_sha256=` and `opdbus.state_cert_sha256=` (see CLI.md),
//! parsed into a plain value. Pure.

use std::path::PathBuf;

/// Where the state comes from, as `opdbus.state=` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSource {
    /// An absolute path on the live system (the medium is at `/run/live/medium`).
    Path(PathBuf),
    /// `label:NAME:/PATH`: a file on the filesystem labelled NAME.
    Label { label: String, path: PathBuf },
    /// `http://` or `https://`.
    Url(String),
}

impl std::fmt::Display for StateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateSource::Path(p) => write!(f, "{}", p.display()),
            StateSource::Label { label, path } => write!(f, "label:{label}:{}", path.display()),
            StateSource::Url(u) => f.write_str(u),
        }
    }
}

/// The `opdbus.*` arguments of one kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveArgs {
    /// `opdbus.auto` is present.
    pub auto: bool,
    pub state: Option<StateSource>,
    /// Lower-case hex SHA-256 the state must have.
    pub state_sha256: Option<String>,
    /// Lower-case hex SHA-256 of the https server's certificate (DER), as
    /// `openssl x509 -noout -fingerprint -sha256` prints it (colons allowed).
    pub state_cert_sha256: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error(
        "opdbus.state={value:?}: expected an absolute path, label:NAME:/PATH or an http(s):// URL"
    )]
    BadSource { value: String },
    #[error("opdbus.state={value:?}: expected label:NAME:/PATH with a non-empty NAME and an absolute PATH")]
    BadLabel { value: String },
    #[error("{key}={value:?}: expected 64 hexadecimal digits")]
    BadSha256 { key: &'static str, value: String },
    #[error("{key} is given twice on the kernel command line")]
    Repeated { key: &'static str },
}

/// Splits a command line into words the way the kernel does: whitespace
/// separates, double quotes group (and are removed).
pub fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// Parses the `opdbus.*` words of `text` (the contents of `/proc/cmdline`);
/// other words are ignored.
pub fn parse_cmdline(text: &str) -> Result<LiveArgs, CmdlineError> {
    let mut args = LiveArgs::default();
    for word in split_words(text) {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word.as_str(), None),
        };
        match key {
            // `opdbus.auto=0` would be surprising; any presence means auto.
            "opdbus.auto" => args.auto = true,
            "opdbus.state" => {
                if args.state.is_some() {
                    return Err(CmdlineError::Repeated {
                        key: "opdbus.state",
                    });
                }
                args.state = Some(parse_source(value.unwrap_or(""))?);
            }
            "opdbus.state_sha256" => {
                set_sha256(&mut args.state_sha256, "opdbus.state_sha256", value)?
            }
            "opdbus.state_cert_sha256" => set_sha256(
                &mut args.state_cert_sha256,
                "opdbus.state_cert_sha256",
                value,
            )?,
            _ => {}
        }
    }
    Ok(args)
}

/// Sets a SHA-256 argument once: 64 hex digits, colons between bytes allowed.
fn set_sha256(
    slot: &mut Option<String>,
    key: &'static str,
    value: Option<&str>,
) -> Result<(), CmdlineError> {
    if slot.is_some() {
        return Err(CmdlineError::Repeated { key });
    }
    let v = value.unwrap_or("");
    let hex: String = v.chars().filter(|&c| c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CmdlineError::BadSha256 {
            key,
            value: v.into(),
        });
    }
    *slot = Some(hex.to_ascii_lowercase());
    Ok(())
}

/// Parses one `opdbus.state=` value.
pub fn parse_source(value: &str) -> Result<StateSource, CmdlineError> {
    if let Some(rest) = value.strip_prefix("label:") {
        let bad = || CmdlineError::BadLabel {
            value: value.into(),
        };
        let (label, path) = rest.split_once(':').ok_or_else(bad)?;
        if label.is_empty() || !path.starts_with('/') || path.len() < 2 {
            return Err(bad());
        }
        return Ok(StateSource::Label {
            label: label.into(),
            path: PathBuf::from(path),
        });
    }
    let lower = value.to_ascii_lowercase();
    if (lower.starts_with("http://") && value.len() > 7)
        || (lower.starts_with("https://") && value.len() > 8)
    {
        return Ok(StateSource::Url(value.into()));
    }
    if value.starts_with('/') && !value.contains("://") {
        return Ok(StateSource::Path(PathBuf::from(value)));
    }
    Err(CmdlineError::BadSource {
        value: value.into(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SHA: &str = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";

    #[test]
    fn full_live_cmdline() {
        let text = format!(
            "BOOT_IMAGE=/live/vmlinuz boot=live console=tty0 console=ttyS0,115200 opdbus.auto \
             opdbus.state=/run/live/medium/opdbus/state.json opdbus.state_sha256={SHA} quiet\n"
        );
        let args = parse_cmdline(&text).unwrap();
        assert!(args.auto);
        assert_eq!(
            args.state,
            Some(StateSource::Path(
                "/run/live/medium/opdbus/state.json".into()
            ))
        );
        assert_eq!(
            args.state_sha256.as_deref(),
            Some(SHA.to_ascii_lowercase().as_str())
        );
    }

    #[test]
    fn certificate_pin_as_openssl_prints_it() {
        let colons = SHA
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        let a = parse_cmdline(&format!(
            "opdbus.state=https://cfg.example/s.json opdbus.state_cert_sha256={colons}"
        ))
        .unwrap();
        assert_eq!(
            a.state_cert_sha256.as_deref(),
            Some(SHA.to_ascii_lowercase().as_str())
        );
        assert_eq!(a.state_sha256, None);
    }

    #[test]
    fn nothing_of_ours() {
        assert_eq!(
            parse_cmdline("boot=live quiet splash").unwrap(),
            LiveArgs::default()
        );
        // A lookalike key is not ours.
        assert!(!parse_cmdline("opdbus.automatic").unwrap().auto);
    }

    #[test]
    fn label_and_url_sources() {
        let a = parse_cmdline("opdbus.state=label:OPDBUS-CFG:/site/state.json").unwrap();
        assert_eq!(
            a.state,
            Some(StateSource::Label {
                label: "OPDBUS-CFG".into(),
                path: "/site/state.json".into()
            })
        );
        let a = parse_cmdline("opdbus.state=https://cfg.example/s.json?host=a").unwrap();
        assert_eq!(
            a.state,
            Some(StateSource::Url("https://cfg.example/s.json?host=a".into()))
        );
        let a = parse_cmdline("opdbus.state=http://10.0.2.2:8080/s.json").unwrap();
        assert!(matches!(a.state, Some(StateSource::Url(_))));
    }

    #[test]
    fn quoted_values_keep_spaces() {
        let a =
            parse_cmdline(r#"opdbus.state="/run/live/medium/my state.json" opdbus.auto"#).unwrap();
        assert_eq!(
            a.state,
            Some(StateSource::Path("/run/live/medium/my state.json".into()))
        );
        assert!(a.auto);
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let e = parse_cmdline("opdbus.state=ftp://x/s.json").unwrap_err();
        assert_eq!(
            e.to_string(),
            "opdbus.state=\"ftp://x/s.json\": expected an absolute path, label:NAME:/PATH or an http(s):// URL"
        );
        let e = parse_cmdline("opdbus.state=state.json").unwrap_err();
        assert!(matches!(e, CmdlineError::BadSource { .. }));
        let e = parse_cmdline("opdbus.state").unwrap_err();
        assert!(matches!(e, CmdlineError::BadSource { .. }));
        for v in [
            "label:CFG",
            "label::/s.json",
            "label:CFG:s.json",
            "label:CFG:/",
        ] {
            let e = parse_cmdline(&format!("opdbus.state={v}")).unwrap_err();
            assert!(matches!(e, CmdlineError::BadLabel { .. }), "{v}: {e}");
        }
        let e = parse_cmdline("opdbus.state_sha256=abc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "opdbus.state_sha256=\"abc\": expected 64 hexadecimal digits"
        );
        let e = parse_cmdline("opdbus.state_cert_sha256=zz").unwrap_err();
        assert_eq!(
            e.to_string(),
            "opdbus.state_cert_sha256=\"zz\": expected 64 hexadecimal digits"
        );
        let e = parse_cmdline("opdbus.state=/a opdbus.state=/b").unwrap_err();
        assert_eq!(
            e,
            CmdlineError::Repeated {
                key: "opdbus.state"
            }
        );
    }
}
