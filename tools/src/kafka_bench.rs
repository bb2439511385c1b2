//! `csp-ledger bench-kafka`: the Kafka transport measured end to end on loopback, against the
//! broker's own rate in the same run.
//!
//! 1. Broker baseline (the limit): the generated command lines produced to a fresh topic with
//!    an idempotent producer (`acks=all`, `linger.ms=2`), every record
//!    enqueued before the flush, then consumed back with a fresh consumer.
//! 2. Throughput: an in-process ledger (`Server::bind_with_kafka`, fresh directory, fresh
//!    topics) consumes the same commands, published as fast as possible with the submit key;
//!    the results topic is read until every command has its outcome. Throughput is commands
//!    divided by the time from the first publish to the last result.
//! 3. Latency: a second fresh ledger and topics; commands published open loop at a fixed rate,
//!    latency from each command's *scheduled* send time to the arrival of its result (so a
//!    sender that falls behind cannot hide queueing delay).
//!
//! Phases 2 and 3 sample the ledger's `/metrics`, the results topic's high watermark and the
//! benchmark's own counters every 100 ms, and read the CPU time of every thread of the process,
//! so that the report says where the time went: a timeline of commands acknowledged, committed,
//! results published and received, the group commits and the writer's time in them, and CPU
//! seconds by thread (`writer`, `consumer`, `publisher`, librdkafka).
//!
//! Topics are named with a run id and left on the broker: deleting them on tansu 0.6 made a
//! client that still knew them crash in librdkafka's metadata cache.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use thiserror::Error;
use tokio::runtime::Runtime;
use tracing::{info, warn};
use uuid::Uuid;

use csp_ledger::app::{ServeOptions, Server, ServerError};
use csp_ledger::auth::Authenticator;
use csp_ledger::ingest::{command_key, IngestError, KafkaOptions, Signer};
use csp_ledger::store::log::LogOptions;
use csp_ledger::writer::{Ledger, LedgerError};
use csp_ledger_schemas::wire::ResultMessage;
use csp_ledger_schemas::OutcomeKind;
use csp_ledger_testkit::http::Connection;
use csp_ledger_testkit::workload::Generator;

/// Longest time without a new result before a phase gives up waiting (the report then counts
/// the missing results).
pub const RESULT_STALL_MAX: Duration = Duration::from_secs(60);

/// `fetch.wait.max.ms` of the benchmark's own results reader. tansu 0.6 answers a fetch only
/// after sleeping the rest of the client's maximum wait (half of it while 250 ms or more
/// remain), data or not (`FetchService::fetch` in tansu-storage); with librdkafka's default of
/// 500 ms every fetch takes at least 250 ms. The ledger's own consumer keeps the settings of
/// `kafka::consume`.
pub const READER_FETCH_WAIT_MS: u32 = 5;

/// How often the ledger's `/metrics` are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct KafkaBenchOptions {
    pub brokers: String,
    /// Commands of the baseline and the throughput phase.
    pub commands: usize,
    /// Commands per second of the latency phase.
    pub rate: u64,
    /// Duration of the latency phase.
    pub seconds: u64,
    pub seed: u64,
    /// Most commands consumed into one group commit (`--kafka-batch-commands`).
    pub batch_commands_max: usize,
    /// The ledgers' directories are created under it and removed afterwards.
    pub data_dir: PathBuf,
    pub log: LogOptions,
    /// `--signed`: every command (warm-up included) carries `csp-principal` and
    /// `csp-signature`, signed in the sending thread, and every ledger authenticates them
    /// against a principals file (else the ledgers run `--insecure-no-auth`).
    pub signing: Option<BenchSigning>,
}

/// A principal allowed every actor and its Kafka key, written to a principals file.
#[derive(Debug, Clone)]
pub struct BenchSigning {
    pub principals_file: PathBuf,
    pub signer: Signer,
}

impl BenchSigning {
    /// Writes `bench.key` (a random 64-character key) and `principals.toml` into `dir`.
    pub fn create(dir: &Path) -> Result<BenchSigning, KafkaBenchError> {
        std::fs::create_dir_all(dir)?;
        let key_file = dir.join("bench.key");
        std::fs::write(
            &key_file,
            format!("{}\n", Uuid::new_v4().simple().to_string().repeat(2)),
        )?;
        let principals_file = dir.join("principals.toml");
        std::fs::write(
            &principals_file,
            "[[principal]]\nid = \"bench\"\nkafka_hmac_key_file = \"bench.key\"\nact_as = [\"operator\", \"partner:*\", \"customer:*\"]\nread = []\n",
        )?;
        let key = csp_ledger::auth::KafkaKey::read(&key_file)
            .map_err(|e| KafkaBenchError::Stalled(e.to_string()))?;
        let principal = "bench"
            .parse()
            .map_err(|e: String| KafkaBenchError::Stalled(e))?;
        Ok(BenchSigning {
            principals_file,
            signer: Signer { principal, key },
        })
    }

