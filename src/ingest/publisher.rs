//! The outbox publisher: events, results and dead letters from cursors kept in sled, at
//! least once and in order; group offsets committed once outcomes are out.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csp_ledger_schemas::fencing::EventsRecord;
use csp_ledger_schemas::wire::{
    DeadLetter, DlqMessage, PublishedEvent, ResultFence, ResultMessage, TopicMessage,
};
use csp_ledger_schemas::{OutcomeKind, Rejection};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use crate::ingest::lease::LeaseStatus;
use crate::store::log::{
    Log, LogError, OutcomeRecord, StoredOutcomeKind, COMMITTED_CURSOR, COMMITTED_POSITION_CURSOR,
    DLQ_CURSOR, EVENTS_CURSOR, RESULTS_CURSOR,
};
use crate::store::read::events_with_prev;

use super::{offset_key, PUBLISH_BATCH_MAX};
use super::{IngestError, KafkaOptions};

/// Publishes the log's events, outcomes and dead letters from their cursors until `stop`,
/// each round closed by a commit record on the events topic (the term rule,
/// `schemas::fencing`), and commits the consumed offsets of committed commands to the
/// consumer group (for lag monitoring; a successor resumes from the commit records).
pub struct Publisher {
    options: KafkaOptions,
    /// The leader term every record is tagged with (`csp-term`).
    term: u64,
    /// Per commands partition, the group's committed offset as last seen: never committed
    /// backwards.
    group_floor: std::sync::Mutex<Option<std::collections::HashMap<String, i64>>>,
    log: Arc<Log>,
    /// Replaced by a new one when librdkafka declares it failed for good (see `send_all`).
    producer: std::sync::Mutex<FutureProducer>,
    /// Commits offsets for the group; never assigned partitions.
    committer: BaseConsumer,
    lease: Arc<LeaseStatus>,
    runtime: tokio::runtime::Runtime,
    /// The events of the last rounds, for the results of the same commands (the results of a
    /// round's commands follow its events, so they are almost always here).
    recent: std::sync::Mutex<RecentEvents>,
    last_commit: std::sync::Mutex<Instant>,
}

/// Longest time between two offset commits to the group while publishing is busy.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Published events of consecutive positions `first..first + events.len()`.
#[derive(Default)]
struct RecentEvents {
    first: u64,
    events: std::collections::VecDeque<PublishedEvent<'static>>,
}

impl RecentEvents {
    /// Most events kept: two rounds of events.
    const MAX: usize = 2 * PUBLISH_BATCH_MAX;

    fn push(&mut self, event: &PublishedEvent<'_>) {
        if self.first + self.events.len() as u64 != event.position {
            self.events.clear();
            self.first = event.position;
        }
        self.events.push_back(PublishedEvent {
            position: event.position,
            canonical: Cow::Owned(event.canonical.to_vec()),
            hash: event.hash,
            prev_hash: event.prev_hash,
        });
        if self.events.len() > Self::MAX {
            self.events.pop_front();
            self.first += 1;
        }
    }

    /// The events of `first..first + count`, if all are kept.
    fn get(
        &self,
        first: u64,
        count: usize,
    ) -> Option<impl Iterator<Item = &PublishedEvent<'static>>> {
        let start = first.checked_sub(self.first)? as usize;
        (start + count <= self.events.len()).then(|| self.events.range(start..start + count))
    }
}

/// An event as published (`schemas::wire::PublishedEvent`: without personal data, which could
/// not be erased from Kafka) and its stream (the message key).
struct OutgoingEvent {
    stream: String,
    event: PublishedEvent<'static>,
}

/// A published event borrowing the parts of another.
fn borrowed<'a>(event: &'a PublishedEvent<'_>) -> PublishedEvent<'a> {
    PublishedEvent {
        position: event.position,
        canonical: Cow::Borrowed(&event.canonical),
        hash: event.hash,
        prev_hash: event.prev_hash,
    }
}

/// A producer record of a wire message.
fn to_record(topic: &str, message: TopicMessage) -> Record {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &message.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    (topic.to_string(), message.key, message.value, headers)
}

