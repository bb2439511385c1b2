//! The term rule of `csp.events` (SPEC.md section 8, issue 10): how a reader of the events
//! topic ignores every record of a deposed leader, on a broker without Kafka transactions.
//!
//! The broker cannot fence a paused leader, so the single-partition events topic fences it
//! by its own order. Three kinds of record share that partition, each with the header
//! [`TERM_HEADER`] (the publisher's leader term) and [`RECORD_HEADER`]:
//!
//! - `event`: a [`PublishedEvent`], keyed by its stream, as before.
//! - `commit {term, last_position, last_hash, last_outcome}`: the leader's events up to
//!   `last_position` are whole commands and final, and so are its results up to outcome
//!   sequence `last_outcome`. A leader writes one after each publish round (its events and
//!   results first, the commit last).
//! - `term-start {term, instance}`: written by a new leader after it won the election and before
//!   it publishes anything; it leads only once it has read this record back.
//!
//! The rule ([`TermReader`]), applied in offset order:
//!
//! 1. The current term is the highest term-start read so far (0 before any).
//! 2. Every record of an older term is ignored, wherever it comes after a newer term-start.
//!    This is the fence: a paused leader that wakes up and publishes finds its records
//!    behind its successor's term-start, so no reader takes them.
//! 3. Events of the current term are held back until a commit of that term covers them; then
//!    they are accepted, in position order, each continuing the chain (`position` = head + 1,
//!    `prev_hash` = head hash). A reader never sees part of a command, nor a round that its
//!    leader did not finish.
//! 4. A term-start drops the events held back (uncommitted records of the older term are
//!    void). The accepted log at that offset is where the new term continues; the new leader
//!    computes it the same way, by reading up to its own term-start, and never writes below it.
//!
//! 5. A result on `csp.command-results` (headers [`TERM_HEADER`], [`OUTCOME_HEADER`]) is final
//!    once a commit of its term covers its outcome sequence ([`TermReader::is_final_result`]).
//!    The results topic has its own order, so a reader of results follows the events topic
//!    too (as the standby does) or waits for the commit.
//!
//! Every reader that applies the rule to the same partition accepts the same sequence, so there
//! is never a second value for a position, and nothing accepted is ever taken back. Records
//! without a term header (a topic written before the rule) are accepted as term 0 until the
//! first term-start.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::wire::{PublishedEvent, TopicMessage, WireError};

/// Header carrying the publisher's leader term (decimal).
pub const TERM_HEADER: &str = "csp-term";
/// Header naming the kind of a `csp.events` record: `event`, `commit` or `term-start`.
pub const RECORD_HEADER: &str = "csp-record";
/// Header of a `csp.command-results` record: its outcome sequence number (decimal).
pub const OUTCOME_HEADER: &str = "csp-outcome";
/// Key of the control records (commit, term-start) on the events topic.
pub const CONTROL_KEY: &str = "csp-control";

