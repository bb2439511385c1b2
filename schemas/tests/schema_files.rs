//! The committed JSON Schema files equal the ones generated from the Rust types.

use std::path::PathBuf;

use csp_ledger_schemas::json_schema::all_schema_files;

#[test]
fn committed_schema_files_are_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("json");
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some();
    let files = all_schema_files();
    assert_eq!(files.len(), 24 + 28, "one schema per command and per event");
    let mut stale = Vec::new();
    for (path, schema) in &files {
        let full = root.join(path);
        let text = serde_json::to_string_pretty(schema).unwrap() + "\n";
        if update {
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(&full, &text).unwrap();
        } else if std::fs::read_to_string(&full).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.clone());
        }
    }
    assert!(
        stale.is_empty(),
        "stale schema files (run UPDATE_SCHEMAS=1 cargo test -p csp-ledger-schemas): {stale:?}"
    );
}

#[test]
fn personal_fields_are_marked_in_the_schemas() {
    let files = all_schema_files();
    let find = |name: &str| files.iter().find(|(p, _)| p == name).unwrap().1.clone();
    let enroll = find("commands/EnrollPartner.schema.json");
    assert_eq!(
        enroll["properties"]["payload"]["properties"]["primary_contact_email"]["x-personal-data"],
        true
    );
    let enrolled = find("events/PartnerEnrolled.schema.json");
    assert_eq!(
        enrolled["properties"]["data"]["properties"]["primary_contact_email"]["x-personal-data"],
        true
    );
    let signed = find("events/MpaSigned.schema.json");
    assert_eq!(
        signed["properties"]["data"]["properties"]["signer_email"]["x-personal-data"],
        true
    );
}

#[test]
fn event_schemas_take_version_1_without_and_version_2_with_submitted_by() {
    let files = all_schema_files();
    let schema = &files
        .iter()
        .find(|(p, _)| p == "events/PartnerEnrolled.schema.json")
        .unwrap()
        .1;
    let validator = jsonschema::options()
        .should_validate_formats(false)
        .build(schema)
        .expect("a generated schema compiles");
    // A captured version 1 event line (with hash, prev_hash and personal_data).
    let captured = include_str!("data/outcome_lines.jsonl")
        .lines()
        .next()
        .unwrap();
    let v1: serde_json::Value =
        serde_json::from_str::<serde_json::Value>(captured).unwrap()["events"][0].clone();
    assert_eq!(v1["schema_version"], 1);
    assert!(validator.is_valid(&v1));
    let mut v2 = v1.clone();
    v2["schema_version"] = 2.into();
    v2["submitted_by"] = "partner-portal".into();
    assert!(validator.is_valid(&v2));

    let with = |base: &serde_json::Value, field: &str, value: serde_json::Value| {
        let mut changed = base.clone();
        changed[field] = value;
        changed
    };
    let without = |base: &serde_json::Value, field: &str| {
        let mut changed = base.clone();
        changed.as_object_mut().unwrap().remove(field);
        changed
    };
    for (why, instance) in [
        (
            "v1 with submitted_by",
            with(&v1, "submitted_by", "local".into()),
        ),
        ("v2 without submitted_by", without(&v2, "submitted_by")),
        (
            "v2 with null",
            with(&v2, "submitted_by", serde_json::Value::Null),
        ),
        (
            "v2 with an e-mail",
            with(&v2, "submitted_by", "a@b.example".into()),
        ),
        ("v2 with an empty id", with(&v2, "submitted_by", "".into())),
        (
            "v2 with a long id",
            with(&v2, "submitted_by", "x".repeat(129).into()),
        ),
        ("version 3", with(&v2, "schema_version", 3.into())),
        ("no version", without(&v1, "schema_version")),
    ] {
        assert!(!validator.is_valid(&instance), "{why} is valid");
    }
    assert!(validator.is_valid(&with(&v2, "submitted_by", "x".repeat(128).into())));
}
