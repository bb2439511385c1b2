//! What became of each command of a batch, and the outcome lines of SPEC.md section 7.

use std::borrow::Cow;
use std::ops::Range;

use csp_ledger_schemas::wire::OutcomeLine;
use csp_ledger_schemas::OutcomeKind;
use uuid::Uuid;

use crate::store::read::AnsweredEvent;

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

    pub fn kind(&self) -> OutcomeKind {
        match self {
            Outcome::Accepted { .. } => OutcomeKind::Accepted,
            Outcome::Rejected { .. } => OutcomeKind::Rejected,
            Outcome::Duplicate { .. } => OutcomeKind::Duplicate,
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
    /// The outcome line of SPEC.md section 7 for outcome `index` (`schemas::wire::OutcomeLine`).
    pub fn write_outcome_json(&self, index: usize, out: &mut Vec<u8>) {
        self.write_outcome_json_as(index, true, out)
    }

    /// [`Self::write_outcome_json`] for a reader with or without the `personal` grant:
    /// without it, events carry their commitments only.
    pub fn write_outcome_json_as(&self, index: usize, personal: bool, out: &mut Vec<u8>) {
        let outcome = &self.outcomes[index];
        let (events, rejection): (&[AnsweredEvent], Option<&Rejection>) = match outcome {
            Outcome::Accepted { events, .. } => (&self.events[events.clone()], None),
            Outcome::Rejected { rejection, .. } => (&[], Some(rejection)),
            Outcome::Duplicate {
                events, rejection, ..
            } => (events, rejection.as_ref()),
        };
        OutcomeLine {
            command_id: outcome.command_id(),
            outcome: outcome.kind(),
            events: events
                .iter()
                .map(|event| {
                    let mut line = event.line();
                    if !personal {
                        line.personal_data.clear();
                    }
                    line
                })
                .collect(),
            rejection: rejection.map(Cow::Borrowed),
        }
        .encode(out);
    }
}

/// The stored form of a rejection: its JSON object (`schemas::wire`, `Rejection::encode`).
pub fn rejection_bytes(rejection: &Rejection) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + rejection.message.len());
    rejection.encode(&mut out);
    out
}
