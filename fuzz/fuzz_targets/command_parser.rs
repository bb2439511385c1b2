//! The command parser on arbitrary bytes: every input is a command or a malformed one, never a
//! panic; a parsed command's body hash is stable; the POST body splitter agrees.
#![no_main]

use csp_ledger::intake::{local_principal, parse_commands, Submission};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = Submission::parse(Some(1), data);
    let again = Submission::parse(Some(1), data);
    match (&first.parsed, &again.parsed) {
        (Ok(a), Ok(b)) => assert_eq!(a.body_hash, b.body_hash),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("the parser is not deterministic"),
    }
    let _ = parse_commands(data, &local_principal());
});
