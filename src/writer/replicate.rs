//! Replication: appending what another instance decided (a standby following the events and
//! results topics) through the same writer.

use csp_ledger_projections::state::EventMeta;
use csp_ledger_schemas::event::FoldEvent;
use uuid::Uuid;

use super::ledger::{Ledger, LedgerError};

use crate::store::audit::chain_hash;
use crate::store::log::{
    Commit, Head, LogError, OutcomeRecord, StoredEvent, StoredOutcomeKind, DLQ_CURSOR,
    EVENTS_CURSOR, RESULTS_CURSOR,
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
            Ok(Ok(())) => {}
            Ok(Err(refused)) => {
                return Err(LedgerError::Replication(format!(
                    "event {} does not fold onto the state: {}; nothing of this batch was \
                     appended",
                    refused.position, refused.reason
                )))
            }
            // `check` missed an assertion of `apply`: still refused before the append.
            Err(_) => {
                return Err(LedgerError::Replication(
                    "a replicated event does not fold onto the state; nothing of this batch \
                     was appended"
                        .into(),
                ))
            }
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
        self.decided = committed;
        Ok(committed)
    }
}

/// The ids of a replicated event that the idempotency index needs.
#[derive(serde::Deserialize)]
struct ReplicatedIds {
    command_id: Uuid,
    correlation_id: Option<String>,
}
