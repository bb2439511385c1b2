//! The ledger: one writer that takes batches of commands, decides each against the live state,
//! chains the resulting events, appends everything in one durable commit, and only then
//! answers. Holds the live `LedgerState` and the idempotency index.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use csp_ledger_projections::state::{EventMeta, LedgerState};
use csp_ledger_schemas::command::{CommandEnvelope, MalformedCommand};
use csp_ledger_schemas::event::{EventEnvelope, FoldEvent, SCHEMA_VERSION};
use csp_ledger_schemas::RejectionCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::{debug, info, info_span, warn};
use uuid::Uuid;

use crate::audit::{chain_hash, WalkStart};
use crate::checkpoint;
use csp_ledger_domain::{self as domain, Rejection};
use crate::log::{
    Commit, Head, Log, LogError, LogOptions, OutcomeRecord, PersonalRecord, StoredEvent,
    StoredOutcomeKind, DLQ_CURSOR, EVENTS_CURSOR, RESULTS_CURSOR,
};

/// Most commands decided and appended under one flush (group commit).
pub const SUBMIT_BATCH_COMMANDS_MAX: usize = 4096;

/// Failures of the ledger as a whole (never business rejections).
#[derive(Debug, Error)]
pub enum LedgerError {
    /// The log failed. Edge: exit 1 / HTTP 500; the process reopens the ledger.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An earlier append failed after the live state had moved on; the ledger must be reopened
    /// from the log. Edge: as `Log`.
    #[error("the ledger stopped after a failed append; reopen it")]
    Poisoned,
    /// A replicated event differs from the local event at the same position: this log holds
    /// events it decided but never published before another instance took over. Edge: the
    /// server moves the directory aside and rebuilds from the events topic.
    #[error("the local log forked from the replicated log at position {position}")]
    Forked { position: u64 },
    /// A replicated event or outcome cannot be taken (bad chain, gap, undecodable). Edge: the
    /// follower logs it and stops following.
    #[error("replication: {0}")]
    Replication(String),
}

/// A command read from input: parsed (with its body hash) or malformed.
#[derive(Debug, Clone)]
pub struct Submission {
    /// 1-based input line, when the command came from a file.
    pub line: Option<u64>,
    pub parsed: Result<ParsedCommand, MalformedCommand>,
    /// Where a Kafka message came from. Malformed input from Kafka is recorded in the outcome
    /// log (for the results or the dead-letter topic); from a file it is only answered.
    pub source: Option<MessageSource>,
}

/// The Kafka origin of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSource {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The message value as received.
    pub bytes: Vec<u8>,
}

impl Submission {
    /// Parses one JSON command envelope.
    pub fn parse(line: Option<u64>, bytes: &[u8]) -> Submission {
        Submission {
            line,
            parsed: ParsedCommand::parse(bytes),
            source: None,
        }
    }
}

/// The payload of a dead-letter record: metadata JSON length (u32 BE), metadata, original bytes.
pub fn encode_dead_letter(source: &MessageSource, reason: &str) -> Vec<u8> {
    let meta = json!({"reason": reason, "topic": source.topic, "partition": source.partition, "offset": source.offset}).to_string();
    let mut out = Vec::with_capacity(4 + meta.len() + source.bytes.len());
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(&source.bytes);
    out
}

/// Splits a dead-letter payload into its metadata and the original bytes.
pub fn decode_dead_letter(payload: &[u8]) -> Option<(Value, &[u8])> {
    let length = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
    let meta = serde_json::from_slice(payload.get(4..4 + length)?).ok()?;
    Some((meta, &payload[4 + length..]))
}

/// A valid envelope and the hash that identifies its body for idempotency.
#[derive(Debug, Clone)]
pub struct ParsedCommand {
    pub envelope: CommandEnvelope,
    pub body_hash: [u8; 16],
}

impl ParsedCommand {
    pub fn parse(bytes: &[u8]) -> Result<ParsedCommand, MalformedCommand> {
        let envelope = CommandEnvelope::parse(bytes)?;
        Ok(ParsedCommand::new(envelope))
    }

    pub fn new(envelope: CommandEnvelope) -> ParsedCommand {
        let digest = Sha256::digest(envelope.body_bytes());
        let mut body_hash = [0u8; 16];
        body_hash.copy_from_slice(&digest[..16]);
        ParsedCommand {
            envelope,
            body_hash,
        }
    }
}

