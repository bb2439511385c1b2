//! Guards the rule "every rejection code has a test that provokes it": each code of
//! `RejectionCode::ALL` must appear in an assertion of some test file.

use csp_ledger_schemas::RejectionCode;

#[test]
fn every_rejection_code_is_provoked_by_a_test() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests");
    let mut sources = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("rejection_coverage.rs") {
            sources.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let missing: Vec<&str> = RejectionCode::ALL
        .iter()
        .filter(|code| {
            let variant = format!("Code::{code:?}");
            let full = format!("RejectionCode::{code:?}");
            let wire = format!("\"{}\"", code.as_str());
            !(sources.contains(&variant) || sources.contains(&full) || sources.contains(&wire))
        })
        .map(|code| code.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "rejection codes no test provokes: {missing:?}"
    );
}
