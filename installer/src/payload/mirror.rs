//! Where the payload's packages come from: by default the build host's own apt
//! sources (deb822 `*.sources` and one-line `*.list`), never a host name
//! written into the code; a state may name an explicit mirror instead.

use std::fs;
use std::path::{Path, PathBuf};

/// A failure to find a usable Debian archive in the host's apt sources.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("reading apt sources {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no Debian main archive found in {} (sources.list and sources.list.d/): \
         add a `deb` entry for the Debian archive there, or set an explicit mirror in the state",
        apt_dir.display()
    )]
    NotFound { apt_dir: PathBuf },
}

/// One apt source entry (one stanza of a `.sources` file, or one line of a
/// `.list` file), reduced to what a bootstrap tool needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    pub types: Vec<String>,
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    /// A keyring path; inline (armored) keys are not kept.
    pub signed_by: Option<String>,
    pub enabled: bool,
}

/// The archive a payload is built from: a URI and, when the host names one, the
/// keyring that signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub uri: String,
    pub signed_by: Option<String>,
}

impl Mirror {
    /// An explicit mirror URL from the state; the bootstrap tool's default
    /// keyring applies.
    pub fn explicit(uri: &str) -> Self {
        Mirror {
            uri: uri.trim_end_matches('/').to_string(),
            signed_by: None,
        }
    }
}

/// Parses deb822 text (the format of `/etc/apt/sources.list.d/*.sources`).
/// Stanzas are separated by blank lines; `#` starts a comment line; a line
/// starting with whitespace continues the previous field.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let flush = |fields: &mut Vec<(String, String)>, out: &mut Vec<AptSource>| {
        if fields.is_empty() {
            return;
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| -> Vec<String> {
            get(name)
                .map(|v| v.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let signed_by = get("Signed-By")
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.contains('\n') && !v.starts_with("-----"))
            .map(str::to_string);
        let enabled = !get("Enabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("no"));
        out.push(AptSource {
            types: words("Types"),
            uris: words("URIs"),
            suites: words("Suites"),
            components: words("Components"),
            signed_by,
            enabled,
        });
        fields.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut fields, &mut out);
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            fields.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    flush(&mut fields, &mut out);
    out
}

/// Parses one-line apt sources (`/etc/apt/sources.list`):
/// `deb [opt=val ...] URI SUITE COMPONENT...`.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((kind, mut rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        if kind != "deb" && kind != "deb-src" {
            continue;
        }
        let mut signed_by = None;
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('[') {
            let Some((opts, tail)) = after.split_once(']') else {
                continue;
            };
            for opt in opts.split_whitespace() {
                if let Some(v) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
            }
            rest = tail;
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            types: vec![kind.to_string()],
            uris: vec![uri.to_string()],
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
            signed_by,
            enabled: true,
        });
    }
    out
}

/// True for suites of the security archive or of point-update pockets.
fn is_side_suite(suite: &str) -> bool {
    suite.contains('/')
        || ["-security", "-updates", "-backports", "-proposed-updates"]
            .iter()
            .any(|s| suite.ends_with(s))
}

/// Picks the Debian main archive among parsed sources: an enabled binary
/// (`deb`) entry with component `main`, carrying a release suite (not
/// `-security`, `-updates`, ...) and not pointing at the security archive.
pub fn pick_main_archive(sources: &[AptSource]) -> Option<Mirror> {
    sources
        .iter()
        .filter(|s| s.enabled && s.types.iter().any(|t| t == "deb"))
        .filter(|s| s.components.iter().any(|c| c == "main"))
        .filter(|s| s.suites.iter().any(|suite| !is_side_suite(suite)))
        .find_map(|s| {
            let uri = s.uris.iter().find(|u| !u.contains("security"))?;
            Some(Mirror {
                uri: uri.trim_end_matches('/').to_string(),
                signed_by: s.signed_by.clone(),
            })
        })
}