/// Reads `count` events from `first` as they are published, and on to the end of the command
/// the last of them belongs to (fewer at the head of the log).
fn read_published(log: &Log, first: u64, count: usize) -> Result<Vec<OutgoingEvent>, LogError> {
    #[derive(serde::Deserialize)]
    struct Ids<'a> {
        #[serde(borrow)]
        stream: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        command_id: std::borrow::Cow<'a, str>,
    }
    let mut out = Vec::with_capacity(count.min(PUBLISH_BATCH_MAX));
    let mut last_command = String::new();
    for item in events_with_prev(log, first) {
        let (stored, prev_hash) = item?;
        let ids =
            serde_json::from_slice::<Ids>(&stored.canonical).map_err(|e| LogError::Corrupt {
                position: Some(stored.position),
                reason: format!("stored event without a stream or command id: {e}"),
            })?;
        // A round ends between two commands, never inside one: a standby that takes over
        // after the round holds each command's events whole.
        if out.len() >= count && ids.command_id != last_command.as_str() {
            break;
        }
        if ids.command_id != last_command.as_str() {
            last_command = ids.command_id.into_owned();
        }
        let stream = ids.stream.into_owned();
        out.push(OutgoingEvent {
            stream,
            event: PublishedEvent {
                position: stored.position,
                canonical: Cow::Owned(stored.canonical),
                hash: stored.hash,
                prev_hash,
            },
        });
    }
    Ok(out)
}

/// A record for the producer: topic, key, payload, headers.
type Record = (String, String, Vec<u8>, OwnedHeaders);

