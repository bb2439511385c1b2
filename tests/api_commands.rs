//! The embedded mode: commands over `POST /v1/commands` (one envelope or an array), answered
//! with the outcomes of SPEC.md section 7 after the commit is durable; read-your-writes with
//! `min_position`; group commit across concurrent clients.

mod support;

use serde_json::{json, Value};
use support::*;

fn server() -> std::net::SocketAddr {
    let dir = tempfile::tempdir().unwrap().keep();
    start_server(&dir)
}

fn commands(from: usize, to: usize) -> Vec<String> {
    fixture_commands()[from..to].to_vec()
}

#[test]
fn one_envelope_or_an_array_gets_outcomes() {
    let addr = server();
    let lines = commands(0, 5);
    let single = http(addr, "POST", "/v1/commands", Some(&lines[0]));
    assert_eq!(single.status, 200, "{}", single.body);
    let outcome = single.json();
    assert_eq!(outcome["outcome"], "accepted");
    assert_eq!(outcome["events"][0]["type"], "PartnerEnrolled");
    // The event records who submitted it: here the insecure mode's principal.
    assert_eq!(outcome["events"][0]["schema_version"], 2);
    assert_eq!(
        outcome["events"][0]["submitted_by"],
        csp_ledger::auth::INSECURE_PRINCIPAL_ID
    );
    assert_eq!(
        outcome["events"][0]["personal_data"]["primary_contact_email"],
        "partners@northwind-distribution.example"
    );
    let array = format!("[{}]", lines[1..5].join(","));
    let many = http(addr, "POST", "/v1/commands", Some(&array));
    assert_eq!(many.status, 200);
    let outcomes = many.json();
    assert_eq!(outcomes.as_array().unwrap().len(), 4);
    assert!(
        outcomes
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["outcome"] == "accepted"),
        "{outcomes}"
    );
    assert_eq!(
        many.headers.contains("x-ledger-position: 5"),
        true,
        "{}",
        many.headers
    );
    // The same command again is a duplicate with the original events.
    let again = http(addr, "POST", "/v1/commands", Some(&lines[0])).json();
    assert_eq!(again["outcome"], "duplicate");
    assert_eq!(again["events"], outcome["events"]);
    // The read models see it.
    let partner = get(
        addr,
        "/v1/partners/00000000-0000-4000-8000-000000000101/eligibility",
    )
    .json();
    assert_eq!(partner["can_transact"], true);
}

#[test]
fn rejections_and_malformed_elements_are_outcomes_and_a_non_json_body_is_400() {
    let addr = server();
    let lines = commands(0, 1);
    let mut typo: Value = serde_json::from_str(&lines[0]).unwrap();
    typo["payload"]["legal_nam"] = json!("x");
    let body = format!(
        "[{}, {}, {}]",
        typo,
        json!({"hello": "world"}),
        commands(2, 3)[0]
    );
    let outcomes = http(addr, "POST", "/v1/commands", Some(&body)).json();
    assert_eq!(outcomes[0]["rejection"]["code"], "malformed_command");
    assert_eq!(outcomes[0]["rejection"]["details"]["line"], 1);
    assert_eq!(outcomes[1]["rejection"]["code"], "malformed_command");
    assert_eq!(outcomes[1]["command_id"], Value::Null);
    // Verifying a partner that was never enrolled (its enrollment was the malformed one).
    assert_eq!(outcomes[2]["rejection"]["code"], "partner_not_found");
    let garbage = http(addr, "POST", "/v1/commands", Some("{not json"));
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["code"], "invalid_json");
}

#[test]
fn min_position_waits_for_a_write_or_answers_503_with_the_position() {
    let addr = server();
    let lines = commands(0, 2);
    http(addr, "POST", "/v1/commands", Some(&lines[0]));
    let path = "/v1/partners/00000000-0000-4000-8000-000000000101";
    let ready = get(addr, &format!("{path}?min_position=1"));
    assert_eq!(ready.status, 200);
    // Nobody writes position 2 within the wait: 503 with the current position.
    let started = std::time::Instant::now();
    let waiting = get(addr, &format!("{path}?min_position=2"));
    assert_eq!(waiting.status, 503);
    assert_eq!(waiting.json()["position"], 1);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1000),
        "the read waited before giving up"
    );
    // A read waiting for position 2 is answered as soon as a writer gets there.
    let reader =
        std::thread::spawn(move || get(addr, &format!("{path}/eligibility?min_position=2")));
    std::thread::sleep(std::time::Duration::from_millis(200));
    http(addr, "POST", "/v1/commands", Some(&lines[1]));
    let answered = reader.join().unwrap();
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.json()["position"], 2);
    assert_eq!(
        answered.json()["unmet"],
        json!(["mpn_not_associated", "mpa_not_signed"])
    );
}

#[test]
fn concurrent_clients_share_group_commits_and_every_command_is_answered_once() {
    let addr = server();
    let lines = fixture_commands();
    // Enrollments of the example partners first, then everything else from many threads.
    for line in &lines[..10] {
        assert_eq!(http(addr, "POST", "/v1/commands", Some(line)).status, 200);
    }
    let workload: Vec<String> = csp_ledger_testkit::workload::Generator::new(3)
        .take(800)
        .map(|c| c.to_json())
        .collect();
    let chunks: Vec<Vec<String>> = workload.chunks(100).map(|c| c.to_vec()).collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                chunk
                    .iter()
                    .map(|line| http(addr, "POST", "/v1/commands", Some(line)).json())
                    .collect::<Vec<Value>>()
            })
        })
        .collect();
    let outcomes: Vec<Value> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 800);
    let accepted = outcomes
        .iter()
        .filter(|o| o["outcome"] == "accepted")
        .count();
    assert!(accepted > 400, "{accepted} accepted");
    let metrics = get(addr, "/metrics").body;
    let batches: u64 = metrics
        .lines()
        .find(|l| l.starts_with("csp_ledger_apply_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .parse()
        .unwrap();
    assert!(batches < 810, "{batches} commits for 810 requests");
    assert_eq!(get(addr, "/v1/audit/verify").json()["ok"], true);
}
