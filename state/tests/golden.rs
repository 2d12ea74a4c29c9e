//! Golden tests. `fixtures/valid/<case>/state.json` must validate and
//! normalize to `normalized.json`; `fixtures/invalid/<case>/state.json` must
//! produce exactly the lines of `expected.txt` (cases named `strict_*` run
//! with --strict). Every file in state-examples/ must validate; its warnings
//! are pinned in `fixtures/examples-warnings.txt`.
//!
//! Regenerate the expected files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test -p opdbus-state --test golden`, then review
//! the diff.

use std::fs;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Compares or (with UPDATE_GOLDEN=1) rewrites a golden file; returns a
/// mismatch description.
fn golden(path: &Path, actual: &str) -> Option<String> {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(path, actual).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        return None;
    }
    let expected = fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return None;
    }
    let mut msg = format!(
        "{} differs (UPDATE_GOLDEN=1 rewrites it):\n",
        path.display()
    );
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => msg.push_str(&format!("  {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    msg.push_str(&format!("- {x}\n"));
                }
                if let Some(y) = y {
                    msg.push_str(&format!("+ {y}\n"));
                }
            }
        }
    }
    Some(msg)
}

fn finish(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} golden mismatch(es):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_states_normalize_as_pinned() {
    let mut failures = Vec::new();
    let dirs = cases(&fixtures().join("valid"));
    assert!(!dirs.is_empty(), "no valid cases");
    for dir in dirs {
        let loaded = match opdbus_state::load(&dir.join("state.json")) {
            Ok(l) => l,
            Err(f) => {
                failures.push(format!(
                    "{}: expected valid, got:\n{}",
                    dir.display(),
                    f.lines().join("\n")
                ));
                continue;
            }
        };
        let normalized = serde_json::json!({
            "network": loaded.state.network_spec(),
            "units": loaded.state.unit_specs(),
            "warnings": loaded.warnings.iter().map(|d| d.render("state.json")).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&normalized)
            .expect("serializing the normalized model")
            + "\n";
        failures.extend(golden(&dir.join("normalized.json"), &text));
    }
    finish(failures);
}

#[test]
fn invalid_states_fail_with_pinned_lines() {
    let mut failures = Vec::new();
    let dirs = cases(&fixtures().join("invalid"));
    assert!(dirs.len() >= 30, "only {} invalid cases", dirs.len());
    for dir in dirs {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = fs::read_to_string(dir.join("state.json")).expect("reading state.json");
        let report = opdbus_state::check_text(&text, "state.json", name.starts_with("strict_"));
        if report.ok {
            failures.push(format!(
                "{name}: expected a failure, got: {:?}",
                report.lines
            ));
            continue;
        }
        failures.extend(golden(
            &dir.join("expected.txt"),
            &(report.lines.join("\n") + "\n"),
        ));
    }
    finish(failures);
}

#[test]
fn every_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("reading state-examples")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".schema.json")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 9, "only {} examples", files.len());
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = fs::read_to_string(f).expect("reading example");
        match opdbus_state::parse_str(&text, &name) {
            Ok(l) => lines.extend(l.warnings.iter().map(|d| d.render(&name))),
            Err(e) => errors.push(e.lines().join("\n")),
        }
    }
    assert!(
        errors.is_empty(),
        "examples with errors:\n{}",
        errors.join("\n")
    );
    let mut failures = Vec::new();
    failures.extend(golden(
        &fixtures().join("examples-warnings.txt"),
        &(lines.join("\n") + "\n"),
    ));
    finish(failures);
}