impl Publisher {
    pub fn new(
        options: &KafkaOptions,
        log: Arc<Log>,
        lease: Arc<LeaseStatus>,
    ) -> Result<Publisher, IngestError> {
        let producer = output_producer(options)?;
        let committer: BaseConsumer = options
            .client()
            .set("group.id", &options.group_id)
            .set("enable.auto.commit", "false")
            .create()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Publisher {
            options: options.clone(),
            term: lease.term(),
            group_floor: std::sync::Mutex::new(None),
            log,
            producer: std::sync::Mutex::new(producer),
            committer,
            lease,
            runtime,
            recent: std::sync::Mutex::new(RecentEvents::default()),
            last_commit: std::sync::Mutex::new(Instant::now()),
        })
    }

    /// Publishes until `stop` is set, waking when `kick` fires (after commits) or every 200 ms.
    pub fn run(&self, kick: &crossbeam_channel::Receiver<()>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match self.publish_pending() {
                Ok(0) => {
                    let _ = kick.recv_timeout(Duration::from_millis(200));
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(message = "Publishing failed; retrying.", error = %error);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }

    /// One round over the three outboxes, closed by a commit record; returns how many
    /// messages were published.
    pub fn publish_pending(&self) -> Result<usize, IngestError> {
        let published = self.publish_events()? + self.publish_outcomes()?;
        let published = published + self.commit_round()?;
        // The offset commit waits for the broker: under load once per `COMMIT_INTERVAL`, not
        // once per round, so that it does not delay the next round's results.
        let due = {
            let last = self.last_commit.lock().unwrap_or_else(|p| p.into_inner());
            published == 0 || last.elapsed() >= COMMIT_INTERVAL
        };
        if due {
            self.commit_consumed()?;
            *self.last_commit.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
        Ok(published)
    }

    /// Sends every record at once, waits for all acknowledgements, and returns the next offset
    /// per partition of what was delivered, keyed as the consumer offsets are.
    fn send_all(&self, records: Vec<Record>) -> Result<Vec<(String, i64)>, IngestError> {
        if !self.lease.held() {
            return Err(IngestError::Stopped(
                "this instance does not hold the lease".into(),
            ));
        }
        let started = Instant::now();
        let count = records.len();
        let delivered = self
            .enqueue_all(records)
            .and_then(|pending| self.wait_for(pending, started, count));
        if delivered.is_err() {
            self.replace_producer_if_failed();
        }
        delivered
    }

    /// With `enable.gapless.guarantee`, a batch that fails for good makes librdkafka fail the
    /// producer instead of delivering the batches after it (which would put events out of
    /// order): the round fails, and the next one starts over on a new producer from the
    /// cursor (what was delivered before the failed batch goes out again, identical).
    fn replace_producer_if_failed(&self) {
        let mut producer = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(fatal) = producer.client().fatal_error() else {
            return;
        };
        warn!(message = "The producer failed for good; replacing it.", error = ?fatal);
        match output_producer(&self.options) {
            Ok(fresh) => *producer = fresh,
            Err(error) => warn!(message = "No new producer yet.", error = %error),
        }
    }

    /// Hands every record to the producer at once (so that many are in flight together).
    fn enqueue_all(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<(String, rdkafka::producer::DeliveryFuture)>, IngestError> {
        let producer = self.producer.lock().unwrap_or_else(|p| p.into_inner());
        let mut pending = Vec::with_capacity(records.len());
        for (topic, key, payload, headers) in records {
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            pending.push((topic.clone(), enqueue(&producer, record)?));
        }
        Ok(pending)
    }

    /// Waits for the acknowledgements of `pending`; returns the next offset per partition.
    fn wait_for(
        &self,
        pending: Vec<(String, rdkafka::producer::DeliveryFuture)>,
        started: Instant,
        count: usize,
    ) -> Result<Vec<(String, i64)>, IngestError> {
        self.runtime.block_on(async {
            let mut next: Vec<(String, i64)> = Vec::new();
            for (topic, delivery) in pending {
                let rdkafka::producer::future_producer::Delivery {
                    partition, offset, ..
                } = delivery
                    .await
                    .map_err(|_| IngestError::Stopped("the producer was dropped".into()))?
                    .map_err(|(error, _)| IngestError::Kafka(error))?;
                let key = offset_key(&topic, partition);
                match next.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, kept)) => *kept = (*kept).max(offset + 1),
                    None => next.push((key, offset + 1)),
                }
            }
            debug!(message = "Published.", count, topic = ?next.first().map(|(k, _)| k), seconds = started.elapsed().as_secs_f64());
            Ok(next)
        })
    }

    fn publish_events(&self) -> Result<usize, IngestError> {
        let next = self.log.cursor(EVENTS_CURSOR)?.max(1);
        let head = self.log.head().position;
        if next > head {
            return Ok(0);
        }
        let events = read_published(&self.log, next, PUBLISH_BATCH_MAX)?;
        let mut records = Vec::with_capacity(events.len());
        let mut last = next - 1;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for outgoing in &events {
                recent.push(&outgoing.event);
            }
        }
        for OutgoingEvent { stream, event } in events {
            let mut line = Vec::with_capacity(event.canonical.len() + 160);
            event.encode(&mut line);
            // No headers: the position is in the value, and tansu's SQLite storage slows
            // down with every stored header (docs/BENCHMARKS.md). Untagged events are
            // selected by the commit record that names their chain (`schemas::fencing`).
            records.push((
                self.options.events_topic.clone(),
                stream,
                line,
                OwnedHeaders::new(),
            ));
            last = event.position;
        }
        let count = records.len();
        // The offsets delivered are not stored: where this instance reads the topic as a
        // standby again is decided by the term rule (its own term-start), not by its sends.
        self.send_all(records)?;
        self.log.set_cursor(EVENTS_CURSOR, last + 1)?;
        Ok(count)
    }

    fn publish_outcomes(&self) -> Result<usize, IngestError> {
        let mut published = 0;
        // A result goes out only after its events: a standby that rebuilds from both topics
        // then never holds a result whose events it cannot have.
        let events_published = self.log.cursor(EVENTS_CURSOR)?.max(1);
        for (cursor, dead_letters) in [(RESULTS_CURSOR, false), (DLQ_CURSOR, true)] {
            let next = self.log.cursor(cursor)?.max(1);
            if next >= self.log.head().next_outcome_seq {
                continue;
            }
            let outcomes = self.log.outcomes_from(next, PUBLISH_BATCH_MAX)?;
            let mut records = Vec::new();
            let mut end = next;
            for (seq, record) in &outcomes {
                let events_end = record.first_position + u64::from(record.event_count);
                if !dead_letters
                    && record.kind == StoredOutcomeKind::Accepted
                    && record.event_count > 0
                    && events_end > events_published
                {
                    break;
                }
                match (dead_letters, record.kind) {
                    (true, StoredOutcomeKind::DeadLetter) => records.push(self.dead_letter(record)),
                    (false, StoredOutcomeKind::DeadLetter) | (true, _) => {}
                    (false, _) => records.push(self.result(record, *seq)?),
                }
                end = seq + 1;
            }
            if end == next {
                continue;
            }
            published += records.len();
            self.send_all(records)?;
            self.log.set_cursor(cursor, end)?;
        }
        Ok(published)
    }

    /// Closes the round: a commit record of this term up to the last whole batch whose
    /// outcomes are all published (its events went out before its results). Readers take
    /// the round's events and results only once it is in; a successor resumes consuming at
    /// its `consumed` offsets. Returns 1 when a commit was published.
    fn commit_round(&self) -> Result<usize, IngestError> {
        let published = self
            .log
            .cursor(RESULTS_CURSOR)?
            .max(1)
            .min(self.log.cursor(DLQ_CURSOR)?.max(1));
        let committed = self.log.cursor(COMMITTED_CURSOR)?.max(1);
        let Some((end, last_position, last_hash)) = self.log.round_cut(published)? else {
            return Ok(0);
        };
        if end <= committed {
            return Ok(0);
        }
        let (offsets, _) = self.log.offset_marks(end)?;
        let commands = format!("{}/", self.options.commands_topic);
        let consumed = offsets
            .into_iter()
            .filter(|(key, _)| key.starts_with(&commands))
            .collect();
        let message = EventsRecord::Commit {
            term: self.term,
            last_position,
            last_hash,
            last_outcome: end - 1,
            consumed,
        }
        .encode();
        self.send_all(vec![to_record(&self.options.events_topic, message)])?;
        self.log.set_cursor(COMMITTED_CURSOR, end)?;
        self.log
            .set_cursor(COMMITTED_POSITION_CURSOR, last_position)?;
        self.log.remove_round_marks_before(end)?;
        Ok(1)
    }

    /// Commits to the consumer group the offsets of every batch a commit record covers, never
    /// below what the group holds (a takeover never moves it backwards). The group offsets
    /// serve lag monitoring and consumers that do not read the commit records; a successor
    /// resumes from the `consumed` offsets of the commit records it accepted.
    fn commit_consumed(&self) -> Result<(), IngestError> {
        if !self.lease.held() {
            return Ok(());
        }
        let committed = self.log.cursor(COMMITTED_CURSOR)?;
        let (offsets, marks) = self.log.offset_marks(committed)?;
        if marks.is_empty() {
            return Ok(());
        }
        let commands = format!("{}/", self.options.commands_topic);
        let offsets: Vec<(String, i64)> = offsets
            .into_iter()
            .filter(|(key, _)| key.starts_with(&commands))
            .collect();
        let mut floor = self.group_floor.lock().unwrap_or_else(|p| p.into_inner());
        if floor.is_none() {
            *floor = Some(self.group_offsets(&offsets)?);
        }
        let known = floor.get_or_insert_with(Default::default);
        let mut list = TopicPartitionList::new();
        for (key, next) in &offsets {
            if known.get(key).is_some_and(|held| held >= next) {
                continue;
            }
            if let Some((topic, partition)) = key.rsplit_once('/') {
                if let Ok(partition) = partition.parse() {
                    list.add_partition_offset(topic, partition, Offset::Offset(*next))?;
                }
            }
        }
        if list.count() == 0 {
            self.log.remove_offset_marks(marks)?;
            return Ok(());
        }
        match self.committer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                for (key, next) in offsets {
                    let held = known.entry(key).or_insert(next);
                    *held = (*held).max(next);
                }
                self.log.remove_offset_marks(marks)?
            }
            Err(error) => debug!(message = "Offset commit failed; retrying later.", error = %error),
        }
        Ok(())
    }

    /// The group's committed offsets of the partitions named in `offsets`.
    fn group_offsets(
        &self,
        offsets: &[(String, i64)],
    ) -> Result<std::collections::HashMap<String, i64>, IngestError> {
        let mut wanted = TopicPartitionList::new();
        for (key, _) in offsets {
            if let Some((topic, partition)) = key.rsplit_once('/') {
                if let Ok(partition) = partition.parse() {
                    wanted.add_partition(topic, partition);
                }
            }
        }
        let committed = self
            .committer
            .committed_offsets(wanted, Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((offset_key(e.topic(), e.partition()), next)),
                _ => None,
            })
            .collect())
    }

    fn dead_letter(&self, record: &OutcomeRecord) -> Record {
        let message = match DeadLetter::decode(&record.rejection) {
            Ok(letter) => DlqMessage(letter).encode(),
            Err(error) => {
                // Only this ledger writes dead-letter payloads: a damaged one still goes out,
                // as it is, with the reason it could not be read.
                warn!(message = "Stored dead letter does not decode; published as stored.", error = %error);
                DlqMessage(DeadLetter {
                    reason: format!("stored dead letter does not decode: {error}").into(),
                    detail: None,
                    topic: Cow::Borrowed(""),
                    partition: -1,
                    offset: -1,
                    original: Cow::Borrowed(&record.rejection),
                })
                .encode()
            }
        };
        to_record(&self.options.dlq_topic, message)
    }

    /// The result of a stored outcome (`schemas::wire::ResultMessage`): the outcome line as
    /// `apply` prints it (without personal data), plus what a standby needs to answer a retry
    /// of the command as the original did (`body_hash`, `recorded_at_micros`).
    fn result(&self, record: &OutcomeRecord, seq: u64) -> Result<Record, IngestError> {
        let original = match record.kind {
            StoredOutcomeKind::Duplicate => self
                .log
                .outcome_at(record.first_position)?
                .unwrap_or_else(|| record.clone()),
            _ => record.clone(),
        };
        let outcome = match record.kind {
            StoredOutcomeKind::Accepted => OutcomeKind::Accepted,
            StoredOutcomeKind::Duplicate => OutcomeKind::Duplicate,
            _ => OutcomeKind::Rejected,
        };
        let rejection = match original.kind {
            StoredOutcomeKind::Accepted => None,
            _ => Rejection::decode(&original.rejection).ok(),
        };
        let message = |events: Vec<PublishedEvent<'_>>| {
            ResultMessage {
                command_id: record.command_id,
                outcome,
                events,
                body_hash: original.body_hash,
                recorded_at_micros: record.recorded_at_micros,
                rejection: rejection.as_ref().map(Cow::Borrowed),
                correlation_id: record.correlation_id.as_deref().map(Cow::Borrowed),
                fence: Some(ResultFence {
                    term: self.term,
                    outcome_seq: seq,
                }),
            }
            .encode()
        };
        let message = if original.kind == StoredOutcomeKind::Accepted && original.event_count > 0 {
            let (first, count) = (original.first_position, original.event_count as usize);
            let cached = {
                let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                recent
                    .get(first, count)
                    .map(|events| message(events.map(borrowed).collect()))
            };
            match cached {
                Some(message) => message,
                None => {
                    let events = read_published(&self.log, first, count)?;
                    message(events.iter().map(|e| borrowed(&e.event)).collect())
                }
            }
        } else {
            message(Vec::new())
        };
        Ok(to_record(&self.options.results_topic, message))
    }
}

