//! Reads of the durable log for answers: events with their predecessors' hashes and clear
//! personal data, and the replays that fold the log into state.

use csp_ledger_projections::state::{EventMeta, LedgerState};
use csp_ledger_schemas::event::EventEnvelope;
use csp_ledger_schemas::wire::EventLine;
use tracing::info_span;

use crate::store::audit::WalkStart;
use crate::store::log::{Log, LogError, StoredEvent};

/// An event as answered to callers: stored form, its predecessor's hash, clear personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredEvent {
    pub stored: StoredEvent,
    pub prev_hash: [u8; 32],
    pub personal: Vec<(&'static str, String)>,
}

impl AnsweredEvent {
    /// The event line (`schemas::wire::EventLine`: the canonical bytes plus `hash`,
    /// `prev_hash` and, when present, `personal_data`), borrowing this event's parts.
    pub fn line(&self) -> EventLine<'_> {
        EventLine {
            canonical: self.stored.canonical.as_slice().into(),
            hash: self.stored.hash,
            prev_hash: self.prev_hash,
            personal_data: self
                .personal
                .iter()
                .map(|(field, value)| ((*field).into(), value.as_str().into()))
                .collect(),
        }
    }
}

/// Reads events from `first` (at most `count`) with predecessor hashes and clear personal data.
pub fn read_answered(log: &Log, first: u64, count: usize) -> Result<Vec<AnsweredEvent>, LogError> {
    read_answered_as(log, first, count, Mismatch::Fail)
}

/// [`read_answered`], with a choice of what a personal value that does not match its
/// commitment does.
pub fn read_answered_as(
    log: &Log,
    first: u64,
    count: usize,
    mismatch: Mismatch,
) -> Result<Vec<AnsweredEvent>, LogError> {
    let mut out = Vec::with_capacity(count.min(1024));
    for item in events_with_prev(log, first).take(count) {
        let (stored, prev_hash) = item?;
        let personal = join_personal_as(log, &stored, mismatch)?;
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

/// The clear personal values of a stored event, unless erased. A value is joined only if
/// SHA-256(salt || value) is the commitment the event carries; otherwise the read fails with
/// [`LogError::PersonalMismatch`] (SPEC.md section 12: `personal_data_mismatch`).
pub fn join_personal(
    log: &Log,
    stored: &StoredEvent,
) -> Result<Vec<(&'static str, String)>, LogError> {
    join_personal_as(log, stored, Mismatch::Fail)
}

/// What a join does with a stored value that does not match its commitment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// Fail the read ([`LogError::PersonalMismatch`]): every answer to a reader.
    Fail,
    /// Leave the value out, as if erased, and log a warning (subject and field, no value):
    /// the answer to a retried command, which the writer gives and must not fail on.
    Omit,
}

/// [`join_personal`], with a choice of what a mismatch does.
pub fn join_personal_as(
    log: &Log,
    stored: &StoredEvent,
    mismatch: Mismatch,
) -> Result<Vec<(&'static str, String)>, LogError> {
    let envelope =
        EventEnvelope::decode(&stored.canonical).map_err(|reason| LogError::Corrupt {
            position: Some(stored.position),
            reason,
        })?;
    let mut out = Vec::new();
    if let Some(subject) = envelope.stream.subject() {
        for (field, commitment) in envelope.event.personal_fields() {
            let Some((salt, value)) = log.personal(subject, &commitment)? else {
                continue;
            };
            if csp_ledger_domain::commit(&salt, &value) == commitment {
                out.push((field, value));
                continue;
            }
            match mismatch {
                Mismatch::Fail => {
                    return Err(LogError::PersonalMismatch {
                        subject,
                        field,
                        position: stored.position,
                    })
                }
                Mismatch::Omit => tracing::warn!(
                    message = "A stored personal value does not match its commitment; left out.",
                    code = "personal_data_mismatch",
                    subject = %subject,
                    field,
                    position = stored.position
                ),
            }
        }
    }
    Ok(out)
}

/// Folds the log from position 1 up to `until` (inclusive), checking the chain on the way
/// (chunks are checked and decoded in parallel, folded in order).
pub fn replay(log: &Log, until: u64) -> Result<LedgerState, LogError> {
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
) -> Result<(), LogError> {
    let span = info_span!("replay", from = start.position);
    let _entered = span.enter();
    let (walked, last_hash) = crate::store::audit::walk(
        log,
        start,
        until,
        crate::store::audit::decode_fold,
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
    )?;
    let head = log.head();
    if until >= head.position && (walked != head.position || last_hash != head.hash) {
        return Err(LogError::Corrupt {
            position: Some(walked + 1),
            reason: "the log ends before its head".into(),
        });
    }
    Ok(())
}
