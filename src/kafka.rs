//! Kafka transport: topic creation, the command consumer (exactly once into the log), the
//! outbox publishers (events, results, dead letters, at least once and in order), and the
//! `submit` producer.
//!
//! Exactly once: the consumer stores the next offset of every partition in the same sled batch
//! as the events and outcomes the messages produced, and on every assignment seeks to the
//! offsets stored in sled (Kafka's committed offsets are written too, for lag monitoring
//! only). Publishing reads the log from cursors kept in sled and advances a cursor only after
//! the broker acknowledged everything before it, so a crash repeats messages, never loses or
//! reorders them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use thiserror::Error;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::lease::LeaseStatus;
use crate::ledger::{
    decode_dead_letter, events_with_prev, write_event_json, AnsweredEvent, MessageSource,
    Submission, SUBMIT_BATCH_COMMANDS_MAX,
};
use crate::log::{
    Log, LogError, OutcomeRecord, StoredOutcomeKind, DLQ_CURSOR, EVENTS_CURSOR, RESULTS_CURSOR,
};

/// Events or outcomes published per round before the cursor moves.
pub const PUBLISH_BATCH_MAX: usize = 2000;

/// How long the consumer waits for the first message of a batch.
pub const POLL_WAIT: Duration = Duration::from_millis(100);

/// Failures of the Kafka transport. Edge: logged and retried by the loops; fatal at start-up
/// (exit 1).
#[derive(Debug, Error)]
pub enum IngestError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Stopped(String),
}

/// Topic names and creation settings (`--kafka-*` flags, `CSP_LEDGER_KAFKA_*` variables).
#[derive(Debug, Clone)]
pub struct KafkaOptions {
    pub brokers: String,
    pub group_id: String,
    pub commands_topic: String,
    pub results_topic: String,
    pub events_topic: String,
    pub dlq_topic: String,
    /// Partitions of topics the ledger creates.
    pub partitions: i32,
    /// Replication factor of topics the ledger creates.
    pub replication: i32,
    /// Most commands consumed into one group commit.
    pub batch_commands_max: usize,
    /// The single-partition topic that elects the writer of the group (see `lease`).
    pub leader_topic: String,
    /// How long a leader may be silent before a standby takes over.
    pub lease_timeout: Duration,
}

impl KafkaOptions {
    /// The default topic names of SPEC.md section 8.
    pub fn new(brokers: &str) -> KafkaOptions {
        KafkaOptions {
            brokers: brokers.to_string(),
            group_id: "csp-ledger".into(),
            commands_topic: "csp.commands".into(),
            results_topic: "csp.command-results".into(),
            events_topic: "csp.events".into(),
            dlq_topic: "csp.commands.dlq".into(),
            partitions: 1,
            replication: 1,
            batch_commands_max: SUBMIT_BATCH_COMMANDS_MAX,
            leader_topic: "csp.ledger.leader".into(),
            lease_timeout: Duration::from_secs(6),
        }
    }

    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config
    }
}

/// Retention of the leader topic: heartbeats are only needed while they are recent.
const LEADER_TOPIC_RETENTION_MS: &str = "3600000";