    fn authenticator(&self) -> Result<Authenticator, KafkaBenchError> {
        Authenticator::from_file(self.principals_file.clone(), None)
            .map_err(|e| KafkaBenchError::Stalled(e.to_string()))
    }
}

/// The headers of a command sent with `signing`.
fn headers(signing: Option<&BenchSigning>, line: &str) -> Option<OwnedHeaders> {
    signing.map(|s| s.signer.headers(line.as_bytes()))
}

/// Failures of the benchmark. Edge: exit 1.
#[derive(Debug, Error)]
pub enum KafkaBenchError {
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Stalled(String),
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaBenchReport {
    pub brokers: String,
    /// Suffix of every topic of this run.
    pub run_id: String,
    pub seed: u64,
    pub fsync: bool,
    /// Every command signed and authenticated (`--signed`).
    pub signed: bool,
    pub batch_commands_max: usize,
    pub command_bytes_avg: f64,
    pub timeline_columns: &'static str,
    pub broker: BrokerBaseline,
    pub throughput: ThroughputReport,
    pub latency: LatencyReport,
}

/// The broker's own produce and consume rate for messages of the commands' size.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerBaseline {
    pub topic: String,
    pub messages: u64,
    pub bytes: u64,
    pub produce_failed: u64,
    /// First enqueue to the end of the flush (every delivery acknowledged).
    pub produce_seconds: f64,
    pub produce_messages_per_second: f64,
    /// With librdkafka's default `fetch.wait.max.ms` (500; the ledger's consumer uses 5):
    /// from the assignment to the last message.
    pub consumed: u64,
    pub consume_seconds: f64,
    pub consume_messages_per_second: f64,
    /// The same with the short fetch wait of the benchmark's results reader.
    pub consume_fetch_wait_ms: u32,
    pub consumed_short_wait: u64,
    pub consume_short_wait_seconds: f64,
    pub consume_short_wait_messages_per_second: f64,
}

/// What the ledger reported about itself (its `/metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LedgerSide {
    /// Commands decided and committed (all outcomes).
    pub commands_committed: u64,
    /// Seconds from the first publish until the ledger had committed every command.
    pub all_committed_after_seconds: Option<f64>,
    pub group_commits: u64,
    pub commands_per_group_commit: f64,
    /// Time the writer spent deciding and durably appending (sum over group commits).
    pub writer_apply_seconds: f64,
    pub events_appended: u64,
}

/// End-to-end throughput: every command published at once.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub commands: u64,
    pub results: u64,
    pub results_missing: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    /// First publish to the end of the producer's flush (every command acknowledged).
    pub publish_seconds: f64,
    pub first_result_after_seconds: f64,
    /// First publish to the last result.
    pub seconds: f64,
    pub commands_per_second: f64,
    pub ledger: LedgerSide,
    /// CPU seconds of this process's threads during the phase, by thread name (the ledger's
    /// `writer`, `publisher`, `consumer`; `librdkafka` is every Kafka client's threads; the
    /// benchmark's results reader runs on `main`). The broker is another process.
    pub cpu_seconds_by_thread: BTreeMap<String, f64>,
    /// One sample a second, columns as in [`TIMELINE_COLUMNS`].
    pub timeline: Vec<TimelineRow>,
}

/// Publish-to-result latency at a fixed rate.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub target_rate: u64,
    pub commands: u64,
    pub send_seconds: f64,
    pub achieved_send_rate: f64,
    /// Latest a send happened after its scheduled time.
    pub sender_behind_schedule_max_micros: u64,
    pub results: u64,
    pub results_missing: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    /// From the scheduled send time to the result's arrival.
    pub p50_micros: u64,
    pub p90_micros: u64,
    pub p99_micros: u64,
    pub p999_micros: u64,
    pub max_micros: u64,
    /// p99 and max latency of the commands scheduled in each second of the run (where the
    /// tail comes from: a stall shows as one bad second).
    pub p99_max_micros_by_second: Vec<(u64, u64)>,
    pub ledger: LedgerSide,
    /// As in [`ThroughputReport::cpu_seconds_by_thread`].
    pub cpu_seconds_by_thread: BTreeMap<String, f64>,
    /// As in [`ThroughputReport::timeline`], from the first scheduled send.
    pub timeline: Vec<TimelineRow>,
}

/// (seconds, acknowledged, committed, published, received): see [`TIMELINE_COLUMNS`].
pub type TimelineRow = (f64, u64, u64, u64, u64);

