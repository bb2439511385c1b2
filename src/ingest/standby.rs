//! The hot standby: an instance that does not hold the lease follows `csp.events` and
//! `csp.command-results` into its own log (the same hash chain, verified event by event), so
//! that its read models answer queries and it can take over the moment the leader's lease runs
//! out. An instance with an empty directory rebuilds its whole log this way.
//!
//! It reads through the term rule (`schemas::fencing::TermReader`): only events a commit
//! record of their term made final are replicated, whole rounds at a time; a result only once
//! a commit of its term covers it; nothing of a term after a newer term-start. A deposed
//! leader's late records are therefore never replicated, and neither is part of a command.
//! Taking over, an instance writes its own term-start and leads only once it has read it back:
//! the log it continues is the one every reader accepted up to that record.
//!
//! Events come back exactly as the leader stored them: the published JSON is the canonical
//! bytes followed by `hash` and `prev_hash` (personal data never goes to Kafka, so a rebuilt
//! log has commitments without the clear values). Results give the idempotency index what the
//! events cannot: rejected commands and the body hash of accepted ones. The consumed offsets
//! of both topics are stored in the same commit as what they brought, so following resumes
//! exactly after a crash.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use csp_ledger_schemas::fencing::{EventsRecord, FencingError, TermReader, Verdict};
use csp_ledger_schemas::wire::{PublishedEvent, ResultMessage};
use csp_ledger_schemas::{OutcomeKind, RejectionCode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::ingest::lease::LeaseStatus;
use crate::ingest::{offset_key, IngestError, KafkaOptions};
use crate::store::log::{Head, Log, OutcomeRecord, StoredEvent, StoredOutcomeKind};
use crate::writer::LedgerError as WriterLedgerError;
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
    record_of(ResultMessage::decode(bytes, headers).ok()?)
}

