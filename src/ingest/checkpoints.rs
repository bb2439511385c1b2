//! `csp.checkpoints` (SPEC.md section 12): every checkpoint the leader signs is published to
//! this one-partition topic (kept forever), and a standby reads the latest one back before it
//! leads, so that an instance whose log was rolled back or forked cannot take over.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{IngestError, KafkaOptions};

/// How long a publish or a read of the latest checkpoint may take.
const CHECKPOINT_IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes signed checkpoints, one record each, keyed by the group.
pub struct CheckpointPublisher {
    producer: BaseProducer,
    topic: String,
    key: String,
}

impl CheckpointPublisher {
    pub fn new(options: &KafkaOptions) -> Result<CheckpointPublisher, IngestError> {
        let producer: BaseProducer = options
            .client()
            .set("acks", "all")
            .set("linger.ms", "0")
            .set(
                "message.timeout.ms",
                CHECKPOINT_IO_TIMEOUT.as_millis().to_string(),
            )
            .create()?;
        Ok(CheckpointPublisher {
            producer,
            topic: options.checkpoints_topic.clone(),
            key: options.group_id.clone(),
        })
    }

    /// Publishes `note` and waits until the broker has it.
    pub fn publish(&self, note: &str) -> Result<(), IngestError> {
        self.producer
            .send(
                BaseRecord::to(&self.topic)
                    .key(&self.key)
                    .payload(note.as_bytes()),
            )
            .map_err(|(error, _)| IngestError::Kafka(error))?;
        self.producer.flush(CHECKPOINT_IO_TIMEOUT)?;
        Ok(())
    }
}

/// The latest checkpoint note on the topic, if any.
pub fn latest(options: &KafkaOptions) -> Result<Option<String>, IngestError> {
    let consumer: BaseConsumer = options
        .client()
        .set(
            "group.id",
            format!("{}.checkpoint-reader", options.group_id),
        )
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let topic = &options.checkpoints_topic;
    let (low, high) = consumer.fetch_watermarks(topic, 0, CHECKPOINT_IO_TIMEOUT)?;
    if high <= low {
        return Ok(None);
    }
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(high - 1))?;
    consumer.assign(&assignment)?;
    let started = Instant::now();
    while started.elapsed() < CHECKPOINT_IO_TIMEOUT {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) if message.offset() == high - 1 => {
                let note = message
                    .payload()
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned());
                return Ok(note);
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(IngestError::Kafka(error)),
            None => {}
        }
    }
    Err(IngestError::Stopped(format!(
        "the latest record of {topic} (offset {}) did not arrive within {} s",
        high - 1,
        CHECKPOINT_IO_TIMEOUT.as_secs()
    )))
}