/// Runs the three phases.
pub fn run(options: &KafkaBenchOptions) -> Result<KafkaBenchReport, KafkaBenchError> {
    let run_id = Uuid::new_v4().simple().to_string()[..12].to_string();
    let lines: Arc<Vec<String>> = Arc::new(
        Generator::new(options.seed)
            .take(options.commands)
            .map(|envelope| envelope.to_json())
            .collect(),
    );
    let keys: Arc<Vec<String>> = Arc::new(lines.iter().map(|l| command_key(l)).collect());
    let command_bytes_avg =
        lines.iter().map(|l| l.len() as f64).sum::<f64>() / lines.len().max(1) as f64;
    info!(
        message = "Generated commands.",
        commands = lines.len(),
        bytes_avg = command_bytes_avg
    );

    let broker = baseline(options, &run_id, &lines, &keys)?;
    info!(
        message = "Broker baseline done.",
        produce = broker.produce_messages_per_second,
        consume = broker.consume_messages_per_second
    );

    let throughput = throughput(options, &run_id, "throughput", &lines, &keys)?;
    info!(
        message = "Throughput phase done.",
        commands_per_second = throughput.commands_per_second
    );
    drop((lines, keys));

    let latency = latency(options, &run_id)?;
    info!(
        message = "Latency phase done.",
        p99_micros = latency.p99_micros
    );

    Ok(KafkaBenchReport {
        brokers: options.brokers.clone(),
        run_id,
        seed: options.seed,
        fsync: options.log.fsync,
        signed: options.signing.is_some(),
        batch_commands_max: options.batch_commands_max,
        command_bytes_avg,
        timeline_columns: TIMELINE_COLUMNS,
        broker,
        throughput,
        latency,
    })
}

/// Signed against unsigned end-to-end throughput (`--compare-signing ROUNDS`).
#[derive(Debug, Clone, Serialize)]
pub struct SigningComparison {
    pub brokers: String,
    pub run_id: String,
    pub seed: u64,
    pub fsync: bool,
    pub commands: usize,
    pub rounds: usize,
    /// Commands per second of each throughput phase, in round order (each round runs both,
    /// unsigned first in even rounds and signed first in odd ones).
    pub unsigned_commands_per_second: Vec<f64>,
    pub signed_commands_per_second: Vec<f64>,
    pub unsigned_median: f64,
    pub signed_median: f64,
    /// `signed_median / unsigned_median`.
    pub signed_over_unsigned: f64,
    /// Every phase: (`signed`/`unsigned`, its report without the timeline).
    pub phases: Vec<(String, ThroughputReport)>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs the throughput phase `rounds` times unsigned and `rounds` times signed, alternating
/// (ABBA), each with a fresh ledger and fresh topics, in one process against one broker.
pub fn compare_signing(
    options: &KafkaBenchOptions,
    rounds: usize,
) -> Result<SigningComparison, KafkaBenchError> {
    let run_id = Uuid::new_v4().simple().to_string()[..12].to_string();
    let signing =
        BenchSigning::create(&options.data_dir.join(format!("kafka-bench-{run_id}-keys")))?;
    let lines: Arc<Vec<String>> = Arc::new(
        Generator::new(options.seed)
            .take(options.commands)
            .map(|envelope| envelope.to_json())
            .collect(),
    );
    let keys: Arc<Vec<String>> = Arc::new(lines.iter().map(|l| command_key(l)).collect());
    let unsigned = KafkaBenchOptions {
        signing: None,
        ..options.clone()
    };
    let signed = KafkaBenchOptions {
        signing: Some(signing),
        ..options.clone()
    };
    let (mut unsigned_rates, mut signed_rates, mut phases) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [("unsigned", &unsigned), ("signed", &signed)]
        } else {
            [("signed", &signed), ("unsigned", &unsigned)]
        };
        for (label, phase_options) in order {
            let mut report = throughput(
                phase_options,
                &run_id,
                &format!("throughput-{label}-{round}"),
                &lines,
                &keys,
            )?;
            info!(
                message = "Throughput phase done.",
                label,
                round,
                commands_per_second = report.commands_per_second
            );
            report.timeline.clear();
            match label {
                "signed" => signed_rates.push(report.commands_per_second),
                _ => unsigned_rates.push(report.commands_per_second),
            }
            phases.push((label.to_string(), report));
        }
    }
    let _ = std::fs::remove_dir_all(options.data_dir.join(format!("kafka-bench-{run_id}-keys")));
    let (unsigned_median, signed_median) = (median(&unsigned_rates), median(&signed_rates));
    Ok(SigningComparison {
        brokers: options.brokers.clone(),
        run_id,
        seed: options.seed,
        fsync: options.log.fsync,
        commands: options.commands,
        rounds,
        unsigned_commands_per_second: unsigned_rates,
        signed_commands_per_second: signed_rates,
        unsigned_median,
        signed_median,
        signed_over_unsigned: signed_median / unsigned_median.max(1e-9),
        phases,
    })
}

/// The ledger publisher's producer settings (`kafka::Publisher::new`).
fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "30000");
    config
}

/// Counts the delivery reports of a producer (served by its `poll`).
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    warn!(message = "Delivery failed.", error = %error);
                }
                0
            }
        };
    }
}

type BenchProducer = BaseProducer<Deliveries>;

