//! Leadership of a ledger group: which instance is the single writer, the others waiting as
//! hot standbys.
//!
//! The lease is a log, not a lock service: every instance of a group reads one single-partition
//! topic (`--leader-topic`, default `csp.ledger.leader`) from its beginning, and the
//! order the broker gives that partition decides:
//!
//! - `claim {term, seen}`: the first claim of a term higher than any seen makes its sender
//!   leader of that term, unless the current leader wrote after offset `seen` (the claimant had
//!   not heard the latest heartbeat: the leader is alive, the claim is void); later claims of
//!   the same or a lower term lose.
//! - `heartbeat {term}`: the leader of the current term says it is alive, every quarter lease.
//! - `release {term}`: the leader stepped down (clean shutdown); standbys claim at once.
//!
//! A standby claims term + 1 when it has read nothing from the current leader for the whole
//! lease timeout (measured on its own monotonic clock, from the moment it read the leader's
//! last message). The leader holds its lease only until half the timeout after sending the
//! last heartbeat it has read back from the topic (so it has also read every claim before
//! that heartbeat), so a leader cut off from the broker (or paused) stops writing before any
//! standby may claim (messages it sent before that and that the broker takes in late are
//! the one gap: see ARCHITECTURE.md, Failover). A leader that reads a higher term's claim has
//! been deposed and stops for good (the process exits; a supervisor restarts it as a standby).
//! An instance is named by its log (an id kept in the data directory), so a leader restarted
//! on the same directory finds itself leader of the current term and resumes at once.
//!
//! Every instance reads the same partition in the same order, so all agree who leads which
//! term; the topic keeps one hour of messages (a group silent for longer starts again at
//! term 1, which is as consistent, since readers start at the beginning of what is kept).

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use uuid::Uuid;

use crate::ingest::{IngestError, KafkaOptions};

/// What one instance knows about the lease, shared with the threads that write.
#[derive(Debug)]
pub struct LeaseStatus {
    /// This instance's id in the lease topic (new on every start).
    pub instance: Uuid,
    leader: AtomicBool,
    deposed: AtomicBool,
    /// The term this instance won last (0: none yet).
    term: AtomicU64,
    /// The lease holds until then (leader only).
    valid_until: Mutex<Option<Instant>>,
}

impl LeaseStatus {
    /// The status of `instance`: the id of the log this process writes (kept in the log, so
    /// that a restarted leader resumes its own term instead of waiting out its lease).
    pub fn new(instance: Uuid) -> LeaseStatus {
        LeaseStatus {
            instance,
            leader: AtomicBool::new(false),
            deposed: AtomicBool::new(false),
            term: AtomicU64::new(0),
            valid_until: Mutex::new(None),
        }
    }

    /// A status that always holds (a single instance without Kafka, and tests).
    pub fn always() -> LeaseStatus {
        let status = LeaseStatus::new(Uuid::new_v4());
        status.leader.store(true, Ordering::SeqCst);
        *status.valid_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
        status
    }