/// Creates the four topics and the leader topic when they are missing. The events topic and
/// the leader topic get one partition whatever `partitions` says: the events topic carries the
/// log in position order (what readers and standbys fold), the leader topic orders claims.
pub fn ensure_topics(options: &KafkaOptions) -> Result<(), IngestError> {
    let admin: AdminClient<DefaultClientContext> = options.client().create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let replication = || TopicReplication::Fixed(options.replication);
    let new = vec![
        NewTopic::new(&options.commands_topic, options.partitions, replication()),
        // The events and results topics are the log's replicas (a standby rebuilds from them):
        // kept forever, not for the broker's default retention.
        NewTopic::new(&options.results_topic, options.partitions, replication())
            .set("retention.ms", "-1"),
        NewTopic::new(&options.events_topic, 1, replication()).set("retention.ms", "-1"),
        NewTopic::new(&options.dlq_topic, options.partitions, replication()),
        NewTopic::new(&options.leader_topic, 1, replication())
            .set("retention.ms", LEADER_TOPIC_RETENTION_MS),
    ];
    let results = runtime.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))?;
    for result in results {
        match result {
            Ok(topic) => info!(message = "Created topic.", topic = %topic),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(IngestError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// The name under which a consumer offset of `topic`/`partition` is stored in the log.
pub fn offset_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

/// How often the consumer reads the high watermarks to report its lag.
pub const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Receives the lag of a partition: (topic, partition, messages not yet applied).
pub type LagFn = dyn Fn(&str, i32, i64) + Send + Sync;

/// A batch for the writer: submissions and the offsets to store with them.
pub type SubmitFn = dyn Fn(Vec<Submission>, Vec<(String, i64)>) -> Result<(), String> + Send + Sync;

/// Consumes the commands topic until `stop` is set or the lease is lost, handing each batch
/// to `submit` (which returns once the batch is durable).
///
/// Each partition starts at the later of the offset stored in this log (what this instance
/// decided itself) and the group's committed offset (everything before it was decided and
/// published by whichever instance led; a standby that took over has replicated it). Commands
/// between the two are decided again only if neither log nor results topic knew them, and
/// the idempotency index answers the rest as duplicates.
pub fn consume(
    options: &KafkaOptions,
    log: Arc<Log>,
    lease: &LeaseStatus,
    submit: &SubmitFn,
    on_lag: &LagFn,
    stop: &AtomicBool,
) -> Result<(), IngestError> {
    let mut lag_checked = std::time::Instant::now() - LAG_INTERVAL;
    let consumer: BaseConsumer = options
        .client()
        .set("group.id", &options.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // tansu answers a fetch only when the wait runs out, data or not: keep it short.
        .set("fetch.wait.max.ms", "5")
        .create()?;
    // Assignment is explicit: the lease, not the group coordinator, decides who consumes (and
    // against tansu a restarted group member did not always get its partitions back).
    let metadata =
        consumer.fetch_metadata(Some(&options.commands_topic), Duration::from_secs(10))?;
    let mut wanted = TopicPartitionList::new();
    for topic in metadata.topics() {
        for partition in topic.partitions() {
            wanted.add_partition(topic.name(), partition.id());
        }
    }
    let committed = consumer.committed_offsets(wanted.clone(), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for element in wanted.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let stored = log.offset(&offset_key(topic, partition))?;
        let group = committed
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            });
        let start = match (stored, group) {
            (Some(a), Some(b)) => Offset::Offset(a.max(b)),
            (Some(a), None) | (None, Some(a)) => Offset::Offset(a),
            (None, None) => Offset::Beginning,
        };
        info!(message = "Assigned partition.", topic, partition, stored = ?stored, committed = ?group, start = ?start);
        assignment.add_partition_offset(topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    let partitions: Vec<(String, i32)> = assignment
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect();
    while !stop.load(Ordering::Relaxed) {
        if lag_checked.elapsed() >= LAG_INTERVAL {
            lag_checked = std::time::Instant::now();
            for (topic, partition) in &partitions {
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(topic, *partition, Duration::from_millis(500))
                {
                    let next = log.offset(&offset_key(topic, *partition))?.unwrap_or(0);
                    on_lag(topic, *partition, (high - next).max(0));
                }
            }
        }
        let mut submissions = Vec::new();
        let mut next_offsets: Vec<(String, i64)> = Vec::new();
        let mut wait = POLL_WAIT;
        while submissions.len() < options.batch_commands_max {
            let Some(polled) = consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = match polled {
                Ok(message) => message,
                Err(error) => {
                    warn!(message = "Consumer error.", error = %error);
                    break;
                }
            };
            let source = MessageSource {
                topic: message.topic().to_string(),
                partition: message.partition(),
                offset: message.offset(),
                bytes: message.payload().unwrap_or_default().to_vec(),
            };
            let key = offset_key(&source.topic, source.partition);
            match next_offsets.iter_mut().find(|(k, _)| *k == key) {
                Some((_, next)) => *next = source.offset + 1,
                None => next_offsets.push((key, source.offset + 1)),
            }
            let mut submission = match message.payload() {
                Some(bytes) => Submission::parse(None, bytes),
                None => Submission {
                    line: None,
                    parsed: Err(csp_ledger_schemas::MalformedCommand {
                        command_id: None,
                        reason: "the message has no value".into(),
                    }),
                    source: None,
                },
            };
            submission.source = Some(source);
            submissions.push(submission);
        }
        if submissions.is_empty() {
            continue;
        }
        // A lease that lapsed (broker unreachable) comes back with the next acknowledged
        // heartbeat: hold the batch until then. Deposed: nothing of it is written, the next
        // leader consumes it.
        while !lease.held() {
            if lease.deposed() || stop.load(Ordering::Relaxed) {
                return Err(IngestError::Stopped(
                    "this instance no longer holds the lease".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        debug!(message = "Submitting batch.", commands = submissions.len());
        submit(submissions, next_offsets).map_err(IngestError::Stopped)?;
    }
    Ok(())
}

/// Publishes the log's events, outcomes and dead letters from their cursors until `stop`,
/// and commits the consumed offsets of commands whose outcomes are all published to the
/// consumer group (where a standby that takes over resumes).
pub struct Publisher {
    options: KafkaOptions,
    log: Arc<Log>,
    /// Replaced by a new one when librdkafka declares it failed for good (see `send_all`).
    producer: std::sync::Mutex<FutureProducer>,
    /// Commits offsets for the group; never assigned partitions.
    committer: BaseConsumer,
    lease: Arc<LeaseStatus>,
    runtime: tokio::runtime::Runtime,
    /// The event lines of the last rounds, for the results of the same commands (the results
    /// of a round's commands follow its events, so they are almost always here).
    recent: std::sync::Mutex<RecentLines>,
    last_commit: std::sync::Mutex<Instant>,
}

/// Longest time between two offset commits to the group while publishing is busy.
const COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Published event lines of consecutive positions `first..first + lines.len()`.
#[derive(Default)]
struct RecentLines {
    first: u64,
    lines: std::collections::VecDeque<Vec<u8>>,
}

impl RecentLines {
    /// Most lines kept: two rounds of events.
    const MAX: usize = 2 * PUBLISH_BATCH_MAX;

    fn push(&mut self, position: u64, line: &[u8]) {
        if self.first + self.lines.len() as u64 != position {
            self.lines.clear();
            self.first = position;
        }
        self.lines.push_back(line.to_vec());
        if self.lines.len() > Self::MAX {
            self.lines.pop_front();
            self.first += 1;
        }
    }

    /// The lines of `first..first + count`, if all are kept.
    fn get(&self, first: u64, count: usize) -> Option<impl Iterator<Item = &Vec<u8>>> {
        let start = first.checked_sub(self.first)? as usize;
        (start + count <= self.lines.len()).then(|| self.lines.range(start..start + count))
    }
}

/// The line of an event as published: the stored bytes plus `hash` and `prev_hash`, without
/// personal data (it could not be erased from Kafka), and its stream (the message key).
struct PublishedEvent {
    position: u64,
    stream: String,
    line: Vec<u8>,
}

/// Reads `count` events from `first` as they are published, and on to the end of the command
/// the last of them belongs to (fewer at the head of the log).
fn read_published(log: &Log, first: u64, count: usize) -> Result<Vec<PublishedEvent>, LogError> {
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
        let position = stored.position;
        let mut line = Vec::with_capacity(stored.canonical.len() + 160);
        write_event_json(
            &AnsweredEvent {
                stored,
                prev_hash,
                personal: Vec::new(),
            },
            &mut line,
        );
        out.push(PublishedEvent {
            position,
            stream,
            line,
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
            log,
            producer: std::sync::Mutex::new(producer),
            committer,
            lease,
            runtime,
            recent: std::sync::Mutex::new(RecentLines::default()),
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

    /// One round over the three outboxes; returns how many messages were published.
    pub fn publish_pending(&self) -> Result<usize, IngestError> {
        let published = self.publish_events()? + self.publish_outcomes()?;
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
            for event in &events {
                recent.push(event.position, &event.line);
            }
        }
        for PublishedEvent {
            position,
            stream,
            line,
        } in events
        {
            // No `position` header: the position is in the value, and tansu's SQLite storage
            // slows down with every stored header (docs/BENCHMARKS.md).
            records.push((
                self.options.events_topic.clone(),
                stream,
                line,
                OwnedHeaders::new(),
            ));
            last = position;
        }
        let count = records.len();
        let delivered = self.send_all(records)?;
        self.log
            .set_cursor_with_offsets(EVENTS_CURSOR, last + 1, &delivered)?;
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
                    (false, _) => records.push(self.result(record)?),
                }
                end = seq + 1;
            }
            if end == next {
                continue;
            }
            published += records.len();
            let delivered = self.send_all(records)?;
            self.log.set_cursor_with_offsets(cursor, end, &delivered)?;
        }
        Ok(published)
    }

    /// Commits to the consumer group the offsets of every batch whose outcomes are all
    /// published: a standby that takes over starts there (or later, from its own log).
    fn commit_consumed(&self) -> Result<(), IngestError> {
        let published = self
            .log
            .cursor(RESULTS_CURSOR)?
            .min(self.log.cursor(DLQ_CURSOR)?);
        let (offsets, marks) = self.log.offset_marks(published)?;
        if marks.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (key, next) in &offsets {
            if let Some((topic, partition)) = key.rsplit_once('/') {
                if let Ok(partition) = partition.parse() {
                    list.add_partition_offset(topic, partition, Offset::Offset(*next))?;
                }
            }
        }
        match self.committer.commit(&list, CommitMode::Sync) {
            Ok(()) => self.log.remove_offset_marks(marks)?,
            Err(error) => debug!(message = "Offset commit failed; retrying later.", error = %error),
        }
        Ok(())
    }

    fn dead_letter(&self, record: &OutcomeRecord) -> Record {
        let (meta, original) = decode_dead_letter(&record.rejection).unwrap_or((Value::Null, &[]));
        let text = |name: &str| {
            meta[name]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| meta[name].to_string())
        };
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "reason",
                value: Some(text("reason").as_bytes()),
            })
            .insert(Header {
                key: "source_topic",
                value: Some(text("topic").as_bytes()),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(text("partition").as_bytes()),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(text("offset").as_bytes()),
            });
        (
            self.options.dlq_topic.clone(),
            format!("{}/{}", text("partition"), text("offset")),
            original.to_vec(),
            headers,
        )
    }

    /// The outcome line of a stored outcome, as `apply` prints it (without personal data),
    /// plus what a standby needs to answer a retry of the command as the original did:
    /// `body_hash` and `recorded_at_micros` (in the value, not in headers: tansu's SQLite
    /// storage slows down with every stored header). Written directly from the stored bytes.
    fn result(&self, record: &OutcomeRecord) -> Result<Record, IngestError> {
        let original = match record.kind {
            StoredOutcomeKind::Duplicate => self
                .log
                .outcome_at(record.first_position)?
                .unwrap_or_else(|| record.clone()),
            _ => record.clone(),
        };
        let outcome = match record.kind {
            StoredOutcomeKind::Accepted => "accepted",
            StoredOutcomeKind::Duplicate => "duplicate",
            _ => "rejected",
        };
        let mut body = Vec::with_capacity(256);
        body.extend_from_slice(b"{\"command_id\":\"");
        body.extend_from_slice(
            record
                .command_id
                .hyphenated()
                .encode_lower(&mut Uuid::encode_buffer())
                .as_bytes(),
        );
        body.extend_from_slice(b"\",\"outcome\":\"");
        body.extend_from_slice(outcome.as_bytes());
        body.extend_from_slice(b"\",\"events\":[");
        if original.kind == StoredOutcomeKind::Accepted && original.event_count > 0 {
            let (first, count) = (original.first_position, original.event_count as usize);
            let mut write = |i: usize, line: &[u8]| {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(line);
            };
            let found = {
                let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
                let found = match recent.get(first, count) {
                    Some(lines) => {
                        lines.enumerate().for_each(|(i, line)| write(i, line));
                        true
                    }
                    None => false,
                };
                found
            };
            if !found {
                for (i, event) in read_published(&self.log, first, count)?.iter().enumerate() {
                    write(i, &event.line);
                }
            }
        }
        body.extend_from_slice(b"],\"body_hash\":\"");
        let mut hex = [0u8; 32];
        let _ = hex::encode_to_slice(original.body_hash, &mut hex);
        body.extend_from_slice(&hex);
        body.extend_from_slice(b"\",\"recorded_at_micros\":");
        body.extend_from_slice(record.recorded_at_micros.to_string().as_bytes());
        if original.kind != StoredOutcomeKind::Accepted
            && serde_json::from_slice::<serde::de::IgnoredAny>(&original.rejection).is_ok()
        {
            body.extend_from_slice(b",\"rejection\":");
            body.extend_from_slice(&original.rejection);
        }
        body.push(b'}');
        let mut headers = OwnedHeaders::new();
        if let Some(correlation) = &record.correlation_id {
            headers = headers.insert(Header {
                key: "correlation_id",
                value: Some(correlation.as_bytes()),
            });
        }
        Ok((
            self.options.results_topic.clone(),
            record.command_id.to_string(),
            body,
            headers,
        ))
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
fn enqueue<'a, K, P>(
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

/// The partition key of a command line: the partner it is about (so that one partner's
/// commands stay in order), else the customer, else the command id.
pub fn command_key(line: &str) -> String {
    let value: Value = serde_json::from_str(line).unwrap_or(Value::Null);
    let payload = &value["payload"];
    for field in ["partner_id", "provider_id", "reseller_id", "customer_id"] {
        if let Some(id) = payload[field].as_str() {
            return id.to_string();
        }
    }
    value["command_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::nil().to_string())
}

/// Sends command lines to the commands topic, keyed by [`command_key`]; with `wait`, reads
/// the results topic until every sent command has its outcome (or `wait` runs out) and returns
/// the outcome lines in input order.
pub fn submit_lines(
    options: &KafkaOptions,
    lines: &[String],
    wait: Option<Duration>,
) -> Result<Vec<String>, IngestError> {
    let producer: FutureProducer = options
        .client()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Start reading results from their current end before anything is sent.
    let consumer: BaseConsumer = options
        .client()
        .set("group.id", format!("csp-ledger-submit-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    if wait.is_some() {
        let metadata =
            consumer.fetch_metadata(Some(&options.results_topic), Duration::from_secs(10))?;
        let mut assignment = TopicPartitionList::new();
        for topic in metadata.topics() {
            for partition in topic.partitions() {
                let (_, high) = consumer.fetch_watermarks(
                    &options.results_topic,
                    partition.id(),
                    Duration::from_secs(10),
                )?;
                assignment.add_partition_offset(
                    &options.results_topic,
                    partition.id(),
                    Offset::Offset(high),
                )?;
            }
        }
        consumer.assign(&assignment)?;
    }
    let mut pending = Vec::with_capacity(lines.len());
    for line in lines {
        let key = command_key(line);
        let record = FutureRecord::to(&options.commands_topic)
            .key(&key)
            .payload(line.as_bytes());
        pending.push(enqueue(&producer, record)?);
    }
    runtime.block_on(async {
        for delivery in pending {
            delivery
                .await
                .map_err(|_| IngestError::Stopped("the producer was dropped".into()))?
                .map_err(|(error, _)| IngestError::Kafka(error))?;
        }
        Ok::<(), IngestError>(())
    })?;
    let Some(wait) = wait else {
        return Ok(Vec::new());
    };
    let ids: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["command_id"].as_str().map(str::to_string))
                .unwrap_or_default()
        })
        .collect();
    let mut answers: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + wait;
    while answers.len() < ids.iter().filter(|i| !i.is_empty()).count()
        && std::time::Instant::now() < deadline
    {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let key = message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            if ids.contains(&key) {
                let payload =
                    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
                answers.entry(key).or_insert(payload);
            }
        }
    }
    Ok(ids
        .iter()
        .map(|id| {
            answers.get(id).cloned().unwrap_or_else(|| {
                json!({"command_id": id, "outcome": null, "error": "no result within the wait"})
                    .to_string()
            })
        })
        .collect())
}

/// The headers of a message as (name, value) pairs (tests and tools).
pub fn header_pairs(headers: Option<&rdkafka::message::BorrowedHeaders>) -> Vec<(String, String)> {
    headers
        .map(|h| {
            h.iter()
                .map(|header| {
                    (
                        header.key.to_string(),
                        String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