/// An event as answered to callers: stored form, its predecessor's hash, clear personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredEvent {
    pub stored: StoredEvent,
    pub prev_hash: [u8; 32],
    pub personal: Vec<(&'static str, String)>,
}

/// What became of one command.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Appended; `events` indexes [`BatchResult::events`].
    Accepted {
        command_id: Uuid,
        events: Range<usize>,
    },
    Rejected {
        command_id: Option<Uuid>,
        rejection: Rejection,
        line: Option<u64>,
    },
    /// Seen before with the same body: the first outcome's events (or its rejection), filled in
    /// from the log once the batch is durable (see [`Ledger::resolve`]).
    Duplicate {
        command_id: Uuid,
        /// Sequence number of the first outcome in the outcome log.
        original_seq: u64,
        events: Vec<AnsweredEvent>,
        rejection: Option<Rejection>,
    },
}

impl Outcome {
    pub fn command_id(&self) -> Option<Uuid> {
        match self {
            Outcome::Accepted { command_id, .. } | Outcome::Duplicate { command_id, .. } => {
                Some(*command_id)
            }
            Outcome::Rejected { command_id, .. } => *command_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Duplicate { .. } => "duplicate",
        }
    }
}

/// The answer to a batch: one outcome per submission, in order, and the appended events.
#[derive(Debug, Clone, Default)]
pub struct BatchResult {
    pub events: Vec<AnsweredEvent>,
    pub outcomes: Vec<Outcome>,
    /// The log head after the batch.
    pub head_position: u64,
    /// Time spent deciding, chaining and encoding, in microseconds.
    pub decide_micros: u64,
    /// Time spent in the durable append (sled batch, flush, fsync), in microseconds.
    pub append_micros: u64,
}

impl BatchResult {
    /// The outcome line of SPEC.md section 7 for outcome `index`.
    pub fn write_outcome_json(&self, index: usize, out: &mut Vec<u8>) {
        let outcome = &self.outcomes[index];
        out.extend_from_slice(b"{\"command_id\":");
        match outcome.command_id() {
            Some(id) => {
                out.push(b'"');
                out.extend_from_slice(
                    id.hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer())
                        .as_bytes(),
                );
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"outcome\":\"");
        out.extend_from_slice(outcome.kind().as_bytes());
        out.extend_from_slice(b"\",\"events\":[");
        let (events, rejection): (&[AnsweredEvent], Option<&Rejection>) = match outcome {
            Outcome::Accepted { events, .. } => (&self.events[events.clone()], None),
            Outcome::Rejected { rejection, .. } => (&[], Some(rejection)),
            Outcome::Duplicate {
                events, rejection, ..
            } => (events, rejection.as_ref()),
        };
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_event_json(event, out);
        }
        out.push(b']');
        if let Some(rejection) = rejection {
            out.extend_from_slice(b",\"rejection\":");
            out.extend_from_slice(rejection_json(rejection).to_string().as_bytes());
        }
        out.push(b'}');
    }
}

/// `{"code","message","details"}` of a rejection.
pub fn rejection_json(rejection: &Rejection) -> Value {
    json!({"code": rejection.code.as_str(), "message": rejection.message, "details": rejection.details})
}

fn rejection_from_json(bytes: &[u8]) -> Option<Rejection> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let code: RejectionCode = serde_json::from_value(value.get("code")?.clone()).ok()?;
    Some(Rejection {
        code,
        message: value.get("message")?.as_str()?.to_string(),
        details: value.get("details").cloned().filter(|d| !d.is_null()),
    })
}

/// Writes an event envelope as JSON: the canonical bytes plus `hash`, `prev_hash` and, when
/// present, `personal_data` (none of which is part of the canonical bytes).
pub fn write_event_json(event: &AnsweredEvent, out: &mut Vec<u8>) {
    let canonical = &event.stored.canonical;
    // Canonical bytes are a JSON object: everything up to its closing brace.
    out.extend_from_slice(&canonical[..canonical.len().saturating_sub(1)]);
    let mut hex = [0u8; 64];
    out.extend_from_slice(b",\"hash\":\"");
    let _ = hex::encode_to_slice(event.stored.hash, &mut hex);
    out.extend_from_slice(&hex);
    out.extend_from_slice(b"\",\"prev_hash\":\"");
    let _ = hex::encode_to_slice(event.prev_hash, &mut hex);
    out.extend_from_slice(&hex);
    out.push(b'"');
    if !event.personal.is_empty() {
        out.extend_from_slice(b",\"personal_data\":{");
        for (i, (field, value)) in event.personal.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, field);
            out.push(b':');
            let _ = serde_json::to_writer(&mut *out, value);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// Idempotency record of a command id, kept in memory (32 bytes a slot with its key) and
/// rebuilt from the outcome log; the rest of the first outcome is read back from the log when a
/// duplicate arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IdempotencyEntry {
    /// The first 8 bytes of the body hash: enough to tell a retry from a conflicting reuse.
    body_hash: u64,
    outcome_seq: u64,
}

