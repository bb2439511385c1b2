//! The hot standby: an instance that does not hold the lease follows `csp.events` and
//! `csp.command-results` into its own log (the same hash chain, verified event by event), so
//! that its read models answer queries and it can take over the moment the leader's lease runs
//! out. An instance with an empty directory rebuilds its whole log this way.
//!
//! Events come back exactly as the leader stored them: the published JSON is the canonical
//! bytes followed by `hash` and `prev_hash` (personal data never goes to Kafka, so a rebuilt
//! log has commitments without the clear values). Results give the idempotency index what the
//! events cannot: rejected commands and the body hash of accepted ones. The consumed offsets
//! of both topics are stored in the same commit as what they brought, so following resumes
//! exactly after a crash.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use csp_ledger_schemas::wire::{PublishedEvent, ResultMessage};
use csp_ledger_schemas::{OutcomeKind, RejectionCode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::ingest::lease::LeaseStatus;
use crate::ingest::{offset_key, IngestError, KafkaOptions};
use crate::store::log::{Head, Log, OutcomeRecord, StoredEvent, StoredOutcomeKind};
use crate::writer::LedgerError;

/// Hands a replicated batch to the single writer; returns the new head once it is durable.
pub type ReplicateFn = dyn Fn(Vec<StoredEvent>, Vec<OutcomeRecord>, Vec<(String, i64)>) -> Result<Head, LedgerError>
    + Send
    + Sync;

/// Most messages taken into one replicated commit.
const FOLLOW_BATCH_MAX: usize = 8192;

/// Recovers the stored form of an event published on the events topic
/// (`schemas::wire::PublishedEvent`).
pub fn parse_published_event(bytes: &[u8]) -> Result<StoredEvent, String> {
    let published = PublishedEvent::decode(bytes).map_err(|error| error.to_string())?;
    Ok(StoredEvent {
        position: published.position,
        hash: published.hash,
        canonical: published.canonical.into_owned(),
    })
}

/// The idempotency record a published result (`schemas::wire::ResultMessage`) stands for:
/// accepted and rejected outcomes (the first decision of a command id); `None` for
/// duplicates, conflicts and malformed commands, which own nothing, and for values that are
/// not a result.
pub fn parse_result(bytes: &[u8], headers: &[(String, String)]) -> Option<OutcomeRecord> {
    let result = ResultMessage::decode(bytes, headers).ok()?;
    let mut record = OutcomeRecord {
        command_id: result.command_id,
        body_hash: result.body_hash,
        kind: StoredOutcomeKind::Accepted,
        first_position: 0,
        event_count: 0,
        recorded_at_micros: result.recorded_at_micros,
        correlation_id: result.correlation_id.map(Cow::into_owned),
        rejection: Vec::new(),
    };
    match result.outcome {
        OutcomeKind::Accepted => {
            record.first_position = result.events.first().map_or(0, |e| e.position);
            record.event_count = u32::try_from(result.events.len()).ok()?;
        }
        OutcomeKind::Rejected => {
            let rejection = result.rejection?;
            match rejection.code {
                RejectionCode::CommandIdConflict | RejectionCode::MalformedCommand => return None,
                _ => {}
            }
            record.kind = StoredOutcomeKind::Rejected;
            rejection.encode(&mut record.rejection);
        }
        OutcomeKind::Duplicate => return None,
    }
    Some(record)
}

/// Follows the events and results topics into the log until this instance holds the lease
/// and has read both topics to the end (returns `Ok(true)`: it may lead now), or until `stop`
/// is set or the lease is lost for good (`Ok(false)`).
pub fn follow(
    options: &KafkaOptions,
    log: Arc<Log>,
    lease: &LeaseStatus,
    replicate: &ReplicateFn,
    stop: &AtomicBool,
) -> Result<bool, IngestError> {
    let consumer: BaseConsumer = options
        .client()
        .set("group.id", format!("{}.follower", options.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let partitions = assign_followed(&consumer, options, &log)?;
    let mut follower = Follower {
        options,
        log,
        pending: BTreeMap::new(),
        unstored: HashMap::new(),
        read: HashMap::new(),
        targets: None,
    };

    while !stop.load(Ordering::Relaxed) {
        if lease.deposed() {
            return Ok(false);
        }
        let batch = follower.poll_batch(&consumer);
        let taken = batch.taken;
        follower.replicate_ready(batch, replicate)?;

        if !lease.held() {
            follower.targets = None;
            continue;
        }
        // Leading now: read both topics to the end the broker had when the lease was won (the
        // old leader stopped writing before its lease ran out), then hand over.
        if follower.targets.is_none() {
            let wanted = end_offsets(&consumer, &partitions)?;
            info!(message = "Won the lease; catching up before leading.", targets = ?wanted);
            follower.targets = Some(wanted);
        }
        if follower.caught_up() && taken == 0 {
            follower.hand_over();
            return Ok(true);
        }
    }
    Ok(false)
}

/// Assigns every partition of the events and results topics to `consumer`, each from the
/// offset stored in the log (or the beginning); returns them.
fn assign_followed(
    consumer: &BaseConsumer,
    options: &KafkaOptions,
    log: &Log,
) -> Result<Vec<(String, i32)>, IngestError> {
    let mut assignment = TopicPartitionList::new();
    let mut partitions: Vec<(String, i32)> = Vec::new();
    for topic in [&options.events_topic, &options.results_topic] {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                let stored = log.offset(&offset_key(t.name(), p.id()))?;
                let start = stored.map_or(Offset::Beginning, Offset::Offset);
                info!(message = "Following.", topic = t.name(), partition = p.id(), start = ?start);
                assignment.add_partition_offset(t.name(), p.id(), start)?;
                partitions.push((t.name().to_string(), p.id()));
            }
        }
    }
    consumer.assign(&assignment)?;
    Ok(partitions)
}

/// The high watermark of each partition: the end to read before leading.
fn end_offsets(
    consumer: &BaseConsumer,
    partitions: &[(String, i32)],
) -> Result<Targets, IngestError> {
    let mut wanted = Vec::new();
    for (topic, partition) in partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(10))?;
        wanted.push(((topic.clone(), *partition), high));
    }
    Ok(wanted)
}

