//! A store written by the release before schema_version 2 (tests/fixtures/v1-log, made by
//! scripts/make-v1-fixture.sh), opened with this build: it verifies, prints and answers exactly
//! as that release did; new commands on it are recorded as version 2 with `submitted_by`, and
//! the chain, the auditor's script and replay hold across the version boundary.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use csp_ledger::auth::{Principal, PrincipalId};
use csp_ledger::intake::Submission;
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::outcome::Outcome;
use csp_ledger::writer::Ledger;
use serde_json::Value;
use tempfile::TempDir;

const V1_EVENTS: usize = 63;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1-log")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// The fixture's data directory, extracted into a fresh temporary directory.
fn extract() -> (TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("xzf")
        .arg(fixture("data.tar.gz"))
        .arg("-C")
        .arg(tmp.path())
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar xzf data.tar.gz: {status}");
    let data = tmp.path().join("data");
    (tmp, data)
}

fn cli(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// Runs the CLI, expects exit 0, gives stdout.
fn cli_ok(data: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let output = cli(data, args, stdin);
    assert!(
        output.status.success(),
        "csp-ledger {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn verify_chain_py(history: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/verify_chain.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(history.as_bytes()).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "verify_chain.py: {}",
        output.status
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// The recorded answers: path and JSON text.
fn answers() -> Vec<(String, String)> {
    read_fixture("answers.tsv")
        .lines()
        .map(|line| {
            let (path, answer) = line.split_once('\t').unwrap();
            (path.to_string(), answer.to_string())
        })
        .collect()
}

fn with_as_of(path: &str, position: usize) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}as_of={position}")
}

/// Commands for the fixture's partners and a new one: an enrollment, its verification, revenue
/// for an existing partner; then a retry of the fixture's first command (a duplicate).
fn new_commands() -> String {
    let new = "00000000-0000-4000-8000-000000000107";
    let tail = support::TAIL;
    let mut lines = vec![
        format!(
            r#"{{"command_id":"00000000-0000-4000-8000-000000970001","type":"EnrollPartner","issued_at":"2026-12-02T09:00:00Z","actor":{{"kind":"partner","id":"{new}","role":"global_admin"}},"payload":{{"partner_id":"{new}","legal_name":"Upgrade Partner Oy","country":"FI","tenant_id":"00000000-0000-4000-8000-000000000307","primary_contact_email":"hello@upgrade-partner.example"}}}}"#
        ),
        format!(
            r#"{{"command_id":"00000000-0000-4000-8000-000000970002","type":"VerifyPartner","issued_at":"2026-12-02T09:01:00Z","actor":{{"kind":"operator"}},"payload":{{"partner_id":"{new}","outcome":"approved"}}}}"#
        ),
        format!(
            r#"{{"command_id":"00000000-0000-4000-8000-000000970003","type":"RecordRevenue","issued_at":"2026-12-02T09:02:00Z","actor":{{"kind":"operator"}},"payload":{{"partner_id":"{tail}","month":"2026-02","category":"cloud","amount_usd":"1000.00"}}}}"#
        ),
    ];
    let onboarding = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/onboarding.jsonl"),
    )
    .unwrap();
    lines.push(onboarding.lines().next().unwrap().to_string());
    lines.join("\n") + "\n"
}

#[test]
fn a_version_1_store_verifies_prints_and_answers_as_its_release_did() {
    let (_tmp, data) = extract();
    // verify: the same report, byte for byte.
    assert_eq!(
        cli_ok(&data, &["verify"], None),
        read_fixture("verify.json")
    );
    // history: every event as stored (version 1, no submitted_by), byte for byte.
    let history = cli_ok(&data, &["history"], None);
    assert_eq!(history, read_fixture("history.jsonl"));
    assert_eq!(history.lines().count(), V1_EVENTS);
    for line in history.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["schema_version"], 1);
        assert!(event.get("submitted_by").is_none(), "{line}");
    }
    let verified: Value = serde_json::from_str(&read_fixture("verify.json")).unwrap();
    assert_eq!(
        verify_chain_py(&history),
        format!("ok {V1_EVENTS} {}", verified["head_hash"].as_str().unwrap())
    );
    // Every read answers exactly what that release answered: the same state.
    let answers = answers();
    assert_eq!(answers.len(), 23);
    for (path, answer) in &answers {
        assert_eq!(
            cli_ok(&data, &["query", path], None).trim_end(),
            answer,
            "{path}"
        );
    }
    // The event paths print the events as stored too.
    let page: Value = serde_json::from_str(&cli_ok(
        &data,
        &["query", "/v1/events?from=1&limit=1000"],
        None,
    ))
    .unwrap();
    let stored: Vec<Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(page["items"].as_array().unwrap(), &stored);
}