/// Short body hash of a command whose body is not known: an accepted command replicated from
/// the events topic before its result (which carries the body hash). Matches any body.
const UNKNOWN_BODY: u64 = 0;

fn short_hash(body_hash: &[u8; 16]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&body_hash[..8]);
    u64::from_be_bytes(first)
}

/// Source of the ledger clock.
pub type Clock = Box<dyn FnMut() -> DateTime<Utc> + Send + Sync>;
/// Source of randomness for event ids and personal-data salts.
pub type Entropy = Box<dyn FnMut() -> [u8; 16] + Send + Sync>;

/// A batch decided against the live state and encoded, not yet durable.
#[derive(Debug)]
pub struct Prepared {
    pub result: BatchResult,
    prev_hash: [u8; 32],
    records: Vec<OutcomeRecord>,
    personal: Vec<PersonalRecord>,
    offsets: Vec<(String, i64)>,
}

impl Prepared {
    /// Appends the batch durably to `log`; may run on another thread than the deciding one,
    /// as long as prepared batches are committed in the order they were prepared.
    pub fn commit(&mut self, log: &Log) -> Result<Head, LogError> {
        let started = std::time::Instant::now();
        let events: Vec<&StoredEvent> = self.result.events.iter().map(|e| &e.stored).collect();
        let commit = Commit {
            prev_hash: self.prev_hash,
            events: &events,
            outcomes: &self.records,
            personal: &self.personal,
            offsets: &self.offsets,
            cursors: &[],
        };
        let head = log.append(commit)?;
        self.result.append_micros = started.elapsed().as_micros() as u64;
        self.result.head_position = head.position;
        Ok(head)
    }
}

/// The single writer of a log directory.
pub struct Ledger {
    log: Arc<Log>,
    state: LedgerState,
    idempotency: HashMap<Uuid, IdempotencyEntry>,
    /// Head as decided: ahead of the durable head while a prepared batch is in flight.
    decided: Head,
    /// Position of the last checkpoint written or loaded.
    checkpointed: u64,
    clock: Clock,
    entropy: Entropy,
    poisoned: bool,
}

