//! Topic creation and the names under which consumer offsets are stored.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use tracing::info;

use super::{IngestError, KafkaOptions};

/// Retention of the leader topic: heartbeats are only needed while they are recent.
const LEADER_TOPIC_RETENTION_MS: &str = "3600000";

/// Creates the four topics, the leader topic and the checkpoints topic when they are missing. The events topic and
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
        // Every signed checkpoint, kept forever: what a standby checks before it leads.
        NewTopic::new(&options.checkpoints_topic, 1, replication()).set("retention.ms", "-1"),
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
