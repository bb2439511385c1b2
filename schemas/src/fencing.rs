//! The term rule of `csp.events` (SPEC.md section 8, issue 10): how a reader of the events
//! topic ignores every record of a deposed leader, on a broker without Kafka transactions.
//!
//! The broker cannot fence a paused leader, so the single-partition events topic fences it
//! by its own order. Three kinds of record share that partition:
//!
//! - `event`: a [`PublishedEvent`], keyed by its stream, as before (no header: tansu's SQLite
//!   engine reads every fetched record's headers with a scan of all stored headers, so a
//!   header per event would slow every fetch as the topic grows).
//! - `commit {term, last_position, last_hash, last_outcome, consumed}`: the leader of `term`
//!   says that its events up to `last_position`, ending in the event whose hash is
//!   `last_hash`, are whole commands and final, and so are its results up to outcome sequence
//!   `last_outcome`. A leader writes one after each publish round (its events and results
//!   first, the commit last).
//! - `term-start {term, instance}`: written by a new leader after it won the election and before
//!   it publishes anything; it leads only once it has read this record back.
//!
//! Control records (commit, term-start) are keyed [`CONTROL_KEY`]; their kind is the first
//! member of the value (`{"commit":…}`, `{"term_start":…}`), or the [`RECORD_HEADER`] header
//! when there is one. An event may carry its term in [`TERM_HEADER`]; readers honour it but
//! do not need it.
//!
//! The rule ([`TermReader`]), applied in offset order:
//!
//! 1. The current term is the highest term-start read so far (0 before any).
//! 2. Every control record of an older term is ignored, wherever it comes after a newer
//!    term-start. This is the fence: a paused leader that wakes up and publishes finds its
//!    commits behind its successor's term-start, so no reader takes its rounds.
//! 3. Events after the accepted head are held back as candidates (a deposed leader's and its
//!    successor's events may both be there for one position). A commit of the current term
//!    selects the chain it names: the candidate at `last_position` with hash `last_hash`, the
//!    candidate its `prev_hash` names one position below, and so on down to the accepted head.
//!    Those are accepted, in position order; every other candidate at or below
//!    `last_position` is void. A reader never sees part of a command, nor a round that its
//!    leader did not finish, nor another leader's value for a position.
//! 4. A term-start drops every held candidate (uncommitted records of the older term are
//!    void). The accepted log at that offset is where the new term continues; the new leader
//!    computes it the same way, by reading up to its own term-start, and never writes below it.
//!
//! 5. A result on `csp.command-results` carries `term` and `outcome_seq` in its value
//!    ([`crate::wire::ResultFence`]); it is final once a commit of its term covers its outcome
//!    sequence ([`TermReader::is_final_result`]). The results topic has its own order, so a
//!    reader of results follows the events topic too (as the standby does) or waits for the
//!    commit.
//!
//! Every reader that applies the rule to the same partition accepts the same sequence, so there
//! is never a second value for a position, and nothing accepted is ever taken back. Events
//! read before the first term-start (a topic written before the rule) are accepted as they
//! come, as term 0.

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
        let kind = header(headers, RECORD_HEADER).unwrap_or_else(|| sniff_kind(value));
        match kind {
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
                let term_agrees = term.is_none_or(|t| Some(t) == record.term());
                if record.kind() != kind || !term_agrees {
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

    /// The message: events keyed by stream, control records by [`CONTROL_KEY`]. No
    /// headers (see the module documentation): the kind is the value's first member, and
    /// only control records carry their term (in the value).
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
        TopicMessage {
            key,
            value,
            headers: Vec::new(),
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

/// The kind of a record without a [`RECORD_HEADER`]: a control record's value starts with
/// its kind (`{"commit":` or `{"term_start":`); an event's canonical bytes start with
/// `{"actor":` (members in sorted order).
fn sniff_kind(value: &[u8]) -> &'static str {
    if value.starts_with(b"{\"commit\":") {
        "commit"
    } else if value.starts_with(b"{\"term_start\":") {
        "term-start"
    } else {
        "event"
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
    /// An event after the accepted head, held back as a candidate until a commit selects it.
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
    #[error("the commit of term {term} up to {last_position} names a chain whose event {missing} was not published")]
    CommitHash {
        term: u64,
        last_position: u64,
        missing: u64,
    },
}

/// The rule's state: the current term and the accepted head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermReader {
    term: u64,
    head: u64,
    head_hash: [u8; 32],
    /// Candidates after the head, by position (more than one when two leaders wrote there).
    held: std::collections::BTreeMap<u64, Vec<PublishedEvent<'static>>>,
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
            held: std::collections::BTreeMap::new(),
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
        self.held.values().map(Vec::len).sum()
    }

    /// Applies the rule to the next record in offset order.
    pub fn push(&mut self, record: EventsRecord<'_>) -> Result<Verdict, FencingError> {
        match record {
            EventsRecord::TermStart { term, .. } => Ok(self.term_start(term)),
            EventsRecord::Event { term: None, event } if self.term == 0 => {
                // Before the first term-start: a topic written before the rule.
                if event.position <= self.head {
                    return Ok(Verdict::Ignored);
                }
                let event = owned(event);
                self.check_continues(0, &event, self.head, self.head_hash)?;
                self.accept_one(&event);
                Ok(Verdict::Accepted(vec![event]))
            }
            EventsRecord::Event { term, event } => {
                if term.is_some_and(|t| t < self.term) || event.position <= self.head {
                    // A deposed leader's event, or a repeat of one accepted (a retried
                    // publish): the accepted one stands.
                    return Ok(Verdict::Ignored);
                }
                if let Some(t) = term.filter(|t| *t > self.term) {
                    return Err(FencingError::TermNotStarted {
                        term: t,
                        current: self.term,
                    });
                }
                let candidates = self.held.entry(event.position).or_default();
                if candidates.iter().any(|c| c.hash == event.hash) {
                    return Ok(Verdict::Ignored);
                }
                candidates.push(owned(event));
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
        let dropped = self.held();
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
        let held_to = self.held.keys().next_back().copied().unwrap_or(self.head);
        if last_position > held_to {
            return Err(FencingError::CommitBeyondEvents {
                term,
                last_position,
                held: held_to,
            });
        }
        // Walk the named chain down from `last_position` to the head.
        let mut chain: Vec<PublishedEvent<'static>> =
            Vec::with_capacity((last_position - self.head) as usize);
        let mut wanted = last_hash;
        for position in (self.head + 1..=last_position).rev() {
            let found = self
                .held
                .get(&position)
                .and_then(|candidates| candidates.iter().find(|c| c.hash == wanted));
            let Some(event) = found else {
                return Err(FencingError::CommitHash {
                    term,
                    last_position,
                    missing: position,
                });
            };
            wanted = event.prev_hash;
            chain.push(event.clone());
        }
        if wanted != self.head_hash {
            return Err(FencingError::Chain {
                position: self.head + 1,
            });
        }
        chain.reverse();
        // Everything at or below the commit is decided: the chosen chain, the rest void.
        self.held = self.held.split_off(&(last_position + 1));
        for event in &chain {
            self.accept_one(event);
        }
        Ok(Verdict::Accepted(chain))
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