fn producer(brokers: &str) -> Result<BenchProducer, KafkaBenchError> {
    Ok(producer_config(brokers).create_with_context(Deliveries::default())?)
}

/// Enqueues one record, serving delivery reports while the local queue is full.
fn send(
    producer: &BenchProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<(), KafkaError> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A consumer of every partition of `topic` from the beginning; `fetch_wait_ms` overrides
/// librdkafka's `fetch.wait.max.ms` (500 ms by default).
fn consumer_from_beginning(
    brokers: &str,
    topic: &str,
    fetch_wait_ms: Option<u32>,
) -> Result<BaseConsumer, KafkaBenchError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("csp-ledger-bench-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if let Some(wait) = fetch_wait_ms {
        config.set("fetch.wait.max.ms", wait.to_string());
    }
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut assignment = TopicPartitionList::new();
    for t in metadata.topics() {
        for partition in t.partitions() {
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
        }
    }
    if assignment.count() == 0 {
        return Err(KafkaBenchError::Stalled(format!(
            "topic {topic} has no partition"
        )));
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

fn admin(brokers: &str) -> Result<(AdminClient<DefaultClientContext>, Runtime), KafkaBenchError> {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((admin, runtime))
}

/// Creates one topic (one partition, like the ledger's default) when it is missing.
fn create_topic(kafka: &KafkaOptions, topic: &str) -> Result<(), KafkaBenchError> {
    let (admin, runtime) = admin(&kafka.brokers)?;
    let new = NewTopic::new(
        topic,
        kafka.partitions,
        TopicReplication::Fixed(kafka.replication),
    );
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in runtime.block_on(admin.create_topics([&new], &options))? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaBenchError::Stalled(format!(
                    "creating topic {topic}: {code}"
                )))
            }
        }
    }
    Ok(())
}

fn topics(options: &KafkaBenchOptions, run_id: &str, phase: &str) -> KafkaOptions {
    let mut kafka = KafkaOptions::new(&options.brokers);
    let suffix = format!("bench-{run_id}-{phase}");
    kafka.group_id = format!("csp-ledger-{suffix}");
    kafka.commands_topic = format!("csp.commands.{suffix}");
    kafka.results_topic = format!("csp.command-results.{suffix}");
    kafka.events_topic = format!("csp.events.{suffix}");
    kafka.checkpoints_topic = format!("csp.checkpoints.{suffix}");
    kafka.dlq_topic = format!("csp.commands.dlq.{suffix}");
    kafka.leader_topic = format!("csp.ledger.leader.{suffix}");
    kafka.batch_commands_max = options.batch_commands_max;
    kafka
}

fn baseline(
    options: &KafkaBenchOptions,
    run_id: &str,
    lines: &[String],
    keys: &[String],
) -> Result<BrokerBaseline, KafkaBenchError> {
    let kafka = topics(options, run_id, "baseline");
    create_topic(&kafka, &kafka.commands_topic)?;
    let topic = kafka.commands_topic.clone();
    let producer = producer(&options.brokers)?;
    // Connect and learn the topic's leader before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let started = Instant::now();
    for (line, key) in lines.iter().zip(keys) {
        send(&producer, &topic, key, line.as_bytes(), None)?;
    }
    producer.flush(Duration::from_secs(600))?;
    let produce_seconds = started.elapsed().as_secs_f64();
    let produced = producer.context().delivered.load(Ordering::Relaxed);
    let produce_failed = producer.context().failed.load(Ordering::Relaxed);
    drop(producer);

    let (consumed, consume_seconds) = consume_all(&options.brokers, &topic, produced, None)?;
    let (consumed_fast, consume_fast_seconds) = consume_all(
        &options.brokers,
        &topic,
        produced,
        Some(READER_FETCH_WAIT_MS),
    )?;
    Ok(BrokerBaseline {
        topic,
        messages: produced,
        bytes: lines.iter().map(|l| l.len() as u64).sum(),
        produce_failed,
        produce_seconds,
        produce_messages_per_second: produced as f64 / produce_seconds,
        consumed,
        consume_seconds,
        consume_messages_per_second: consumed as f64 / consume_seconds.max(1e-9),
        consume_fetch_wait_ms: READER_FETCH_WAIT_MS,
        consumed_short_wait: consumed_fast,
        consume_short_wait_seconds: consume_fast_seconds,
        consume_short_wait_messages_per_second: consumed_fast as f64
            / consume_fast_seconds.max(1e-9),
    })
}

/// Reads `expected` messages of `topic` with a fresh consumer; returns how many arrived and
/// the seconds from the assignment to the last one.
fn consume_all(
    brokers: &str,
    topic: &str,
    expected: u64,
    fetch_wait_ms: Option<u32>,
) -> Result<(u64, f64), KafkaBenchError> {
    let started = Instant::now();
    let consumer = consumer_from_beginning(brokers, topic, fetch_wait_ms)?;
    let mut consumed = 0u64;
    let mut last = started;
    while consumed < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                consumed += 1;
                last = Instant::now();
            }
            Some(Err(error)) => warn!(message = "Consumer error.", error = %error),
            None => {}
        }
        if last.elapsed() > RESULT_STALL_MAX {
            warn!(message = "Baseline consumer stalled.", consumed, expected);
            break;
        }
    }
    Ok((consumed, (last - started).as_secs_f64()))
}

