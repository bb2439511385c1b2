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

use std::sync::atomic::{AtomicBool, Ordering};
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
    let heartbeat_every = timeout / 4;
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

    // The highest term seen, its leader, the offset of the leader's last message, and when
    // this instance last read from the leader.
    let mut term = 0u64;
    let mut leader: Option<Uuid> = None;
    let mut leader_offset: i64 = -1;
    let mut last_heard = Instant::now();
    // Nothing kept (new topic, or every message past its retention): nothing to read first.
    let mut caught_up = low >= high;
    let mut claimed: Option<(u64, Instant)> = None;
    let mut last_heartbeat: Option<Instant> = None;
    // Heartbeats sent and not yet read back: number and when sent. The lease is extended only
    // when this instance reads its own heartbeat back, that is once it has read every message
    // before it: a claim that got in first deposes it instead.
    let mut heartbeats: std::collections::VecDeque<(u64, Instant)> = Default::default();
    let mut next_seq = 1u64;
    let send = |kind: Kind, term: u64, seen: i64, seq: u64| -> Result<(), IngestError> {
        let message = LeaseMessage {
            group: options.group_id.clone(),
            instance: status.instance,
            term,
            kind,
            seen,
            seq,
        };
        let payload = serde_json::to_vec(&message).unwrap_or_default();
        producer
            .send(
                BaseRecord::to(&options.leader_topic)
                    .key(&options.group_id)
                    .payload(&payload),
            )
            .map_err(|(error, _)| IngestError::Kafka(error))
    };

    while !stop.load(Ordering::Relaxed) {
        producer.poll(Duration::ZERO);
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
                        let from_leader = m.term == term && leader == Some(m.instance);
                        match m.kind {
                            Kind::Claim
                                if m.term > term
                                    && (leader.is_none() || m.seen >= leader_offset) =>
                            {
                                if status.leader.load(Ordering::SeqCst)
                                    && m.instance != status.instance
                                {
                                    warn!(message = "Deposed: another instance claimed a later term.", term = m.term, by = %m.instance);
                                    status.deposed.store(true, Ordering::SeqCst);
                                    status.leader.store(false, Ordering::SeqCst);
                                    return Ok(());
                                }
                                term = m.term;
                                leader = Some(m.instance);
                                leader_offset = offset;
                                last_heard = Instant::now();
                                if m.instance == status.instance {
                                    if let Some((_, sent)) = claimed {
                                        status.extend(sent, timeout);
                                    }
                                } else {
                                    info!(message = "Standing by.", term, leader = %m.instance);
                                }
                                claimed = None;
                            }
                            Kind::Heartbeat if from_leader => {
                                leader_offset = offset;
                                last_heard = Instant::now();
                                if m.instance == status.instance {
                                    while let Some(&(seq, sent)) = heartbeats.front() {
                                        if seq > m.seq {
                                            break;
                                        }
                                        heartbeats.pop_front();
                                        if seq == m.seq {
                                            status.extend(sent, timeout);
                                        }
                                    }
                                }
                            }
                            Kind::Release if from_leader => {
                                info!(message = "The leader released the lease.", term);
                                leader = None;
                                leader_offset = offset;
                            }
                            _ => {}
                        }
                    }
                }
                Err(error) => warn!(message = "Lease topic read failed.", error = %error),
            }
        }
        if !caught_up {
            continue;
        }
        if leader == Some(status.instance) {
            if !status.leader.swap(true, Ordering::SeqCst) {
                info!(message = "Leading.", term, instance = %status.instance);
            }
            if last_heartbeat.is_none_or(|at| at.elapsed() >= heartbeat_every) {
                let now = Instant::now();
                last_heartbeat = Some(now);
                match send(Kind::Heartbeat, term, leader_offset, next_seq) {
                    Ok(()) => {
                        heartbeats.push_back((next_seq, now));
                        // Heartbeats that never come back (lost) are not kept forever.
                        if heartbeats.len() > 64 {
                            heartbeats.pop_front();
                        }
                        next_seq += 1;
                    }
                    Err(error) => warn!(message = "Heartbeat not sent.", error = %error),
                }
            }
            continue;
        }
        let silent = leader.is_none() || last_heard.elapsed() >= timeout;
        let claim_due = claimed.is_none_or(|(_, at)| at.elapsed() >= timeout);
        if silent && claim_due {
            info!(message = "Claiming the lease.", term = term + 1, previous = ?leader);
            if let Err(error) = send(Kind::Claim, term + 1, leader_offset, 0) {
                warn!(message = "Claim not sent.", error = %error);
            }
            claimed = Some((term + 1, Instant::now()));
        }
    }
    if leader == Some(status.instance) {
        status.leader.store(false, Ordering::SeqCst);
        let _ = send(Kind::Release, term, leader_offset, 0);
        let _ = producer.flush(Duration::from_secs(2));
    }
    Ok(())
}
