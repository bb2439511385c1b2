//! One batch being decided: the outcomes, outcome records, personal values and chained events
//! of its commands, in input order. [`Ledger::prepare`](super::Ledger::prepare) walks the
//! submissions and hands each to one of the methods here; the batch owns the running head
//! (position, hash, outcome sequence) that the next command continues from.

use chrono::{DateTime, Utc};
use csp_ledger_domain::Decision;
use csp_ledger_projections::state::{EventMeta, LedgerState};
use csp_ledger_schemas::command::MalformedCommand;
use csp_ledger_schemas::event::{Event, EventEnvelope, SCHEMA_VERSION};
use csp_ledger_schemas::{Rejection, RejectionCode};
use serde_json::json;
use tracing::debug;
use uuid::Uuid;

use super::idempotency::{short_hash, IdempotencyEntry, UNKNOWN_BODY};
use super::outcome::{rejection_bytes, BatchResult, Outcome};
use crate::intake::{MessageSource, ParsedCommand};
use crate::store::audit::chain_hash;
use crate::store::log::{
    Commit, Head, Log, LogError, OutcomeRecord, PersonalRecord, StoredEvent, StoredOutcomeKind,
};
use crate::store::read::AnsweredEvent;

/// Source of randomness for event ids and personal-data salts.
pub type Entropy = Box<dyn FnMut() -> [u8; 16] + Send + Sync>;

/// A batch decided against the live state and encoded, not yet durable.
#[derive(Debug)]
pub struct Prepared {
    pub result: BatchResult,
    pub(super) prev_hash: [u8; 32],
    pub(super) records: Vec<OutcomeRecord>,
    pub(super) personal: Vec<PersonalRecord>,
    /// The personal values are already durable in the personal-data store
    /// ([`Prepared::store_personal`]): the commit does not write them again.
    pub(super) personal_stored: bool,
    pub(super) offsets: Vec<(String, i64)>,
    /// The batch's events as folded, for a second projection that follows the durable log
    /// (empty unless [`Ledger::keep_folded`] is on).
    pub folded: Vec<(EventMeta, Event)>,
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
            personal: if self.personal_stored {
                &[]
            } else {
                &self.personal
            },
            offsets: &self.offsets,
            cursors: &[],
            // A consumed Kafka batch (it carries its offsets): the publisher may cut after it.
            round_mark: !self.offsets.is_empty(),
        };
        let head = log.append(commit)?;
        self.result.append_micros = started.elapsed().as_micros() as u64;
        self.result.head_position = head.position;
        Ok(head)
    }

    /// Makes the batch's personal values durable in the personal-data store now, ahead of
    /// [`Prepared::commit`]: the writer thread does it while the committer still commits the
    /// batch before, so that the SQLite fsync overlaps that commit instead of adding to this
    /// one. The values are still durable before this batch's sled batch (committed later);
    /// if this batch never commits they are orphans no event names (harmless).
    pub fn store_personal(&mut self, log: &Log) -> Result<(), LogError> {
        if !self.personal_stored && !self.personal.is_empty() {
            log.store_personal(&self.personal)?;
        }
        self.personal_stored = true;
        Ok(())
    }
}

/// The batch being decided.
pub(super) struct Batch {
    result: BatchResult,
    records: Vec<OutcomeRecord>,
    personal: Vec<PersonalRecord>,
    folded: Vec<(EventMeta, Event)>,
    keep_folded: bool,
    /// The head the batch continues from.
    start: Head,
    prev_hash: [u8; 32],
    position: u64,
    /// Sequence number of the next outcome record.
    pub(super) outcome_seq: u64,
    recorded_at: DateTime<Utc>,
}

impl Batch {
    pub(super) fn new(
        start: Head,
        recorded_at: DateTime<Utc>,
        commands: usize,
        keep_folded: bool,
    ) -> Batch {
        Batch {
            result: BatchResult {
                outcomes: Vec::with_capacity(commands),
                ..BatchResult::default()
            },
            records: Vec::with_capacity(commands),
            personal: Vec::new(),
            folded: Vec::new(),
            keep_folded,
            start,
            prev_hash: start.hash,
            position: start.position,
            outcome_seq: start.next_outcome_seq,
            recorded_at,
        }
    }

    /// Input that is not a command. From Kafka it is recorded (for the results topic when its
    /// `command_id` could be read, else as a dead letter); from a file or HTTP only answered.
    pub(super) fn malformed(
        &mut self,
        line: Option<u64>,
        source: Option<&MessageSource>,
        malformed: MalformedCommand,
    ) {
        let rejection = Rejection::new(RejectionCode::MalformedCommand, malformed.reason.clone())
            .with_details(json!({"line": line, "reason": malformed.reason}));
        if let Some(source) = source {
            let (kind, command_id, payload) = match malformed.command_id {
                Some(id) => (
                    StoredOutcomeKind::Malformed,
                    id,
                    rejection_bytes(&rejection),
                ),
                None => (StoredOutcomeKind::DeadLetter, Uuid::nil(), {
                    let mut payload = Vec::with_capacity(128 + source.bytes.len());
                    source.dead_letter(&malformed.reason).encode(&mut payload);
                    payload
                }),
            };
            self.records.push(OutcomeRecord {
                command_id,
                body_hash: [0; 16],
                kind,
                first_position: 0,
                event_count: 0,
                recorded_at_micros: self.recorded_at.timestamp_micros(),
                correlation_id: None,
                rejection: payload,
            });
            self.outcome_seq += 1;
        }
        self.result.outcomes.push(Outcome::Rejected {
            command_id: malformed.command_id,
            rejection,
            line,
        });
    }