/// A ledger served in-process on its own thread until [`RunningLedger::stop`].
struct RunningLedger {
    http: SocketAddr,
    dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ServerError>>>,
}

impl RunningLedger {
    fn start(
        dir: &Path,
        kafka: KafkaOptions,
        log: LogOptions,
        auth: Authenticator,
    ) -> Result<Self, KafkaBenchError> {
        let ledger = Ledger::open(dir, log)?;
        let (server, http) = Server::bind_with_kafka(
            ledger,
            "127.0.0.1:0",
            ServeOptions::new(Arc::new(auth)),
            Some(kafka),
        )?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-ledger".into())
            .spawn(move || {
                server.run_until(async move {
                    let _ = stopped.await;
                })
            })?;
        let running = RunningLedger {
            http,
            dir: dir.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
        };
        // Ready once the consumer has assigned its partitions and reported its lag.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !scrape(running.http).is_some_and(|m| m.contains("csp_ledger_consumer_lag{")) {
            if Instant::now() > deadline {
                return Err(KafkaBenchError::Stalled(
                    "the ledger's consumer did not start within 30 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(running)
    }

    fn ledger_metrics(&self) -> Option<LedgerMetrics> {
        scrape(self.http).map(|text| LedgerMetrics::parse(&text))
    }

    fn stop(mut self) -> Result<(), KafkaBenchError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), KafkaBenchError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result.map_err(KafkaBenchError::from),
            Some(Err(_)) => Err(KafkaBenchError::Stalled(
                "the ledger thread panicked".into(),
            )),
            None => Ok(()),
        };
        let _ = std::fs::remove_dir_all(&self.dir);
        result
    }
}

impl Drop for RunningLedger {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// CPU time of every live thread of this process (Linux `schedstat`), by thread id: (name,
/// nanoseconds).
fn thread_cpu() -> HashMap<String, (String, u64)> {
    let mut threads = HashMap::new();
    let main = std::process::id().to_string();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return threads;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let nanos = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(nanos) = nanos {
            let tid = task.file_name().to_string_lossy().into_owned();
            let name = if tid == main {
                "main"
            } else if name.starts_with("rdk:") {
                "librdkafka"
            } else {
                name.trim()
            };
            threads.insert(tid, (name.to_string(), nanos));
        }
    }
    threads
}

/// CPU seconds by thread name since `before` (threads that ended in between are missing).
fn cpu_since(before: &HashMap<String, (String, u64)>) -> BTreeMap<String, f64> {
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for (tid, (name, nanos)) in thread_cpu() {
        let start = before.get(&tid).map_or(0, |(_, n)| *n);
        *by_name.entry(name).or_default() += nanos.saturating_sub(start) as f64 / 1e9;
    }
    by_name.retain(|_, seconds| *seconds >= 0.01);
    for seconds in by_name.values_mut() {
        *seconds = (*seconds * 100.0).round() / 100.0;
    }
    by_name
}

/// The `/metrics` text of the ledger serving HTTP on `http`.
fn scrape(http: SocketAddr) -> Option<String> {
    let mut connection =
        Connection::open_timeout(http, Duration::from_secs(1), Duration::from_secs(2)).ok()?;
    let response = connection
        .request("GET", "/metrics", &[("Connection", "close")], &[])
        .ok()?;
    (response.status == 200).then(|| response.text())
}

/// The figures read from the ledger's `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
struct LedgerMetrics {
    commands: u64,
    events: u64,
    apply_seconds: f64,
    group_commits: u64,
}

impl LedgerMetrics {
    fn parse(text: &str) -> LedgerMetrics {
        let mut metrics = LedgerMetrics::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if name.starts_with("csp_ledger_commands_total{") {
                metrics.commands += value.parse::<u64>().unwrap_or(0);
            } else if name == "csp_ledger_events_appended_total" {
                metrics.events = value.parse().unwrap_or(0);
            } else if name == "csp_ledger_apply_seconds_sum" {
                metrics.apply_seconds = value.parse().unwrap_or(0.0);
            } else if name == "csp_ledger_apply_seconds_count" {
                metrics.group_commits = value.parse().unwrap_or(0);
            }
        }
        metrics
    }

    fn side(&self, all_committed_after: Option<Duration>) -> LedgerSide {
        LedgerSide {
            commands_committed: self.commands,
            all_committed_after_seconds: all_committed_after.map(|d| d.as_secs_f64()),
            group_commits: self.group_commits,
            commands_per_group_commit: self.commands as f64 / self.group_commits.max(1) as f64,
            writer_apply_seconds: self.apply_seconds,
            events_appended: self.events,
        }
    }
}

