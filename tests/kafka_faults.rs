//! Fault injection with librdkafka's mock cluster, in addition to the real-broker tests of
//! `tests/kafka.rs`: the publisher meets produce errors and a broker outage, and still puts
//! every event on the events topic (in position order across an outage) and every outcome on
//! the results topic, moving its cursors only past what the broker acknowledged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csp_ledger::ingest::lease::LeaseStatus;
use csp_ledger::ingest::{KafkaOptions, Publisher};
use csp_ledger::intake::Submission;
use csp_ledger::store::log::{Log, LogOptions, EVENTS_CURSOR, RESULTS_CURSOR};
use csp_ledger::writer::Ledger;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

/// A one-broker mock cluster with the ledger's topics (the mock has no CreateTopics).
fn cluster() -> (MockCluster<'static, DefaultProducerContext>, KafkaOptions) {
    let cluster = MockCluster::new(1).unwrap();
    let options = KafkaOptions::new(&cluster.bootstrap_servers());
    for topic in [
        &options.commands_topic,
        &options.events_topic,
        &options.results_topic,
        &options.dlq_topic,
    ] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    (cluster, options)
}

/// A ledger that decided `commands` generated commands (accepted, rejected and duplicates).
fn ledger_with(dir: &std::path::Path, commands: usize) -> Ledger {
    let mut ledger = Ledger::open(dir, LogOptions::default()).unwrap();
    let submissions = csp_ledger_testkit::workload::Generator::new(7)
        .take(commands)
        .enumerate()
        .map(|(i, c)| Submission::parse(Some(i as u64 + 1), c.to_json().as_bytes()))
        .collect();
    ledger.submit(submissions).unwrap();
    ledger
}

/// A mock cluster, a ledger that decided some commands, and a publisher of its log.
struct Fixture {
    cluster: MockCluster<'static, DefaultProducerContext>,
    options: KafkaOptions,
    log: Arc<Log>,
    publisher: Publisher,
    _ledger: Ledger,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(commands: usize) -> Fixture {
        let (cluster, options) = cluster();
        let dir = tempfile::tempdir().unwrap();
        let ledger = ledger_with(dir.path(), commands);
        let log = ledger.log_handle();
        let publisher =
            Publisher::new(&options, Arc::clone(&log), Arc::new(LeaseStatus::always())).unwrap();
        Fixture {
            cluster,
            options,
            log,
            publisher,
            _ledger: ledger,
            _dir: dir,
        }
    }
}

fn caught_up(log: &Log) -> bool {
    let head = log.head();
    log.cursor(EVENTS_CURSOR).unwrap() > head.position
        && log.cursor(RESULTS_CURSOR).unwrap() >= head.next_outcome_seq
}

/// Publishes until both cursors are at the head (failed rounds are retried, as `run` does);
/// returns how many rounds failed.
fn publish_until_caught_up(publisher: &Publisher, log: &Log) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut failed = 0;
    while !caught_up(log) {
        assert!(Instant::now() < deadline, "publishing did not catch up");
        let before = (
            log.cursor(EVENTS_CURSOR).unwrap(),
            log.cursor(RESULTS_CURSOR).unwrap(),
        );
        if let Err(error) = publisher.publish_pending() {
            if failed < 5 {
                eprintln!("round failed: {error}");
            }
            failed += 1;
            // A failed round moves no cursor.
            assert_eq!(
                before,
                (
                    log.cursor(EVENTS_CURSOR).unwrap(),
                    log.cursor(RESULTS_CURSOR).unwrap(),
                )
            );
        }
    }
    failed
}

/// Every message of `topic` (one partition), from the beginning to the high watermark.
fn read_topic(brokers: &str, topic: &str) -> Vec<(String, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "fault-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < high {
        assert!(
            Instant::now() < deadline,
            "{topic}: read {} of {high}",
            out.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            out.push((
                String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    out
}

/// Every event present (repeats only as identical bytes) and, with `in_order`, first seen in
/// position order; every outcome of the log on the results topic.
fn assert_everything_published(brokers: &str, options: &KafkaOptions, log: &Log, in_order: bool) {
    let mut first: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut order = Vec::new();
    for (key, value) in read_topic(brokers, &options.events_topic) {
        if key == csp_ledger_schemas::fencing::CONTROL_KEY {
            // A commit record of the term rule, not an event.
            continue;
        }
        let position = serde_json::from_slice::<Value>(&value).unwrap()["position"]
            .as_u64()
            .unwrap();
        match first.get(&position) {
            Some(seen) => assert_eq!(seen, &value, "position {position} changed on repeat"),
            None => {
                first.insert(position, value);
                order.push(position);
            }
        }
    }
    let all: Vec<u64> = (1..=log.head().position).collect();
    if in_order {
        assert_eq!(order, all);
    } else {
        order.sort_unstable();
        assert_eq!(order, all, "events missing");
    }

    let published: HashSet<String> = read_topic(brokers, &options.results_topic)
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let outcomes: HashSet<String> = log
        .outcomes()
        .map(|item| item.unwrap().1.command_id.to_string())
        .collect();
    assert_eq!(published, outcomes, "results topic against the log");
}

#[test]
fn produce_errors_move_no_cursor_and_lose_nothing() {
    let fixture = Fixture::new(3_000);
    let Fixture {
        cluster,
        options,
        log,
        publisher,
        ..
    } = &fixture;
    // Retriable errors (librdkafka retries them) and errors that fail a delivery for good (the
    // round fails and is published again). Order is not asserted here: with several produce
    // requests in flight, keeping them in order after an error is the broker's part (it
    // refuses a sequence number out of turn from an idempotent producer), and the mock broker
    // does not do it: it stored message 3 before messages 1 and 2 after an injected error.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
        ],
    );
    let failed = publish_until_caught_up(publisher, log);
    assert!(failed >= 1, "the injected permanent errors failed no round");
    assert_everything_published(&cluster.bootstrap_servers(), options, log, false);
}

#[test]
fn a_broker_outage_holds_publishing_and_it_resumes_in_order() {
    let fixture = Fixture::new(3_000);
    let Fixture {
        cluster,
        options,
        log,
        publisher,
        ..
    } = &fixture;
    cluster.broker_down(1).unwrap();
    let outage = std::thread::scope(|scope| {
        let publishing = scope.spawn(|| publish_until_caught_up(publisher, log));
        std::thread::sleep(Duration::from_secs(2));
        // Nothing was acknowledged while the broker was down.
        assert_eq!(log.cursor(EVENTS_CURSOR).unwrap().max(1), 1);
        cluster.broker_up(1).unwrap();
        publishing.join().unwrap()
    });
    eprintln!("failed rounds during the outage: {outage}");
    assert_everything_published(&cluster.bootstrap_servers(), options, log, true);
}