    /// A command id the idempotency index knows: a duplicate (same body, or a replicated
    /// command whose body is unknown) or a conflicting reuse.
    pub(super) fn seen_before(
        &mut self,
        parsed: &ParsedCommand,
        entry: IdempotencyEntry,
        line: Option<u64>,
    ) {
        let command_id = parsed.envelope.command_id;
        let mut record = self.record(parsed);
        if entry.body_hash != short_hash(&parsed.body_hash) && entry.body_hash != UNKNOWN_BODY {
            let rejection = Rejection::new(
                RejectionCode::CommandIdConflict,
                format!("command_id {command_id} was already used for a different command"),
            );
            record.kind = StoredOutcomeKind::Conflict;
            record.rejection = rejection_bytes(&rejection);
            self.result.outcomes.push(Outcome::Rejected {
                command_id: Some(command_id),
                rejection,
                line,
            });
        } else {
            record.kind = StoredOutcomeKind::Duplicate;
            // A duplicate's record points at the original outcome's sequence number.
            record.first_position = entry.outcome_seq;
            self.result.outcomes.push(Outcome::Duplicate {
                command_id,
                original_seq: entry.outcome_seq,
                events: Vec::new(),
                rejection: None,
            });
        }
        self.push_record(record);
    }

    /// A decided command: its events are chained, folded onto `state` at once (the next
    /// command of the batch decides against them), and its personal values kept. Every event
    /// records `submitted_by`, the id of the principal that submitted the command.
    pub(super) fn accepted(
        &mut self,
        state: &mut LedgerState,
        entropy: &mut Entropy,
        parsed: &ParsedCommand,
        decision: Decision,
        submitted_by: &str,
    ) {
        let envelope = &parsed.envelope;
        let mut record = self.record(parsed);
        let first = self.result.events.len();
        record.first_position = self.position + 1;
        record.event_count = decision.events.len() as u32;
        for event in decision.events {
            self.position += 1;
            let stream = event.stream();
            let stream_version = state.next_stream_version(&stream);
            let envelope_out = EventEnvelope {
                event_id: uuid::Builder::from_random_bytes(entropy()).into_uuid(),
                position: self.position,
                stream,
                stream_version,
                schema_version: SCHEMA_VERSION,
                submitted_by: Some(submitted_by.to_owned()),
                occurred_at: envelope.issued_at,
                recorded_at: self.recorded_at,
                command_id: envelope.command_id,
                correlation_id: envelope.correlation_id.clone(),
                actor: envelope.actor.clone(),
                event,
            };
            let canonical = envelope_out.canonical_bytes();
            let hash = chain_hash(&self.prev_hash, &canonical);
            let meta = EventMeta {
                position: self.position,
                stream_version,
                occurred_at: envelope.issued_at,
                recorded_at: self.recorded_at,
            };
            state.apply(&meta, &envelope_out.event);
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
            self.result.events.push(AnsweredEvent {
                stored: StoredEvent {
                    position: self.position,
                    hash,
                    canonical,
                },
                prev_hash: self.prev_hash,
                personal,
            });
            self.prev_hash = hash;
            if self.keep_folded {
                self.folded.push((meta, envelope_out.event));
            }
        }
        for p in decision.personal {
            self.personal.push(PersonalRecord {
                subject: p.subject,
                commitment: p.commitment,
                salt: p.salt,
                value: p.value,
            });
        }
        self.result.outcomes.push(Outcome::Accepted {
            command_id: envelope.command_id,
            events: first..self.result.events.len(),
        });
        self.push_record(record);
    }

    /// A command the domain refused: an answer and an outcome record, no event.
    pub(super) fn rejected(
        &mut self,
        parsed: &ParsedCommand,
        rejection: Rejection,
        line: Option<u64>,
    ) {
        let command_id = parsed.envelope.command_id;
        debug!(message = "Rejected command.", code = %rejection.code, command_id = %command_id);
        let mut record = self.record(parsed);
        record.kind = StoredOutcomeKind::Rejected;
        record.rejection = rejection_bytes(&rejection);
        self.result.outcomes.push(Outcome::Rejected {
            command_id: Some(command_id),
            rejection,
            line,
        });
        self.push_record(record);
    }

    /// A refusal answered but not recorded (its command id belongs to another outcome).
    pub(super) fn refused(
        &mut self,
        parsed: &ParsedCommand,
        rejection: Rejection,
        line: Option<u64>,
    ) {
        self.result.outcomes.push(Outcome::Rejected {
            command_id: Some(parsed.envelope.command_id),
            rejection,
            line,
        });
    }

    /// The head after everything decided so far.
    pub(super) fn head(&self) -> Head {
        Head {
            position: self.position,
            hash: self.prev_hash,
            next_outcome_seq: self.outcome_seq,
        }
    }

    pub(super) fn finish(mut self, offsets: Vec<(String, i64)>, decide_micros: u64) -> Prepared {
        self.result.decide_micros = decide_micros;
        Prepared {
            result: self.result,
            prev_hash: self.start.hash,
            records: self.records,
            personal: self.personal,
            personal_stored: false,
            offsets,
            folded: self.folded,
        }
    }

    /// The outcome record of a parsed command, as accepted until told otherwise.
    fn record(&self, parsed: &ParsedCommand) -> OutcomeRecord {
        OutcomeRecord {
            command_id: parsed.envelope.command_id,
            body_hash: parsed.body_hash,
            kind: StoredOutcomeKind::Accepted,
            first_position: 0,
            event_count: 0,
            recorded_at_micros: self.recorded_at.timestamp_micros(),
            correlation_id: parsed.envelope.correlation_id.clone(),
            rejection: Vec::new(),
        }
    }

    fn push_record(&mut self, record: OutcomeRecord) {
        self.records.push(record);
        self.outcome_seq += 1;
    }
}