/// The idempotent producer of the outboxes, knowing its topics' leaders already (otherwise
/// the first send waits for the producer's own metadata request: half a second against tansu).
fn output_producer(options: &KafkaOptions) -> Result<FutureProducer, IngestError> {
    let producer: FutureProducer = options
        .client()
        .set("enable.idempotence", "true")
        // A batch that fails for good stops the producer rather than leave a gap that later
        // batches would be delivered after (out of order).
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        // Not shorter: a message that times out is not covered by the gapless guarantee, and
        // with 1.5 s the mock-cluster test saw later events delivered before it. The price: a
        // leader cut off from the broker with sends in flight for longer than the lease may
        // still land them after a standby took over (ARCHITECTURE.md, Failover).
        .set("message.timeout.ms", "30000")
        .create()?;
    for topic in [
        &options.events_topic,
        &options.results_topic,
        &options.dlq_topic,
    ] {
        if let Err(error) = producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
        {
            warn!(message = "No metadata for an output topic yet.", topic, error = %error);
        }
    }
    Ok(producer)
}

/// Enqueues a record now (so that many are in flight at once), waiting while the local queue
/// is full.
pub(super) fn enqueue<'a, K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'a, K, P>,
) -> Result<rdkafka::producer::DeliveryFuture, IngestError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(IngestError::Kafka(error)),
        }
    }
}
