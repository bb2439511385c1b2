//! What became of each command of a batch, and the outcome lines of SPEC.md section 7.

use std::ops::Range;

use csp_ledger_schemas::RejectionCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::store::read::{write_event_json, AnsweredEvent};

use csp_ledger_schemas::Rejection;

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

pub(super) fn rejection_from_json(bytes: &[u8]) -> Option<Rejection> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let code: RejectionCode = serde_json::from_value(value.get("code")?.clone()).ok()?;
    Some(Rejection {
        code,
        message: value.get("message")?.as_str()?.to_string(),
        details: value.get("details").cloned().filter(|d| !d.is_null()),
    })
}
