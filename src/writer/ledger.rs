//! The ledger: one writer that takes batches of commands, decides each against the live state,
//! chains the resulting events, appends everything in one durable commit, and only then
//! answers. Holds the live `LedgerState` and the idempotency index.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use csp_ledger_projections::state::LedgerState;
use thiserror::Error;
use tracing::{info, info_span, warn};
use uuid::Uuid;

use super::idempotency::{short_hash, IdempotencyEntry, UNKNOWN_BODY};
use super::outcome::{BatchResult, Outcome};
use super::prepare::Batch;
pub use super::prepare::{Entropy, Prepared};
use crate::auth::Principal;
use crate::intake::{ParsedCommand, Submission};
use crate::store::read::{
    read_answered, read_answered_as, replay, replay_onto, AnsweredEvent, Mismatch,
};
use csp_ledger_schemas::command::ActorKind;
use csp_ledger_schemas::RejectionCode;
use serde_json::json;

use crate::store::audit::WalkStart;
use crate::store::checkpoint;
use crate::store::log::{Head, Log, LogError, LogOptions, StoredOutcomeKind};
use csp_ledger_domain::{self as domain, Rejection};

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

/// Source of the ledger clock.
pub type Clock = Box<dyn FnMut() -> DateTime<Utc> + Send + Sync>;
/// The single writer of a log directory.
pub struct Ledger {
    pub(super) log: Arc<Log>,
    pub(super) state: LedgerState,
    pub(super) idempotency: HashMap<Uuid, IdempotencyEntry>,
    /// Head as decided: ahead of the durable head while a prepared batch is in flight.
    pub(super) decided: Head,
    /// Position of the last checkpoint written or loaded.
    pub(super) checkpointed: u64,
    pub(super) clock: Clock,
    pub(super) entropy: Entropy,
    pub(super) poisoned: bool,
    /// Whether prepared batches carry their folded events (see [`Prepared::folded`]).
    pub(super) keep_folded: bool,
    /// Keys the projection checkpoint's MAC (derived from the signing key).
    pub(super) checkpoint_key: checkpoint::MacKey,
}

impl Ledger {
    /// Opens the log in `dir` with the system clock and OS randomness, replaying it.
    /// The projection checkpoint is keyed with [`checkpoint::MacKey::PUBLIC`].
    pub fn open(dir: &Path, options: LogOptions) -> Result<Ledger, LedgerError> {
        Ledger::open_keyed(dir, options, checkpoint::MacKey::PUBLIC)
    }

    /// Opens with the projection checkpoint keyed by `key` (the binary: derived from the
    /// signing key, trusted only when that lives outside the data directory).
    pub fn open_keyed(
        dir: &Path,
        options: LogOptions,
        key: checkpoint::MacKey,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_inner(dir, options, Box::new(Utc::now), os_entropy(), key)
    }

    /// Opens with an injected clock and entropy (tests, benchmarks).
    pub fn open_with(
        dir: &Path,
        options: LogOptions,
        clock: Clock,
        entropy: Entropy,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_inner(dir, options, clock, entropy, checkpoint::MacKey::PUBLIC)
    }