    /// True while this instance leads and its lease has not run out: checked before every
    /// write to the log and every publish.
    pub fn held(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
            && !self.deposed.load(Ordering::SeqCst)
            && self
                .valid_until
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|until| Instant::now() < until)
    }

    /// The term this instance won last (0 before it led): what its publisher writes in the
    /// `csp-term` header of every record (the term rule, `schemas::fencing`).
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::SeqCst)
    }

    /// Another instance claimed a later term: this one must not write again.
    pub fn deposed(&self) -> bool {
        self.deposed.load(Ordering::SeqCst)
    }

    fn extend(&self, from: Instant, timeout: Duration) {
        let mut until = self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        let candidate = from + timeout / 2;
        if until.is_none_or(|u| u < candidate) {
            *until = Some(candidate);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Claim,
    Heartbeat,
    Release,
}

#[derive(Debug, Serialize, Deserialize)]
struct LeaseMessage {
    group: String,
    instance: Uuid,
    term: u64,
    kind: Kind,
    /// Claims: the offset of the last message of the current leader the claimant had read.
    /// A claim is void when the leader wrote after it (it was alive after all).
    #[serde(default)]
    seen: i64,
    /// Heartbeats: a number of the sender's own, to match the heartbeat it reads back with the
    /// moment it sent it.
    #[serde(default)]
    seq: u64,
}

/// Runs the lease protocol for `status.instance` until `stop` is set (sending a release when it
/// leads) or until it is deposed.
pub fn run(
    options: &KafkaOptions,
    status: &LeaseStatus,
    stop: &AtomicBool,
) -> Result<(), IngestError> {
    let timeout = options.lease_timeout;
    let producer: BaseProducer = options
        .client()
        .set("acks", "all")
        .set("linger.ms", "0")
        .set(
            "message.timeout.ms",
            timeout.as_millis().max(1000).to_string(),
        )
        .create()?;
    let consumer: BaseConsumer = options
        .client()
        .set("group.id", format!("{}.lease-reader", options.group_id))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&options.leader_topic, 0, Offset::Beginning)?;
    consumer.assign(&assignment)?;
    let (low, high) =
        consumer.fetch_watermarks(&options.leader_topic, 0, Duration::from_secs(10))?;

    let mut lease = Lease {
        options,
        status,
        producer,
        timeout,
        heartbeat_every: timeout / 4,
        term: 0,
        leader: None,
        leader_offset: -1,
        last_heard: Instant::now(),
        claimed: None,
        last_heartbeat: None,
        heartbeats: Default::default(),
        next_seq: 1,
    };
    // Nothing kept (new topic, or every message past its retention): nothing to read first.
    let mut caught_up = low >= high;

    while !stop.load(Ordering::Relaxed) {
        lease.producer.poll(Duration::ZERO);
        if let Some(polled) = consumer.poll(Duration::from_millis(50)) {
            match polled {
                Ok(message) => {
                    let offset = message.offset();
                    if offset + 1 >= high {
                        caught_up = true;
                    }
                    let parsed = message
                        .payload()
                        .and_then(|p| serde_json::from_slice::<LeaseMessage>(p).ok());
                    if let Some(m) = parsed.filter(|m| m.group == options.group_id) {
                        if lease.read(offset, &m).is_break() {
                            return Ok(());
                        }
                    }
                }
                Err(error) => warn!(message = "Lease topic read failed.", error = %error),
            }
        }
        if !caught_up {
            continue;
        }
        if lease.leader == Some(status.instance) {
            lease.lead();
            continue;
        }
        lease.claim_if_due();
    }
    lease.release();
    Ok(())
}

/// One instance's view of the lease topic, and what it sent.
struct Lease<'a> {
    options: &'a KafkaOptions,
    status: &'a LeaseStatus,
    producer: BaseProducer,
    timeout: Duration,
    heartbeat_every: Duration,
    // The highest term seen, its leader, the offset of the leader's last message, and when
    // this instance last read from the leader.
    term: u64,
    leader: Option<Uuid>,
    leader_offset: i64,
    last_heard: Instant,
    /// The term this instance last claimed, and when.
    claimed: Option<(u64, Instant)>,
    /// When this instance last sent a heartbeat.
    last_heartbeat: Option<Instant>,
    // Heartbeats sent and not yet read back: number and when sent. The lease is extended only
    // when this instance reads its own heartbeat back, that is once it has read every message
    // before it: a claim that got in first deposes it instead.
    heartbeats: VecDeque<(u64, Instant)>,
    next_seq: u64,
}

