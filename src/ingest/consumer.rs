//! The command consumer: exactly once from the commands topic into the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use crate::auth::signature::{PRINCIPAL_HEADER, SIGNATURE_HEADER};
use crate::auth::Authenticator;
use crate::ingest::lease::LeaseStatus;
use crate::intake::{MessageSource, Submission};
use crate::store::log::Log;

use super::{offset_key, POLL_WAIT};
use super::{IngestError, KafkaOptions};
use crate::writer::WriterError;

/// How often the consumer reads the high watermarks to report its lag.
pub const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Receives the lag of a partition: (topic, partition, messages not yet applied).
pub type LagFn = dyn Fn(&str, i32, i64) + Send + Sync;

/// A batch for the writer: submissions and the offsets to store with them.
pub type SubmitFn =
    dyn Fn(Vec<Submission>, Vec<(String, i64)>) -> Result<(), WriterError> + Send + Sync;

/// Consumes the commands topic until `stop` is set or the lease is lost, handing each batch
/// to `submit` (which returns once the batch is durable).
///
/// Every message is authenticated by `auth` from its `csp-principal` and `csp-signature`
/// headers (SPEC.md section 10) before its value is parsed: an unauthenticated one becomes a
/// dead letter (its offset still moves with the batch), a signed one a submission of its
/// principal.
///
/// Each partition starts at the offset stored in this log: what this instance decided itself,
/// or, for a standby that took over, the `consumed` offsets of the last commit record it
/// accepted (every command before it has a final outcome, replicated; every command after it
/// has none, and is decided now). Only a log with no offset starts at the group's committed
/// offset (or the beginning).
pub fn consume(
    options: &KafkaOptions,
    auth: &Authenticator,
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
    let partitions = assign_commands(&consumer, options, &log)?;
    while !stop.load(Ordering::Relaxed) {
        if lag_checked.elapsed() >= LAG_INTERVAL {
            lag_checked = std::time::Instant::now();
            report_lag(&consumer, &log, &partitions, on_lag)?;
        }
        let (submissions, next_offsets) = poll_commands(&consumer, options, auth);
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
        submit(submissions, next_offsets)?;
    }
    Ok(())
}

/// Assigns every partition of the commands topic to `consumer`, each from where this
/// instance resumes (see [`consume`]); returns them.
fn assign_commands(
    consumer: &BaseConsumer,
    options: &KafkaOptions,
    log: &Log,
) -> Result<Vec<(String, i32)>, IngestError> {
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
        // The log's offset wins: it is what this instance decided, or what the commit
        // records it accepted as a standby consumed (term rule). The group's offset (for
        // monitoring) may have been moved by a deposed leader whose records no reader took.
        let start = match (stored, group) {
            (Some(a), _) | (None, Some(a)) => Offset::Offset(a),
            (None, None) => Offset::Beginning,
        };
        info!(message = "Assigned partition.", topic, partition, stored = ?stored, committed = ?group, start = ?start);
        assignment.add_partition_offset(topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    Ok(assignment
        .elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect())
}

/// Reports to `on_lag` how far each partition's high watermark is ahead of the log.
fn report_lag(
    consumer: &BaseConsumer,
    log: &Log,
    partitions: &[(String, i32)],
    on_lag: &LagFn,
) -> Result<(), IngestError> {
    for (topic, partition) in partitions {
        if let Ok((_, high)) =
            consumer.fetch_watermarks(topic, *partition, Duration::from_millis(500))
        {
            let next = log.offset(&offset_key(topic, *partition))?.unwrap_or(0);
            on_lag(topic, *partition, (high - next).max(0));
        }
    }
    Ok(())
}

/// Reads up to `batch_commands_max` commands: their submissions, and per partition the
/// offset after the last message read.
fn poll_commands(
    consumer: &BaseConsumer,
    options: &KafkaOptions,
    auth: &Authenticator,
) -> (Vec<Submission>, Vec<(String, i64)>) {
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
            detail: None,
        };
        let key = offset_key(&source.topic, source.partition);
        match next_offsets.iter_mut().find(|(k, _)| *k == key) {
            Some((_, next)) => *next = source.offset + 1,
            None => next_offsets.push((key, source.offset + 1)),
        }
        submissions.push(authenticated_submission(auth, &message, source));
    }
    (submissions, next_offsets)
}

/// The value of the first header named `name`, if any.
fn header<'m>(message: &'m BorrowedMessage<'_>, name: &str) -> Option<&'m [u8]> {
    message
        .headers()?
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| header.value)
}

/// The submission of one message: a dead letter when its headers do not authenticate it, else
/// its value parsed as a command of the signing principal.
fn authenticated_submission(
    auth: &Authenticator,
    message: &BorrowedMessage<'_>,
    source: MessageSource,
) -> Submission {
    let principal = match auth.authenticate_message(
        header(message, PRINCIPAL_HEADER),
        header(message, SIGNATURE_HEADER),
        &source.bytes,
    ) {
        Ok(principal) => principal,
        Err(refused) => {
            // The detail names the header or the mismatch, never a key.
            debug!(message = "Unauthenticated command message.", partition = source.partition, offset = source.offset, detail = %refused);
            return Submission::unauthenticated(source, refused.to_string());
        }
    };
    let mut submission = match message.payload() {
        Some(bytes) => Submission::parse_as(None, bytes, principal),
        None => Submission {
            line: None,
            parsed: Err(csp_ledger_schemas::MalformedCommand {
                command_id: None,
                reason: "the message has no value".into(),
            }),
            source: None,
            principal,
        },
    };
    submission.source = Some(source);
    submission
}