/// One sample: time since the phase started, commands acknowledged by the broker to the
/// benchmark's producer, the ledger's metrics, results on the results topic (its high
/// watermarks), results received by the benchmark.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    acknowledged: u64,
    ledger: LedgerMetrics,
    published: u64,
    received: u64,
}

/// The columns of a timeline row.
pub const TIMELINE_COLUMNS: &str = "seconds since the first (scheduled) publish, commands acknowledged by the broker, commands committed by the ledger, results published by the ledger (results topic high watermark), results received";

/// Samples the ledger's metrics and the two counters every [`SAMPLE_INTERVAL`] on a thread of
/// its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(
        http: SocketAddr,
        since: Instant,
        producer: Arc<BenchProducer>,
        results: (BaseConsumer, String, Vec<i32>),
        received: Arc<AtomicU64>,
    ) -> Result<Sampler, KafkaBenchError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("bench-sampler".into())
            .spawn(move || {
                let (watermarks, topic, partitions) = results;
                let mut samples = Vec::new();
                let mut published = 0;
                while !stopping.load(Ordering::Relaxed) {
                    // Downstream first, so that every row reads acknowledged >= committed >=
                    // published >= received.
                    let received = received.load(Ordering::Relaxed);
                    let mut high_sum = 0;
                    let all = partitions.iter().all(|partition| {
                        watermarks
                            .fetch_watermarks(&topic, *partition, Duration::from_secs(1))
                            .map(|(_, high)| high_sum += high.max(0) as u64)
                            .is_ok()
                    });
                    if all {
                        published = high_sum;
                    }
                    let ledger = scrape(http).map(|text| LedgerMetrics::parse(&text));
                    if let Some(ledger) = ledger {
                        samples.push(Sample {
                            at: since.elapsed(),
                            acknowledged: producer.context().delivered.load(Ordering::Relaxed),
                            ledger,
                            published,
                            received,
                        });
                    }
                    std::thread::sleep(SAMPLE_INTERVAL);
                }
                samples
            })?;
        Ok(Sampler { stop, thread })
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Outcomes {
    results: u64,
    accepted: u64,
    rejected: u64,
    duplicates: u64,
}

impl Outcomes {
    fn count(&mut self, payload: &[u8]) {
        self.results += 1;
        match ResultMessage::decode(payload, &[]).map(|r| r.outcome) {
            Ok(OutcomeKind::Accepted) => self.accepted += 1,
            Ok(OutcomeKind::Duplicate) => self.duplicates += 1,
            Ok(OutcomeKind::Rejected) | Err(_) => self.rejected += 1,
        }
    }
}

/// A phase's fresh topics, its ledger, a reader of its results topic, and a producer that
/// already knows the commands topic.
fn start_phase(
    options: &KafkaBenchOptions,
    run_id: &str,
    phase: &str,
) -> Result<
    (
        KafkaOptions,
        RunningLedger,
        BaseConsumer,
        Arc<BenchProducer>,
    ),
    KafkaBenchError,
> {
    let kafka = topics(options, run_id, phase);
    let ledger = RunningLedger::start(
        &options
            .data_dir
            .join(format!("kafka-bench-{run_id}-{phase}")),
        kafka.clone(),
        options.log,
        match &options.signing {
            Some(signing) => signing.authenticator()?,
            None => Authenticator::insecure(),
        },
    )?;
    let results = consumer_from_beginning(
        &options.brokers,
        &kafka.results_topic,
        Some(READER_FETCH_WAIT_MS),
    )?;
    let producer = Arc::new(producer(&options.brokers)?);
    producer
        .client()
        .fetch_metadata(Some(&kafka.commands_topic), Duration::from_secs(10))?;
    warm_up(&producer, &kafka, &results, options.signing.as_ref())?;
    Ok((kafka, ledger, results, producer))
}

/// Sends one command that is not in the workload (an unknown type: a `malformed_command`
/// result) and waits for its result, so that the measured phase starts with every client
/// connected and fetching: the ledger's first fetch after assignment and the producers' first
/// metadata lookups take up to half a second against tansu, a start-up cost, not a latency.
fn warm_up(
    producer: &BenchProducer,
    kafka: &KafkaOptions,
    results: &BaseConsumer,
    signing: Option<&BenchSigning>,
) -> Result<(), KafkaBenchError> {
    let command_id = uuid::Uuid::new_v4().to_string();
    let line = serde_json::json!({"command_id": command_id, "type": "BenchmarkWarmUp"}).to_string();
    send(
        producer,
        &kafka.commands_topic,
        &command_id,
        line.as_bytes(),
        headers(signing, &line),
    )?;
    producer.flush(Duration::from_secs(30))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(Ok(message)) = results.poll(Duration::from_millis(100)) {
            if message.key() == Some(command_id.as_bytes()) {
                return Ok(());
            }
        }
    }
    Err(KafkaBenchError::Stalled(
        "no result for the warm-up command within 30 s".into(),
    ))
}

