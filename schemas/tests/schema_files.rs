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
