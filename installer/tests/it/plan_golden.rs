//! Golden plans: every state in `state-examples/` that has disks, mapped to
//! 20 GiB sparse files, planned with seeded UUIDs → `fixtures/plan/NAME.json`.
//! `UPDATE_GOLDEN=1 cargo test -p opdbus-installer --test plan_golden`
//! rewrites the expected files.

use std::path::{Path, PathBuf};

use opdbus_installer::disk::layout::UuidSource;
use opdbus_installer::disk::TargetMap;
use opdbus_installer::plan::install_plan;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("state-examples exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".schema.json")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn plans_of_state_examples_match_golden_files() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for path in examples() {
        let loaded = opdbus_state::load(&path).expect("examples validate");
        let Some(storage) = loaded.state.plugins.storage.as_ref() else {
            continue;
        };
        if storage.devices.is_empty() {
            continue;
        }
        let mut targets = TargetMap::new();
        for (i, key) in storage.devices.keys().enumerate() {
            let img = tmp.path().join(format!("disk{i}.img"));
            let f = std::fs::File::create(&img).expect("create image");
            f.set_len(20 << 30).expect("sparse 20 GiB");
            targets.insert(key.clone(), img);
        }
        let plan = install_plan(&loaded.state, targets, UuidSource::Seeded(7)).expect("plans");
        let mut text = serde_json::to_string_pretty(&plan).expect("serializes");
        text = text.replace(&tmp.path().display().to_string(), "<tmp>");
        text.push('\n');
        let name = path
            .file_stem()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let golden =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/plan/{name}.json"));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &text).expect("write golden");
        } else {
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if want != text {
                mismatches.push(format!(
                    "{name}: plan differs from {} (UPDATE_GOLDEN=1 to accept)",
                    golden.display()
                ));
            }
        }
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples have disks");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
