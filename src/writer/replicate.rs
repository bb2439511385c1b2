//! Replication: appending what another instance decided (a standby following the events and
//! results topics) through the same writer.

use csp_ledger_projections::state::EventMeta;
use csp_ledger_schemas::event::{Event, FoldEvent};
use uuid::Uuid;

use super::ledger::{Ledger, LedgerError};

use crate::store::audit::chain_hash;
use crate::store::log::{
    Commit, Head, LogError, OutcomeRecord, StoredEvent, StoredOutcomeKind, COMMITTED_CURSOR,
    DLQ_CURSOR, EVENTS_CURSOR, RESULTS_CURSOR,
};

use super::idempotency::{short_hash, IdempotencyEntry, UNKNOWN_BODY};

impl Ledger {
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
        let mut batch = Replicated {
            records: Vec::new(),
            seq: head.next_outcome_seq,
            appended: Vec::with_capacity(events.len()),
            folded: Vec::new(),
        };
        self.replicate_results(results, &mut batch);
        self.replicate_events(events, head, &mut batch)?;
        self.fold_replicated(&batch.folded)?;
        let cursors = self.replicated_cursors(head, &batch)?;
        let refs: Vec<&StoredEvent> = batch.appended.iter().collect();
        let committed = self.log.append(Commit {
            prev_hash: head.hash,
            events: &refs,
            outcomes: &batch.records,
            personal: &[],
            offsets: &offsets,
            cursors: &cursors,
            // Replicated rounds were committed by their own leader.
            round_mark: false,
        });
        // On any error `replicate` poisons the ledger (it reopens from the log).
        let committed = committed?;
        self.decided = committed;
        Ok(committed)
    }

    /// Takes the accepted and rejected results whose command has no record with a known
    /// body yet into `batch`, and into the idempotency index.
    fn replicate_results(&mut self, results: Vec<OutcomeRecord>, batch: &mut Replicated) {
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
                    outcome_seq: batch.seq,
                },
            );
            batch.records.push(result);
            batch.seq += 1;
        }
    }

    /// Compares the events at or before `head` with the local ones and checks that the rest
    /// continue the chain, taking them into `batch` (to fold, to append and, for commands
    /// not recorded yet, as idempotency records).
    fn replicate_events(
        &mut self,
        events: Vec<StoredEvent>,
        head: Head,
        batch: &mut Replicated,
    ) -> Result<(), LedgerError> {
        let mut prev_hash = head.hash;
        let mut position = head.position;
        for event in events {
            if event.position <= head.position {
                if self.log.hash_at(event.position)? != Some(event.hash) {
                    return Err(LedgerError::Forked {
                        position: event.position,
                    });
                }
                continue;
            }
            let (decoded, ids) = check_replicated_event(&event, position, &prev_hash)?;
            self.record_replicated_event(batch, &event, ids, &decoded);
            position = event.position;
            prev_hash = event.hash;
            batch.folded.push((
                EventMeta {
                    position,
                    stream_version: decoded.stream_version,
                    occurred_at: decoded.occurred_at,
                    recorded_at: decoded.recorded_at,
                },
                decoded.event,
            ));
            batch.appended.push(event);
        }
        Ok(())
    }

    /// Counts `event` into the accepted record of its command: the one this batch is
    /// building, none when the command is already known, or a new one (body unknown until
    /// the result arrives).
    fn record_replicated_event(
        &mut self,
        batch: &mut Replicated,
        event: &StoredEvent,
        ids: ReplicatedIds,
        decoded: &FoldEvent,
    ) {
        let accepted = batch
            .records
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
                        outcome_seq: batch.seq,
                    },
                );
                batch.records.push(OutcomeRecord {
                    command_id: ids.command_id,
                    body_hash: [0; 16],
                    kind: StoredOutcomeKind::Accepted,
                    first_position: event.position,
                    event_count: 1,
                    recorded_at_micros: decoded.recorded_at.timestamp_micros(),
                    correlation_id: ids.correlation_id,
                    rejection: Vec::new(),
                });
                batch.seq += 1;
            }
        }
    }

    /// Folds the batch's events onto the state, refusing the batch when one does not follow.
    fn fold_replicated(&mut self, folded: &[(EventMeta, Event)]) -> Result<(), LedgerError> {
        // Fold before appending: an event that does not follow the state (a forged or damaged
        // record with a consistent chain) must never become durable, or every later open would
        // stop in replay. A refusal leaves this batch's earlier events folded, so `replicate`
        // poisons the ledger and it reopens from the log, which is as it was.
        let state = &mut self.state;
        let folding = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            folded
                .iter()
                .try_for_each(|(meta, event)| state.try_apply(meta, event))
        }));
        match folding {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(LedgerError::Replication(format!(
                "event {} does not fold onto the state: {}; nothing of this batch was \
                 appended",
                refused.position, refused.reason
            ))),
            // `check` missed an assertion of `apply`: still refused before the append.
            Err(_) => Err(LedgerError::Replication(
                "a replicated event does not fold onto the state; nothing of this batch \
                 was appended"
                    .into(),
            )),
        }
    }

    /// The publisher cursors to move with the batch.
    fn replicated_cursors(
        &self,
        head: Head,
        batch: &Replicated,
    ) -> Result<Vec<(&'static str, u64)>, LedgerError> {
        // What is replicated was published by the instance that decided it; a cursor that had
        // nothing of this instance's own left to publish moves past it.
        let mut cursors = Vec::new();
        let new_position = batch.appended.last().map_or(head.position, |e| e.position);
        if self.log.cursor(EVENTS_CURSOR)?.max(1) == head.position + 1 {
            cursors.push((EVENTS_CURSOR, new_position + 1));
        }
        for name in [RESULTS_CURSOR, DLQ_CURSOR, COMMITTED_CURSOR] {
            if self.log.cursor(name)?.max(1) == head.next_outcome_seq {
                cursors.push((name, batch.seq));
            }
        }
        Ok(cursors)
    }
}

/// Checks that `event` follows `position` and chains from `prev_hash`, and decodes it.
fn check_replicated_event(
    event: &StoredEvent,
    position: u64,
    prev_hash: &[u8; 32],
) -> Result<(FoldEvent, ReplicatedIds), LedgerError> {
    if event.position != position + 1 {
        return Err(LedgerError::Replication(format!(
            "event {} does not follow position {position}",
            event.position
        )));
    }
    if chain_hash(prev_hash, &event.canonical) != event.hash {
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
    Ok((decoded, ids))
}

/// What one replicated batch appends, built up result by result and event by event.
struct Replicated {
    /// The outcome records to append.
    records: Vec<OutcomeRecord>,
    /// The outcome sequence number of the next record.
    seq: u64,
    /// The events after the head, in position order.
    appended: Vec<StoredEvent>,
    /// The same events decoded, folded before anything is appended.
    folded: Vec<(EventMeta, Event)>,
}

/// The ids of a replicated event that the idempotency index needs.
#[derive(serde::Deserialize)]
struct ReplicatedIds {
    command_id: Uuid,
    correlation_id: Option<String>,
}
