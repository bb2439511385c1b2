//! `serve`: wires the one writer, the HTTP server and, in Kafka mode, the lease, standby,
//! publisher and consumer threads together, and stops them in order.
//!
//! Kafka mode runs one thread that follows the group's topics as a standby until this instance
//! holds the lease and has caught up, then leads: publishes from the outbox and consumes
//! commands into the writer until stopped. The lease thread stops last, so that a leader
//! releases its lease only once nothing of its consumer or publisher is in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use thiserror::Error;
use tracing::{error, info};

use crate::api::http::{router, HttpState};
use crate::api::metrics::Metrics;
use crate::api::tls::{TlsError, TlsFiles, TlsListener};
use crate::auth::Authenticator;
use crate::ingest::lease::LeaseStatus;
use crate::ingest::KafkaOptions;
use crate::intake::Submission;
use crate::notary::Notary;
use crate::store::log::Log;
use crate::writer::{
    BatchResult, CommitObserver, Ledger, Outcome, Writer, WriterHandle, WriterOptions,
};

pub use crate::api::http::COMMAND_BODY_BYTES_MAX;
pub use crate::writer::CHECKPOINT_INTERVAL_EVENTS;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest wait of a read with `min_position` before it answers 503.
    pub read_wait_max: Duration,
    /// Who may call, over HTTP and Kafka (SPEC.md section 10).
    pub auth: Arc<Authenticator>,
    /// `--tls-cert` and `--tls-key`: serve HTTPS only. Loaded and checked at bind time.
    pub tls: Option<TlsFiles>,
    /// `--max-body-bytes`: the largest request body (413 `payload_too_large`).
    pub max_body_bytes: usize,
    /// Connections served at once and their timeouts (SPEC.md section 11).
    pub limits: crate::api::serve::ConnectionLimits,
    /// `--expensive-reads-max`: expensive reads run at once (429 `busy` beyond).
    pub expensive_reads_max: usize,
    /// Signs checkpoints while this instance writes the log (SPEC.md section 12); none: no
    /// checkpoints (embedders, tests).
    pub notary: Option<Arc<Notary>>,
    /// `--checkpoint-interval-ms`: the longest time between checkpoints while the log grows.
    pub checkpoint_interval: Duration,
}

impl ServeOptions {
    /// The defaults, with `auth` deciding who may call.
    pub fn new(auth: Arc<Authenticator>) -> ServeOptions {
        ServeOptions {
            read_wait_max: Duration::from_secs(2),
            auth,
            tls: None,
            max_body_bytes: COMMAND_BODY_BYTES_MAX,
            limits: crate::api::serve::ConnectionLimits::default(),
            expensive_reads_max: usize::from(crate::api::http::EXPENSIVE_READS_MAX),
            notary: None,
            checkpoint_interval: Duration::from_millis(crate::notary::CHECKPOINT_INTERVAL_MS),
        }
    }
}