/// Per partition ((topic, partition)), the offset to read up to before leading.
type Targets = Vec<((String, i32), i64)>;

/// What one poll of the followed topics brought.
struct Polled {
    /// The idempotency records of the results read.
    results: Vec<OutcomeRecord>,
    /// Per results partition, the offset after the last message read.
    results_next: Vec<(String, i64)>,
    /// How many messages were read.
    taken: usize,
}

/// What a follower keeps between polls.
struct Follower<'a> {
    options: &'a KafkaOptions,
    log: Arc<Log>,
    // Events read but not yet appended (a multi-partition events topic may deliver out of
    // position order), and per events partition the (offset, position) not yet stored.
    pending: BTreeMap<u64, StoredEvent>,
    unstored: HashMap<i32, VecDeque<(i64, u64)>>,
    // Next offset read per partition (to tell when the topics are read to the end).
    read: HashMap<(String, i32), i64>,
    /// While leading: the end of each partition to read before handing over.
    targets: Option<Targets>,
}

impl Follower<'_> {
    /// Reads up to [`FOLLOW_BATCH_MAX`] messages from both topics.
    fn poll_batch(&mut self, consumer: &BaseConsumer) -> Polled {
        let mut batch = Polled {
            results: Vec::new(),
            results_next: Vec::new(),
            taken: 0,
        };
        let mut wait = Duration::from_millis(100);
        while batch.taken < FOLLOW_BATCH_MAX {
            let Some(polled) = consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = match polled {
                Ok(message) => message,
                Err(error) => {
                    warn!(message = "Follower read failed.", error = %error);
                    break;
                }
            };
            batch.taken += 1;
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            self.read.insert((topic.to_string(), partition), offset + 1);
            let payload = message.payload().unwrap_or_default();
            if topic == self.options.events_topic {
                self.take_event(payload, topic, partition, offset);
            } else {
                let headers = crate::ingest::header_pairs(message.headers());
                if let Some(record) = parse_result(payload, &headers) {
                    batch.results.push(record);
                }
                let key = offset_key(topic, partition);
                match batch.results_next.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, next)) => *next = offset + 1,
                    None => batch.results_next.push((key, offset + 1)),
                }
            }
        }
        batch
    }

    /// Keeps an event read from the events topic until it can be appended.
    fn take_event(&mut self, payload: &[u8], topic: &str, partition: i32, offset: i64) {
        match parse_published_event(payload) {
            Ok(event) => {
                self.unstored
                    .entry(partition)
                    .or_default()
                    .push_back((offset, event.position));
                self.pending.entry(event.position).or_insert(event);
            }
            Err(reason) => {
                warn!(message = "Not an event; skipped.", topic, partition, offset, reason = %reason);
                self.unstored
                    .entry(partition)
                    .or_default()
                    .push_back((offset, 0));
            }
        }
    }

    /// Hands the events that continue the log, the results and the offsets they stand for
    /// to `replicate`.
    fn replicate_ready(
        &mut self,
        batch: Polled,
        replicate: &ReplicateFn,
    ) -> Result<(), IngestError> {
        let head = self.log.head().position;
        let mut events = Vec::new();
        let mut next = head + 1;
        while let Some(entry) = self.pending.first_entry() {
            let position = *entry.key();
            if position <= head {
                // Already here: compared with the local event (a fork shows up here).
                events.push(entry.remove());
            } else if position == next {
                events.push(entry.remove());
                next += 1;
            } else {
                break;
            }
        }
        let new_head = next - 1;
        let mut offsets = batch.results_next;
        for (partition, queue) in self.unstored.iter_mut() {
            let mut stored = None;
            while queue
                .front()
                .is_some_and(|(_, position)| *position <= new_head)
            {
                stored = queue.pop_front().map(|(offset, _)| offset + 1);
            }
            if let Some(next) = stored {
                offsets.push((offset_key(&self.options.events_topic, *partition), next));
            }
        }
        let results = batch.results;
        if !events.is_empty() || !results.is_empty() || !offsets.is_empty() {
            debug!(
                message = "Replicating.",
                events = events.len(),
                results = results.len()
            );
            replicate(events, results, offsets)?;
        }
        Ok(())
    }

    /// Whether every partition has been read (or stored) up to its target.
    fn caught_up(&self) -> bool {
        self.targets.as_ref().is_some_and(|wanted| {
            wanted.iter().all(|(key, high)| {
                *high == 0
                    || self.read.get(key).copied().unwrap_or(0) >= *high
                    || self
                        .log
                        .offset(&offset_key(&key.0, key.1))
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                        >= *high
            })
        })
    }

    /// Logs the handover, and the events left behind after a gap (never appended).
    fn hand_over(&self) {
        if !self.pending.is_empty() {
            // Published after a gap that the old leader never filled (possible only with
            // a multi-partition events topic): never acknowledged, so never a result.
            warn!(message = "Events after a gap on the events topic are dropped.", count = self.pending.len(), first = ?self.pending.keys().next());
        }
        info!(
            message = "Caught up; taking over.",
            head = self.log.head().position
        );
    }
}
