//! `plugins.packagekit.manifest`: a file of package names merged with
//! `packages` and `additional_packages`. The format is JSON, one of
//!
//! - a list of names: `["qemu-server", "pve-manager"]`;
//! - an object with a `packages` list: `{"packages": ["qemu-server"]}`,
//!   whose entries may also be objects with a `name` (and any other
//!   fields, such as the `version` a package extractor records, which are
//!   ignored: the names are installed at the repository's version).
//!
//! Errors name the manifest's file, line and column.

use crate::position::Positions;

/// The largest manifest read (a full Proxmox VE package list is ~40 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("{file}:{line}:{column}: not JSON: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}:{column}: {what}; a manifest is a JSON list of package names, or {{\"packages\": [...]}} whose entries are names or objects with a \"name\"")]
    Shape {
        file: String,
        line: usize,
        column: usize,
        what: String,
    },
    #[error("{file}:{line}:{column}: {name:?} is not a Debian package name (lowercase letters, digits and + - . :, starting with a letter or digit)")]
    BadName {
        file: String,
        line: usize,
        column: usize,
        name: String,
    },
}

/// The package names of a manifest, in file order, duplicates removed.
pub fn parse(text: &str, file: &str) -> Result<Vec<String>, ManifestError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| ManifestError::Json {
        file: file.into(),
        line: e.line(),
        column: e.column(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
    })?;
    let pos = Positions::scan(text);
    let at = |pointer: &str| {
        pos.locate(pointer)
            .map(|p| (p.line, p.column))
            .unwrap_or((1, 1))
    };
    let shape = |pointer: &str, what: &str| {
        let (line, column) = at(pointer);
        ManifestError::Shape {
            file: file.into(),
            line,
            column,
            what: what.into(),
        }
    };
    let (list, base) = match &v {
        serde_json::Value::Array(a) => (a, String::new()),
        serde_json::Value::Object(o) => match o.get("packages") {
            Some(serde_json::Value::Array(a)) => (a, "/packages".to_string()),
            Some(_) => return Err(shape("/packages", "\"packages\" is not a list")),
            None => return Err(shape("", "the object has no \"packages\" list")),
        },
        _ => return Err(shape("", "the manifest is neither a list nor an object")),
    };
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let pointer = format!("{base}/{i}");
        let (name, name_ptr) = match entry {
            serde_json::Value::String(s) => (s.as_str(), pointer.clone()),
            serde_json::Value::Object(o) => match o.get("name") {
                Some(serde_json::Value::String(s)) => (s.as_str(), format!("{pointer}/name")),
                _ => return Err(shape(&pointer, "an entry object has no \"name\" string")),
            },
            _ => return Err(shape(&pointer, "an entry is neither a name nor an object")),
        };
        if !crate::validate::valid_package(name) {
            let (line, column) = at(&name_ptr);
            return Err(ManifestError::BadName {
                file: file.into(),
                line,
                column,
                name: name.into(),
            });
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_three_shapes_give_the_names_in_order() {
        assert_eq!(
            parse(r#"["vim", "git", "vim"]"#, "m").unwrap(),
            ["vim", "git"]
        );
        assert_eq!(parse(r#"{"packages": ["htop"]}"#, "m").unwrap(), ["htop"]);
        let extractor = r#"{"source": "pve", "packages": [
            {"name": "pve-manager", "version": "9.0.3"},
            {"name": "qemu-server"}]}"#;
        assert_eq!(
            parse(extractor, "m").unwrap(),
            ["pve-manager", "qemu-server"]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let text = "{\"packages\": [\n  \"vim\",\n  \"Bad Name\"\n]}";
        let e = parse(text, "/root/m.json").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/root/m.json:3:3: \"Bad Name\" is not a Debian package name"),
            "{e}"
        );
        let e = parse("[\"vim\",\n  42]", "m.json").unwrap_err();
        assert!(
            e.to_string().starts_with("m.json:2:3: an entry is neither"),
            "{e}"
        );
        let e = parse("[\"vim\",\n", "m.json").unwrap_err();
        assert!(matches!(e, ManifestError::Json { line: 2, .. }), "{e}");
        let e = parse("{\"pkgs\": []}", "m.json").unwrap_err();
        assert!(e.to_string().contains("no \"packages\" list"), "{e}");
    }
}
