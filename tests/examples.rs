//! The example files: every line deserializes into the Rust types, validates against its
//! committed JSON Schema file, and the onboarding scenario is accepted end to end by `apply`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A structural check of `value` against the subset of JSON Schema the generated files use:
/// type, properties, required, additionalProperties, const, enum, anyOf/oneOf, items.
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(c) = schema.get("const") {
        if c != value {
            errors.push(format!("{path}: {value} is not {c}"));
        }
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        if !options.contains(value) {
            errors.push(format!("{path}: {value} not in {options:?}"));
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get(key).and_then(Value::as_array) {
            let matching = options.iter().filter(|o| {
                let mut sub = Vec::new();
                validate(o, value, path, &mut sub);
                sub.is_empty()
            });
            if matching.count() == 0 {
                errors.push(format!("{path}: {value} matches none of {key}"));
            }
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
        {
            errors.push(format!("{path}: {actual} is not {types:?}"));
        }
    }
    if let (Some(object), Some(properties)) = (
        value.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !object.contains_key(required.as_str().unwrap_or_default()) {
                errors.push(format!("{path}: missing {required}"));
            }
        }
        for (key, item) in object {
            match properties.get(key) {
                Some(sub) => validate(sub, item, &format!("{path}.{key}"), errors),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{path}: unknown field {key}"))
                }
                None => {}
            }
        }
    }
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn schema_for(kind: &str, type_name: &str) -> Value {
    let path = root()
        .join("schemas/json")
        .join(kind)
        .join(format!("{type_name}.schema.json"));
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn every_example_command_deserializes_and_validates_against_its_schema() {
    let mut types = std::collections::BTreeSet::new();
    for file in example_files() {
        for (number, line) in std::fs::read_to_string(&file).unwrap().lines().enumerate() {
            let where_ = format!("{}:{}", file.display(), number + 1);
            csp_ledger_schemas::CommandEnvelope::parse(line.as_bytes())
                .unwrap_or_else(|e| panic!("{where_}: {}", e.reason));
            let value: Value = serde_json::from_str(line).unwrap();
            let type_name = value["type"].as_str().unwrap();
            types.insert(type_name.to_string());
            let mut errors = Vec::new();
            validate(&schema_for("commands", type_name), &value, "$", &mut errors);
            assert!(errors.is_empty(), "{where_}: {errors:?}");
        }
    }
    assert!(
        types.len() >= 20,
        "the examples cover most command types: {types:?}"
    );
}

#[test]
fn the_validator_rejects_what_the_types_reject() {
    let line = std::fs::read_to_string(root().join("examples/onboarding.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut value: Value = serde_json::from_str(&line).unwrap();
    value["payload"]["legal_nam"] = Value::from("typo");
    let mut errors = Vec::new();
    validate(
        &schema_for("commands", "EnrollPartner"),
        &value,
        "$",
        &mut errors,
    );
    assert_eq!(errors, ["$.payload: unknown field legal_nam"]);
    assert!(csp_ledger_schemas::CommandEnvelope::parse(value.to_string().as_bytes()).is_err());
}

#[test]
fn every_event_of_the_onboarding_scenario_validates_against_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["apply", "examples/onboarding.jsonl"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut event_types = std::collections::BTreeSet::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let outcome: Value = serde_json::from_str(line).unwrap();
        assert_eq!(outcome["outcome"], "accepted", "{line}");
        for event in outcome["events"].as_array().unwrap() {
            let type_name = event["type"].as_str().unwrap();
            event_types.insert(type_name.to_string());
            let mut errors = Vec::new();
            validate(&schema_for("events", type_name), event, "$", &mut errors);
            assert!(errors.is_empty(), "{type_name}: {errors:?}");
        }
    }
    assert!(event_types.len() >= 20, "{event_types:?}");
}

#[test]
fn the_lifecycle_example_after_onboarding_gives_the_outcomes_its_correlation_ids_announce() {
    let dir = tempfile::tempdir().unwrap();
    let run = |file: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["apply", file])
            .current_dir(root())
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    run("examples/onboarding.jsonl");
    let outcomes = run("examples/lifecycle.jsonl");
    let commands = std::fs::read_to_string(root().join("examples/lifecycle.jsonl")).unwrap();
    for (command, outcome) in commands.lines().zip(outcomes.lines()) {
        let command: Value = serde_json::from_str(command).unwrap();
        let outcome: Value = serde_json::from_str(outcome).unwrap();
        match command["correlation_id"]
            .as_str()
            .and_then(|c| c.strip_prefix("expect-rejected:"))
        {
            Some(code) => assert_eq!(outcome["rejection"]["code"], code, "{outcome}"),
            None => assert_eq!(outcome["outcome"], "accepted", "{outcome}"),
        }
    }
    assert_eq!(outcomes.lines().count(), commands.lines().count());
}

/// The `csp.events` and `csp.command-results` values the publisher would send for this log,
/// built from the log the way `ingest::publisher` builds them (`events_with_prev`, then
/// `PublishedEvent::encode`; `Publisher::result` for the outcomes).
fn published_values(dir: &std::path::Path) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    use csp_ledger::store::log::{Log, LogOptions, StoredOutcomeKind};
    use csp_ledger_schemas::wire::{PublishedEvent, ResultMessage};
    use csp_ledger_schemas::{OutcomeKind, Rejection};
    use std::borrow::Cow;

    let log = Log::open(dir, LogOptions::default()).unwrap();
    let published: Vec<PublishedEvent<'static>> =
        csp_ledger::store::read::events_with_prev(&log, 1)
            .map(|item| {
                let (stored, prev_hash) = item.unwrap();
                PublishedEvent {
                    position: stored.position,
                    canonical: Cow::Owned(stored.canonical),
                    hash: stored.hash,
                    prev_hash,
                }
            })
            .collect();
    let events = published
        .iter()
        .map(|event| {
            let mut value = Vec::new();
            event.encode(&mut value);
            value
        })
        .collect();
    let results = log
        .outcomes()
        .map(|item| {
            let (_, record) = item.unwrap();
            // These files hold no retries; a duplicate would repeat its original's events.
            assert_ne!(record.kind, StoredOutcomeKind::Duplicate);
            let accepted = record.kind == StoredOutcomeKind::Accepted;
            let first = record.first_position.saturating_sub(1) as usize;
            let events = match accepted {
                true => published[first..first + record.event_count as usize].to_vec(),
                false => Vec::new(),
            };
            ResultMessage {
                command_id: record.command_id,
                outcome: if accepted {
                    OutcomeKind::Accepted
                } else {
                    OutcomeKind::Rejected
                },
                events,
                body_hash: record.body_hash,
                recorded_at_micros: record.recorded_at_micros,
                rejection: (!accepted)
                    .then(|| Cow::Owned(Rejection::decode(&record.rejection).unwrap())),
                correlation_id: record.correlation_id.clone().map(Cow::Owned),
                fence: None,
            }
            .encode()
            .value
        })
        .collect();
    (events, results)
}

