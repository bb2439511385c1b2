//! The wire formats the ledger writes besides commands and canonical event bytes: the event
//! line, the outcome line of SPEC.md section 7, the values of the `csp.events` and
//! `csp.command-results` topics, the rejection object and the dead letter (as stored in the
//! log and as the `csp.commands.dlq` message). Each type has exactly one encoder and one
//! decoder, and this module is the only place where these JSON shapes are written or read.
//!
//! Encoders write into a `&mut Vec<u8>` from borrowed parts, without a `serde_json::Value` in
//! between: the outcome line and the event line are written once per command on the hot path.
//! Decoders never panic on input; they give a [`WireError`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use thiserror::Error;
use uuid::Uuid;

use crate::outcome::{OutcomeKind, Rejection, RejectionCode};

/// Why wire bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// Not JSON, or JSON of another shape.
    #[error("{what}: {reason}")]
    Json { what: &'static str, reason: String },
    /// A required member or header is missing.
    #[error("{what}: {field} is missing")]
    Missing {
        what: &'static str,
        field: &'static str,
    },
    /// A member or header is there but its value is not valid.
    #[error("{what}: {field} {reason}")]
    Invalid {
        what: &'static str,
        field: &'static str,
        reason: String,
    },
    /// A binary payload ends before its stated length.
    #[error("{what}: truncated")]
    Truncated { what: &'static str },
}

fn json_error(what: &'static str) -> impl Fn(serde_json::Error) -> WireError {
    move |error| WireError::Json {
        what,
        reason: error.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Small writers

/// Appends `value` as a JSON string (serde_json's escaping, as everywhere else).
fn write_str(out: &mut Vec<u8>, value: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn write_uuid(out: &mut Vec<u8>, id: &Uuid) {
    out.push(b'"');
    out.extend_from_slice(
        id.hyphenated()
            .encode_lower(&mut Uuid::encode_buffer())
            .as_bytes(),
    );
    out.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex of exactly `N` bytes.
fn parse_hex<const N: usize>(
    text: &str,
    what: &'static str,
    field: &'static str,
) -> Result<[u8; N], WireError> {
    let bytes = text.as_bytes();
    let invalid = || WireError::Invalid {
        what,
        field,
        reason: format!("is not {} lower-case hex digits", 2 * N),
    };
    if bytes.len() != 2 * N {
        return Err(invalid());
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let (high, low) = (hex_digit(pair[0]), hex_digit(pair[1]));
        match (high, low) {
            (Some(h), Some(l)) => out[i] = h << 4 | l,
            _ => return Err(invalid()),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Reading a JSON object member by member, keeping each value's exact bytes

/// A string that borrows from the input unless it had escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The members of a JSON object in input order, each value as its exact input bytes.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(16);
                while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
                    if members.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key {key:?}")));
                    }
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key, value));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// Rejection

/// What the rejection object decodes from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRejection {
    code: RejectionCode,
    message: String,
    #[serde(default)]
    details: Option<Value>,
}

impl Rejection {
    /// Writes `{"code","details","message"}` (keys sorted, `details` null when absent): the
    /// `rejection` of an outcome line and the stored rejection of an outcome record.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"code\":");
        write_str(out, self.code.as_str());
        out.extend_from_slice(b",\"details\":");
        match &self.details {
            // A Value always serializes.
            Some(details) => {
                let _ = serde_json::to_writer(&mut *out, details);
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"message\":");
        write_str(out, &self.message);
        out.push(b'}');
    }

    /// Reads a rejection object; `details: null` becomes `None`.
    pub fn decode(bytes: &[u8]) -> Result<Rejection, WireError> {
        let raw: RawRejection = serde_json::from_slice(bytes).map_err(json_error("rejection"))?;
        Ok(Rejection {
            code: raw.code,
            message: raw.message,
            details: raw.details.filter(|d| !d.is_null()),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Event line

/// An event envelope as answered to callers (`apply`, `history`, the query API): its canonical
/// bytes with `hash`, `prev_hash` and, when there are clear personal values, `personal_data`
/// appended as further members of the same object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLine<'a> {
    /// The canonical bytes (schemas/CANONICAL.md): a compact JSON object.
    pub canonical: Cow<'a, [u8]>,
    pub hash: [u8; 32],
    pub prev_hash: [u8; 32],
    /// Clear personal values by field name, in the order written; empty for none.
    pub personal_data: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> EventLine<'a> {
    /// Appends the line: the canonical bytes without their closing brace, then
    /// `,"hash":"…","prev_hash":"…"`, then `,"personal_data":{…}` when there is any, then `}`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let canonical = &self.canonical[..];
        // Canonical bytes are a JSON object: everything up to its closing brace.
        out.extend_from_slice(&canonical[..canonical.len().saturating_sub(1)]);
        out.extend_from_slice(b",\"hash\":\"");
        write_hex(out, &self.hash);
        out.extend_from_slice(b"\",\"prev_hash\":\"");
        write_hex(out, &self.prev_hash);
        out.push(b'"');
        if !self.personal_data.is_empty() {
            out.extend_from_slice(b",\"personal_data\":{");
            for (i, (field, value)) in self.personal_data.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, field);
                out.push(b':');
                write_str(out, value);
            }
            out.push(b'}');
        }
        out.push(b'}');
    }

    /// Reads a line back. The canonical bytes are the object's other members, in input order,
    /// each value byte for byte as it was: for a line written by [`EventLine::encode`] exactly
    /// the canonical bytes it was written from, so the hash chain can be checked on them.
    pub fn decode(bytes: &'a [u8]) -> Result<EventLine<'a>, WireError> {
        const WHAT: &str = "event line";
        let Members(members) = serde_json::from_slice(bytes).map_err(json_error(WHAT))?;
        let mut canonical = Vec::with_capacity(bytes.len());
        canonical.push(b'{');
        let mut hash = None;
        let mut prev_hash = None;
        let mut personal_data = Vec::new();
        for (key, value) in &members {
            match key.as_ref() {
                "hash" | "prev_hash" => {
                    let field = if key == "hash" { "hash" } else { "prev_hash" };
                    let Text(text) =
                        serde_json::from_str(value.get()).map_err(|e| WireError::Invalid {
                            what: WHAT,
                            field,
                            reason: e.to_string(),
                        })?;
                    let parsed = parse_hex::<32>(&text, WHAT, field)?;
                    if field == "hash" {
                        hash = Some(parsed);
                    } else {
                        prev_hash = Some(parsed);
                    }
                }
                "personal_data" => {
                    let Members(fields) =
                        serde_json::from_str(value.get()).map_err(|e| WireError::Invalid {
                            what: WHAT,
                            field: "personal_data",
                            reason: e.to_string(),
                        })?;
                    for (field, raw) in fields {
                        let Text(text) =
                            serde_json::from_str(raw.get()).map_err(|e| WireError::Invalid {
                                what: WHAT,
                                field: "personal_data",
                                reason: e.to_string(),
                            })?;
                        personal_data.push((field, text));
                    }
                }
                _ => {
                    if canonical.len() > 1 {
                        canonical.push(b',');
                    }
                    write_str(&mut canonical, key);
                    canonical.push(b':');
                    canonical.extend_from_slice(value.get().as_bytes());
                }
            }
        }
        canonical.push(b'}');
        Ok(EventLine {
            canonical: Cow::Owned(canonical),
            hash: hash.ok_or(WireError::Missing {
                what: WHAT,
                field: "hash",
            })?,
            prev_hash: prev_hash.ok_or(WireError::Missing {
                what: WHAT,
                field: "prev_hash",
            })?,
            personal_data,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// csp.events value

/// The value of a `csp.events` message (keyed by the event's stream): the event line without
/// personal data, which never goes to Kafka (it could not be erased there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent<'a> {
    /// The event's position, as its canonical bytes say. Not written by the encoder (the
    /// canonical bytes carry it); filled in by the decoder.
    pub position: u64,
    pub canonical: Cow<'a, [u8]>,
    pub hash: [u8; 32],
    pub prev_hash: [u8; 32],
}

impl<'a> PublishedEvent<'a> {
    /// Appends the message value: [`EventLine::encode`] without personal data.
    pub fn encode(&self, out: &mut Vec<u8>) {
        EventLine {
            canonical: Cow::Borrowed(&self.canonical[..]),
            hash: self.hash,
            prev_hash: self.prev_hash,
            personal_data: Vec::new(),
        }
        .encode(out);
    }

    /// Reads a message value back, with the position from its canonical bytes.
    pub fn decode(bytes: &'a [u8]) -> Result<PublishedEvent<'a>, WireError> {
        const WHAT: &str = "published event";
        let line = EventLine::decode(bytes)?;
        if !line.personal_data.is_empty() {
            return Err(WireError::Invalid {
                what: WHAT,
                field: "personal_data",
                reason: "is never published".into(),
            });
        }
        #[derive(Deserialize)]
        struct Position {
            position: Option<u64>,
        }
        let position = serde_json::from_slice::<Position>(&line.canonical)
            .map_err(json_error(WHAT))?
            .position
            .ok_or(WireError::Missing {
                what: WHAT,
                field: "position",
            })?;
        Ok(PublishedEvent {
            position,
            canonical: line.canonical,
            hash: line.hash,
            prev_hash: line.prev_hash,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Outcome line

/// The outcome line of SPEC.md section 7: what `apply` prints and `POST /v1/commands` answers
/// for one command. `command_id` is null for input that had none; `rejection` is written
/// only when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeLine<'a> {
    pub command_id: Option<Uuid>,
    pub outcome: OutcomeKind,
    pub events: Vec<EventLine<'a>>,
    pub rejection: Option<Cow<'a, Rejection>>,
}

/// What an outcome line decodes from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutcomeLine<'a> {
    command_id: Option<Uuid>,
    outcome: OutcomeKind,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(default, borrow)]
    rejection: Option<&'a RawValue>,
}

fn decode_rejection(raw: Option<&RawValue>) -> Result<Option<Cow<'static, Rejection>>, WireError> {
    match raw {
        Some(raw) if raw.get() != "null" => {
            Ok(Some(Cow::Owned(Rejection::decode(raw.get().as_bytes())?)))
        }
        _ => Ok(None),
    }
}

impl<'a> OutcomeLine<'a> {
    /// What `submit --wait` prints for a command whose result did not arrive in time:
    /// `{"command_id":…,"outcome":null,"error":"no result within the wait"}`.
    pub fn no_result_line(command_id: &str) -> String {
        serde_json::json!({"command_id": command_id, "outcome": null, "error": "no result within the wait"})
            .to_string()
    }

    /// Appends `{"command_id":…,"outcome":…,"events":[…]}`, with `,"rejection":{…}` before the
    /// closing brace when there is a rejection.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"command_id\":");
        match &self.command_id {
            Some(id) => write_uuid(out, id),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"outcome\":\"");
        out.extend_from_slice(self.outcome.as_str().as_bytes());
        out.extend_from_slice(b"\",\"events\":");
        out.push(b'[');
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            event.encode(out);
        }
        out.push(b']');
        if let Some(rejection) = &self.rejection {
            out.extend_from_slice(b",\"rejection\":");
            rejection.encode(out);
        }
        out.push(b'}');
    }

    /// Reads an outcome line back.
    pub fn decode(bytes: &'a [u8]) -> Result<OutcomeLine<'a>, WireError> {
        let raw: RawOutcomeLine<'a> =
            serde_json::from_slice(bytes).map_err(json_error("outcome line"))?;
        let events = raw
            .events
            .iter()
            .map(|e| EventLine::decode(e.get().as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OutcomeLine {
            command_id: raw.command_id,
            outcome: raw.outcome,
            events,
            rejection: decode_rejection(raw.rejection)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// A Kafka message

/// A message as the ledger produces it: key, value and headers (in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMessage {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------------------------
// csp.command-results value

/// A `csp.command-results` message: the outcome line as `apply` prints it (events without
/// personal data), plus what a standby needs to answer a retry as the original did:
/// `body_hash` and `recorded_at_micros` in the value (not in headers: tansu's SQLite storage
/// slows down with every stored header). Keyed by `command_id`; `correlation_id` is a header.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMessage<'a> {
    pub command_id: Uuid,
    pub outcome: OutcomeKind,
    pub events: Vec<PublishedEvent<'a>>,
    /// First 16 bytes of the SHA-256 of the command body (the idempotency check).
    pub body_hash: [u8; 16],
    pub recorded_at_micros: i64,
    pub rejection: Option<Cow<'a, Rejection>>,
    pub correlation_id: Option<Cow<'a, str>>,
    /// The publisher's term and the outcome's sequence number, for the term rule
    /// (`crate::fencing`): the result is final once a commit of `term` covers `outcome_seq`.
    /// `None` for results written before the rule.
    pub fence: Option<ResultFence>,
}

/// Where a result stands under the term rule: in the value (`"term"`, `"outcome_seq"`), not
/// in headers (tansu's SQLite storage slows down with every stored header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultFence {
    pub term: u64,
    pub outcome_seq: u64,
}

/// What a result value decodes from.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResult<'a> {
    command_id: Uuid,
    outcome: OutcomeKind,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(borrow)]
    body_hash: Cow<'a, str>,
    recorded_at_micros: i64,
    #[serde(default, borrow)]
    rejection: Option<&'a RawValue>,
    #[serde(default)]
    term: Option<u64>,
    #[serde(default)]
    outcome_seq: Option<u64>,
}

impl<'a> ResultMessage<'a> {
    /// The message: key `command_id`, value
    /// `{"command_id","outcome","events":[…],"body_hash","recorded_at_micros"[,"rejection"][,"term","outcome_seq"]}`,
    /// header `correlation_id` when there is one.
    pub fn encode(&self) -> TopicMessage {
        let mut value = Vec::with_capacity(
            256 + self
                .events
                .iter()
                .map(|e| e.canonical.len() + 160)
                .sum::<usize>(),
        );
        value.extend_from_slice(b"{\"command_id\":");
        write_uuid(&mut value, &self.command_id);
        value.extend_from_slice(b",\"outcome\":\"");
        value.extend_from_slice(self.outcome.as_str().as_bytes());
        value.extend_from_slice(b"\",\"events\":");
        value.push(b'[');
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            event.encode(&mut value);
        }
        value.push(b']');
        value.extend_from_slice(b",\"body_hash\":\"");
        write_hex(&mut value, &self.body_hash);
        value.extend_from_slice(b"\",\"recorded_at_micros\":");
        value.extend_from_slice(self.recorded_at_micros.to_string().as_bytes());
        if let Some(rejection) = &self.rejection {
            value.extend_from_slice(b",\"rejection\":");
            rejection.encode(&mut value);
        }
        if let Some(fence) = &self.fence {
            value.extend_from_slice(b",\"term\":");
            value.extend_from_slice(fence.term.to_string().as_bytes());
            value.extend_from_slice(b",\"outcome_seq\":");
            value.extend_from_slice(fence.outcome_seq.to_string().as_bytes());
        }
        value.push(b'}');
        let headers = match &self.correlation_id {
            Some(correlation) => vec![("correlation_id", correlation.to_string())],
            None => Vec::new(),
        };
        TopicMessage {
            key: self.command_id.to_string(),
            value,
            headers,
        }
    }

    /// Reads a message back from its value and headers.
    pub fn decode(
        value: &'a [u8],
        headers: &'a [(String, String)],
    ) -> Result<ResultMessage<'a>, WireError> {
        const WHAT: &str = "result";
        let raw: RawResult<'a> = serde_json::from_slice(value).map_err(json_error(WHAT))?;
        let events = raw
            .events
            .iter()
            .map(|e| PublishedEvent::decode(e.get().as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ResultMessage {
            command_id: raw.command_id,
            outcome: raw.outcome,
            events,
            body_hash: parse_hex::<16>(&raw.body_hash, WHAT, "body_hash")?,
            recorded_at_micros: raw.recorded_at_micros,
            rejection: decode_rejection(raw.rejection)?,
            correlation_id: header(headers, "correlation_id").map(Cow::Borrowed),
            fence: match (raw.term, raw.outcome_seq) {
                (Some(term), Some(outcome_seq)) => Some(ResultFence { term, outcome_seq }),
                (None, None) => None,
                _ => {
                    return Err(WireError::Invalid {
                        what: WHAT,
                        field: "term",
                        reason: "term and outcome_seq come together".into(),
                    })
                }
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Dead letters

/// A message that is not a command envelope at all (no command id could be read), or not
/// authenticated, with where it came from and why it was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter<'a> {
    pub reason: Cow<'a, str>,
    /// What exactly was wrong, when `reason` is a fixed code (`unauthenticated`: which header
    /// was missing, or that the signature did not match). Encoded only when present.
    pub detail: Option<Cow<'a, str>>,
    pub topic: Cow<'a, str>,
    pub partition: i32,
    pub offset: i64,
    /// The message value as received.
    pub original: Cow<'a, [u8]>,
}

/// The metadata of a stored dead letter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadLetterMeta<'a> {
    #[serde(default)]
    detail: Option<String>,
    offset: i64,
    partition: i32,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow)]
    topic: Cow<'a, str>,
}

impl<'a> DeadLetter<'a> {
    /// The payload stored in the outcome log: the metadata JSON's length (u32 big-endian), the
    /// metadata `{"detail"?,"offset","partition","reason","topic"}` (keys sorted; `detail` only
    /// when there is one), then the original bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let detail_len = self.detail.as_ref().map_or(0, |d| d.len() + 12);
        let mut meta = Vec::with_capacity(64 + self.reason.len() + self.topic.len() + detail_len);
        meta.push(b'{');
        if let Some(detail) = &self.detail {
            meta.extend_from_slice(b"\"detail\":");
            write_str(&mut meta, detail);
            meta.push(b',');
        }
        meta.extend_from_slice(b"\"offset\":");
        meta.extend_from_slice(self.offset.to_string().as_bytes());
        meta.extend_from_slice(b",\"partition\":");
        meta.extend_from_slice(self.partition.to_string().as_bytes());
        meta.extend_from_slice(b",\"reason\":");
        write_str(&mut meta, &self.reason);
        meta.extend_from_slice(b",\"topic\":");
        write_str(&mut meta, &self.topic);
        meta.push(b'}');
        out.reserve(4 + meta.len() + self.original.len());
        // Metadata is a reason of at most a few hundred bytes and a topic name.
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.original);
    }

    /// Reads a stored payload back.
    pub fn decode(payload: &'a [u8]) -> Result<DeadLetter<'a>, WireError> {
        const WHAT: &str = "dead letter";
        let (length, rest) = payload
            .split_first_chunk::<4>()
            .ok_or(WireError::Truncated { what: WHAT })?;
        let length = usize::try_from(u32::from_be_bytes(*length))
            .map_err(|_| WireError::Truncated { what: WHAT })?;
        if rest.len() < length {
            return Err(WireError::Truncated { what: WHAT });
        }
        let (meta, original) = rest.split_at(length);
        let meta: RawDeadLetterMeta<'a> = serde_json::from_slice(meta).map_err(json_error(WHAT))?;
        Ok(DeadLetter {
            reason: meta.reason,
            detail: meta.detail.map(Cow::Owned),
            topic: meta.topic,
            partition: meta.partition,
            offset: meta.offset,
            original: Cow::Borrowed(original),
        })
    }
}

/// A `csp.commands.dlq` message: the original bytes as the value, keyed
/// `"<partition>/<offset>"`, with headers `reason`, `source_topic`, `source_partition` and
/// `source_offset`, and `detail` after them when the dead letter has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqMessage<'a>(pub DeadLetter<'a>);

impl<'a> DlqMessage<'a> {
    /// The message.
    pub fn encode(&self) -> TopicMessage {
        let letter = &self.0;
        let mut headers = vec![
            ("reason", letter.reason.to_string()),
            ("source_topic", letter.topic.to_string()),
            ("source_partition", letter.partition.to_string()),
            ("source_offset", letter.offset.to_string()),
        ];
        if let Some(detail) = &letter.detail {
            headers.push(("detail", detail.to_string()));
        }
        TopicMessage {
            key: format!("{}/{}", letter.partition, letter.offset),
            value: letter.original.to_vec(),
            headers,
        }
    }

    /// Reads a message back from its value and headers.
    pub fn decode(
        value: &'a [u8],
        headers: &'a [(String, String)],
    ) -> Result<DlqMessage<'a>, WireError> {
        const WHAT: &str = "dead-letter message";
        let get = |field: &'static str| {
            header(headers, field).ok_or(WireError::Missing { what: WHAT, field })
        };
        let number = |field: &'static str| {
            get(field).and_then(|text| {
                text.parse::<i64>().map_err(|e| WireError::Invalid {
                    what: WHAT,
                    field,
                    reason: e.to_string(),
                })
            })
        };
        let partition =
            i32::try_from(number("source_partition")?).map_err(|e| WireError::Invalid {
                what: WHAT,
                field: "source_partition",
                reason: e.to_string(),
            })?;
        Ok(DlqMessage(DeadLetter {
            reason: Cow::Borrowed(get("reason")?),
            detail: header(headers, "detail").map(Cow::Borrowed),
            topic: Cow::Borrowed(get("source_topic")?),
            partition,
            offset: number("source_offset")?,
            original: Cow::Borrowed(value),
        }))
    }
}
