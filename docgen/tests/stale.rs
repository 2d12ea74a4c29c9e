//! Fails when a man page or completion under `dist/` no longer matches the
//! clap definitions (a flag added, a help text changed, a subcommand
//! removed). `UPDATE_GENERATED=1 cargo test -p opdbus-docgen` or
//! `cargo run -p opdbus-docgen` rewrites them.

use std::path::PathBuf;

#[test]
fn generated_files_are_current() {
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(opdbus_docgen::DIST);
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        opdbus_docgen::write(&dist).expect("writing dist/");
    }
    let want = opdbus_docgen::generate().expect("generating");
    let have = opdbus_docgen::on_disk(&dist).expect("reading dist/");
    let mut problems = Vec::new();
    for (path, data) in &want {
        match have.get(path) {
            None => problems.push(format!("missing: dist/{}", path.display())),
            Some(d) if d != data => problems.push(format!("stale: dist/{}", path.display())),
            Some(_) => {}
        }
    }
    for path in have.keys().filter(|p| !want.contains_key(*p)) {
        problems.push(format!("no longer generated: dist/{}", path.display()));
    }
    assert!(
        problems.is_empty(),
        "{}\nrun `cargo run -p opdbus-docgen` (or UPDATE_GENERATED=1 cargo test -p opdbus-docgen) and commit dist/",
        problems.join("\n")
    );
}

#[test]
fn every_binary_has_a_page_and_three_completions() {
    let want = opdbus_docgen::generate().expect("generating");
    for name in ["op-dbus-install", "op-dbus-agent", "op-dbus-iso"] {
        for file in [
            format!("man/{name}.1"),
            format!("completions/bash/{name}"),
            format!("completions/zsh/_{name}"),
            format!("completions/fish/{name}.fish"),
        ] {
            let data = want
                .get(&PathBuf::from(&file))
                .unwrap_or_else(|| panic!("{file} is not generated"));
            assert!(
                String::from_utf8_lossy(data).contains(name),
                "{file} does not name {name}"
            );
        }
    }
    assert!(want.contains_key(&PathBuf::from("man/op-dbus-agent-audit-verify.1")));
}
