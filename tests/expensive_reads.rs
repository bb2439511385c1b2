//! SPEC.md section 11, expensive reads: `/v1/audit/verify` and answers that must read more
//! than 10,000 events run on a bounded pool (`--expensive-reads-max`); when it is full they
//! answer 429 `busy` with `Retry-After`, and the cheap reads go on.

mod support;

use std::sync::{Arc, Barrier};

use csp_ledger::api::query::CHEAP_READ_EVENTS_MAX;
use csp_ledger::app::ServeOptions;
use csp_ledger::auth::Authenticator;
use csp_ledger::intake::Submission;
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::Ledger;
use support::{get, start_server_with_options};

/// A log of `commands` generated commands (more than 10,000 events).
fn big_store(dir: &std::path::Path, commands: usize) -> u64 {
    let mut ledger = Ledger::open(dir, LogOptions { fsync: false }).unwrap();
    let lines: Vec<String> = csp_ledger_testkit::workload::Generator::new(5)
        .take(commands)
        .map(|c| c.to_json())
        .collect();
    for chunk in lines.chunks(2_000) {
        let submissions = chunk
            .iter()
            .map(|line| Submission::parse(None, line.as_bytes()))
            .collect();
        ledger.submit(submissions).unwrap();
    }
    let head = ledger.head().position;
    assert!(head as usize > CHEAP_READ_EVENTS_MAX, "{head} events");
    head
}

#[test]
fn a_full_pool_answers_busy_with_retry_after_and_cheap_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let head = big_store(dir.path(), 30_000);
    let mut options = ServeOptions::new(Arc::new(Authenticator::insecure()));
    options.expensive_reads_max = 1;
    let addr = start_server_with_options(dir.path(), options);

    // Eight full walks at once against a pool of one: one (or a few, one after the other)
    // answer, the rest are refused at once.
    let clients = 8;
    let barrier = Arc::new(Barrier::new(clients));
    let answers: Vec<_> = (0..clients)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                get(addr, "/v1/audit/verify?full=true")
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let busy: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert!(ok >= 1, "no walk answered");
    assert!(!busy.is_empty(), "a pool of one took eight walks at once");
    assert_eq!(ok + busy.len(), clients, "only 200 or 429");
    for refused in &busy {
        assert_eq!(refused.json()["code"], "busy", "{}", refused.body);
        assert!(refused.headers.contains("retry-after: 1"), "{}", refused.headers);
    }
    for answer in answers.iter().filter(|r| r.status == 200) {
        assert_eq!(answer.json()["ok"], true);
        assert_eq!(answer.json()["events"], head);
    }

    // An as_of overdue list below the head refolds the log: expensive, on the pool, so eight
    // at once against a pool of one are partly refused. The same list at the head is cheap:
    // never refused.
    let concurrently = |path: String| -> Vec<support::Response> {
        let barrier = Arc::new(Barrier::new(clients));
        (0..clients)
            .map(|_| {
                let (barrier, path) = (Arc::clone(&barrier), path.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    get(addr, &path)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect()
    };
    let past = concurrently(format!(
        "/v1/verifications/overdue?date=2026-03-20&as_of={}",
        head - 1
    ));
    assert!(past.iter().any(|r| r.status == 200));
    assert!(past.iter().any(|r| r.status == 429), "an as_of refold is an expensive read");
    assert!(past.iter().all(|r| matches!(r.status, 200 | 429)));
    let at_head = concurrently("/v1/verifications/overdue?date=2026-03-20".to_string());
    assert!(at_head.iter().all(|r| r.status == 200), "cheap reads are never refused");
    assert_eq!(past.iter().find(|r| r.status == 200).unwrap().json()["position"], head - 1);
}

#[test]
fn verify_checks_only_the_tail_it_has_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let head = big_store(dir.path(), 12_000);
    let addr = start_server_with_options(
        dir.path(),
        ServeOptions::new(Arc::new(Authenticator::insecure())),
    );
    let first = get(addr, "/v1/audit/verify").json();
    assert_eq!(first["ok"], true);
    assert_eq!(first["verified_from"], 1);
    assert_eq!(first["events"], head);
    let second = get(addr, "/v1/audit/verify").json();
    assert_eq!(second["verified_from"], head + 1, "{second}");
    assert_eq!(second["head_hash"], first["head_hash"]);
    // An earlier position inside the verified prefix: nothing to walk either.
    let early = get(addr, "/v1/audit/verify?as_of=100").json();
    assert_eq!(early["ok"], true);
    assert_eq!(early["events"], 100);
    assert_eq!(early["verified_from"], 101);
}