/// The idempotency record of a decoded result (see [`parse_result`]).
fn record_of(result: ResultMessage<'_>) -> Option<OutcomeRecord> {
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

/// Where the term rule stands in this log, stored with the replicated batches (as consumer
/// offsets, so in the same durable commit as what they describe). Keys without a `/`: never
/// taken for a topic partition.
const STATE_TERM: &str = "csp.fencing.term";
const STATE_HEAD: &str = "csp.fencing.head";
/// The term this instance started itself (0: none pending), and the outcome sequence it
/// started at: its decisions from there on are void if a newer term starts before a commit
/// record covered them.
const STATE_OWN_TERM: &str = "csp.fencing.own-term";
const STATE_OWN_START: &str = "csp.fencing.own-start";
/// Per term: the highest outcome sequence its accepted commits made final.
const STATE_FINAL_PREFIX: &str = "csp.fencing.final.";

fn as_stored(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn stored_u64(log: &Log, key: &str) -> Result<Option<u64>, IngestError> {
    Ok(log.offset(key)?.and_then(|v| u64::try_from(v).ok()))
}

/// The term reader as this log left it (a new one at the start of the topic for a new log).
fn load_reader(log: &Log) -> Result<TermReader, IngestError> {
    let term = stored_u64(log, STATE_TERM)?.unwrap_or(0);
    let head = match stored_u64(log, STATE_HEAD)? {
        Some(head) => head,
        // A log from before the rule, or a new one: everything in it was accepted.
        None => log.head().position,
    };
    let hash = log.hash_at(head)?.ok_or_else(|| {
        IngestError::Log(crate::store::log::LogError::corrupt(
            Some(head),
            "the term rule's accepted head is not in the log",
        ))
    })?;
    let mut finals = Vec::new();
    for (key, value) in log.offsets()? {
        if let Some(term) = key.strip_prefix(STATE_FINAL_PREFIX) {
            if let (Ok(term), Ok(last)) = (term.parse::<u64>(), u64::try_from(value)) {
                finals.push((term, last));
            }
        }
    }
    finals.sort_unstable();
    Ok(TermReader::resume_with(term, head, hash, &finals))
}

/// Follows the events and results topics into the log until this instance holds the lease,
/// has read both topics to the end, and has read back its own term-start (returns `Ok(true)`:
/// it may lead now), or until `stop` is set or the lease is lost for good (`Ok(false)`).
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
    let reader = load_reader(&log)?;
    let own_term = stored_u64(&log, STATE_OWN_TERM)?.filter(|t| *t > 0);
    let own_start = stored_u64(&log, STATE_OWN_START)?.unwrap_or(0);
    let mut follower = Follower {
        options,
        log,
        instance: lease.instance,
        reader,
        own_term,
        own_start,
        events: Vec::new(),
        consumed: Vec::new(),
        pending_results: Vec::new(),
        clean_offset: None,
        own_term_start_offset: None,
        read: HashMap::new(),
        targets: None,
        results_target: None,
        term_start_sent: None,
        producer: None,
        state_changed: false,
    };

    while !stop.load(Ordering::Relaxed) {
        if lease.deposed() {
            return Ok(false);
        }
        let taken = follower.poll_batch(&consumer)?;
        follower.replicate_ready(replicate)?;

        if !lease.held() {
            follower.targets = None;
            follower.results_target = None;
            continue;
        }
        // Leading now: read both topics to the end the broker had when the lease was won (the
        // old leader stopped writing before its lease ran out, or its late records fall
        // behind the term-start below), then start the term.
        if follower.targets.is_none() {
            let wanted = end_offsets(&consumer, &partitions)?;
            info!(message = "Won the lease; catching up before leading.", targets = ?wanted);
            follower.targets = Some(wanted);
        }
        if !follower.caught_up() || taken > 0 {
            continue;
        }
        let term = lease.term();
        let current = follower.reader.term();
        if current > term {
            // A newer term started already: this lease is stale.
            warn!(
                message = "A newer term started before this instance could lead.",
                term, current
            );
            return Ok(false);
        }
        if current < term {
            follower.send_term_start(term, lease)?;
            continue;
        }
        // The term is this instance's: read the results every accepted commit covers (they
        // were acknowledged before their commit, so they are before today's end), then lead.
        if follower.results_target.is_none() {
            let results: Vec<(String, i32)> = partitions
                .iter()
                .filter(|(topic, _)| *topic == options.results_topic)
                .cloned()
                .collect();
            follower.results_target = Some(end_offsets(&consumer, &results)?);
            continue;
        }
        if !follower.results_caught_up() {
            continue;
        }
        follower.start_term(term, replicate)?;
        follower.hand_over();
        return Ok(true);
    }
    Ok(false)
}

/// Assigns the events topic (one partition: the rule orders its records) and every partition
/// of the results topic to `consumer`, each from the offset stored in the log (or the
/// beginning); returns them.
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
            if t.name() == options.events_topic && t.partitions().len() > 1 {
                return Err(IngestError::Stopped(format!(
                    "the events topic {} has {} partitions; the term rule needs one",
                    t.name(),
                    t.partitions().len()
                )));
            }
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

/// A result read whose term's commit has not been read yet.
struct PendingResult {
    partition: i32,
    offset: i64,
    term: u64,
    seq: u64,
    /// The idempotency record it stands for (`None`: a duplicate or conflict, nothing to keep).
    record: Option<OutcomeRecord>,
}

/// What a follower keeps between polls.
struct Follower<'a> {
    options: &'a KafkaOptions,
    log: Arc<Log>,
    instance: uuid::Uuid,
    reader: TermReader,
    /// The term this instance started, while its decisions may still be void.
    own_term: Option<u64>,
    own_start: u64,
    /// Accepted events not yet replicated, and the commands offsets their commits consumed.
    events: Vec<StoredEvent>,
    consumed: Vec<(String, i64)>,
    /// Results not yet judged, in read order.
    pending_results: Vec<PendingResult>,
    /// The offset after the last events record read with nothing held back: where a restart
    /// reads on.
    clean_offset: Option<i64>,
    /// Where this instance's own term-start was read.
    own_term_start_offset: Option<i64>,
    // Next offset read per partition (to tell when the topics are read to the end).
    read: HashMap<(String, i32), i64>,
    /// While leading: the end of each partition to read before starting the term, and then
    /// the end of the results topic to read before handing over.
    targets: Option<Targets>,
    results_target: Option<Targets>,
    /// The term whose term-start this instance sent.
    term_start_sent: Option<u64>,
    producer: Option<BaseProducer>,
    /// The rule's state moved (a term started): store it even without events.
    state_changed: bool,
}