impl Ledger {
    /// Opens the log in `dir` with the system clock and OS randomness, replaying it.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, options, Box::new(Utc::now), os_entropy())
    }

    /// Opens with an injected clock and entropy (tests, benchmarks).
    pub fn open_with(
        dir: &Path,
        options: LogOptions,
        clock: Clock,
        entropy: Entropy,
    ) -> Result<Ledger, LedgerError> {
        let log = Log::open(dir, options)?;
        let mut checkpointed = 0;
        let state = match checkpoint::load(dir)? {
            Some(checkpoint) if checkpoint.matches(&log)? => {
                checkpointed = checkpoint.position;
                let mut state = checkpoint.state;
                let start = WalkStart {
                    position: checkpoint.position + 1,
                    prev_hash: checkpoint.hash,
                };
                replay_onto(&log, &mut state, start, u64::MAX, &mut |_| {})?;
                info!(
                    message = "Opened from checkpoint.",
                    checkpoint = checkpoint.position,
                    head = state.position
                );
                state
            }
            Some(checkpoint) => {
                warn!(
                    message = "Checkpoint does not match the log; replaying from position 1.",
                    checkpoint = checkpoint.position
                );
                replay(&log, u64::MAX)?
            }
            None => replay(&log, u64::MAX)?,
        };
        let mut idempotency = HashMap::new();
        for item in log.outcomes() {
            let (seq, record) = item?;
            if matches!(
                record.kind,
                StoredOutcomeKind::Accepted | StoredOutcomeKind::Rejected
            ) {
                // The first record of a command answers its retries, except one made from
                // replicated events (body unknown, possibly not all of its events): the
                // command's replicated result that follows supersedes it, as in `replicate`.
                let known = idempotency.get(&record.command_id);
                if known.is_none_or(|e: &IdempotencyEntry| e.body_hash == UNKNOWN_BODY) {
                    idempotency.insert(
                        record.command_id,
                        IdempotencyEntry {
                            body_hash: short_hash(&record.body_hash),
                            outcome_seq: seq,
                        },
                    );
                }
            }
        }
        let decided = log.head();
        Ok(Ledger {
            log: Arc::new(log),
            state,
            idempotency,
            decided,
            checkpointed,
            clock,
            entropy,
            poisoned: false,
        })
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// A shared handle to the log, for a committing thread and for readers.
    pub fn log_handle(&self) -> Arc<Log> {
        Arc::clone(&self.log)
    }

    /// The durable head.
    pub fn head(&self) -> Head {
        self.log.head()
    }

    /// Number of distinct command ids recorded.
    pub fn commands_recorded(&self) -> usize {
        self.idempotency.len()
    }

    /// Writes a checkpoint when at least `interval` events were folded since the last one.
    pub fn checkpoint_if_due(&mut self, interval: u64) -> Result<(), LedgerError> {
        if self.state.position >= self.checkpointed + interval.max(1) {
            self.checkpointed = self.checkpoint()?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the live state. Only when nothing is in flight (the live state
    /// equals the durable log), which `submit` and a drained pipeline guarantee.
    pub fn checkpoint(&self) -> Result<u64, LedgerError> {
        let head = self.log.head();
        if head.position != self.state.position {
            return Err(LogError::Contract(format!(
                "checkpoint while batches are in flight (log {}, state {})",
                head.position, self.state.position
            ))
            .into());
        }
        checkpoint::save(self.log.dir(), &self.state, head.hash)?;
        Ok(head.position)
    }

    /// Marks the ledger failed: a prepared batch could not be committed, so the live state is
    /// ahead of the log. Every later call fails until the ledger is reopened.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Decides a batch of commands and appends the result in one durable commit. Returns only
    /// after the commit is flushed; on a log failure nothing of the batch is reported.
    pub fn submit(&mut self, submissions: Vec<Submission>) -> Result<BatchResult, LedgerError> {
        self.submit_with_offsets(submissions, Vec::new())
    }

    /// As `submit`, storing consumer offsets in the same commit.
    pub fn submit_with_offsets(
        &mut self,
        submissions: Vec<Submission>,
        offsets: Vec<(String, i64)>,
    ) -> Result<BatchResult, LedgerError> {
        let mut prepared = self.prepare(submissions, offsets)?;
        if let Err(error) = prepared.commit(&self.log) {
            self.poison();
            return Err(error.into());
        }
        let mut result = prepared.result;
        self.resolve(&mut result)?;
        Ok(result)
    }

    /// Decides a batch against the live state (which moves on at once) and encodes it. The
    /// caller must commit the returned batch, in order, before reporting any of its outcomes,
    /// and call [`Ledger::poison`] if the commit fails.
    pub fn prepare(
        &mut self,
        submissions: Vec<Submission>,
        offsets: Vec<(String, i64)>,
    ) -> Result<Prepared, LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        let span = info_span!("decide", commands = submissions.len());
        let _entered = span.enter();
        let started = std::time::Instant::now();
        let batch_prev_hash = self.decided.hash;
        // The ledger clock never goes backwards, so that `as_of` by time is well defined.
        let recorded_at = (self.clock)().max(
            self.state
                .recorded
                .last()
                .map_or(DateTime::<Utc>::MIN_UTC, |(_, at)| *at),
        );
        let recorded_at_micros = recorded_at.timestamp_micros();
        let mut result = BatchResult {
            outcomes: Vec::with_capacity(submissions.len()),
            ..BatchResult::default()
        };
        let mut records: Vec<OutcomeRecord> = Vec::with_capacity(submissions.len());
        let mut personal_records: Vec<PersonalRecord> = Vec::new();
        let mut prev_hash = self.decided.hash;
        let mut position = self.decided.position;
        let mut outcome_seq = self.decided.next_outcome_seq;

        for submission in submissions {
            let parsed = match submission.parsed {
                Ok(parsed) => parsed,
                Err(malformed) => {
                    let rejection =
                        Rejection::new(RejectionCode::MalformedCommand, malformed.reason.clone())
                            .with_details(
                                json!({"line": submission.line, "reason": malformed.reason}),
                            );
                    if let Some(source) = &submission.source {
                        let (kind, command_id, payload) = match malformed.command_id {
                            Some(id) => (
                                StoredOutcomeKind::Malformed,
                                id,
                                rejection_json(&rejection).to_string().into_bytes(),
                            ),
                            None => (
                                StoredOutcomeKind::DeadLetter,
                                Uuid::nil(),
                                encode_dead_letter(source, &malformed.reason),
                            ),
                        };
                        records.push(OutcomeRecord {
                            command_id,
                            body_hash: [0; 16],
                            kind,
                            first_position: 0,
                            event_count: 0,
                            recorded_at_micros,
                            correlation_id: None,
                            rejection: payload,
                        });
                        outcome_seq += 1;
                    }
                    result.outcomes.push(Outcome::Rejected {
                        command_id: malformed.command_id,
                        rejection,
                        line: submission.line,
                    });
                    continue;
                }
            };
            let envelope = &parsed.envelope;
            let command_id = envelope.command_id;
            let mut record = OutcomeRecord {
                command_id,
                body_hash: parsed.body_hash,
                kind: StoredOutcomeKind::Accepted,
                first_position: 0,
                event_count: 0,
                recorded_at_micros,
                correlation_id: envelope.correlation_id.clone(),
                rejection: Vec::new(),
            };
            if let Some(entry) = self.idempotency.get(&command_id).copied() {
                if entry.body_hash != short_hash(&parsed.body_hash)
                    && entry.body_hash != UNKNOWN_BODY
                {
                    let rejection = Rejection::new(
                        RejectionCode::CommandIdConflict,
                        format!("command_id {command_id} was already used for a different command"),
                    );
                    record.kind = StoredOutcomeKind::Conflict;
                    record.rejection = rejection_json(&rejection).to_string().into_bytes();
                    result.outcomes.push(Outcome::Rejected {
                        command_id: Some(command_id),
                        rejection,
                        line: submission.line,
                    });
                } else {
                    record.kind = StoredOutcomeKind::Duplicate;
                    // A duplicate's record points at the original outcome's sequence number.
                    record.first_position = entry.outcome_seq;
                    result.outcomes.push(Outcome::Duplicate {
                        command_id,
                        original_seq: entry.outcome_seq,
                        events: Vec::new(),
                        rejection: None,
                    });
                }
                records.push(record);
                outcome_seq += 1;
                continue;
            }
            // Decided now (accepted or rejected): this outcome owns the command id from here on.
            self.idempotency.insert(
                command_id,
                IdempotencyEntry {
                    body_hash: short_hash(&parsed.body_hash),
                    outcome_seq,
                },
            );
            match domain::decide(&self.state, envelope, &mut *self.entropy) {
                Ok(decision) => {
                    let first = result.events.len();
                    record.first_position = position + 1;
                    record.event_count = decision.events.len() as u32;
                    for event in decision.events {
                        position += 1;
                        let stream = event.stream();
                        let stream_version = self.state.next_stream_version(&stream);
                        let event_id =
                            uuid::Builder::from_random_bytes((self.entropy)()).into_uuid();
                        let envelope_out = EventEnvelope {
                            event_id,
                            position,
                            stream,
                            stream_version,
                            schema_version: SCHEMA_VERSION,
                            occurred_at: envelope.issued_at,
                            recorded_at,
                            command_id,
                            correlation_id: envelope.correlation_id.clone(),
                            actor: envelope.actor.clone(),
                            event,
                        };
                        let canonical = envelope_out.canonical_bytes();
                        let hash = chain_hash(&prev_hash, &canonical);
                        let meta = EventMeta {
                            position,
                            stream_version,
                            occurred_at: envelope.issued_at,
                            recorded_at,
                        };
                        self.state.apply(&meta, &envelope_out.event);
                        let personal: Vec<(&'static str, String)> = envelope_out
                            .event
                            .personal_fields()
                            .into_iter()
                            .filter_map(|(field, commitment)| {
                                decision
                                    .personal
                                    .iter()
                                    .find(|p| p.commitment == commitment)
                                    .map(|p| (field, p.value.clone()))
                            })
                            .collect();
                        result.events.push(AnsweredEvent {
                            stored: StoredEvent {
                                position,
                                hash,
                                canonical,
                            },
                            prev_hash,
                            personal,
                        });
                        prev_hash = hash;
                    }
                    for p in decision.personal {
                        personal_records.push(PersonalRecord {
                            subject: p.subject,
                            commitment: p.commitment,
                            salt: p.salt,
                            value: p.value,
                        });
                    }
                    result.outcomes.push(Outcome::Accepted {
                        command_id,
                        events: first..result.events.len(),
                    });
                }
                Err(rejection) => {
                    debug!(message = "Rejected command.", code = %rejection.code, command_id = %command_id);
                    record.kind = StoredOutcomeKind::Rejected;
                    record.rejection = rejection_json(&rejection).to_string().into_bytes();
                    result.outcomes.push(Outcome::Rejected {
                        command_id: Some(command_id),
                        rejection,
                        line: submission.line,
                    });
                }
            }
            records.push(record);
            outcome_seq += 1;
        }
        self.decided = Head {
            position,
            hash: prev_hash,
            next_outcome_seq: outcome_seq,
        };
        result.decide_micros = started.elapsed().as_micros() as u64;
        Ok(Prepared {
            result,
            prev_hash: batch_prev_hash,
            records,
            personal: personal_records,
            offsets,
        })
    }

    /// Appends events and outcomes another instance decided (a standby following the events
    /// and results topics), with the follower's consumer offsets, in one durable commit.
    ///
    /// Events must continue the chain from the head; events at or before the head are
    /// compared with the local ones ([`LedgerError::Forked`] when they differ) and skipped.
    /// Accepted commands become idempotency records from their events (body unknown until the
    /// result arrives); results add rejected commands and the bodies of accepted ones.
    pub fn replicate(
        &mut self,
        events: Vec<StoredEvent>,
        results: Vec<OutcomeRecord>,
        offsets: Vec<(String, i64)>,
    ) -> Result<Head, LedgerError> {
        let replicated = self.replicate_batch(events, results, offsets);
        if replicated.is_err() {
            // The idempotency index or the state may have moved on: reopen from the log.
            self.poison();
        }
        replicated
    }

    fn replicate_batch(
        &mut self,
        events: Vec<StoredEvent>,
        results: Vec<OutcomeRecord>,
        offsets: Vec<(String, i64)>,
    ) -> Result<Head, LedgerError> {
        if self.poisoned {
            return Err(LedgerError::Poisoned);
        }
        let head = self.log.head();
        if head != self.decided {
            return Err(
                LogError::Contract("replicating while batches are in flight".into()).into(),
            );
        }
        let mut records: Vec<OutcomeRecord> = Vec::new();
        let mut seq = head.next_outcome_seq;
        for result in results {
            let known = self.idempotency.get(&result.command_id);
            if known.is_some_and(|e| e.body_hash != UNKNOWN_BODY) {
                continue;
            }
            if !matches!(
                result.kind,
                StoredOutcomeKind::Accepted | StoredOutcomeKind::Rejected
            ) {
                continue;
            }
            // The result supersedes a record made from the command's events (which may have
            // seen only the first of them): retries are answered from the result's record.
            self.idempotency.insert(
                result.command_id,
                IdempotencyEntry {
                    body_hash: short_hash(&result.body_hash),
                    outcome_seq: seq,
                },
            );
            records.push(result);
            seq += 1;
        }
        let mut appended: Vec<StoredEvent> = Vec::with_capacity(events.len());
        let mut prev_hash = head.hash;
        let mut position = head.position;
        let mut folded: Vec<(EventMeta, csp_ledger_schemas::event::Event)> = Vec::new();
        for event in events {
            if event.position <= head.position {
                if self.log.hash_at(event.position)? != Some(event.hash) {
                    return Err(LedgerError::Forked {
                        position: event.position,
                    });
                }
                continue;
            }
            if event.position != position + 1 {
                return Err(LedgerError::Replication(format!(
                    "event {} does not follow position {position}",
                    event.position
                )));
            }
            if chain_hash(&prev_hash, &event.canonical) != event.hash {
                return Err(LedgerError::Replication(format!(
                    "event {} does not chain from its predecessor",
                    event.position
                )));
            }
            let decoded = FoldEvent::decode(&event.canonical)
                .map_err(|e| LedgerError::Replication(format!("event {}: {e}", event.position)))?;
            let ids: ReplicatedIds = serde_json::from_slice(&event.canonical)
                .map_err(|e| LedgerError::Replication(format!("event {}: {e}", event.position)))?;
            if decoded.position != event.position {
                return Err(LedgerError::Replication(format!(
                    "event at {} says position {}",
                    event.position, decoded.position
                )));
            }
            let accepted = records
                .iter_mut()
                .rev()
                .find(|r| r.command_id == ids.command_id && r.kind == StoredOutcomeKind::Accepted);
            match accepted {
                // The next event of a command already recorded in this batch.
                Some(record)
                    if record.first_position + u64::from(record.event_count) == event.position
                        && record.body_hash == [0; 16] =>
                {
                    record.event_count += 1;
                }
                _ if self.idempotency.contains_key(&ids.command_id) => {}
                _ => {
                    self.idempotency.insert(
                        ids.command_id,
                        IdempotencyEntry {
                            body_hash: UNKNOWN_BODY,
                            outcome_seq: seq,
                        },
                    );
                    records.push(OutcomeRecord {
                        command_id: ids.command_id,
                        body_hash: [0; 16],
                        kind: StoredOutcomeKind::Accepted,
                        first_position: event.position,
                        event_count: 1,
                        recorded_at_micros: decoded.recorded_at.timestamp_micros(),
                        correlation_id: ids.correlation_id,
                        rejection: Vec::new(),
                    });
                    seq += 1;
                }
            }
            position = event.position;
            prev_hash = event.hash;
            folded.push((
                EventMeta {
                    position,
                    stream_version: decoded.stream_version,
                    occurred_at: decoded.occurred_at,
                    recorded_at: decoded.recorded_at,
                },
                decoded.event,
            ));
            appended.push(event);
        }
        // Check what the fold asserts before folding: a bad version would panic mid-batch.
        let mut versions: HashMap<csp_ledger_schemas::event::StreamId, u64> = HashMap::new();
        for (meta, event) in &folded {
            let stream = event.stream();
            let expected = match versions.get(&stream) {
                Some(version) => version + 1,
                None => self.state.next_stream_version(&stream),
            };
            if meta.stream_version != expected {
                return Err(LedgerError::Replication(format!(
                    "event {} has stream version {}, expected {expected}",
                    meta.position, meta.stream_version
                )));
            }
            versions.insert(stream, expected);
        }
        // What is replicated was published by the instance that decided it; a cursor that had
        // nothing of this instance's own left to publish moves past it.
        let mut cursors = Vec::new();
        let new_position = appended.last().map_or(head.position, |e| e.position);
        if self.log.cursor(EVENTS_CURSOR)?.max(1) == head.position + 1 {
            cursors.push((EVENTS_CURSOR, new_position + 1));
        }
        for name in [RESULTS_CURSOR, DLQ_CURSOR] {
            if self.log.cursor(name)?.max(1) == head.next_outcome_seq {
                cursors.push((name, seq));
            }
        }
        let refs: Vec<&StoredEvent> = appended.iter().collect();
        let committed = self.log.append(Commit {
            prev_hash: head.hash,
            events: &refs,
            outcomes: &records,
            personal: &[],
            offsets: &offsets,
            cursors: &cursors,
        });
        // On any error `replicate` poisons the ledger (it reopens from the log).
        let committed = committed?;
        let state = &mut self.state;
        let folding = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for (meta, event) in &folded {
                state.apply(meta, event);
            }
        }));
        if folding.is_err() {
            return Err(LedgerError::Replication(
                "a replicated event does not fold onto the state".into(),
            ));
        }
        self.decided = committed;
        Ok(committed)
    }

    /// Fills in the answers of duplicates from the log. Call after the batch (and every batch
    /// before it) is durable.
    pub fn resolve(&self, result: &mut BatchResult) -> Result<(), LedgerError> {
        for outcome in &mut result.outcomes {
            if let Outcome::Duplicate {
                original_seq,
                events,
                rejection,
                ..
            } = outcome
            {
                let original =
                    self.log
                        .outcome_at(*original_seq)?
                        .ok_or_else(|| LogError::Corrupt {
                            position: None,
                            reason: format!(
                                "outcome {original_seq} named by the idempotency index is missing"
                            ),
                        })?;
                match original.kind {
                    StoredOutcomeKind::Accepted => {
                        *events = read_answered(
                            &self.log,
                            original.first_position,
                            original.event_count as usize,
                        )?;
                    }
                    _ => *rejection = rejection_from_json(&original.rejection),
                }
            }
        }
        Ok(())
    }

    /// Reads `count` events from `first` with their predecessors' hashes and personal data.
    pub fn read_answered(
        &self,
        first: u64,
        count: usize,
    ) -> Result<Vec<AnsweredEvent>, LedgerError> {
        read_answered(&self.log, first, count)
    }
}

