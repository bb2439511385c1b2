//! `csp-ledger submit`: command lines to the commands topic, and their outcomes back.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use uuid::Uuid;

use csp_ledger_schemas::wire::OutcomeLine;

use crate::auth::signature::{sign, PRINCIPAL_HEADER, SIGNATURE_HEADER};
use crate::auth::{KafkaKey, PrincipalId};

use super::publisher::enqueue;
use super::{IngestError, KafkaOptions};

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

/// Who signs the messages `submit` sends (`--principal ID --hmac-key-file FILE`, SPEC.md
/// section 10). Its key is never formatted.
#[derive(Debug, Clone)]
pub struct Signer {
    pub principal: PrincipalId,
    pub key: KafkaKey,
}

impl Signer {
    /// The `csp-principal` and `csp-signature` headers of a message value.
    pub fn headers(&self, value: &[u8]) -> OwnedHeaders {
        let signature = sign(&self.key, value);
        OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: PRINCIPAL_HEADER,
                value: Some(self.principal.as_str()),
            })
            .insert(Header {
                key: SIGNATURE_HEADER,
                value: Some(signature.as_str()),
            })
    }
}

/// Sends command lines to the commands topic, keyed by [`command_key`] and signed by `signer`
/// when there is one (unsigned messages are accepted only by an `--insecure-no-auth`
/// ledger); with `wait`, reads
/// the results topic until every sent command has its outcome (or `wait` runs out) and returns
/// the outcome lines in input order.
pub fn submit_lines(
    options: &KafkaOptions,
    lines: &[String],
    signer: Option<&Signer>,
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
        let mut record = FutureRecord::to(&options.commands_topic)
            .key(&key)
            .payload(line.as_bytes());
        if let Some(signer) = signer {
            record = record.headers(signer.headers(line.as_bytes()));
        }
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
            answers
                .get(id)
                .cloned()
                .unwrap_or_else(|| OutcomeLine::no_result_line(id))
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
