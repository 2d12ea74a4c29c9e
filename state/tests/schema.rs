//! The committed state-examples/state.schema.json must equal the schema
//! generated from the model types.

use std::path::Path;

#[test]
fn committed_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-examples/state.schema.json");
    let generated = serde_json::to_string_pretty(&opdbus_state::schema())
        .expect("serializing the schema")
        + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).expect("writing state.schema.json");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "state-examples/state.schema.json is stale; regenerate it with \
         `cargo run -p opdbus-installer -- schema > state-examples/state.schema.json` \
         (or `UPDATE_GOLDEN=1 cargo test -p opdbus-state --test schema`)"
    );
}

#[test]
fn schema_describes_the_top_level() {
    let s = opdbus_state::schema();
    let props = s["properties"].as_object().expect("top-level properties");
    for key in ["version", "metadata", "bootstrap", "plugins"] {
        assert!(props.contains_key(key), "schema lacks {key}");
    }
    assert_eq!(s["additionalProperties"], serde_json::json!(false));
}
