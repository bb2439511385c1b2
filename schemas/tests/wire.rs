//! The wire formats of `schemas::wire`: every encoder reproduces the bytes the service wrote
//! before this module existed (outcome lines captured from `csp-ledger apply` on
//! examples/onboarding.jsonl and a few rejected and duplicate commands, in
//! tests/data/outcome_lines.jsonl; Kafka values as src/kafka.rs built them by hand), and every
//! decoder gives back what was encoded, or an error, never a panic. The captured lines are
//! schema_version 1 (the pin of the old bytes, which stay as stored); a version 2 envelope is
//! pinned beside them.

use std::borrow::Cow;

use csp_ledger_schemas::event::{EventEnvelope, FoldEvent, SCHEMA_VERSION};
use csp_ledger_schemas::wire::{
    DeadLetter, DlqMessage, EventLine, OutcomeLine, PublishedEvent, ResultMessage, TopicMessage,
    WireError,
};
use csp_ledger_schemas::{OutcomeKind, Rejection, RejectionCode};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

const CAPTURED: &str = include_str!("data/outcome_lines.jsonl");

fn captured() -> Vec<&'static str> {
    CAPTURED.lines().collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 over the previous hash as hex and the canonical bytes (schemas/CANONICAL.md).
fn chain_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(hex(prev_hash).as_bytes());
    hasher.update(canonical);
    hasher.finalize().into()
}

#[test]
fn captured_outcome_lines_decode_and_encode_to_the_same_bytes() {
    let lines = captured();
    let kinds: Vec<(OutcomeKind, usize, Option<RejectionCode>, bool)> = lines
        .iter()
        .map(|line| {
            let decoded = OutcomeLine::decode(line.as_bytes()).expect("a captured line decodes");
            let mut encoded = Vec::new();
            decoded.encode(&mut encoded);
            assert_eq!(std::str::from_utf8(&encoded).unwrap(), *line);
            (
                decoded.outcome,
                decoded.events.len(),
                decoded.rejection.as_ref().map(|r| r.code),
                decoded.command_id.is_some(),
            )
        })
        .collect();
    use OutcomeKind::*;
    assert_eq!(
        kinds,
        vec![
            (Accepted, 1, None, true),
            (Accepted, 3, None, true),
            (Duplicate, 1, None, true),
            (Rejected, 0, Some(RejectionCode::MalformedCommand), true),
            (Rejected, 0, Some(RejectionCode::PartnerNotFound), true),
            (Rejected, 0, Some(RejectionCode::MalformedCommand), false),
        ]
    );
}

#[test]
fn event_lines_decode_to_the_canonical_bytes_the_hash_chain_covers() {
    let mut checked = 0;
    for line in captured() {
        let outcome = OutcomeLine::decode(line.as_bytes()).unwrap();
        for event in &outcome.events {
            assert_eq!(chain_hash(&event.prev_hash, &event.canonical), event.hash);
            // The canonical bytes are what the envelope serializes to, byte for byte.
            let envelope = EventEnvelope::decode(&event.canonical).unwrap();
            assert_eq!(envelope.canonical_bytes(), event.canonical.as_ref());
            checked += 1;
        }
        // Events of one command chain onto each other.
        for pair in outcome.events.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash);
        }
    }
    assert_eq!(checked, 5);
}