    fn open_inner(
        dir: &Path,
        options: LogOptions,
        clock: Clock,
        entropy: Entropy,
        checkpoint_key: checkpoint::MacKey,
    ) -> Result<Ledger, LedgerError> {
        let log = Log::open(dir, options)?;
        let mut checkpointed = 0;
        let state = match checkpoint::load(dir, &checkpoint_key)? {
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
            keep_folded: false,
            checkpoint_key,
        })
    }

    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The key of the projection checkpoint's MAC.
    pub fn checkpoint_key(&self) -> checkpoint::MacKey {
        self.checkpoint_key
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
        checkpoint::save(self.log.dir(), &self.state, head.hash, &self.checkpoint_key)?;
        Ok(head.position)
    }

    /// Marks the ledger failed: a prepared batch could not be committed, so the live state is
    /// ahead of the log. Every later call fails until the ledger is reopened.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    /// Whether the ledger was poisoned (see [`Ledger::poison`]).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Makes prepared batches carry their events as folded, so that a reader-side copy of the
    /// state can follow the durable log without decoding it again.
    pub fn keep_folded(&mut self, keep: bool) {
        self.keep_folded = keep;
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
        // The ledger clock never goes backwards, so that `as_of` by time is well defined.
        let recorded_at = (self.clock)().max(
            self.state
                .recorded
                .last()
                .map_or(DateTime::<Utc>::MIN_UTC, |(_, at)| *at),
        );
        let mut batch = Batch::new(
            self.decided,
            recorded_at,
            submissions.len(),
            self.keep_folded,
        );
        for submission in submissions {
            let parsed = match submission.parsed {
                Ok(parsed) => parsed,
                Err(malformed) => {
                    batch.malformed(submission.line, submission.source.as_ref(), malformed);
                    continue;
                }
            };
            let command_id = parsed.envelope.command_id;
            if !submission.principal.may_act_as(&parsed.envelope.actor) {
                // Attempted impersonation, refused before the idempotency check (a replay of
                // someone else's command is refused too, not answered as a duplicate).
                let rejection = actor_not_permitted(&submission.principal, &parsed);
                if self.idempotency.contains_key(&command_id) {
                    // The id belongs to an earlier outcome: recording (and publishing) a second
                    // one under it would let anyone overwrite another's result for readers that
                    // keep the latest per key. Answered and logged only.
                    warn!(message = "Refused a command whose actor its principal may not claim, reusing a decided command id.", principal = %submission.principal.id, command_id = %command_id);
                    batch.refused(&parsed, rejection, submission.line);
                } else {
                    // Recorded like every rejection: the id is taken, an auditor sees it.
                    self.idempotency.insert(
                        command_id,
                        IdempotencyEntry {
                            body_hash: short_hash(&parsed.body_hash),
                            outcome_seq: batch.outcome_seq,
                        },
                    );
                    batch.rejected(&parsed, rejection, submission.line);
                }
                continue;
            }
            if let Some(entry) = self.idempotency.get(&command_id).copied() {
                batch.seen_before(&parsed, entry, submission.line);
                continue;
            }
            // Decided now (accepted or rejected): this outcome owns the command id from here on.
            self.idempotency.insert(
                command_id,
                IdempotencyEntry {
                    body_hash: short_hash(&parsed.body_hash),
                    outcome_seq: batch.outcome_seq,
                },
            );
            match domain::decide(&self.state, &parsed.envelope, &mut *self.entropy) {
                Ok(decision) => batch.accepted(
                    &mut self.state,
                    &mut self.entropy,
                    &parsed,
                    decision,
                    submission.principal.id.as_str(),
                ),
                Err(rejection) => batch.rejected(&parsed, rejection, submission.line),
            }
        }
        self.decided = batch.head();
        Ok(batch.finish(offsets, started.elapsed().as_micros() as u64))
    }

    /// Fills in the answers of duplicates from the log. Call after the batch (and every batch
    /// before it) is durable.
    pub fn resolve(&self, result: &mut BatchResult) -> Result<(), LedgerError> {
        resolve_duplicates(&self.log, result)
    }

    /// Reads `count` events from `first` with their predecessors' hashes and personal data.
    pub fn read_answered(
        &self,
        first: u64,
        count: usize,
    ) -> Result<Vec<AnsweredEvent>, LedgerError> {
        Ok(read_answered(&self.log, first, count)?)
    }
}

/// The rejection of a command whose actor its principal may not claim (SPEC.md section 10).
fn actor_not_permitted(principal: &Principal, parsed: &ParsedCommand) -> Rejection {
    let actor = &parsed.envelope.actor;
    let claimed = match actor.id {
        Some(id) => format!("{}:{id}", kind_name(actor.kind)),
        None => kind_name(actor.kind).to_string(),
    };
    Rejection::new(
        RejectionCode::ActorNotPermitted,
        format!("principal {} may not act as {claimed}", principal.id),
    )
    .with_details(json!({"principal": principal.id.as_str(), "actor": claimed}))
}

fn kind_name(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::Operator => "operator",
        ActorKind::Partner => "partner",
        ActorKind::Customer => "customer",
    }
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

/// Fills in the answers of duplicates from the log. Call after the batch (and every batch
/// before it) is durable.
pub fn resolve_duplicates(log: &Log, result: &mut BatchResult) -> Result<(), LedgerError> {
    for outcome in &mut result.outcomes {
        if let Outcome::Duplicate {
            original_seq,
            events,
            rejection,
            ..
        } = outcome
        {
            let original = log
                .outcome_at(*original_seq)?
                .ok_or_else(|| LogError::Corrupt {
                    position: None,
                    reason: format!(
                        "outcome {original_seq} named by the idempotency index is missing"
                    ),
                })?;
            match original.kind {
                StoredOutcomeKind::Accepted => {
                    // A forged personal value is left out of a retry's answer (and logged),
                    // not a failure of the writer: reads fail on it (`personal_data_mismatch`).
                    *events = read_answered_as(
                        log,
                        original.first_position,
                        original.event_count as usize,
                        Mismatch::Omit,
                    )?;
                }
                _ => *rejection = Rejection::decode(&original.rejection).ok(),
            }
        }
    }
    Ok(())
}