/// Failures of the server itself. Edge: exit 1.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("binding {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    /// `--insecure-no-auth` on an address other machines can reach.
    #[error("--insecure-no-auth is refused on {addr}: it is allowed only on a loopback address (127.0.0.1, ::1)")]
    InsecureNotLoopback { addr: SocketAddr },
    /// `--insecure-no-auth` with a broker other machines can write to: its unsigned commands
    /// would all be taken as the administrator's.
    #[error("--insecure-no-auth is refused with Kafka brokers {brokers}: unsigned commands are taken only from a broker on a loopback address")]
    InsecureBrokerNotLoopback { brokers: String },
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Ledger(#[from] crate::writer::LedgerError),
    #[error("Kafka: {0}")]
    Kafka(#[from] crate::ingest::IngestError),
    /// The local log holds events that were never published and another instance has since
    /// written other events at those positions. Edge: the binary moves the directory aside and
    /// starts again, rebuilding from the events topic.
    #[error("the local log forked from the events topic at position {position}")]
    Forked { position: u64 },
    /// This instance stopped leading (deposed, or its lease ran out while it could not reach
    /// the broker). Edge: exit 3; a supervisor restarts it as a standby.
    #[error("lost the lease: {0}")]
    LostLease(String),
    /// A witnessed checkpoint shows this instance's log rolled back or forked: it must not
    /// lead. Edge: exit 4.
    #[error(transparent)]
    Notary(#[from] crate::notary::NotaryError),
}

/// What the Kafka threads and the shutdown path share.
struct Shared {
    writer: WriterHandle,
    log: Arc<Log>,
    metrics: Arc<Metrics>,
    /// Wakes the Kafka publisher after a commit.
    kick_rx: Receiver<()>,
    kafka: Option<KafkaOptions>,
    lease: Option<Arc<LeaseStatus>>,
    /// Authenticates Kafka command messages.
    auth: Arc<Authenticator>,
    notary: Option<Arc<Notary>>,
    checkpoint_interval: Duration,
    /// Why the server must stop on its own (lost lease, forked log), and the wake-up for it.
    fatal: std::sync::Mutex<Option<ServerError>>,
    fatal_notify: tokio::sync::Notify,
}

impl Shared {
    /// Stops the server with `error` (the first one wins).
    fn fail(&self, error: ServerError) {
        error!(message = "Stopping.", error = %error);
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        if fatal.is_none() {
            *fatal = Some(error);
        }
        self.fatal_notify.notify_one();
    }
}

/// Whether every bootstrap server resolves to loopback addresses only.
fn all_loopback(brokers: &str) -> bool {
    use std::net::ToSocketAddrs;
    brokers.split(',').map(str::trim).all(|broker| {
        let broker = broker
            .rsplit_once("://")
            .map_or(broker, |(_, address)| address);
        match broker.to_socket_addrs() {
            Ok(addresses) => {
                let addresses: Vec<SocketAddr> = addresses.collect();
                !addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback())
            }
            Err(_) => false,
        }
    })
}

/// Whether this instance writes the log: no lease (embedded), or holding it.
fn writes(lease: &Option<Arc<LeaseStatus>>) -> bool {
    lease.as_ref().is_none_or(|lease| lease.held())
}

/// The role reported by /healthz and the `csp_ledger_leader` metric.
fn role(lease: &Option<Arc<LeaseStatus>>) -> &'static str {
    match lease {
        None => "single",
        Some(lease) if lease.held() => "leader",
        Some(_) => "standby",
    }
}

/// After each durable batch: metrics, and a kick for the publisher.
struct ServeObserver {
    metrics: Arc<Metrics>,
    kick: Sender<()>,
}

impl CommitObserver for ServeObserver {
    fn committed(&self, result: &BatchResult, head: u64, seconds: f64) {
        self.metrics.apply_batch(seconds);
        self.metrics.events_appended(result.events.len() as u64);
        self.metrics.positions(head, head);
        for outcome in &result.outcomes {
            let code = match outcome {
                // A Kafka message that did not authenticate is a dead letter, not a command.
                Outcome::Rejected { rejection, .. }
                    if rejection.message == crate::intake::UNAUTHENTICATED =>
                {
                    crate::intake::UNAUTHENTICATED
                }
                Outcome::Rejected { rejection, .. } => rejection.code.as_str(),
                _ => "",
            };
            self.metrics.command(outcome.kind().as_str(), code);
        }
        let _ = self.kick.try_send(());
    }

    fn replicated(&self, head: u64, seconds: f64) {
        self.metrics.apply_batch(seconds);
        self.metrics.positions(head, head);
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    /// HTTPS when set.
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    limits: crate::api::serve::ConnectionLimits,
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    http: Arc<HttpState>,
    writer: Writer,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) for `ledger`.
    pub fn bind(
        ledger: Ledger,
        addr: &str,
        options: ServeOptions,
    ) -> Result<(Server, SocketAddr), ServerError> {
        Server::bind_with_kafka(ledger, addr, options, None)
    }