/// The ids of a replicated event that the idempotency index needs.
#[derive(serde::Deserialize)]
struct ReplicatedIds {
    command_id: Uuid,
    correlation_id: Option<String>,
}

/// Entropy from the operating system, fetched 4 KiB at a time (one system call per 256 ids
/// instead of one per id).
pub fn os_entropy() -> Entropy {
    let mut buffer = [0u8; 4096];
    let mut used = buffer.len();
    Box::new(move || {
        if used == buffer.len() {
            if getrandom::fill(&mut buffer).is_err() {
                // getrandom fails only without any OS source; fall back to uuid's generator.
                return *Uuid::new_v4().as_bytes();
            }
            used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&buffer[used..used + 16]);
        used += 16;
        out
    })
}

/// Reads events from `first` (at most `count`) with predecessor hashes and clear personal data.
pub fn read_answered(
    log: &Log,
    first: u64,
    count: usize,
) -> Result<Vec<AnsweredEvent>, LedgerError> {
    let mut out = Vec::with_capacity(count.min(1024));
    for item in events_with_prev(log, first).take(count) {
        let (stored, prev_hash) = item?;
        let personal = join_personal(log, &stored)?;
        out.push(AnsweredEvent {
            stored,
            prev_hash,
            personal,
        });
    }
    Ok(out)
}

