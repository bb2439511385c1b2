//! The query router (path, query string, every parameter parser) on arbitrary request targets
//! against a small real store: every target is answered or refused with a code and a status,
//! never a panic.
#![no_main]

use std::sync::OnceLock;

use csp_ledger::api::query::{answer, ReadView, Request};
use csp_ledger::intake::Submission;
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::Ledger;
use libfuzzer_sys::fuzz_target;

struct Store {
    _dir: tempfile::TempDir,
    ledger: Ledger,
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut ledger =
            Ledger::open(dir.path(), LogOptions { fsync: false }).expect("a fresh ledger");
        for file in ["onboarding.jsonl", "lifecycle.jsonl"] {
            let path = format!("{}/../examples/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).expect("the examples");
            let submissions = text
                .lines()
                .map(|line| Submission::parse(None, line.as_bytes()))
                .collect();
            ledger.submit(submissions).expect("the examples apply");
        }
        Store { _dir: dir, ledger }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let store = store();
    let request = Request::parse(target);
    let view = ReadView {
        state: store.ledger.state(),
        log: store.ledger.log(),
        personal: false,
    };
    if let Err(error) = answer(view, &request) {
        assert!((400..600).contains(&error.status()));
        assert!(!error.code().is_empty());
    }
});
