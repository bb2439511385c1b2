//! The ledger over the sled log: idempotency, malformed input, personal data kept out of the
//! hashed bytes, erasure, and `verify` finding edits of the stored log.

use std::io::Write;
use std::process::{Command, Stdio};

use csp_ledger::intake::Submission;
use csp_ledger::store::log::{decode_event_chunk, LogOptions};
use csp_ledger::writer::outcome::Outcome;
use csp_ledger::writer::Ledger;
use csp_ledger_schemas::RejectionCode;
use csp_ledger_testkit::Kit;
use serde_json::Value;

fn submit(ledger: &mut Ledger, lines: &[String]) -> Vec<Value> {
    let submissions = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Submission::parse(Some(i as u64 + 1), l.as_bytes()))
        .collect();
    let result = ledger.submit(submissions).unwrap();
    (0..result.outcomes.len())
        .map(|i| {
            let mut out = Vec::new();
            result.write_outcome_json(i, &mut out);
            serde_json::from_slice(&out).unwrap()
        })
        .collect()
}

fn onboarding_lines(kit: &mut Kit) -> (uuid::Uuid, Vec<String>) {
    let partner = kit.id();
    (
        partner,
        kit.onboard(partner, "DE")
            .iter()
            .map(|c| c.to_json())
            .collect(),
    )
}

#[test]
fn duplicate_returns_the_first_outcome_and_records_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut kit = Kit::new();
    let (_, lines) = onboarding_lines(&mut kit);
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let first = submit(&mut ledger, &lines);
    let head = ledger.head();
    // Again, in the same process and after a reopen.
    let again = submit(&mut ledger, &lines[..1]);
    assert_eq!(again[0]["outcome"], "duplicate");
    assert_eq!(again[0]["events"], first[0]["events"]);
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let again = submit(&mut ledger, &lines);
    assert!(again.iter().all(|o| o["outcome"] == "duplicate"));
    assert_eq!(again[3]["events"], first[3]["events"]);
    assert_eq!(ledger.head().position, head.position);
}

#[test]
fn duplicate_within_one_batch_and_of_a_rejected_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut kit = Kit::new();
    let partner = kit.id();
    let sign_too_early = kit.sign_mpa(partner).to_json();
    let enroll = kit.enroll(partner, "DE", "ops@contoso.example").to_json();
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let outcomes = submit(
        &mut ledger,
        &[
            sign_too_early.clone(),
            enroll.clone(),
            enroll.clone(),
            sign_too_early.clone(),
        ],
    );
    assert_eq!(outcomes[0]["rejection"]["code"], "partner_not_found");
    assert_eq!(outcomes[2]["outcome"], "duplicate");
    assert_eq!(outcomes[2]["events"], outcomes[1]["events"]);
    assert_eq!(outcomes[3]["outcome"], "duplicate");
    assert_eq!(outcomes[3]["rejection"]["code"], "partner_not_found");
    // The rejection is permanent for that command_id, even though the partner now exists.
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let outcomes = submit(&mut ledger, &[sign_too_early]);
    assert_eq!(outcomes[0]["outcome"], "duplicate");
    assert_eq!(outcomes[0]["rejection"]["code"], "partner_not_found");
}

#[test]
fn command_id_conflict_when_the_body_differs() {
    let dir = tempfile::tempdir().unwrap();
    let mut kit = Kit::new();
    let partner = kit.id();
    let enroll = kit.enroll(partner, "DE", "ops@contoso.example");
    let mut changed = enroll.clone();
    if let csp_ledger_schemas::Command::EnrollPartner(payload) = &mut changed.command {
        payload.legal_name = "Contoso Renamed GmbH".into();
    }
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let outcomes = submit(&mut ledger, &[enroll.to_json(), changed.to_json()]);
    assert_eq!(outcomes[0]["outcome"], "accepted");
    assert_eq!(outcomes[1]["outcome"], "rejected");
    assert_eq!(
        outcomes[1]["rejection"]["code"],
        RejectionCode::CommandIdConflict.as_str()
    );
    // The idempotency record still belongs to the first body.
    assert_eq!(
        submit(&mut ledger, &[enroll.to_json()])[0]["outcome"],
        "duplicate"
    );
}