#[test]
fn downstream_example_folds_the_events_topic_to_the_same_state_as_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .current_dir(root())
            .output()
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let mut outcomes = ledger(&["apply", "examples/onboarding.jsonl"]);
    outcomes += &ledger(&["apply", "examples/lifecycle.jsonl"]);
    let verify: Value = serde_json::from_str(&ledger(&["verify"])).unwrap();
    assert_eq!(verify["ok"], true);
    // The partners the ledger enrolled, and what it answers about each.
    let mut partners = std::collections::BTreeSet::new();
    for line in outcomes.lines() {
        let outcome: Value = serde_json::from_str(line).unwrap();
        for event in outcome["events"].as_array().unwrap() {
            if event["type"] == "PartnerEnrolled" {
                partners.insert(event["data"]["partner_id"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(partners.len() >= 3, "{partners:?}");
    let eligibility: Vec<Value> = partners
        .iter()
        .map(|id| {
            let path = format!("/v1/partners/{id}/eligibility");
            let answer: Value = serde_json::from_str(&ledger(&["query", &path])).unwrap();
            answer
        })
        .collect();

    // At least once: every event delivered twice over.
    let (events, results) = published_values(dir.path());
    let mut stdin = Vec::new();
    for value in events.iter().chain(&events) {
        stdin.extend_from_slice(value);
        stdin.push(b'\n');
    }
    let results_file = dir.path().join("results.jsonl");
    std::fs::write(&results_file, results.join(&b'\n')).unwrap();

    let example = example_binary("downstream_fold");
    let mut child = Command::new(&example)
        .arg("--results")
        .arg(&results_file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut input, &stdin));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();

    let folded = events.len() as u64;
    assert_eq!(summary["events_folded"], folded);
    assert_eq!(summary["events_folded"], verify["events"]);
    assert_eq!(summary["duplicates_skipped"], folded);
    assert_eq!(summary["head"]["position"], folded);
    assert_eq!(summary["head"]["hash"], verify["head_hash"]);
    assert_eq!(summary["partners"], partners.len());
    let summary_eligibility = summary["eligibility"].as_array().unwrap();
    assert_eq!(summary_eligibility.len(), eligibility.len());
    for (ours, theirs) in summary_eligibility.iter().zip(&eligibility) {
        for field in ["partner_id", "can_transact", "unmet"] {
            assert_eq!(ours[field], theirs[field], "{field}: {ours} vs {theirs}");
        }
    }
    let count = |kind: &str| {
        outcomes
            .lines()
            .filter(|line| serde_json::from_str::<Value>(line).unwrap()["outcome"] == kind)
            .count()
    };
    let (accepted, rejected) = (count("accepted"), count("rejected"));
    assert!(accepted > 0 && rejected > 0);
    assert_eq!(
        summary["results"],
        serde_json::json!({"accepted": accepted, "rejected": rejected})
    );
}

/// An example of this package, built for this test's profile (`target/<profile>/examples`,
/// next to the binaries). Always through cargo, which does nothing when it is fresh: `cargo test
/// --test examples` does not build examples, and a binary left from an earlier build could be
/// stale. The test never skips for want of it.
fn example_binary(name: &str) -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_csp-ledger"));
    let profile_dir = bin.parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--example", name]).current_dir(root());
    if profile_dir.ends_with("release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building example {name}");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "{}", path.display());
    path
}

/// The downstream example on a topic written under the term rule (`schemas::fencing`): a
/// deposed leader's late event and commit after its successor's term-start are void, and a
/// round that no commit covers is not folded.
#[test]
fn downstream_example_ignores_a_deposed_leaders_records_under_the_term_rule() {
    use csp_ledger_schemas::fencing::EventsRecord;
    use csp_ledger_schemas::wire::PublishedEvent;
    use std::borrow::Cow;

    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["apply", "examples/onboarding.jsonl"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let (events, _) = published_values(dir.path());
    let decoded: Vec<PublishedEvent<'_>> = events
        .iter()
        .map(|v| PublishedEvent::decode(v).unwrap())
        .collect();
    let n = decoded.len();
    assert!(n >= 4, "{n} events");
    let h = n / 2;
    let control = |record: EventsRecord<'_>| record.encode().value;
    let commit = |term: u64, event: &PublishedEvent<'_>| {
        control(EventsRecord::Commit {
            term,
            last_position: event.position,
            last_hash: event.hash,
            last_outcome: 0,
            consumed: Default::default(),
        })
    };
    let start = |term: u64| {
        control(EventsRecord::TermStart {
            term,
            instance: uuid::Uuid::from_u128(u128::from(term)),
        })
    };
    // The deposed leader's value for position h + 1: other bytes, another hash.
    let zombie = PublishedEvent {
        position: decoded[h].position,
        canonical: Cow::Owned(
            String::from_utf8(decoded[h].canonical.to_vec())
                .unwrap()
                .replacen("\"recorded_at\":\"", "\"recorded_at\":\"1", 1)
                .into_bytes(),
        ),
        hash: [7; 32],
        prev_hash: decoded[h].prev_hash,
    };
    let mut zombie_value = Vec::new();
    zombie.encode(&mut zombie_value);

    let mut topic: Vec<Vec<u8>> = vec![start(1)];
    topic.extend(events[..h].iter().cloned());
    topic.push(commit(1, &decoded[h - 1]));
    topic.push(start(2));
    topic.push(zombie_value.clone());
    topic.push(commit(1, &zombie));
    topic.extend(events[h..].iter().cloned());
    // Without the successor's commit, its round is not final yet.
    let partial = run_downstream(&topic);
    assert_eq!(partial["events_folded"], h as u64, "{partial}");
    topic.push(commit(2, &decoded[n - 1]));
    topic.push(zombie_value);
    let whole = run_downstream(&topic);
    let verify = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("verify")
        .output()
        .unwrap();
    let verify: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(whole["events_folded"], n as u64, "{whole}");
    assert_eq!(whole["head"]["hash"], verify["head_hash"]);
}

/// Runs the downstream example on `values` (one per line); its summary.
fn run_downstream(values: &[Vec<u8>]) -> Value {
    let example = example_binary("downstream_fold");
    let mut stdin = Vec::new();
    for value in values {
        stdin.extend_from_slice(value);
        stdin.push(b'\n');
    }
    let mut child = Command::new(&example)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut input, &stdin));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}