/// The first captured event as a version 2 envelope submitted by `partner-portal`: its
/// canonical bytes (`submitted_by` between `stream_version` and `type`) and its hash, both
/// computed independently with Python's `json.dumps(sort_keys=True, separators=(",", ":"),
/// ensure_ascii=False)` and `hashlib.sha256` (schemas/CANONICAL.md).
const V2_CANONICAL: &str = r#"{"actor":{"id":"00000000-0000-4000-8000-000000000101","kind":"partner","role":"global_admin"},"command_id":"00000000-0000-4000-8000-000000900001","correlation_id":"onboarding-northwind","data":{"country":"DE","legal_name":"Northwind Distribution GmbH","partner_id":"00000000-0000-4000-8000-000000000101","primary_contact_email":"sha256:9c3b671dca4becb9188befc432f14dca67271bd697abcf27609574fb1962be95","region":"europe","role":"indirect_reseller","tenant_id":"00000000-0000-4000-8000-000000000301","verification":"pending"},"event_id":"6ccb578e-be2b-4d7c-96c0-ddabf2dbe205","occurred_at":"2026-01-12T09:01:00Z","position":1,"recorded_at":"2026-12-01T09:10:45.563841832Z","schema_version":2,"stream":"partner-00000000-0000-4000-8000-000000000101","stream_version":1,"submitted_by":"partner-portal","type":"PartnerEnrolled"}"#;
const V2_HASH: &str = "2a06434e529b89cac0dc17b9c28ca6f61baa51c32247f6e44236759faa3595aa";