#[test]
fn malformed_lines_get_an_outcome_with_the_line_number_and_processing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut kit = Kit::new();
    let (_, lines) = onboarding_lines(&mut kit);
    let mut with_typo: Value = serde_json::from_str(&lines[1]).unwrap();
    with_typo["payload"]["outcom"] = with_typo["payload"]["outcome"].take();
    let input = vec![lines[0].clone(), "{not json".to_string(), with_typo.to_string(), r#"{"command_id":"0e5c3b8e-1b7a-4a57-9a57-0c1f3a8e0001","type":"FlyToTheMoon","issued_at":"2026-01-05T10:00:00Z","actor":{"kind":"operator"},"payload":{}}"#.to_string(), lines[1].clone()];
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let outcomes = submit(&mut ledger, &input);
    assert_eq!(outcomes[0]["outcome"], "accepted");
    for (index, needle) in [(1, "envelope"), (2, "outcom"), (3, "unknown command type")] {
        assert_eq!(outcomes[index]["outcome"], "rejected");
        assert_eq!(outcomes[index]["rejection"]["code"], "malformed_command");
        assert_eq!(
            outcomes[index]["rejection"]["details"]["line"],
            index as u64 + 1
        );
        assert!(
            outcomes[index]["rejection"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{}",
            outcomes[index]
        );
    }
    assert_eq!(outcomes[1]["command_id"], Value::Null);
    assert_eq!(outcomes[2]["command_id"], with_typo["command_id"]);
    // A malformed command does not take its command_id: the corrected command is accepted.
    assert_eq!(outcomes[4]["command_id"], with_typo["command_id"]);
    assert_eq!(outcomes[4]["outcome"], "accepted");
}

/// The canonical (hashed) bytes of every stored event, read from sled directly.
fn stored_bytes(dir: &std::path::Path) -> Vec<u8> {
    let db = open_sled(dir);
    let mut all = Vec::new();
    for item in db.scan_prefix(b"E") {
        let (key, value) = item.unwrap();
        let first = u64::from_be_bytes(key[1..9].try_into().unwrap());
        for event in decode_event_chunk(first, &value).unwrap() {
            all.extend_from_slice(&event.canonical);
        }
    }
    all
}

#[test]
fn hashed_event_bytes_hold_no_email_in_clear_while_history_shows_it_and_erasure_keeps_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut kit = Kit::new();
    let partner = kit.id();
    let commands: Vec<String> = vec![
        kit.enroll(partner, "DE", "ana.lopez@contoso.example"),
        kit.verify(partner),
        kit.associate_mpn(partner, "1234567", "DE"),
        kit.sign_mpa(partner),
    ]
    .iter()
    .map(|c| c.to_json())
    .collect();
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let outcomes = submit(&mut ledger, &commands);
    assert_eq!(
        outcomes[0]["events"][0]["personal_data"]["primary_contact_email"],
        "ana.lopez@contoso.example"
    );
    drop(ledger);
    let events = stored_bytes(dir.path());
    assert!(!events.is_empty());
    let text = String::from_utf8_lossy(&events);
    assert!(
        !text.contains("ana.lopez"),
        "clear e-mail in the hashed event bytes"
    );
    assert!(!text.contains("signer@contoso.example"));
    assert!(
        !text.contains('@'),
        "no e-mail address of any kind in the event bytes"
    );
    assert!(text.contains("\"primary_contact_email\":\"sha256:"));

    let binary = env!("CARGO_BIN_EXE_csp-ledger");
    let history = Command::new(binary)
        .args(["history", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let history = String::from_utf8(history.stdout).unwrap();
    assert!(
        history.contains("\"primary_contact_email\":\"ana.lopez@contoso.example\""),
        "{history}"
    );
    assert!(history.contains("\"signer_email\":\"signer@contoso.example\""));

    let erased = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["erase-personal-data", &partner.to_string()])
        .output()
        .unwrap();
    assert!(erased.status.success());
    assert!(String::from_utf8_lossy(&erased.stdout).contains("\"erased_values\":2"));
    let history = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("history")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&history.stdout).contains("contoso.example\""));
    let verify = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("verify")
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

