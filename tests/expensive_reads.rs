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
        assert!(
            refused.headers.contains("retry-after: 1"),
            "{}",
            refused.headers
        );
    }
    for answer in answers.iter().filter(|r| r.status == 200) {
        assert_eq!(answer.json()["ok"], true);
        assert_eq!(answer.json()["events"], head);
    }

    // An as_of overdue list reads no event (the state's verification index answers it): it
    // is cheap, never refused, even while the pool is taken.
    let concurrently = |paths: Vec<String>| -> Vec<support::Response> {
        let barrier = Arc::new(Barrier::new(paths.len()));
        paths
            .into_iter()
            .map(|path| {
                let barrier = Arc::clone(&barrier);
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
    let mut paths = vec!["/v1/audit/verify?full=true".to_string(); clients];
    paths.extend((0..clients).map(|i| {
        format!(
            "/v1/verifications/overdue?date=2026-03-20&as_of={}",
            head - 1 - i as u64
        )
    }));
    let answers = concurrently(paths);
    let (walks, lists) = answers.split_at(clients);
    assert!(walks.iter().any(|r| r.status == 429));
    for (i, list) in lists.iter().enumerate() {
        assert_eq!(list.status, 200, "{}", list.body);
        assert_eq!(list.json()["position"], head - 1 - i as u64);
    }
}

/// A read whose streams hold more events than the budget is refused as expensive before it
/// reads anything; the HTTP server then runs it on the pool (the CLI has no budget).
#[test]
fn an_as_of_answer_over_the_budget_is_expensive() {
    use csp_ledger::api::query::{answer, QueryError, ReadView, Request};
    let dir = tempfile::tempdir().unwrap();
    big_store(dir.path(), 12_000);
    let ledger = Ledger::open(dir.path(), LogOptions { fsync: false }).unwrap();
    let state = ledger.state();
    // The partner with the longest stream.
    let (partner, events) = state
        .partners
        .keys()
        .map(|id| {
            let stream = csp_ledger_schemas::event::StreamId::Partner(*id);
            (*id, state.streams.get(&stream).map_or(0, Vec::len))
        })
        .max_by_key(|(_, n)| *n)
        .unwrap();
    assert!(events >= 3, "{events}");
    let path = format!("/v1/partners/{partner}?as_of={}", state.position - 1);
    let view = |budget| ReadView {
        state,
        log: ledger.log(),
        personal: false,
        budget,
        verified: None,
    };
    let request = Request::parse(&path);
    assert!(matches!(
        answer(view(Some(events - 1)), &request),
        Err(QueryError::Expensive { .. })
    ));
    let within = answer(view(Some(events)), &request).unwrap();
    assert_eq!(answer(view(None), &request).unwrap(), within);
    // Verify is always expensive.
    assert!(matches!(
        answer(
            view(Some(usize::MAX - 1)),
            &Request::parse("/v1/audit/verify")
        ),
        Err(QueryError::Expensive { .. })
    ));
}

/// The overdue list as of every position, from the state's index, equals the list of a refold
/// up to that position.
#[test]
fn the_overdue_index_answers_as_a_refold_would() {
    use csp_ledger_projections::views;
    let dir = tempfile::tempdir().unwrap();
    let head = big_store(dir.path(), 12_000);
    let ledger = Ledger::open(dir.path(), LogOptions { fsync: false }).unwrap();
    let live = ledger.state();
    let last_enrolled = live
        .partners
        .values()
        .map(|p| p.enrolled_at.date_naive())
        .max()
        .unwrap();
    let mut compared = 0;
    let mut nonempty = 0;
    for position in (1..=head).step_by(401).chain([head - 1, head]) {
        let refold = csp_ledger::store::read::replay(ledger.log(), position).unwrap();
        for today in [
            last_enrolled,
            last_enrolled + chrono::Duration::days(9),
            last_enrolled + chrono::Duration::days(400),
        ] {
            let by_index = views::overdue_verifications_at(live, position, today, None, 1_000);
            let by_refold = views::overdue_verifications(&refold, today, None, 1_000);
            let ids = |rows: &[views::OverdueVerification]| {
                rows.iter().map(|r| r.partner_id).collect::<Vec<_>>()
            };
            assert_eq!(ids(&by_index), ids(&by_refold), "as of {position}, {today}");
            assert_eq!(
                serde_json::to_value(&by_index).unwrap(),
                serde_json::to_value(&by_refold).unwrap()
            );
            compared += 1;
            nonempty += usize::from(!by_index.is_empty());
        }
    }
    assert!(
        compared > 60 && nonempty > 10,
        "{compared} compared, {nonempty} non-empty"
    );
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