    /// Binds `addr` and, with `kafka`, creates the topics and prepares ingest and publishing.
    pub fn bind_with_kafka(
        ledger: Ledger,
        addr: &str,
        options: ServeOptions,
        kafka: Option<KafkaOptions>,
    ) -> Result<(Server, SocketAddr), ServerError> {
        let limits = options.limits;
        let tls = options
            .tls
            .as_ref()
            .map(crate::api::tls::server_config)
            .transpose()?;
        if let Some(kafka) = &kafka {
            if options.auth.is_insecure() && !all_loopback(&kafka.brokers) {
                return Err(ServerError::InsecureBrokerNotLoopback {
                    brokers: kafka.brokers.clone(),
                });
            }
            crate::ingest::ensure_topics(kafka)?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("http")
            .build()?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|error| ServerError::Bind {
                addr: addr.to_string(),
                error,
            })?;
        let local = listener.local_addr()?;
        if options.auth.is_insecure() && !local.ip().is_loopback() {
            return Err(ServerError::InsecureNotLoopback { addr: local });
        }
        let lease = match &kafka {
            Some(_) => Some(Arc::new(LeaseStatus::new(
                ledger
                    .log()
                    .instance_id()
                    .map_err(crate::writer::LedgerError::from)?,
            ))),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        metrics.positions(ledger.state().position, ledger.head().position);
        let (kick, kick_rx) = crossbeam_channel::bounded(1);
        let observer = Arc::new(ServeObserver {
            metrics: Arc::clone(&metrics),
            kick,
        });
        let writer = Writer::start(ledger, WriterOptions::default(), observer)?;
        let reads = writer
            .reads()
            .cloned()
            .ok_or_else(|| std::io::Error::other("the writer keeps no read model"))?;
        let role_lease = lease.clone();
        let http = Arc::new(HttpState {
            reads,
            writer: writer.handle(),
            metrics: Arc::clone(&metrics),
            read_wait_max: options.read_wait_max,
            kafka_commands_topic: kafka.as_ref().map(|k| k.commands_topic.clone()),
            role: Box::new(move || role(&role_lease)),
            auth: Arc::clone(&options.auth),
            max_body_bytes: options.max_body_bytes,
            body_timeout: options.limits.body_timeout,
            expensive: crate::api::expensive::ExpensivePool::start(options.expensive_reads_max)?,
            verified: Default::default(),
        });
        let shared = Arc::new(Shared {
            writer: writer.handle(),
            log: Arc::clone(writer.log()),
            metrics,
            kick_rx,
            lease,
            kafka,
            auth: options.auth,
            notary: options.notary,
            checkpoint_interval: options.checkpoint_interval,
            fatal: std::sync::Mutex::new(None),
            fatal_notify: tokio::sync::Notify::new(),
        });
        Ok((
            Server {
                listener,
                tls,
                limits,
                runtime,
                shared,
                http,
                writer,
            },
            local,
        ))
    }

    /// Serves until SIGINT or SIGTERM, then drains the writer and writes a checkpoint.
    pub fn run(self) -> Result<(), ServerError> {
        self.run_until(shutdown_signal())
    }

    /// Serves until `shutdown` completes, then drains the writer and writes a checkpoint.
    pub fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            tls,
            limits,
            runtime,
            shared,
            http,
            writer,
        } = self;
        let stop = Arc::new(AtomicBool::new(false));
        // The lease stops last: a leader releases it only once the consumer and the publisher
        // have stopped and nothing of theirs is in flight (a standby claims at once).
        let lease_stop = Arc::new(AtomicBool::new(false));
        let mut kafka_threads = Vec::new();
        let mut lease_thread = None;
        if let (Some(kafka), Some(lease)) = (shared.kafka.clone(), shared.lease.clone()) {
            let (lease_stop, lease_shared, lease_kafka) =
                (Arc::clone(&lease_stop), Arc::clone(&shared), kafka.clone());
            lease_thread = Some(std::thread::Builder::new().name("lease".into()).spawn(
                move || {
                    let status = Arc::clone(&lease);
                    match crate::ingest::lease::run(&lease_kafka, &status, &lease_stop) {
                        Ok(()) if status.deposed() => lease_shared.fail(ServerError::LostLease(
                            "another instance claimed a later term".into(),
                        )),
                        Ok(()) => {}
                        Err(error) => lease_shared.fail(ServerError::Kafka(error)),
                    }
                },
            )?);
            let (kafka_stop, kafka_shared) = (Arc::clone(&stop), Arc::clone(&shared));
            kafka_threads.push(
                std::thread::Builder::new()
                    .name("kafka".into())
                    .spawn(move || kafka_loop(&kafka_shared, &kafka, &kafka_stop))?,
            );
        }
        let notary_stop = Arc::new(AtomicBool::new(false));
        let notary_thread = match shared.notary.clone() {
            Some(notary) => {
                let (shared, stop) = (Arc::clone(&shared), Arc::clone(&notary_stop));
                Some(
                    std::thread::Builder::new()
                        .name("notary".into())
                        .spawn(move || sign_while_writing(&shared, &notary, &stop))?,
                )
            }
            None => None,
        };
        #[cfg(unix)]
        runtime.spawn(reload_on_hangup(Arc::clone(&shared.auth)));
        let app = router(http);
        let fatal_shared = Arc::clone(&shared);
        let served = runtime.block_on(async move {
            let stopping = async move {
                tokio::select! {
                    _ = shutdown => {},
                    _ = fatal_shared.fatal_notify.notified() => {},
                }
            };
            match tls {
                None => crate::api::serve::serve(listener, app, limits, stopping).await,
                Some(config) => {
                    let listener = TlsListener::new(listener, config)?;
                    crate::api::serve::serve(listener, app, limits, stopping).await
                }
            }
        });
        drop(runtime);
        notary_stop.store(true, Ordering::Relaxed);
        if let Some(thread) = notary_thread {
            let _ = thread.join();
        }
        let was_writing = writes(&shared.lease);
        stop.store(true, Ordering::Relaxed);
        for thread in kafka_threads {
            let _ = thread.join();
        }
        lease_stop.store(true, Ordering::Relaxed);
        if let Some(thread) = lease_thread {
            let _ = thread.join();
        }
        // Answers what was queued, then writes the shutdown checkpoint.
        drop(writer.stop());
        info!(message = "Writer stopped.");
        if let (Some(notary), true, None) = (&shared.notary, was_writing, &shared.kafka) {
            // The last checkpoint, of the head at the clean stop (in Kafka mode the notary
            // thread signed the last commit before the writer stopped).
            if let Err(error) = notary.sign(&shared.log) {
                error!(message = "Could not sign the last checkpoint.", error = %error);
            }
        }
        served?;
        let fatal = shared
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match fatal {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Signs a checkpoint of what is final: the durable head without Kafka; with Kafka, only the
/// events a commit record of this instance covered (a takeover voids the tail after its last
/// commit, and a checkpoint of that tail would make every successor refuse to lead).
fn sign_what_is_final(
    shared: &Shared,
    notary: &Notary,
) -> Result<Option<String>, crate::notary::NotaryError> {
    if shared.kafka.is_none() {
        return notary.sign(&shared.log);
    }
    let committed = shared
        .log
        .cursor(crate::store::log::COMMITTED_POSITION_CURSOR)?;
    notary.sign_at(&shared.log, committed)
}

/// Signs a checkpoint every `checkpoint_interval` while this instance writes the log (no
/// lease, or holding it) and the log grew; never per command.
fn sign_while_writing(shared: &Shared, notary: &Notary, stop: &AtomicBool) {
    let publisher = match &shared.kafka {
        Some(kafka) => match crate::ingest::checkpoints::CheckpointPublisher::new(kafka) {
            Ok(publisher) => Some(publisher),
            Err(error) => {
                error!(message = "No checkpoints publisher; checkpoints are signed but not published.", error = %error);
                None
            }
        },
        None => None,
    };
    let sign = || match sign_what_is_final(shared, notary) {
        Ok(Some(note)) => {
            if let Some(publisher) = &publisher {
                if let Err(error) = publisher.publish(&note) {
                    error!(message = "Could not publish a checkpoint.", error = %error);
                }
            }
        }
        Ok(None) => {}
        Err(error) => error!(message = "Could not sign a checkpoint.", error = %error),
    };
    let step = Duration::from_millis(50).min(shared.checkpoint_interval);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        waited += step;
        if waited < shared.checkpoint_interval {
            continue;
        }
        waited = Duration::ZERO;
        if !writes(&shared.lease) {
            continue;
        }
        sign();
    }
    // The clean stop's checkpoint, while this instance still writes (the writer stops after
    // the HTTP server and the consumer, so the head may grow a little more; the next
    // leader's first checkpoint covers that).
    if writes(&shared.lease) {
        sign();
    }
}

/// Kafka mode: follow the group's topics as a standby until this instance holds the lease and
/// has caught up, then lead: publish from the outbox and consume commands until stopped.
fn kafka_loop(shared: &Arc<Shared>, kafka: &KafkaOptions, stop: &Arc<AtomicBool>) {
    let Some(lease) = shared.lease.clone() else {
        return;
    };
    let log = Arc::clone(&shared.log);
    let writer = shared.writer.clone();
    let replicate = move |events, results, offsets| writer.replicate(events, results, offsets);
    match crate::ingest::standby::follow(kafka, Arc::clone(&log), &lease, &replicate, stop) {
        Ok(true) => {
            // Before it leads: a log that the witness or the latest published checkpoint
            // shows rolled back or forked must not.
            if let Some(notary) = &shared.notary {
                let published = match crate::ingest::checkpoints::latest(kafka) {
                    Ok(published) => published,
                    Err(error) => {
                        shared.fail(ServerError::Kafka(error));
                        return;
                    }
                };
                let checked = notary.check_witness(&log).and_then(|()| match &published {
                    Some(note) => notary.check_published(&log, note, &kafka.checkpoints_topic),
                    None => Ok(()),
                });
                if let Err(error) = checked {
                    shared.fail(ServerError::Notary(error));
                    return;
                }
            }
        }
        Ok(false) => return,
        Err(crate::ingest::IngestError::Ledger(crate::writer::LedgerError::Forked {
            position,
        })) => {
            shared.fail(ServerError::Forked { position });
            return;
        }
        Err(error) => {
            shared.fail(ServerError::Kafka(error));
            return;
        }
    }
    let publisher = match crate::ingest::Publisher::new(kafka, Arc::clone(&log), Arc::clone(&lease))
    {
        Ok(publisher) => publisher,
        Err(error) => {
            shared.fail(ServerError::Kafka(error));
            return;
        }
    };
    let (publisher_stop, kick) = (Arc::clone(stop), shared.kick_rx.clone());
    let publishing = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || publisher.run(&kick, &publisher_stop));
    let writer = shared.writer.clone();
    let submit = move |submissions: Vec<Submission>, offsets: Vec<(String, i64)>| {
        writer.submit(submissions, offsets)?.wait().map(|_| ())
    };
    let lag_shared = Arc::clone(shared);
    let on_lag = move |topic: &str, partition: i32, lag: i64| {
        lag_shared.metrics.consumer_lag(topic, partition, lag)
    };
    if let Err(error) =
        crate::ingest::consume(kafka, &shared.auth, log, &lease, &submit, &on_lag, stop)
    {
        if lease.held() {
            shared.fail(ServerError::Kafka(error));
        } else {
            shared.fail(ServerError::LostLease(error.to_string()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Ok(thread) = publishing {
        let _ = thread.join();
    }
}

/// Re-reads the principals file on every SIGHUP; a file that fails to load is logged and the
/// previous principals stay in force.
#[cfg(unix)]
async fn reload_on_hangup(auth: Arc<Authenticator>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        return;
    };
    while hangup.recv().await.is_some() {
        match auth.reload() {
            Ok(principals) => info!(message = "Principals reloaded.", principals),
            Err(error) => {
                error!(message = "Principals file refused; the previous principals stay in force.", error = %error)
            }
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    info!(message = "Shutting down.");
}
