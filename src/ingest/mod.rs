//! Kafka ingest and publication: topic creation (`topics`), the command consumer (exactly
//! once into the log, `consumer`), the outbox publisher (events, results, dead letters, at
//! least once and in order, `publisher`), the `submit` producer (`submit`), the leader lease
//! (`lease`), the hot standby (`standby`) and the signed checkpoints' topic (`checkpoints`).
//!
//! Exactly once: the consumer stores the next offset of every partition in the same sled batch
//! as the events and outcomes the messages produced, and on every assignment seeks to the
//! offsets stored in sled (Kafka's committed offsets are written too, for lag monitoring
//! only). Publishing reads the log from cursors kept in sled and advances a cursor only after
//! the broker acknowledged everything before it, so a crash repeats messages, never loses or
//! reorders them.

pub mod checkpoints;
pub mod consumer;
pub mod lease;
pub mod publisher;
pub mod settings;
pub mod standby;
pub mod submit;
pub mod topics;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

use crate::store::log::LogError;
use crate::writer::SUBMIT_BATCH_COMMANDS_MAX;

pub use consumer::consume;
pub use publisher::Publisher;
pub use settings::{ClientSettings, SettingsError};
pub use submit::{command_key, header_pairs, submit_lines, Signer};
pub use topics::{ensure_topics, offset_key};

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
    Ledger(#[from] crate::writer::LedgerError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The writer refused a batch or stopped. Edge: the consumer stops; the server exits 1.
    #[error(transparent)]
    Writer(#[from] crate::writer::WriterError),
    /// This instance stopped leading, or was stopped. Edge: the loops end.
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
    /// The one-partition topic of the signed checkpoints (SPEC.md section 12).
    pub checkpoints_topic: String,
    /// `--kafka-config`: librdkafka settings (security, TLS, SASL) for every client.
    pub client_settings: ClientSettings,
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
            checkpoints_topic: "csp.checkpoints".into(),
            client_settings: ClientSettings::default(),
        }
    }

    /// The base configuration of every client the ledger creates: the brokers and the
    /// `--kafka-config` settings (which cannot name a key the ledger sets itself).
    pub fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        self.client_settings.apply(&mut config);
        config
    }
}