/// Applies a realistic stream through the CLI and returns the data directory.
fn populated(commands: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let binary = env!("CARGO_BIN_EXE_csp-ledger");
    let generated = csp_ledger_testkit::workload::generated_jsonl(commands, 1);
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("apply")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(generated.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    dir
}

/// Runs `verify`; the report is its stdout, or `{"stderr": ...}` when it printed none.
fn verify(dir: &std::path::Path) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir)
        .arg("verify")
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        serde_json::from_slice(&output.stdout).unwrap_or_else(
            |_| serde_json::json!({ "stderr": String::from_utf8_lossy(&output.stderr) }),
        ),
    )
}

/// Rewrites the event chunk holding `position` with `edit` applied to its decoded events.
fn edit_chunk(
    dir: &std::path::Path,
    position: u64,
    edit: impl FnOnce(&mut Vec<csp_ledger::store::log::StoredEvent>, usize),
) {
    let db = open_sled(dir);
    let mut key = vec![b'E'];
    key.extend_from_slice(&position.to_be_bytes());
    let (chunk_key, value) = db
        .range(&[b'E'][..]..=&key[..])
        .next_back()
        .unwrap()
        .unwrap();
    let first = u64::from_be_bytes(chunk_key[1..9].try_into().unwrap());
    let mut events = decode_event_chunk(first, &value).unwrap();
    edit(&mut events, (position - first) as usize);
    let refs: Vec<&csp_ledger::store::log::StoredEvent> = events.iter().collect();
    let mut encoded = Vec::new();
    for (_, bytes) in csp_ledger::store::log::encode_event_chunks(&refs) {
        encoded.extend_from_slice(&bytes);
    }
    db.insert(chunk_key, encoded).unwrap();
    db.flush().unwrap();
}