impl Follower<'_> {
    /// Reads up to [`FOLLOW_BATCH_MAX`] messages from both topics; returns how many.
    fn poll_batch(&mut self, consumer: &BaseConsumer) -> Result<usize, IngestError> {
        let mut taken = 0;
        let mut wait = Duration::from_millis(100);
        while taken < FOLLOW_BATCH_MAX {
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
            taken += 1;
            let (topic, partition, offset) =
                (message.topic(), message.partition(), message.offset());
            self.read.insert((topic.to_string(), partition), offset + 1);
            let payload = message.payload().unwrap_or_default();
            let headers = crate::ingest::header_pairs(message.headers());
            if topic == self.options.events_topic {
                self.take_events_record(payload, &headers, offset)?;
            } else {
                self.take_result(payload, &headers, partition, offset);
            }
        }
        Ok(taken)
    }

    /// Applies the term rule to one record of the events topic.
    fn take_events_record(
        &mut self,
        payload: &[u8],
        headers: &[(String, String)],
        offset: i64,
    ) -> Result<(), IngestError> {
        let record = match EventsRecord::decode(payload, headers) {
            Ok(record) => record,
            Err(error) => {
                warn!(message = "Not a record of the events topic; skipped.", offset, reason = %error);
                if self.reader.held() == 0 {
                    self.clean_offset = Some(offset + 1);
                }
                return Ok(());
            }
        };
        let (consumed, started_by) = match &record {
            EventsRecord::Commit { consumed, .. } => (Some(consumed.clone()), None),
            EventsRecord::TermStart { instance, .. } => (None, Some(*instance)),
            EventsRecord::Event { .. } => (None, None),
        };
        let ended = self.reader.term();
        let verdict = self.reader.push(record).map_err(|error: FencingError| {
            IngestError::Stopped(format!(
                "the events topic breaks the term rule at offset {offset}: {error}"
            ))
        })?;
        match verdict {
            Verdict::Accepted(events) => {
                self.events.extend(events.into_iter().map(|e| StoredEvent {
                    position: e.position,
                    hash: e.hash,
                    canonical: e.canonical.into_owned(),
                }));
                for (key, next) in consumed.into_iter().flatten() {
                    match self.consumed.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, kept)) => *kept = (*kept).max(next),
                        None => self.consumed.push((key, next)),
                    }
                }
                self.state_changed = true;
            }
            Verdict::TermStarted {
                term,
                head,
                dropped,
            } => {
                info!(message = "A term started.", term, head, dropped, by = ?started_by);
                self.check_not_overtaken(ended, head)?;
                if started_by == Some(self.instance) {
                    self.own_term_start_offset = Some(offset);
                }
                self.state_changed = true;
            }
            Verdict::Held | Verdict::Ignored => {}
        }
        if self.reader.held() == 0 {
            self.clean_offset = Some(offset + 1);
        }
        Ok(())
    }

    /// A term started after term `ended` at accepted position `head`: what this log holds
    /// beyond what every reader accepted is void. Events there, or decisions of this
    /// instance's own term that no accepted commit covered, make it a fork: the directory is
    /// moved aside and rebuilt (`LedgerError::Forked`).
    fn check_not_overtaken(&mut self, ended: u64, head: u64) -> Result<(), IngestError> {
        let local = self.log.head();
        if local.position > head {
            warn!(
                message = "This log holds events no reader accepted.",
                local = local.position,
                accepted = head
            );
            return Err(IngestError::Ledger(WriterLedgerError::Forked {
                position: head + 1,
            }));
        }
        if self.own_term == Some(ended) {
            let final_until = self.own_start.max(self.reader.final_outcome(ended) + 1);
            if local.next_outcome_seq > final_until {
                warn!(
                    message = "Decisions of this instance's term were never committed.",
                    term = ended,
                    from = final_until,
                    to = local.next_outcome_seq
                );
                return Err(IngestError::Ledger(WriterLedgerError::Forked {
                    position: head + 1,
                }));
            }
            self.own_term = None;
        }
        Ok(())
    }

    /// Keeps a result until its term's commit is read (or its term is over).
    fn take_result(
        &mut self,
        payload: &[u8],
        headers: &[(String, String)],
        partition: i32,
        offset: i64,
    ) {
        let decoded = ResultMessage::decode(payload, headers);
        let (term, seq) = match decoded.as_ref().ok().and_then(|r| r.fence) {
            Some(fence) => (fence.term, fence.outcome_seq),
            // Written before the rule (or not a result): final as it is (term 0).
            None => (0, 0),
        };
        self.pending_results.push(PendingResult {
            partition,
            offset,
            term,
            seq,
            record: decoded.ok().and_then(record_of),
        });
    }

    /// Hands the accepted events, the final results and the offsets they stand for to
    /// `replicate`; forgets results of terms that ended before their commit.
    fn replicate_ready(&mut self, replicate: &ReplicateFn) -> Result<(), IngestError> {
        let mut results = Vec::new();
        let mut unjudged: HashMap<i32, i64> = HashMap::new();
        let reader = &self.reader;
        let mut judged_any = false;
        self.pending_results.retain_mut(|pending| {
            let final_now = pending.term == 0 || reader.is_final_result(pending.term, pending.seq);
            if final_now || pending.term < reader.term() {
                if final_now {
                    results.extend(pending.record.take());
                }
                judged_any = true;
                return false;
            }
            let first = unjudged.entry(pending.partition).or_insert(pending.offset);
            *first = (*first).min(pending.offset);
            true
        });
        let mut offsets: Vec<(String, i64)> = Vec::new();
        if judged_any || !self.events.is_empty() || self.state_changed {
            for ((topic, partition), next) in &self.read {
                if *topic == self.options.results_topic {
                    let next = unjudged.get(partition).copied().unwrap_or(*next);
                    offsets.push((offset_key(topic, *partition), next));
                }
            }
        }
        if self.events.is_empty() && results.is_empty() && !self.state_changed && offsets.is_empty()
        {
            return Ok(());
        }
        if let Some(clean) = self.clean_offset {
            offsets.push((offset_key(&self.options.events_topic, 0), clean));
        }
        // Commands consumed by accepted commits: where a successor resumes. Never below what
        // this log stored itself (its own decisions of the same term).
        for (key, next) in std::mem::take(&mut self.consumed) {
            if self.log.offset(&key)?.is_none_or(|stored| stored < next) {
                offsets.push((key, next));
            }
        }
        // The accepted head is in the log once this batch is: its events come with it.
        let (head, _) = self.reader.head();
        offsets.push((STATE_TERM.to_string(), as_stored(self.reader.term())));
        offsets.push((STATE_HEAD.to_string(), as_stored(head)));
        for (term, last) in self.reader.finals() {
            offsets.push((format!("{STATE_FINAL_PREFIX}{term}"), as_stored(last)));
        }
        if self.own_term.is_none() {
            offsets.push((STATE_OWN_TERM.to_string(), 0));
        }
        let events = std::mem::take(&mut self.events);
        debug!(
            message = "Replicating.",
            events = events.len(),
            results = results.len()
        );
        replicate(events, results, offsets)?;
        self.state_changed = false;
        Ok(())
    }

    /// Sends this instance's term-start (once per term), waiting for the broker to take it.
    fn send_term_start(&mut self, term: u64, lease: &LeaseStatus) -> Result<(), IngestError> {
        if self.term_start_sent == Some(term) {
            return Ok(());
        }
        if !lease.held() {
            return Ok(());
        }
        if self.producer.is_none() {
            self.producer = Some(
                self.options
                    .client()
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .set("linger.ms", "0")
                    .create()?,
            );
        }
        let Some(producer) = &self.producer else {
            return Ok(());
        };
        let message = EventsRecord::TermStart {
            term,
            instance: self.instance,
        }
        .encode();
        let mut headers = OwnedHeaders::new();
        for (key, value) in &message.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        producer
            .send(
                BaseRecord::to(&self.options.events_topic)
                    .key(&message.key)
                    .payload(&message.value)
                    .headers(headers),
            )
            .map_err(|(error, _)| IngestError::Kafka(error))?;
        producer.flush(Duration::from_secs(10))?;
        info!(message = "Term started; reading it back.", term);
        self.term_start_sent = Some(term);
        Ok(())
    }

    /// Stores that this instance leads `term` from here: its decisions from the next outcome
    /// sequence on are its own, and a restart reads the events topic again from its
    /// term-start (to learn which of its rounds every reader accepted).
    fn start_term(&mut self, term: u64, replicate: &ReplicateFn) -> Result<(), IngestError> {
        self.replicate_ready(replicate)?;
        let mut offsets = vec![
            (STATE_OWN_TERM.to_string(), as_stored(term)),
            (
                STATE_OWN_START.to_string(),
                as_stored(self.log.head().next_outcome_seq),
            ),
        ];
        if let Some(offset) = self.own_term_start_offset {
            offsets.push((offset_key(&self.options.events_topic, 0), offset));
        }
        replicate(Vec::new(), Vec::new(), offsets)?;
        Ok(())
    }

    /// Whether every partition has been read (or stored) up to its target.
    fn caught_up(&self) -> bool {
        self.targets
            .as_ref()
            .is_some_and(|wanted| self.reached(wanted))
    }

    fn results_caught_up(&self) -> bool {
        self.results_target
            .as_ref()
            .is_some_and(|wanted| self.reached(wanted))
    }

    fn reached(&self, wanted: &Targets) -> bool {
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
    }

    /// Logs the handover.
    fn hand_over(&self) {
        info!(
            message = "Caught up; taking over.",
            term = self.reader.term(),
            head = self.log.head().position
        );
    }
}