fn throughput(
    options: &KafkaBenchOptions,
    run_id: &str,
    phase: &str,
    lines: &Arc<Vec<String>>,
    keys: &Arc<Vec<String>>,
) -> Result<ThroughputReport, KafkaBenchError> {
    let (kafka, ledger, results, producer) = start_phase(options, run_id, phase)?;
    let total = lines.len() as u64;
    let received = Arc::new(AtomicU64::new(0));

    let cpu_before = thread_cpu();
    let started = Instant::now();
    let sampler = Sampler::start(
        ledger.http,
        started,
        Arc::clone(&producer),
        watermark_reader(&options.brokers, &kafka.results_topic)?,
        Arc::clone(&received),
    )?;
    let publisher = {
        let (producer, topic) = (Arc::clone(&producer), kafka.commands_topic.clone());
        let (lines, keys) = (Arc::clone(lines), Arc::clone(keys));
        let signing = options.signing.clone();
        std::thread::Builder::new()
            .name("bench-publish".into())
            .spawn(move || -> Result<Duration, KafkaError> {
                for (line, key) in lines.iter().zip(keys.iter()) {
                    let headers = headers(signing.as_ref(), line);
                    send(&producer, &topic, key, line.as_bytes(), headers)?;
                }
                producer.flush(Duration::from_secs(600))?;
                Ok(started.elapsed())
            })?
    };
    let mut outcomes = Outcomes::default();
    let mut first_result = None;
    let mut last_result = started;
    let mut last_progress = Instant::now();
    while outcomes.results < total {
        match results.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_result = Instant::now();
                first_result.get_or_insert(last_result);
                last_progress = last_result;
                outcomes.count(message.payload().unwrap_or_default());
                received.store(outcomes.results, Ordering::Relaxed);
            }
            Some(Err(error)) => warn!(message = "Results consumer error.", error = %error),
            None => {}
        }
        if last_progress.elapsed() > RESULT_STALL_MAX {
            warn!(
                message = "No result for a while; giving up.",
                received = outcomes.results,
                total
            );
            break;
        }
    }
    let seconds = (last_result - started).as_secs_f64();
    let publish_seconds = publisher
        .join()
        .map_err(|_| KafkaBenchError::Stalled("the publishing thread panicked".into()))??
        .as_secs_f64();
    let samples = sampler.finish();
    let cpu_seconds_by_thread = cpu_since(&cpu_before);
    let last = ledger.ledger_metrics().unwrap_or_default();
    ledger.stop()?;
    Ok(ThroughputReport {
        commands: total,
        results: outcomes.results,
        results_missing: total.saturating_sub(outcomes.results),
        accepted: outcomes.accepted,
        rejected: outcomes.rejected,
        duplicates: outcomes.duplicates,
        publish_seconds,
        first_result_after_seconds: first_result.map_or(0.0, |f| (f - started).as_secs_f64()),
        seconds,
        commands_per_second: outcomes.results as f64 / seconds.max(1e-9),
        ledger: last.side(all_committed_after(&samples, total)),
        cpu_seconds_by_thread,
        timeline: timeline(&samples),
    })
}

/// A client that reads the high watermarks of every partition of `topic`.
fn watermark_reader(
    brokers: &str,
    topic: &str,
) -> Result<(BaseConsumer, String, Vec<i32>), KafkaBenchError> {
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    Ok((client, topic.to_string(), partitions))
}

/// When the ledger's metrics first showed `total` commands committed.
fn all_committed_after(samples: &[Sample], total: u64) -> Option<Duration> {
    samples
        .iter()
        .find(|s| s.ledger.commands >= total)
        .map(|s| s.at)
}

/// The last sample of every whole second, and the last sample.
fn timeline(samples: &[Sample]) -> Vec<TimelineRow> {
    let mut rows: Vec<TimelineRow> = Vec::new();
    for (i, sample) in samples.iter().enumerate() {
        let second = sample.at.as_secs();
        let next_second = samples.get(i + 1).map(|n| n.at.as_secs());
        if next_second != Some(second) {
            rows.push((
                (sample.at.as_secs_f64() * 10.0).round() / 10.0,
                sample.acknowledged,
                sample.ledger.commands,
                sample.published,
                sample.received,
            ));
        }
    }
    rows
}