/// A record of the events topic, as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsRecord<'a> {
    /// An event of `term` (`None`: a record written before the rule).
    Event {
        term: Option<u64>,
        event: PublishedEvent<'a>,
    },
    /// The events of `term` up to `last_position` are final, and so are its results (on
    /// `csp.command-results`) of outcome sequence numbers up to `last_outcome`.
    ///
    /// `consumed`: per commands partition (`topic/partition`), the next offset after the
    /// commands whose outcomes this commit made final. A successor resumes consuming there, so
    /// a command whose outcome was replicated is never consumed again.
    Commit {
        term: u64,
        last_position: u64,
        last_hash: [u8; 32],
        last_outcome: u64,
        consumed: BTreeMap<String, i64>,
    },
    /// `instance` leads from `term` on.
    TermStart { term: u64, instance: Uuid },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    term: u64,
    last_position: u64,
    last_hash: String,
    last_outcome: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    consumed: BTreeMap<String, i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermStartBody {
    term: u64,
    instance: Uuid,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Control {
    Commit(CommitBody),
    TermStart(TermStartBody),
}

const WHAT: &str = "events record";

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl<'a> EventsRecord<'a> {
    /// Reads a record from its value and headers.
    pub fn decode(value: &'a [u8], headers: &[(String, String)]) -> Result<Self, WireError> {
        let term = header(headers, TERM_HEADER)
            .map(|text| {
                text.parse::<u64>().map_err(|e| WireError::Invalid {
                    what: WHAT,
                    field: TERM_HEADER,
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        match header(headers, RECORD_HEADER).unwrap_or("event") {
            "event" => Ok(EventsRecord::Event {
                term,
                event: PublishedEvent::decode(value)?,
            }),
            kind @ ("commit" | "term-start") => {
                let control: Control =
                    serde_json::from_slice(value).map_err(|e| WireError::Json {
                        what: WHAT,
                        reason: e.to_string(),
                    })?;
                let record = match control {
                    Control::Commit(body) => {
                        let mut last_hash = [0u8; 32];
                        decode_hex(&body.last_hash, &mut last_hash)?;
                        EventsRecord::Commit {
                            term: body.term,
                            last_position: body.last_position,
                            last_hash,
                            last_outcome: body.last_outcome,
                            consumed: body.consumed,
                        }
                    }
                    Control::TermStart(body) => EventsRecord::TermStart {
                        term: body.term,
                        instance: body.instance,
                    },
                };
                if record.kind() != kind || Some(record.term().unwrap_or(0)) != term {
                    return Err(WireError::Invalid {
                        what: WHAT,
                        field: RECORD_HEADER,
                        reason: format!(
                            "{kind} does not match the value and the {TERM_HEADER} header"
                        ),
                    });
                }
                Ok(record)
            }
            other => Err(WireError::Invalid {
                what: WHAT,
                field: RECORD_HEADER,
                reason: format!("{other:?} is not event, commit or term-start"),
            }),
        }
    }

    /// The message: events keyed by stream, control records by [`CONTROL_KEY`].
    pub fn encode(&self) -> TopicMessage {
        let (key, value) = match self {
            EventsRecord::Event { event, .. } => {
                let mut value = Vec::with_capacity(event.canonical.len() + 160);
                event.encode(&mut value);
                (stream_of(event), value)
            }
            EventsRecord::Commit {
                term,
                last_position,
                last_hash,
                last_outcome,
                consumed,
            } => (
                CONTROL_KEY.to_string(),
                control_bytes(&Control::Commit(CommitBody {
                    term: *term,
                    last_position: *last_position,
                    last_hash: encode_hex(last_hash),
                    last_outcome: *last_outcome,
                    consumed: consumed.clone(),
                })),
            ),
            EventsRecord::TermStart { term, instance } => (
                CONTROL_KEY.to_string(),
                control_bytes(&Control::TermStart(TermStartBody {
                    term: *term,
                    instance: *instance,
                })),
            ),
        };
        let mut headers = vec![(RECORD_HEADER, self.kind().to_string())];
        if let Some(term) = self.term() {
            headers.push((TERM_HEADER, term.to_string()));
        }
        TopicMessage {
            key,
            value,
            headers,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            EventsRecord::Event { .. } => "event",
            EventsRecord::Commit { .. } => "commit",
            EventsRecord::TermStart { .. } => "term-start",
        }
    }

    fn term(&self) -> Option<u64> {
        match self {
            EventsRecord::Event { term, .. } => *term,
            EventsRecord::Commit { term, .. } | EventsRecord::TermStart { term, .. } => Some(*term),
        }
    }
}

fn stream_of(event: &PublishedEvent<'_>) -> String {
    #[derive(Deserialize)]
    struct Stream {
        stream: String,
    }
    serde_json::from_slice::<Stream>(&event.canonical)
        .map(|s| s.stream)
        .unwrap_or_default()
}

fn control_bytes(control: &Control) -> Vec<u8> {
    match serde_json::to_vec(control) {
        Ok(bytes) => bytes,
        // Plain numbers and strings always serialize.
        Err(error) => unreachable!("serializing a control record failed: {error}"),
    }
}

fn encode_hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str, out: &mut [u8; 32]) -> Result<(), WireError> {
    let invalid = || WireError::Invalid {
        what: WHAT,
        field: "last_hash",
        reason: "is not 64 lower-case hex digits".into(),
    };
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(invalid());
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
    }
    Ok(())
}

/// What the rule made of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// These events are accepted, in order (a committed round, or a pre-rule event).
    Accepted(Vec<PublishedEvent<'static>>),
    /// An event of the current term, held back until its commit.
    Held,
    /// A record of an older term (or a repeated term-start): not taken.
    Ignored,
    /// A new term starts at the accepted head; `dropped` uncommitted events of the older term
    /// were void.
    TermStarted {
        term: u64,
        head: u64,
        dropped: usize,
    },
}

/// A record the rule cannot accept: the topic was not written by leaders that follow it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FencingError {
    #[error("a record of term {term} before its term-start (current term {current})")]
    TermNotStarted { term: u64, current: u64 },
    #[error("event {position} of term {term} does not continue the accepted log at {head}")]
    Gap { term: u64, position: u64, head: u64 },
    #[error("event {position} does not chain from the accepted event before it")]
    Chain { position: u64 },
    #[error("the commit of term {term} up to {last_position} covers events that were not published (held up to {held})")]
    CommitBeyondEvents {
        term: u64,
        last_position: u64,
        held: u64,
    },
    #[error("the commit of term {term} up to {last_position} names another hash than its event")]
    CommitHash { term: u64, last_position: u64 },
}

/// The rule's state: the current term and the accepted head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermReader {
    term: u64,
    head: u64,
    head_hash: [u8; 32],
    held: Vec<PublishedEvent<'static>>,
    /// The highest outcome sequence a commit of the current term made final.
    last_outcome: u64,
    /// The same for every earlier term, frozen at its successor's term-start.
    earlier_outcomes: Vec<(u64, u64)>,
}

impl Default for TermReader {
    fn default() -> Self {
        TermReader::new()
    }
}

impl TermReader {
    /// A reader at the start of the topic.
    pub fn new() -> TermReader {
        TermReader::resume(0, 0, [0; 32])
    }

    /// A reader that resumes after an accepted head (a standby restarting on its own log,
    /// reading on from the offset after the record that made `head` accepted).
    pub fn resume(term: u64, head: u64, head_hash: [u8; 32]) -> TermReader {
        TermReader {
            term,
            head,
            head_hash,
            held: Vec::new(),
            last_outcome: 0,
            earlier_outcomes: Vec::new(),
        }
    }

    /// A reader that resumes with the final outcome sequences it had kept ([`TermReader::finals`]),
    /// so that results read after a restart are judged as before it.
    pub fn resume_with(
        term: u64,
        head: u64,
        head_hash: [u8; 32],
        finals: &[(u64, u64)],
    ) -> TermReader {
        let mut reader = TermReader::resume(term, head, head_hash);
        for &(t, last) in finals {
            if t == term {
                reader.last_outcome = reader.last_outcome.max(last);
            } else if t < term {
                reader.earlier_outcomes.push((t, last));
            }
        }
        reader.bound_earlier();
        reader
    }

    /// Per term (the current one and the most recent earlier ones), the highest outcome
    /// sequence its accepted commits made final: what [`TermReader::resume_with`] takes.
    pub fn finals(&self) -> Vec<(u64, u64)> {
        let mut out = self.earlier_outcomes.clone();
        if self.last_outcome > 0 {
            out.push((self.term, self.last_outcome));
        }
        out
    }

    /// The highest outcome sequence of `term` that accepted commits made final (0: none).
    pub fn final_outcome(&self, term: u64) -> u64 {
        if term == self.term {
            return self.last_outcome;
        }
        self.earlier_outcomes
            .iter()
            .filter(|(t, _)| *t == term)
            .map(|(_, last)| *last)
            .max()
            .unwrap_or(0)
    }

    /// Earlier terms kept for [`TermReader::is_final_result`]: results trail the events topic
    /// by moments, not by dozens of terms.
    const EARLIER_TERMS_KEPT: usize = 64;

    fn bound_earlier(&mut self) {
        let excess = self
            .earlier_outcomes
            .len()
            .saturating_sub(Self::EARLIER_TERMS_KEPT);
        self.earlier_outcomes.drain(..excess);
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The last accepted position (0 for none) and its hash.
    pub fn head(&self) -> (u64, [u8; 32]) {
        (self.head, self.head_hash)
    }

    /// Whether a result of `term` with outcome sequence `seq` (`csp.command-results`, headers
    /// [`TERM_HEADER`] and [`OUTCOME_HEADER`]) is final: a commit of its term covering `seq`
    /// was accepted. A result that is not final (its leader was deposed before committing the
    /// round) is ignored; its command is decided again by the successor.
    pub fn is_final_result(&self, term: u64, seq: u64) -> bool {
        if term == self.term {
            return seq <= self.last_outcome;
        }
        self.earlier_outcomes
            .iter()
            .any(|(t, last)| *t == term && seq <= *last)
    }

    /// How many events of the current term wait for their commit.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Applies the rule to the next record in offset order.
    pub fn push(&mut self, record: EventsRecord<'_>) -> Result<Verdict, FencingError> {
        match record {
            EventsRecord::TermStart { term, .. } => Ok(self.term_start(term)),
            EventsRecord::Event { term: None, event } => {
                if self.term > 0 {
                    return Ok(Verdict::Ignored);
                }
                let event = owned(event);
                self.check_continues(0, &event, self.head, self.head_hash)?;
                self.accept_one(&event);
                Ok(Verdict::Accepted(vec![event]))
            }
            EventsRecord::Event {
                term: Some(term),
                event,
            } => {
                if self.is_stale(term)? {
                    return Ok(Verdict::Ignored);
                }
                let (after, after_hash) = match self.held.last() {
                    Some(last) => (last.position, last.hash),
                    None => (self.head, self.head_hash),
                };
                if event.position <= after {
                    // A repeat of a record already taken (a retried publish): the first one
                    // stands. A different value for a held position is a broken leader.
                    let repeat = event.position <= self.head
                        || self.held[(event.position - self.head - 1) as usize].hash == event.hash;
                    if repeat {
                        return Ok(Verdict::Ignored);
                    }
                }
                let event = owned(event);
                self.check_continues(term, &event, after, after_hash)?;
                self.held.push(event);
                Ok(Verdict::Held)
            }
            EventsRecord::Commit {
                term,
                last_position,
                last_hash,
                last_outcome,
                ..
            } => {
                if self.is_stale(term)? {
                    return Ok(Verdict::Ignored);
                }
                let verdict = self.commit(term, last_position, last_hash)?;
                self.last_outcome = self.last_outcome.max(last_outcome);
                Ok(verdict)
            }
        }
    }

    /// Whether a record of `term` is of an older term (ignored); a newer term than the
    /// current one has not started (refused).
    fn is_stale(&self, term: u64) -> Result<bool, FencingError> {
        if term > self.term {
            return Err(FencingError::TermNotStarted {
                term,
                current: self.term,
            });
        }
        Ok(term < self.term)
    }

    fn term_start(&mut self, term: u64) -> Verdict {
        if term <= self.term {
            return Verdict::Ignored;
        }
        let dropped = self.held.len();
        self.held.clear();
        if self.last_outcome > 0 {
            self.earlier_outcomes.push((self.term, self.last_outcome));
            self.bound_earlier();
        }
        self.last_outcome = 0;
        self.term = term;
        Verdict::TermStarted {
            term,
            head: self.head,
            dropped,
        }
    }

    fn commit(
        &mut self,
        term: u64,
        last_position: u64,
        last_hash: [u8; 32],
    ) -> Result<Verdict, FencingError> {
        if last_position <= self.head {
            // A repeated commit (the publisher retried a round): nothing new.
            return Ok(Verdict::Accepted(Vec::new()));
        }
        let held_to = self.held.last().map_or(self.head, |e| e.position);
        if last_position > held_to {
            return Err(FencingError::CommitBeyondEvents {
                term,
                last_position,
                held: held_to,
            });
        }
        let count = (last_position - self.head) as usize;
        if self.held[count - 1].hash != last_hash {
            return Err(FencingError::CommitHash {
                term,
                last_position,
            });
        }
        let accepted: Vec<PublishedEvent<'static>> = self.held.drain(..count).collect();
        for event in &accepted {
            self.accept_one(event);
        }
        Ok(Verdict::Accepted(accepted))
    }

    fn check_continues(
        &self,
        term: u64,
        event: &PublishedEvent<'_>,
        after: u64,
        after_hash: [u8; 32],
    ) -> Result<(), FencingError> {
        if event.position != after + 1 {
            return Err(FencingError::Gap {
                term,
                position: event.position,
                head: after,
            });
        }
        if event.prev_hash != after_hash {
            return Err(FencingError::Chain {
                position: event.position,
            });
        }
        Ok(())
    }

    fn accept_one(&mut self, event: &PublishedEvent<'_>) {
        self.head = event.position;
        self.head_hash = event.hash;
    }
}

fn owned(event: PublishedEvent<'_>) -> PublishedEvent<'static> {
    PublishedEvent {
        position: event.position,
        canonical: Cow::Owned(event.canonical.into_owned()),
        hash: event.hash,
        prev_hash: event.prev_hash,
    }
}