/// Reads every apt source of the system rooted at `root` in apt's own order:
/// `etc/apt/sources.list`, then `etc/apt/sources.list.d/*.list` and
/// `*.sources` sorted by name. Missing files are skipped.
pub fn read_host_sources(root: &Path) -> Result<Vec<AptSource>, MirrorError> {
    let apt = root.join("etc/apt");
    let read = |path: &Path| {
        fs::read_to_string(path).map_err(|source| MirrorError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut sources = Vec::new();
    let list = apt.join("sources.list");
    if list.is_file() {
        sources.extend(parse_one_line(&read(&list)?));
    }
    let dir = apt.join("sources.list.d");
    if dir.is_dir() {
        let mut names: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|source| MirrorError::Read {
                path: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        names.sort();
        for path in names {
            match path.extension().and_then(|e| e.to_str()) {
                Some("list") => sources.extend(parse_one_line(&read(&path)?)),
                Some("sources") => sources.extend(parse_deb822(&read(&path)?)),
                _ => {}
            }
        }
    }
    Ok(sources)
}

/// The Debian main archive configured on the system rooted at `root` (`/` on
/// the build host; a temp dir in tests).
pub fn host_mirror(root: &Path) -> Result<Mirror, MirrorError> {
    pick_main_archive(&read_host_sources(root)?).ok_or_else(|| MirrorError::NotFound {
        apt_dir: root.join("etc/apt"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DEBIAN_SOURCES: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://archive.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://archive.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn deb822_stanzas_are_parsed() {
        let s = parse_deb822(DEBIAN_SOURCES);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].types, ["deb"]);
        assert_eq!(s[0].uris, ["http://archive.example/debian"]);
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(s[0].components, ["main"]);
        assert_eq!(
            s[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(s[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn security_archive_is_not_the_main_one_even_when_listed_first() {
        let text = "\
Types: deb
URIs: http://archive.example/debian-security/
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://archive.example/debian/
Suites: bookworm
Components: main contrib
";
        let m = pick_main_archive(&parse_deb822(text)).unwrap();
        assert_eq!(m.uri, "http://archive.example/debian");
        assert_eq!(m.signed_by, None);
    }

    #[test]
    fn disabled_stanza_and_inline_key_are_handled() {
        let text = "\
Enabled: no
Types: deb
URIs: http://off.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://on.example/debian
Suites: trixie
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 abc
 -----END PGP PUBLIC KEY BLOCK-----
";
        let s = parse_deb822(text);
        assert!(!s[0].enabled);
        assert_eq!(s[1].signed_by, None, "inline keys are not a keyring path");
        assert_eq!(
            pick_main_archive(&s).unwrap().uri,
            "http://on.example/debian"
        );
    }

    #[test]
    fn one_line_sources_with_options_and_comments() {
        let text = "\
# comment
deb [arch=amd64 signed-by=/etc/apt/keyrings/d.gpg] http://a.example/debian bookworm main non-free-firmware
deb http://a.example/debian-security bookworm-security main
deb-src http://a.example/debian bookworm main
";
        let s = parse_one_line(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].signed_by.as_deref(), Some("/etc/apt/keyrings/d.gpg"));
        assert_eq!(s[0].components, ["main", "non-free-firmware"]);
        let m = pick_main_archive(&s).unwrap();
        assert_eq!(m.uri, "http://a.example/debian");
        assert_eq!(m.signed_by.as_deref(), Some("/etc/apt/keyrings/d.gpg"));
    }

    #[test]
    fn host_mirror_reads_a_root_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("etc/apt/sources.list.d");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("debian.sources"), DEBIAN_SOURCES).unwrap();
        fs::write(
            dir.join("ignored.txt"),
            "deb http://x.example/ bookworm main",
        )
        .unwrap();
        let m = host_mirror(root.path()).unwrap();
        assert_eq!(m.uri, "http://archive.example/debian");

        // sources.list is read before sources.list.d, as apt does.
        fs::write(
            root.path().join("etc/apt/sources.list"),
            "deb http://first.example/debian bookworm main\n",
        )
        .unwrap();
        assert_eq!(
            host_mirror(root.path()).unwrap().uri,
            "http://first.example/debian"
        );
    }

    #[test]
    fn no_archive_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let err = host_mirror(root.path()).unwrap_err();
        assert!(
            err.to_string().contains("no Debian main archive found in"),
            "{err}"
        );
    }
}