/// The stored events from `first` on, each with its predecessor's hash (zeros for position 1).
pub fn events_with_prev(
    log: &Log,
    first: u64,
) -> impl Iterator<Item = Result<(StoredEvent, [u8; 32]), LogError>> + '_ {
    let mut prev_hash = [0u8; 32];
    log.events_from(first.saturating_sub(1).max(1))
        .filter_map(move |item| match item {
            Err(error) => Some(Err(error)),
            Ok(stored) => {
                let prev = std::mem::replace(&mut prev_hash, stored.hash);
                (stored.position >= first).then_some(Ok((stored, prev)))
            }
        })
}

/// The clear personal values of a stored event, unless erased.
pub fn join_personal(
    log: &Log,
    stored: &StoredEvent,
) -> Result<Vec<(&'static str, String)>, LedgerError> {
    let envelope =
        EventEnvelope::decode(&stored.canonical).map_err(|reason| LogError::Corrupt {
            position: Some(stored.position),
            reason,
        })?;
    let mut out = Vec::new();
    if let Some(subject) = envelope.stream.subject() {
        for (field, commitment) in envelope.event.personal_fields() {
            if let Some((_, value)) = log.personal(subject, &commitment)? {
                out.push((field, value));
            }
        }
    }
    Ok(out)
}