impl Lease<'_> {
    /// Takes in message `m`, read at `offset`; breaks when it deposes this instance.
    fn read(&mut self, offset: i64, m: &LeaseMessage) -> ControlFlow<()> {
        let from_leader = m.term == self.term && self.leader == Some(m.instance);
        match m.kind {
            Kind::Claim
                if m.term > self.term
                    && (self.leader.is_none() || m.seen >= self.leader_offset) =>
            {
                return self.won_by(offset, m);
            }
            Kind::Heartbeat if from_leader => {
                self.leader_offset = offset;
                self.last_heard = Instant::now();
                if m.instance == self.status.instance {
                    self.read_own_heartbeat(m.seq);
                }
            }
            Kind::Release if from_leader => {
                info!(message = "The leader released the lease.", term = self.term);
                self.leader = None;
                self.leader_offset = offset;
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// A claim that wins term `m.term` for its sender; breaks when it deposes this instance.
    fn won_by(&mut self, offset: i64, m: &LeaseMessage) -> ControlFlow<()> {
        let status = self.status;
        if status.leader.load(Ordering::SeqCst) && m.instance != status.instance {
            warn!(message = "Deposed: another instance claimed a later term.", term = m.term, by = %m.instance);
            status.deposed.store(true, Ordering::SeqCst);
            status.leader.store(false, Ordering::SeqCst);
            return ControlFlow::Break(());
        }
        self.term = m.term;
        self.leader = Some(m.instance);
        self.leader_offset = offset;
        self.last_heard = Instant::now();
        if m.instance == status.instance {
            status.term.store(m.term, Ordering::SeqCst);
            if let Some((_, sent)) = self.claimed {
                status.extend(sent, self.timeout);
            }
        } else {
            info!(message = "Standing by.", term = self.term, leader = %m.instance);
        }
        self.claimed = None;
        ControlFlow::Continue(())
    }

    /// Extends the lease from the moment heartbeat `seq_read` was sent, forgetting it and the
    /// ones before it.
    fn read_own_heartbeat(&mut self, seq_read: u64) {
        while let Some(&(seq, sent)) = self.heartbeats.front() {
            if seq > seq_read {
                break;
            }
            self.heartbeats.pop_front();
            if seq == seq_read {
                self.status.extend(sent, self.timeout);
            }
        }
    }

    /// Leads: says so once, and sends a heartbeat every quarter lease.
    fn lead(&mut self) {
        let status = self.status;
        if !status.leader.swap(true, Ordering::SeqCst) {
            info!(message = "Leading.", term = self.term, instance = %status.instance);
        }
        if self
            .last_heartbeat
            .is_none_or(|at| at.elapsed() >= self.heartbeat_every)
        {
            let now = Instant::now();
            self.last_heartbeat = Some(now);
            match self.send(
                Kind::Heartbeat,
                self.term,
                self.leader_offset,
                self.next_seq,
            ) {
                Ok(()) => {
                    self.heartbeats.push_back((self.next_seq, now));
                    // Heartbeats that never come back (lost) are not kept forever.
                    if self.heartbeats.len() > 64 {
                        self.heartbeats.pop_front();
                    }
                    self.next_seq += 1;
                }
                Err(error) => warn!(message = "Heartbeat not sent.", error = %error),
            }
        }
    }

    /// Claims the next term when the leader has been silent for the whole timeout (and no
    /// claim of this instance is still pending).
    fn claim_if_due(&mut self) {
        let silent = self.leader.is_none() || self.last_heard.elapsed() >= self.timeout;
        let claim_due = self
            .claimed
            .is_none_or(|(_, at)| at.elapsed() >= self.timeout);
        if silent && claim_due {
            info!(message = "Claiming the lease.", term = self.term + 1, previous = ?self.leader);
            if let Err(error) = self.send(Kind::Claim, self.term + 1, self.leader_offset, 0) {
                warn!(message = "Claim not sent.", error = %error);
            }
            self.claimed = Some((self.term + 1, Instant::now()));
        }
    }

    /// On stopping: steps down when leading.
    fn release(&self) {
        if self.leader == Some(self.status.instance) {
            self.status.leader.store(false, Ordering::SeqCst);
            let _ = self.send(Kind::Release, self.term, self.leader_offset, 0);
            let _ = self.producer.flush(Duration::from_secs(2));
        }
    }

    fn send(&self, kind: Kind, term: u64, seen: i64, seq: u64) -> Result<(), IngestError> {
        let message = LeaseMessage {
            group: self.options.group_id.clone(),
            instance: self.status.instance,
            term,
            kind,
            seen,
            seq,
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        self.producer
            .send(
                BaseRecord::to(&self.options.leader_topic)
                    .key(&self.options.group_id)
                    .payload(&payload),
            )
            .map_err(|(error, _)| IngestError::Kafka(error))
    }
}