fn latency(options: &KafkaBenchOptions, run_id: &str) -> Result<LatencyReport, KafkaBenchError> {
    let rate = options.rate.max(1);
    let count = (rate * options.seconds.max(1)) as usize;
    // A fresh ledger and the same generator, so the commands are realistic from the first one.
    let lines: Vec<String> = Generator::new(options.seed)
        .take(count)
        .map(|envelope| envelope.to_json())
        .collect();
    let keys: Vec<String> = lines.iter().map(|l| command_key(l)).collect();
    let mut indexes: HashMap<String, Vec<u32>> = HashMap::with_capacity(count);
    for (index, line) in lines.iter().enumerate() {
        let id = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["command_id"].as_str().map(str::to_string))
            .unwrap_or_default();
        indexes.entry(id).or_default().push(index as u32);
    }

    let (kafka, ledger, results, producer) = start_phase(options, run_id, "latency")?;

    let cpu_before = thread_cpu();
    let interval_nanos = 1_000_000_000 / rate;
    let start = Instant::now() + Duration::from_millis(100);
    let scheduled = move |index: u64| start + Duration::from_nanos(index * interval_nanos);
    let received = Arc::new(AtomicU64::new(0));
    let sampler = Sampler::start(
        ledger.http,
        start,
        Arc::clone(&producer),
        watermark_reader(&options.brokers, &kafka.results_topic)?,
        Arc::clone(&received),
    )?;
    let behind_max = Arc::new(AtomicU64::new(0));
    let sender = {
        let (producer, topic, behind_max) = (
            Arc::clone(&producer),
            kafka.commands_topic.clone(),
            Arc::clone(&behind_max),
        );
        let signing = options.signing.clone();
        std::thread::Builder::new()
            .name("bench-paced".into())
            .spawn(move || -> Result<Duration, KafkaError> {
                for (index, (line, key)) in lines.iter().zip(&keys).enumerate() {
                    let due = scheduled(index as u64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    } else {
                        behind_max.fetch_max((now - due).as_micros() as u64, Ordering::Relaxed);
                    }
                    let headers = headers(signing.as_ref(), line);
                    send(&producer, &topic, key, line.as_bytes(), headers)?;
                }
                let sent = start.elapsed();
                producer.flush(Duration::from_secs(600))?;
                Ok(sent)
            })?
    };

    let total = count as u64;
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(count);
    let mut latencies: Vec<u64> = Vec::with_capacity(count);
    let mut by_second: Vec<Vec<u64>> = Vec::new();
    let mut outcomes = Outcomes::default();
    let mut last_progress = Instant::now();
    while outcomes.results < total {
        match results.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let now = Instant::now();
                last_progress = now;
                outcomes.count(message.payload().unwrap_or_default());
                received.store(outcomes.results, Ordering::Relaxed);
                let key = std::str::from_utf8(message.key().unwrap_or_default()).unwrap_or("");
                if let Some((id, sends)) = indexes.get_key_value(key) {
                    let nth = seen.entry(id.as_str()).or_insert(0);
                    if let Some(index) = sends.get(*nth) {
                        let latency = (now - scheduled(u64::from(*index))).as_micros() as u64;
                        latencies.push(latency);
                        let second = (u64::from(*index) / rate) as usize;
                        if by_second.len() <= second {
                            by_second.resize_with(second + 1, Vec::new);
                        }
                        by_second[second].push(latency);
                    }
                    *nth += 1;
                }
            }
            Some(Err(error)) => warn!(message = "Results consumer error.", error = %error),
            None => {}
        }
        if last_progress.elapsed() > RESULT_STALL_MAX {
            warn!(
                message = "No result for a while; giving up.",
                received = outcomes.results,
                total
            );
            break;
        }
    }
    let send_seconds = sender
        .join()
        .map_err(|_| KafkaBenchError::Stalled("the paced sender panicked".into()))??
        .as_secs_f64();
    let samples = sampler.finish();
    let cpu_seconds_by_thread = cpu_since(&cpu_before);
    let last = ledger.ledger_metrics().unwrap_or_default();
    ledger.stop()?;
    latencies.sort_unstable();
    let p99_max_micros_by_second = by_second
        .iter_mut()
        .map(|second| {
            second.sort_unstable();
            (
                percentile(second, 0.99),
                second.last().copied().unwrap_or(0),
            )
        })
        .collect();
    Ok(LatencyReport {
        target_rate: rate,
        commands: total,
        send_seconds,
        achieved_send_rate: total as f64 / send_seconds.max(1e-9),
        sender_behind_schedule_max_micros: behind_max.load(Ordering::Relaxed),
        results: outcomes.results,
        results_missing: total.saturating_sub(outcomes.results),
        accepted: outcomes.accepted,
        rejected: outcomes.rejected,
        duplicates: outcomes.duplicates,
        p50_micros: percentile(&latencies, 0.50),
        p90_micros: percentile(&latencies, 0.90),
        p99_micros: percentile(&latencies, 0.99),
        p999_micros: percentile(&latencies, 0.999),
        max_micros: latencies.last().copied().unwrap_or(0),
        p99_max_micros_by_second,
        ledger: last.side(all_committed_after(&samples, total)),
        cpu_seconds_by_thread,
        timeline: timeline(&samples),
    })
}

fn percentile(sorted: &[u64], quantile: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * quantile).round() as usize]
}
