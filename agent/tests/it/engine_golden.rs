//! Golden diff fixtures: `fixtures/diff/<plugin>/<case>/{current,desired}.json`
//! must diff to `actions.json`. `UPDATE_GOLDEN=1 cargo test --test engine_golden`
//! rewrites the expected files (review the change before committing it).

use std::path::Path;

fn read(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

#[test]
fn diff_fixtures_match() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let engine = opdbus_agent::plugins::standard();
    let mut cases = 0;
    let mut failures = Vec::new();
    let mut plugins: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    plugins.sort();
    for plugin_dir in plugins {
        let name = plugin_dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let Some(plugin) = engine.plugin(&name) else {
            // Plugins not (yet) in plugins::standard() test their own fixtures.
            eprintln!("skipping fixtures of unregistered plugin '{name}'");
            continue;
        };
        let mut dirs: Vec<_> = std::fs::read_dir(&plugin_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        dirs.sort();
        for case in dirs {
            cases += 1;
            let current = read(&case.join("current.json"));
            let desired = read(&case.join("desired.json"));
            let actions = plugin
                .diff_json(&current, &desired)
                .unwrap_or_else(|e| panic!("{}: {e:#}", case.display()));
            let got = serde_json::Value::Array(actions.iter().map(|a| a.detail.clone()).collect());
            let expected_path = case.join("actions.json");
            if update {
                std::fs::write(
                    &expected_path,
                    serde_json::to_string_pretty(&got).unwrap() + "\n",
                )
                .unwrap();
                continue;
            }
            let expected = read(&expected_path);
            if got != expected {
                failures.push(format!(
                    "{}:\n  expected {}\n  got      {}",
                    case.display(),
                    expected,
                    got
                ));
            }
            // Every diff's human line is non-empty and names the resource's object.
            for a in &actions {
                assert!(
                    !a.description.is_empty(),
                    "{}: empty description",
                    case.display()
                );
            }
        }
    }
    assert!(
        cases >= 10,
        "expected at least 10 golden cases, found {cases}"
    );
    assert!(
        failures.is_empty(),
        "{} golden case(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The diff is pure: the same inputs give the same actions twice.
#[test]
fn diff_is_deterministic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diff/systemd/both-forms");
    let engine = opdbus_agent::plugins::standard();
    let p = engine.plugin("systemd").unwrap();
    let (c, d) = (
        read(&root.join("current.json")),
        read(&root.join("desired.json")),
    );
    assert_eq!(p.diff_json(&c, &d).unwrap(), p.diff_json(&c, &d).unwrap());
}

#[test]
fn plugins_run_in_the_documented_order() {
    assert_eq!(
        opdbus_agent::plugins::standard().plugin_names(),
        [
            "storage",
            "host",
            "packages",
            "users",
            "network",
            "flows",
            "wireguard",
            "netmaker",
            "firewall",
            "systemd",
            "lxc",
            "proxmox"
        ]
    );
}

/// A timer's `unit` without a suffix means a service: the agent writes
/// `Unit=scrub.service` (systemd ignores `Unit=scrub`: "Unit type not
/// valid"), the same text the state's golden files pin, and
/// `systemd-analyze verify` accepts the file without a word.
#[test]
fn a_timer_unit_without_suffix_is_written_the_way_systemd_accepts() {
    let state = opdbus_state::parse::parse_only(
        r#"{"version": 1, "plugins": {"systemd": {"timers": {"scrub": {
            "on_calendar": "monthly", "unit": "scrub", "persistent": false}}}}}"#,
    )
    .unwrap();
    let sd = state.plugins.systemd.as_ref().unwrap();
    let d = opdbus_agent::plugins::systemd::desired_from(sd);
    let text = &d.files["scrub.timer"];
    assert!(text.contains("\nUnit=scrub.service\n"), "{text}");
    assert_eq!(
        Some(text),
        state.unit_specs()["scrub.timer"].content.as_ref(),
        "the agent writes what the state's golden files pin"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scrub.timer"), text).unwrap();
    std::fs::write(
        dir.path().join("scrub.service"),
        "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("scrub.timer"))
        .output()
        .expect("systemd-analyze (Debian's systemd) runs here");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