#[test]
fn version_2_canonical_bytes_carry_submitted_by_in_sorted_position() {
    assert_eq!(SCHEMA_VERSION, 2);
    let line = OutcomeLine::decode(captured()[0].as_bytes()).unwrap();
    let v1 = EventEnvelope::decode(&line.events[0].canonical).unwrap();
    // A version 1 envelope decodes upcast (no submitter) and keeps its version and bytes.
    assert_eq!(v1.schema_version, 1);
    assert_eq!(v1.submitted_by, None);
    assert_eq!(v1.canonical_bytes(), line.events[0].canonical.as_ref());
    assert!(!String::from_utf8(v1.canonical_bytes())
        .unwrap()
        .contains("submitted_by"));

    let v2 = EventEnvelope {
        schema_version: 2,
        submitted_by: Some("partner-portal".into()),
        ..v1.clone()
    };
    let canonical = v2.canonical_bytes();
    assert_eq!(std::str::from_utf8(&canonical).unwrap(), V2_CANONICAL);
    assert!(V2_CANONICAL.contains(r#""stream_version":1,"submitted_by":"partner-portal","type":"#));
    assert_eq!(hex(&chain_hash(&[0; 32], &canonical)), V2_HASH);
    // It decodes to itself, the fold view sees the same event.
    assert_eq!(EventEnvelope::decode(&canonical).unwrap(), v2);
    assert_eq!(FoldEvent::decode(&canonical).unwrap().event, v1.event);
    assert_eq!(
        FoldEvent::decode(&canonical).unwrap(),
        FoldEvent::decode(&line.events[0].canonical).unwrap()
    );

    // The event line of a v2 envelope reads back to the same canonical bytes and hash.
    let mut out = Vec::new();
    EventLine {
        canonical: Cow::Borrowed(&canonical),
        hash: chain_hash(&[0; 32], &canonical),
        prev_hash: [0; 32],
        personal_data: Vec::new(),
    }
    .encode(&mut out);
    let read = EventLine::decode(&out).unwrap();
    assert_eq!(read.canonical.as_ref(), canonical.as_slice());
    assert_eq!(chain_hash(&read.prev_hash, &read.canonical), read.hash);
}

#[test]
fn tampering_with_submitted_by_breaks_the_hash() {
    let hash = chain_hash(&[0; 32], V2_CANONICAL.as_bytes());
    for forged in [
        V2_CANONICAL.replace(
            r#""submitted_by":"partner-portal""#,
            r#""submitted_by":"local""#,
        ),
        V2_CANONICAL.replace(
            r#""submitted_by":"partner-portal""#,
            r#""submitted_by":"partner-portaL""#,
        ),
    ] {
        // Still a valid envelope, but no longer the one that was hashed.
        assert!(EventEnvelope::decode(forged.as_bytes()).is_ok());
        assert_ne!(chain_hash(&[0; 32], forged.as_bytes()), hash);
    }
    // Dropping it, or dressing the event up as version 1, is refused or changes the hash.
    let dropped = V2_CANONICAL.replace(r#","submitted_by":"partner-portal""#, "");
    assert!(EventEnvelope::decode(dropped.as_bytes()).is_err());
    let as_v1 = dropped.replace(r#""schema_version":2"#, r#""schema_version":1"#);
    assert!(EventEnvelope::decode(as_v1.as_bytes()).is_ok());
    assert_ne!(chain_hash(&[0; 32], as_v1.as_bytes()), hash);
}

#[test]
fn decoders_accept_versions_1_and_2_only_in_their_own_shape() {
    let v1 = std::str::from_utf8(
        &OutcomeLine::decode(captured()[0].as_bytes())
            .unwrap()
            .events[0]
            .canonical,
    )
    .unwrap()
    .to_string();
    let refused = [
        // A version 1 envelope carrying submitted_by (null or not).
        v1.replace(r#","type":"#, r#","submitted_by":"local","type":"#),
        v1.replace(r#","type":"#, r#","submitted_by":null,"type":"#),
        // A version 2 envelope without it, with null, or with an id that is no principal id.
        V2_CANONICAL.replace(r#","submitted_by":"partner-portal""#, ""),
        V2_CANONICAL.replace(r#""partner-portal""#, "null"),
        V2_CANONICAL.replace(r#""partner-portal""#, r#""""#),
        V2_CANONICAL.replace(r#""partner-portal""#, r#""someone@example.com""#),
        V2_CANONICAL.replace(r#""partner-portal""#, "7"),
        // Versions this build does not read.
        V2_CANONICAL.replace(r#""schema_version":2"#, r#""schema_version":3"#),
        v1.replace(r#""schema_version":1"#, r#""schema_version":0"#),
    ];
    for bytes in &refused {
        assert!(EventEnvelope::decode(bytes.as_bytes()).is_err(), "{bytes}");
        assert!(FoldEvent::decode(bytes.as_bytes()).is_err(), "{bytes}");
    }
    let error = EventEnvelope::decode(refused[7].as_bytes()).unwrap_err();
    assert!(error.contains("unsupported schema_version 3"), "{error}");
    for accepted in [v1.as_str(), V2_CANONICAL] {
        assert!(EventEnvelope::decode(accepted.as_bytes()).is_ok());
        assert!(FoldEvent::decode(accepted.as_bytes()).is_ok());
    }
}

#[test]
fn outcome_line_encoder_writes_the_captured_bytes_from_parts() {
    let line = captured()[0];
    let decoded = OutcomeLine::decode(line.as_bytes()).unwrap();
    let event = &decoded.events[0];
    // Built as the ledger builds it: the envelope's canonical bytes, hashes, clear values.
    let envelope = EventEnvelope::decode(&event.canonical).unwrap();
    let canonical = envelope.canonical_bytes();
    let prev_hash = [0u8; 32];
    let hash = chain_hash(&prev_hash, &canonical);
    let built = OutcomeLine {
        command_id: Some(envelope.command_id),
        outcome: OutcomeKind::Accepted,
        events: vec![EventLine {
            canonical: Cow::Borrowed(&canonical),
            hash,
            prev_hash,
            personal_data: vec![(
                Cow::Borrowed("primary_contact_email"),
                Cow::Borrowed("partners@northwind-distribution.example"),
            )],
        }],
        rejection: None,
    };
    let mut out = Vec::new();
    built.encode(&mut out);
    assert_eq!(std::str::from_utf8(&out).unwrap(), line);
    assert_eq!(built, decoded);
}

#[test]
fn rejected_outcome_lines_are_pinned() {
    let rejection = Rejection::new(
        RejectionCode::PartnerNotFound,
        "partner 6f1c1f5e-1b7a-4a57-9a57-0c1f3a8e9998 is not enrolled",
    );
    let line = OutcomeLine {
        command_id: Some("6f1c1f5e-1b7a-4a57-9a57-0c1f3a8e9999".parse().unwrap()),
        outcome: OutcomeKind::Rejected,
        events: Vec::new(),
        rejection: Some(Cow::Borrowed(&rejection)),
    };
    let mut out = Vec::new();
    line.encode(&mut out);
    assert_eq!(std::str::from_utf8(&out).unwrap(), captured()[4]);

    let reason = "envelope: expected ident at line 1 column 2";
    let malformed = Rejection::new(RejectionCode::MalformedCommand, reason)
        .with_details(json!({"line": 5, "reason": reason}));
    let line = OutcomeLine {
        command_id: None,
        outcome: OutcomeKind::Rejected,
        events: Vec::new(),
        rejection: Some(Cow::Owned(malformed)),
    };
    let mut out = Vec::new();
    line.encode(&mut out);
    assert_eq!(std::str::from_utf8(&out).unwrap(), captured()[5]);
    assert_eq!(OutcomeLine::decode(&out).unwrap(), line);
}

#[test]
fn rejection_encodes_as_the_json_value_the_service_built() {
    let cases = [
        Rejection::new(RejectionCode::PartnerNotFound, "plain"),
        Rejection::new(
            RejectionCode::MalformedCommand,
            "quotes \" backslash \\ newline \n tab \t bell \u{7} ünïcode €",
        )
        .with_details(
            json!({"reason": "z", "line": null, "nested": {"b": [1, 2.5, "x"], "a": true}}),
        ),
        Rejection::new(RejectionCode::CommandIdConflict, "").with_details(json!([])),
    ];
    for rejection in cases {
        let mut out = Vec::new();
        rejection.encode(&mut out);
        // What src/ledger.rs `rejection_json(..).to_string()` wrote.
        let before = json!({"code": rejection.code.as_str(), "message": rejection.message, "details": rejection.details})
            .to_string();
        assert_eq!(std::str::from_utf8(&out).unwrap(), before);
        assert_eq!(Rejection::decode(&out).unwrap(), rejection);
    }
    assert_eq!(
        Rejection::decode(br#"{"code":"no_such_code","message":"m","details":null}"#)
            .map_err(|e| matches!(e, WireError::Json { .. })),
        Err(true)
    );
    assert!(Rejection::decode(br#"{"code":"partner_not_found"}"#).is_err());
}

#[test]
fn outcome_kind_strings_are_the_serde_names() {
    for kind in [
        OutcomeKind::Accepted,
        OutcomeKind::Rejected,
        OutcomeKind::Duplicate,
    ] {
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
    }
    assert_eq!(OutcomeKind::Duplicate.as_str(), "duplicate");
}

#[test]
fn event_line_round_trips_with_escaped_personal_data() {
    let canonical = br#"{"a":"x\"y","position":9}"#;
    let line = EventLine {
        canonical: Cow::Borrowed(canonical),
        hash: [0xab; 32],
        prev_hash: [0x01; 32],
        personal_data: vec![
            (
                Cow::Borrowed("signer_email"),
                Cow::Borrowed("a\"b@ü.example"),
            ),
            (Cow::Borrowed("second"), Cow::Borrowed("v")),
        ],
    };
    let mut out = Vec::new();
    line.encode(&mut out);
    let expected = format!(
        r#"{{"a":"x\"y","position":9,"hash":"{}","prev_hash":"{}","personal_data":{{"signer_email":"a\"b@ü.example","second":"v"}}}}"#,
        "ab".repeat(32),
        "01".repeat(32)
    );
    assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
    let decoded = EventLine::decode(&out).unwrap();
    assert_eq!(decoded, line);
    assert_eq!(decoded.canonical.as_ref(), canonical);
}

/// The captured event line with the personal data member cut out: what src/kafka.rs published
/// (`write_event_json` with no personal values).
fn published_line(captured_event: &EventLine<'_>) -> String {
    let mut prefix = std::str::from_utf8(&captured_event.canonical)
        .unwrap()
        .to_string();
    prefix.pop();
    format!(
        r#"{prefix},"hash":"{}","prev_hash":"{}"}}"#,
        hex(&captured_event.hash),
        hex(&captured_event.prev_hash)
    )
}

#[test]
fn published_event_is_the_event_line_without_personal_data() {
    let outcome = OutcomeLine::decode(captured()[0].as_bytes()).unwrap();
    let event = &outcome.events[0];
    let published = PublishedEvent {
        position: 1,
        canonical: Cow::Borrowed(&event.canonical),
        hash: event.hash,
        prev_hash: event.prev_hash,
    };
    let mut out = Vec::new();
    published.encode(&mut out);
    assert_eq!(std::str::from_utf8(&out).unwrap(), published_line(event));
    assert_eq!(PublishedEvent::decode(&out).unwrap(), published);

    // The line with personal data is never a published event.
    let mut with_personal = Vec::new();
    event.encode(&mut with_personal);
    assert!(matches!(
        PublishedEvent::decode(&with_personal),
        Err(WireError::Invalid {
            field: "personal_data",
            ..
        })
    ));
    // Nor is one without a position.
    let mut no_position = Vec::new();
    PublishedEvent {
        position: 0,
        canonical: Cow::Borrowed(b"{\"a\":1}"),
        hash: [0; 32],
        prev_hash: [0; 32],
    }
    .encode(&mut no_position);
    assert!(matches!(
        PublishedEvent::decode(&no_position),
        Err(WireError::Missing {
            field: "position",
            ..
        })
    ));
}

#[test]
fn result_messages_are_pinned_and_round_trip() {
    // Accepted, three events: as src/kafka.rs `Publisher::result` wrote it.
    let outcome = OutcomeLine::decode(captured()[1].as_bytes()).unwrap();
    let events: Vec<PublishedEvent<'_>> = outcome
        .events
        .iter()
        .map(|e| PublishedEvent {
            position: EventEnvelope::decode(&e.canonical).unwrap().position,
            canonical: Cow::Borrowed(&e.canonical),
            hash: e.hash,
            prev_hash: e.prev_hash,
        })
        .collect();
    let body_hash: [u8; 16] = std::array::from_fn(|i| i as u8 * 17);
    let result = ResultMessage {
        command_id: outcome.command_id.unwrap(),
        outcome: OutcomeKind::Accepted,
        events,
        body_hash,
        recorded_at_micros: 1_795_943_445_563_841,
        rejection: None,
        correlation_id: Some(Cow::Borrowed("onboarding-contoso")),
        fence: None,
    };
    let message = result.encode();
    let lines: Vec<String> = outcome.events.iter().map(published_line).collect();
    let expected = format!(
        r#"{{"command_id":"{}","outcome":"accepted","events":[{}],"body_hash":"00112233445566778899aabbccddeeff","recorded_at_micros":1795943445563841}}"#,
        outcome.command_id.unwrap(),
        lines.join(",")
    );
    assert_eq!(std::str::from_utf8(&message.value).unwrap(), expected);
    assert_eq!(message.key, outcome.command_id.unwrap().to_string());
    assert_eq!(
        message.headers,
        vec![("correlation_id", "onboarding-contoso".to_string())]
    );
    let headers: Vec<(String, String)> = message
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let decoded = ResultMessage::decode(&message.value, &headers).unwrap();
    assert_eq!(decoded, result);
    assert_eq!(
        decoded
            .events
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![15, 16, 17]
    );

    // Rejected, no correlation: the stored rejection follows recorded_at_micros.
    let rejection = Rejection::new(RejectionCode::PartnerNotFound, "partner x is not enrolled");
    let result = ResultMessage {
        command_id: Uuid::from_u128(7),
        outcome: OutcomeKind::Rejected,
        events: Vec::new(),
        body_hash: [0xff; 16],
        recorded_at_micros: -5,
        rejection: Some(Cow::Borrowed(&rejection)),
        correlation_id: None,
        fence: None,
    };
    let message = result.encode();
    assert_eq!(
        std::str::from_utf8(&message.value).unwrap(),
        r#"{"command_id":"00000000-0000-0000-0000-000000000007","outcome":"rejected","events":[],"body_hash":"ffffffffffffffffffffffffffffffff","recorded_at_micros":-5,"rejection":{"code":"partner_not_found","details":null,"message":"partner x is not enrolled"}}"#
    );
    assert!(message.headers.is_empty());
    assert_eq!(ResultMessage::decode(&message.value, &[]).unwrap(), result);
    // Under the term rule: the term and outcome sequence close the value, no header.
    let fenced = ResultMessage {
        fence: Some(csp_ledger_schemas::wire::ResultFence {
            term: 3,
            outcome_seq: 41,
        }),
        ..result.clone()
    };
    let fenced_message = fenced.encode();
    assert!(std::str::from_utf8(&fenced_message.value)
        .unwrap()
        .ends_with(r#""message":"partner x is not enrolled"},"term":3,"outcome_seq":41}"#));
    assert!(fenced_message.headers.is_empty());
    assert_eq!(
        ResultMessage::decode(&fenced_message.value, &[]).unwrap(),
        fenced
    );
    // One of the two alone is refused.
    let half = std::str::from_utf8(&fenced_message.value)
        .unwrap()
        .replace(r#","outcome_seq":41"#, "");
    assert!(ResultMessage::decode(half.as_bytes(), &[]).is_err());
    // A body hash that is not 32 hex digits is refused.
    let bad = std::str::from_utf8(&message.value)
        .unwrap()
        .replace("ffffffffffffffffffffffffffffffff", "fff");
    assert!(matches!(
        ResultMessage::decode(bad.as_bytes(), &[]),
        Err(WireError::Invalid {
            field: "body_hash",
            ..
        })
    ));
}

fn dead_letter() -> DeadLetter<'static> {
    DeadLetter {
        reason: Cow::Borrowed("envelope: expected ident at line 1 column 2"),
        detail: None,
        topic: Cow::Borrowed("csp.commands"),
        partition: 2,
        offset: 41,
        original: Cow::Borrowed(b"not json\xff"),
    }
}

#[test]
fn stored_dead_letter_is_pinned_and_round_trips() {
    let letter = dead_letter();
    let mut out = Vec::new();
    letter.encode(&mut out);
    // As src/ledger.rs `encode_dead_letter` wrote it: json! sorts the metadata keys.
    let meta = r#"{"offset":41,"partition":2,"reason":"envelope: expected ident at line 1 column 2","topic":"csp.commands"}"#;
    let mut expected = (meta.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(meta.as_bytes());
    expected.extend_from_slice(b"not json\xff");
    assert_eq!(out, expected);
    assert_eq!(DeadLetter::decode(&out).unwrap(), letter);

    // Truncated or bad payloads are errors.
    assert_eq!(
        DeadLetter::decode(&out[..3]),
        Err(WireError::Truncated {
            what: "dead letter"
        })
    );
    assert_eq!(
        DeadLetter::decode(&out[..4 + meta.len() - 1]),
        Err(WireError::Truncated {
            what: "dead letter"
        })
    );
    let mut bad = out.clone();
    bad[4] = b'[';
    assert!(matches!(
        DeadLetter::decode(&bad),
        Err(WireError::Json { .. })
    ));
}

#[test]
fn a_dead_letter_with_a_detail_adds_it_to_the_metadata_and_the_headers_only() {
    let letter = DeadLetter {
        reason: Cow::Borrowed("unauthenticated"),
        detail: Some(Cow::Borrowed("no csp-principal header")),
        ..dead_letter()
    };
    let mut out = Vec::new();
    letter.encode(&mut out);
    let meta = r#"{"detail":"no csp-principal header","offset":41,"partition":2,"reason":"unauthenticated","topic":"csp.commands"}"#;
    let mut expected = (meta.len() as u32).to_be_bytes().to_vec();
    expected.extend_from_slice(meta.as_bytes());
    expected.extend_from_slice(b"not json\xff");
    assert_eq!(out, expected);
    assert_eq!(DeadLetter::decode(&out).unwrap(), letter);

    let encoded = DlqMessage(letter.clone()).encode();
    assert_eq!(
        encoded.headers,
        vec![
            ("reason", "unauthenticated".to_string()),
            ("source_topic", "csp.commands".into()),
            ("source_partition", "2".into()),
            ("source_offset", "41".into()),
            ("detail", "no csp-principal header".into()),
        ]
    );
    let headers: Vec<(String, String)> = encoded
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(
        DlqMessage::decode(&encoded.value, &headers).unwrap(),
        DlqMessage(letter)
    );
}

#[test]
fn dlq_message_is_pinned_and_round_trips() {
    let message = DlqMessage(dead_letter());
    let encoded = message.encode();
    assert_eq!(
        encoded,
        TopicMessage {
            key: "2/41".into(),
            value: b"not json\xff".to_vec(),
            headers: vec![
                (
                    "reason",
                    "envelope: expected ident at line 1 column 2".into()
                ),
                ("source_topic", "csp.commands".into()),
                ("source_partition", "2".into()),
                ("source_offset", "41".into()),
            ],
        }
    );
    let headers: Vec<(String, String)> = encoded
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(
        DlqMessage::decode(&encoded.value, &headers).unwrap(),
        message
    );
    assert!(matches!(
        DlqMessage::decode(&encoded.value, &headers[..3]),
        Err(WireError::Missing {
            field: "source_offset",
            ..
        })
    ));
    let mut bad = headers.clone();
    bad[2].1 = "x".into();
    assert!(matches!(
        DlqMessage::decode(&encoded.value, &bad),
        Err(WireError::Invalid {
            field: "source_partition",
            ..
        })
    ));
}

#[test]
fn decoders_refuse_every_truncation_without_panicking() {
    let line = captured()[0].as_bytes();
    let outcome = OutcomeLine::decode(line).unwrap();
    let mut event = Vec::new();
    outcome.events[0].encode(&mut event);
    let mut letter = Vec::new();
    dead_letter().encode(&mut letter);
    let result = ResultMessage {
        command_id: Uuid::nil(),
        outcome: OutcomeKind::Duplicate,
        events: Vec::new(),
        body_hash: [1; 16],
        recorded_at_micros: 3,
        rejection: None,
        correlation_id: None,
        fence: None,
    }
    .encode();
    for cut in 0..line.len() {
        assert!(
            OutcomeLine::decode(&line[..cut]).is_err(),
            "outcome cut at {cut}"
        );
    }
    for cut in 0..event.len() {
        assert!(
            EventLine::decode(&event[..cut]).is_err(),
            "event cut at {cut}"
        );
        assert!(PublishedEvent::decode(&event[..cut]).is_err());
    }
    for cut in 0..result.value.len() {
        assert!(ResultMessage::decode(&result.value[..cut], &[]).is_err());
    }
    // A dead letter's original bytes are opaque: only cuts into the metadata are errors.
    let meta_end = letter.len() - dead_letter().original.len();
    for cut in 0..meta_end {
        assert!(
            DeadLetter::decode(&letter[..cut]).is_err(),
            "dead letter cut at {cut}"
        );
    }
    // Wrong shapes.
    for bad in [
        &b"[]"[..],
        b"null",
        b"{\"hash\":1}",
        b"{\"a\":1,\"a\":2,\"hash\":\"00\"}",
        b"\xff",
    ] {
        assert!(EventLine::decode(bad).is_err());
        assert!(OutcomeLine::decode(bad).is_err());
        assert!(ResultMessage::decode(bad, &[]).is_err());
        assert!(Rejection::decode(bad).is_err());
    }
}