/// Folds the log from position 1 up to `until` (inclusive), checking the chain on the way
/// (chunks are checked and decoded in parallel, folded in order).
pub fn replay(log: &Log, until: u64) -> Result<LedgerState, LedgerError> {
    let mut state = LedgerState::new();
    replay_onto(log, &mut state, WalkStart::GENESIS, until, &mut |_| {})?;
    Ok(state)
}

/// Folds the events after `start` up to `until` onto `state`, checking the chain; `progress`
/// is called with each folded position. Checks that a walk meant to reach the head does.
pub fn replay_onto(
    log: &Log,
    state: &mut LedgerState,
    start: WalkStart,
    until: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(), LedgerError> {
    let span = info_span!("replay", from = start.position);
    let _entered = span.enter();
    let (walked, last_hash) = crate::audit::walk(
        log,
        start,
        until,
        crate::audit::decode_fold,
        |position, envelope| {
            let meta = EventMeta {
                position,
                stream_version: envelope.stream_version,
                occurred_at: envelope.occurred_at,
                recorded_at: envelope.recorded_at,
            };
            state.apply(&meta, &envelope.event);
            progress(position);
        },
    )
    .map_err(LogError::from)?;
    let head = log.head();
    if until >= head.position && (walked != head.position || last_hash != head.hash) {
        return Err(LogError::Corrupt {
            position: Some(walked + 1),
            reason: "the log ends before its head".into(),
        }
        .into());
    }
    Ok(())
}