/// Opens the store's sled directly. sled 0.34 closes its files from its own I/O threads after
/// the `Db` is dropped (spacejam/sled#1289): a store closed a moment ago may still be locked.
fn open_sled(dir: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match csp_ledger::store::log::sled_config(dir).open() {
            Ok(db) => return db,
            Err(error) if std::time::Instant::now() < deadline => {
                assert!(error.to_string().contains("lock"), "{error}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[test]
fn verify_passes_on_an_untouched_log() {
    let dir = populated(300);
    let (code, report) = verify(dir.path());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["ok"], true);
    assert!(report["events"].as_u64().unwrap() > 300);
}

#[test]
fn verify_names_the_position_of_a_changed_byte() {
    let dir = populated(300);
    edit_chunk(dir.path(), 120, |events, i| {
        let bytes = &mut events[i].canonical;
        let at = bytes
            .windows(11)
            .position(|w| w == b"\"occurred_a")
            .unwrap()
            + 20;
        bytes[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    });
    let (code, report) = verify(dir.path());
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["first_bad_position"], 120, "{report}");
}

#[test]
fn verify_names_the_position_of_a_deleted_event() {
    let dir = populated(300);
    edit_chunk(dir.path(), 77, |events, i| {
        events.remove(i);
    });
    let (code, report) = verify(dir.path());
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["first_bad_position"], 77, "{report}");
}

#[test]
fn verify_names_the_position_of_a_swapped_pair() {
    let dir = populated(300);
    // Swap event 200 with its successor, or with its predecessor when 200 ends its chunk.
    let mut first_swapped = 200;
    edit_chunk(dir.path(), 200, |events, i| {
        if i + 1 < events.len() {
            events.swap(i, i + 1);
        } else {
            events.swap(i - 1, i);
            first_swapped = 199;
        }
    });
    let (code, report) = verify(dir.path());
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["first_bad_position"], first_swapped, "{report}");
}

#[test]
fn a_damaged_store_is_refused_on_open() {
    let dir = populated(300);
    // Cut the last event off its chunk: the head no longer matches the log.
    let head = {
        let ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
        ledger.head().position
    };
    edit_chunk(dir.path(), head, |events, i| {
        events.truncate(i);
    });
    match Ledger::open(dir.path(), LogOptions::default()) {
        Err(error) => assert!(error.to_string().contains("damaged"), "{error}"),
        Ok(_) => panic!("a damaged log was opened"),
    }
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["apply", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("damaged"));
    // A changed byte in the middle is found when the ledger replays on open.
    let dir = populated(300);
    edit_chunk(dir.path(), 50, |events, i| events[i].canonical[30] ^= 1);
    assert!(Ledger::open(dir.path(), LogOptions::default()).is_err());
}

#[test]
fn auditor_script_recomputes_every_hash_from_history_output() {
    let dir = populated(500);
    let history = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("history")
        .output()
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/verify_chain.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the auditor test");
    let written = child.stdin.take().unwrap().write_all(&history.stdout);
    let output = child.wait_with_output().unwrap();
    assert!(
        written.is_ok(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.starts_with("ok "), "{text}");
    // And it notices an edit.
    let tampered = String::from_utf8(history.stdout).unwrap().replacen(
        "\"legal_name\":\"Partner ",
        "\"legal_name\":\"Partmer ",
        1,
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The script stops reading at the first break: a broken pipe here is expected.
    let _ = child.stdin.take().unwrap().write_all(tampered.as_bytes());
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("position 1"));
}

#[test]
fn outcomes_are_typed_for_library_callers() {
    let dir = tempfile::tempdir().unwrap();
    let mut kit = Kit::new();
    let (_, lines) = onboarding_lines(&mut kit);
    let mut ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let result = ledger
        .submit(
            lines
                .iter()
                .map(|l| Submission::parse(None, l.as_bytes()))
                .collect(),
        )
        .unwrap();
    assert!(matches!(result.outcomes[0], Outcome::Accepted { .. }));
    assert_eq!(result.head_position, 4);
}

#[test]
fn a_store_in_use_is_refused_by_name_and_reopens_right_after_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let held = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    drop(held);
    // sled lets go of its lock from background threads; opening again at once still works.
    for _ in 0..20 {
        let ledger = Ledger::open(dir.path(), LogOptions::default()).unwrap();
        drop(ledger);
    }
}

#[test]
fn a_replicated_command_split_across_batches_answers_retries_with_all_its_events_live_and_after_reopen(
) {
    let mut kit = Kit::new();
    let (provider, reseller) = (kit.id(), kit.id());
    let mut commands = kit.onboard_provider(provider, "DE");
    commands.extend(kit.onboard(reseller, "DE"));
    commands.extend(kit.connect(provider, reseller));
    let lines: Vec<String> = commands.iter().map(|c| c.to_json()).collect();
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Ledger::open(leader_dir.path(), LogOptions::default()).unwrap();
    submit(&mut leader, &lines);
    let events: Vec<_> = leader.log().events_from(1).map(|e| e.unwrap()).collect();
    let results: Vec<_> = leader.log().outcomes().map(|o| o.unwrap().1).collect();
    // The acceptance is the last command and has several events.
    let accept = results.last().unwrap().clone();
    assert!(accept.event_count >= 2, "{accept:?}");

    // A follower gets the acceptance's first event in one batch, the rest in the next, and
    // the results after them.
    let dir = tempfile::tempdir().unwrap();
    let mut follower = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let split = accept.first_position as usize;
    follower
        .replicate(events[..split].to_vec(), Vec::new(), Vec::new())
        .unwrap();
    follower
        .replicate(events[split..].to_vec(), Vec::new(), Vec::new())
        .unwrap();
    follower
        .replicate(Vec::new(), results.clone(), Vec::new())
        .unwrap();
    let retry = &lines[lines.len() - 1..];
    let live = submit(&mut follower, retry);
    assert_eq!(live[0]["outcome"], "duplicate", "{}", live[0]);
    assert_eq!(
        live[0]["events"].as_array().unwrap().len(),
        accept.event_count as usize,
        "{}",
        live[0]
    );
    drop(follower);
    let mut reopened = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    let replayed = submit(&mut reopened, retry);
    assert_eq!(replayed[0]["events"], live[0]["events"]);
}

#[test]
fn replicated_event_that_does_not_fold_is_refused_before_it_is_appended() {
    let mut kit = Kit::new();
    let (provider, reseller) = (kit.id(), kit.id());
    let mut commands = kit.onboard_provider(provider, "DE");
    commands.extend(kit.onboard(reseller, "DE"));
    commands.extend(kit.connect(provider, reseller));
    let lines: Vec<String> = commands.iter().map(|c| c.to_json()).collect();
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Ledger::open(leader_dir.path(), LogOptions::default()).unwrap();
    submit(&mut leader, &lines);
    let events: Vec<_> = leader.log().events_from(1).map(|e| e.unwrap()).collect();
    let accepted = events
        .iter()
        .position(|e| {
            let envelope: Value = serde_json::from_slice(&e.canonical).unwrap();
            envelope["type"] == "InvitationAccepted"
        })
        .expect("the leader accepted an invitation");

    // A forged record: the acceptance of an invitation that does not exist, at the right
    // position and stream version, with a hash that chains from its predecessor.
    let mut forged = events[accepted].clone();
    let envelope: Value = serde_json::from_slice(&forged.canonical).unwrap();
    let invitation = envelope["data"]["invitation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let text = String::from_utf8(forged.canonical.clone()).unwrap();
    assert_eq!(text.matches(&invitation).count(), 1, "{text}");
    let missing = uuid::Uuid::from_u128(0xdead_beef).to_string();
    forged.canonical = text.replace(&invitation, &missing).into_bytes();
    forged.hash =
        csp_ledger::store::audit::chain_hash(&events[accepted - 1].hash, &forged.canonical);

    let dir = tempfile::tempdir().unwrap();
    let mut follower = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    follower
        .replicate(events[..accepted].to_vec(), Vec::new(), Vec::new())
        .unwrap();
    let before = follower.head();
    // The forger chains the events after it onto the forged hash as well.
    let mut batch = vec![forged.clone()];
    for event in &events[accepted + 1..] {
        let mut event = event.clone();
        event.hash =
            csp_ledger::store::audit::chain_hash(&batch[batch.len() - 1].hash, &event.canonical);
        batch.push(event);
    }
    match follower.replicate(batch, Vec::new(), Vec::new()) {
        Err(csp_ledger::writer::LedgerError::Replication(message)) => {
            assert!(
                message.contains(&format!("event {}", forged.position)),
                "{message}"
            );
            assert!(message.contains(&missing), "{message}");
        }
        other => panic!("a forged event was replicated: {other:?}"),
    }
    assert_eq!(follower.log().head(), before);
    drop(follower);

    // The log is as it was: it reopens, and the genuine events replicate onto it.
    let mut reopened = Ledger::open(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(reopened.head(), before);
    reopened
        .replicate(events[accepted..].to_vec(), Vec::new(), Vec::new())
        .unwrap();
    assert_eq!(reopened.head(), leader.head());
}

#[test]
fn sled_corruption_is_reported_as_unreadable_without_an_invented_position() {
    let dir = populated(300);
    // Opened and closed once more, sled has written a snapshot of its page table.
    let (code, report) = verify(dir.path());
    assert_eq!(code, 0, "{report}");
    // Flip bytes near the start of sled's data file: sled finds its snapshot no longer agrees
    // with the log and reports corruption without naming an event.
    let db = dir.path().join("sled").join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    for byte in &mut bytes[1000..1016] {
        *byte ^= 0xff;
    }
    std::fs::write(&db, bytes).unwrap();
    let (code, report) = verify(dir.path());
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_position"], Value::Null, "{report}");
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the store is unreadable: sled reports corruption"),
        "{report}"
    );
    assert!(!reason.contains("None"), "{report}");
    // Opening the ledger says the same.
    match Ledger::open(dir.path(), LogOptions::default()) {
        Err(error) => assert!(error.to_string().contains("unreadable"), "{error}"),
        Ok(_) => panic!("a corrupt store was opened"),
    }
}

#[test]
fn query_into_a_closed_pipe_exits_cleanly() {
    let dir = populated(50);
    // `csp-ledger query ... | head -c 0`: the reader is gone before the answer is written.
    let mut child = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["query", "/v1/events?limit=100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(output.status.success(), "{:?}: {stderr}", output.status);
    // With a reader, the same query prints its answer.
    let answered = Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["query", "/v1/events?limit=100"])
        .output()
        .unwrap();
    assert!(answered.status.success());
    let body: Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert!(body.is_object(), "{body}");
}