#[test]
fn new_commands_on_a_version_1_store_are_version_2_and_the_chain_holds_across() {
    let (_tmp, data) = extract();
    let v1_history = read_fixture("history.jsonl");
    let v1_head: Value = serde_json::from_str(&read_fixture("verify.json")).unwrap();
    let v1_head = v1_head["head_hash"].as_str().unwrap().to_string();

    let out = cli_ok(&data, &["apply", "-"], Some(&new_commands()));
    let outcomes: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(outcomes.len(), 4);
    let mut new_events = Vec::new();
    for outcome in &outcomes[..3] {
        assert_eq!(outcome["outcome"], "accepted", "{outcome}");
        for event in outcome["events"].as_array().unwrap() {
            assert_eq!(event["schema_version"], 2, "{event}");
            assert_eq!(event["submitted_by"], "local", "{event}");
            new_events.push(event.clone());
        }
    }
    assert_eq!(new_events.len(), 3);
    assert_eq!(new_events[0]["position"], V1_EVENTS + 1);
    assert_eq!(new_events[0]["prev_hash"], v1_head.as_str());
    // A retry of a version 1 command answers its event as stored: version 1.
    assert_eq!(outcomes[3]["outcome"], "duplicate");
    let first: Value = serde_json::from_str(v1_history.lines().next().unwrap()).unwrap();
    assert_eq!(outcomes[3]["events"], Value::Array(vec![first]));

    // The chain verifies across the version boundary, for the ledger and for the auditor.
    let head = new_events[2]["hash"].as_str().unwrap().to_string();
    let verified: Value = serde_json::from_str(&cli_ok(&data, &["verify"], None)).unwrap();
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["events"], V1_EVENTS + 3);
    assert_eq!(verified["head_hash"], head.as_str());
    let history = cli_ok(&data, &["history"], None);
    assert!(
        history.starts_with(&v1_history),
        "version 1 events as stored"
    );
    let appended: Vec<Value> = history
        .lines()
        .skip(V1_EVENTS)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(appended, new_events);
    assert_eq!(
        verify_chain_py(&history),
        format!("ok {} {head}", V1_EVENTS + 3)
    );

    // The state before the new commands is unchanged.
    for (path, answer) in answers() {
        let at_63 = with_as_of(&path, V1_EVENTS);
        assert_eq!(
            cli_ok(&data, &["query", &at_63], None).trim_end(),
            answer,
            "{at_63}"
        );
    }
    let partner: Value = serde_json::from_str(&cli_ok(
        &data,
        &["query", "/v1/partners/00000000-0000-4000-8000-000000000107"],
        None,
    ))
    .unwrap();
    assert_eq!(partner["verification"]["status"], "approved");

    // A replay from position 1 equals the checkpointed state written from it, after reopen.
    let written: Value =
        serde_json::from_str(&cli_ok(&data, &["rebuild", "--write"], None)).unwrap();
    assert_eq!(written["events"], V1_EVENTS + 3);
    let rebuilt: Value = serde_json::from_str(&cli_ok(&data, &["rebuild"], None)).unwrap();
    assert_eq!(rebuilt["equal"], true, "{rebuilt}");
    assert_eq!(rebuilt["checkpoint_position"], V1_EVENTS + 3);
}

#[test]
fn replay_across_the_version_boundary_equals_the_live_state() {
    let (_tmp, data) = extract();
    let portal = Arc::new(Principal::administrator(
        "upgrade-portal".parse::<PrincipalId>().unwrap(),
    ));
    let live = {
        let mut ledger = Ledger::open(&data, LogOptions { fsync: false }).unwrap();
        assert_eq!(ledger.head().position, V1_EVENTS as u64);
        let submissions = new_commands()
            .lines()
            .enumerate()
            .map(|(i, line)| {
                // The second command comes from another principal than the CLI's.
                if i == 1 {
                    Submission::parse_as(None, line.as_bytes(), portal.clone())
                } else {
                    Submission::parse(None, line.as_bytes())
                }
            })
            .collect();
        let result = ledger.submit(submissions).unwrap();
        let submitters: Vec<Option<String>> = result
            .events
            .iter()
            .map(|e| {
                csp_ledger_schemas::EventEnvelope::decode(&e.stored.canonical)
                    .unwrap()
                    .submitted_by
            })
            .collect();
        assert_eq!(
            submitters,
            vec![
                Some("local".to_string()),
                Some("upgrade-portal".to_string()),
                Some("local".to_string()),
            ]
        );
        assert!(matches!(result.outcomes[3], Outcome::Duplicate { .. }));
        ledger.state().clone()
    };
    let reopened = Ledger::open(&data, LogOptions { fsync: false }).unwrap();
    assert_eq!(reopened.head().position, V1_EVENTS as u64 + 3);
    assert_eq!(reopened.state(), &live);
    // The decoded version 1 events upcast to no submitter and keep their bytes.
    for stored in reopened.log().events_from(1) {
        let stored = stored.unwrap();
        let envelope = csp_ledger_schemas::EventEnvelope::decode(&stored.canonical).unwrap();
        if stored.position <= V1_EVENTS as u64 {
            assert_eq!(
                (envelope.schema_version, &envelope.submitted_by),
                (1, &None)
            );
        } else {
            assert_eq!(envelope.schema_version, 2);
            assert!(envelope.submitted_by.is_some());
        }
        assert_eq!(envelope.canonical_bytes(), stored.canonical);
    }
}
