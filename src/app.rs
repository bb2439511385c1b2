//! The HTTP transport (`csp-ledger serve`): the query router over axum, `POST /v1/commands`
//! for the embedded mode, and the operations endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`).
//!
//! One writer thread owns all appends: command requests queue up, the writer takes every
//! request waiting (group commit across HTTP clients), decides and commits them under the
//! write lock, then answers each request. Reads take the read lock, so a read always sees a
//! state equal to the durable log; a read waits at most for one group commit.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use crossbeam_channel::{unbounded, Receiver, Sender};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use std::sync::atomic::{AtomicBool, Ordering};

use crate::api::metrics::Metrics;
use crate::api::query::{answer, ReadView, Request};
use crate::ingest::lease::LeaseStatus;
use crate::ingest::KafkaOptions;
use crate::intake::Submission;
use crate::writer::{Ledger, SUBMIT_BATCH_COMMANDS_MAX};

/// Largest request body accepted by `POST /v1/commands`.
pub const COMMAND_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Events folded since the last checkpoint before the writer writes a new one.
pub const CHECKPOINT_INTERVAL_EVENTS: u64 = 250_000;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest wait of a read with `min_position` before it answers 503.
    pub read_wait_max: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            read_wait_max: Duration::from_secs(2),
        }
    }
}

/// Failures of the server itself. Edge: exit 1.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("binding {addr}: {error}")]
    Bind { addr: String, error: std::io::Error },
    #[error("HTTP server: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Ledger(#[from] crate::writer::LedgerError),
    #[error("Kafka: {0}")]
    Kafka(String),
    /// The local log holds events that were never published and another instance has since
    /// written other events at those positions. Edge: the binary moves the directory aside and
    /// starts again, rebuilding from the events topic.
    #[error("the local log forked from the events topic at position {position}")]
    Forked { position: u64 },
    /// This instance stopped leading (deposed, or its lease ran out while it could not reach
    /// the broker). Edge: exit 3; a supervisor restarts it as a standby.
    #[error("lost the lease: {0}")]
    LostLease(String),
}

struct CommandJob {
    submissions: Vec<Submission>,
    /// Consumer offsets to store with the batch (Kafka ingest).
    offsets: Vec<(String, i64)>,
    reply: oneshot::Sender<Result<Vec<Vec<u8>>, String>>,
}

/// Events and results another instance decided, for the log (standby mode).
struct ReplicateJob {
    events: Vec<crate::store::log::StoredEvent>,
    results: Vec<crate::store::log::OutcomeRecord>,
    offsets: Vec<(String, i64)>,
    reply: oneshot::Sender<Result<crate::store::log::Head, crate::writer::LedgerError>>,
}

enum Job {
    Commands(CommandJob),
    Replicate(ReplicateJob),
    /// Answer what was taken, then stop (shutdown).
    Stop,
}

struct Shared {
    ledger: RwLock<Ledger>,
    position: watch::Sender<u64>,
    metrics: Metrics,
    jobs: Sender<Job>,
    options: ServeOptions,
    /// Wakes the Kafka publisher after a commit.
    kick: Sender<()>,
    kick_rx: Receiver<()>,
    /// Kafka mode: commands arrive from the commands topic, not over HTTP.
    kafka: Option<KafkaOptions>,
    /// Kafka mode: whether this instance leads its group.
    lease: Option<Arc<LeaseStatus>>,
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

    /// The role reported by /healthz and the `csp_ledger_leader` metric.
    fn role(&self) -> &'static str {
        match &self.lease {
            None => "single",
            Some(lease) if lease.held() => "leader",
            Some(_) => "standby",
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: tokio::net::TcpListener,
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    jobs: Receiver<Job>,
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
        if let Some(kafka) = &kafka {
            crate::ingest::ensure_topics(kafka).map_err(|e| ServerError::Kafka(e.to_string()))?;
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
        let (jobs_tx, jobs_rx) = unbounded();
        let lease = match &kafka {
            Some(_) => Some(Arc::new(LeaseStatus::new(
                ledger
                    .log()
                    .instance_id()
                    .map_err(crate::writer::LedgerError::from)?,
            ))),
            None => None,
        };
        let position = ledger.state().position;
        let metrics = Metrics::default();
        metrics.positions(position, ledger.head().position);
        let (kick, kick_rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            ledger: RwLock::new(ledger),
            position: watch::Sender::new(position),
            metrics,
            jobs: jobs_tx,
            options,
            kick,
            kick_rx,
            lease,
            kafka,
            fatal: std::sync::Mutex::new(None),
            fatal_notify: tokio::sync::Notify::new(),
        });
        Ok((
            Server {
                listener,
                runtime,
                shared,
                jobs: jobs_rx,
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
            runtime,
            shared,
            jobs,
        } = self;
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || writer_loop(&writer_shared, &jobs))?;
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
                        Err(error) => lease_shared.fail(ServerError::Kafka(error.to_string())),
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
        let app = router(Arc::clone(&shared));
        let fatal_shared = Arc::clone(&shared);
        let served = runtime.block_on(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    tokio::select! {
                        _ = shutdown => {},
                        _ = fatal_shared.fatal_notify.notified() => {},
                    }
                })
                .await
        });
        drop(runtime);
        stop.store(true, Ordering::Relaxed);
        for thread in kafka_threads {
            let _ = thread.join();
        }
        lease_stop.store(true, Ordering::Relaxed);
        if let Some(thread) = lease_thread {
            let _ = thread.join();
        }
        let _ = shared.jobs.send(Job::Stop);
        let _ = writer.join();
        let ledger = shared.ledger.read().unwrap_or_else(|p| p.into_inner());
        match ledger.checkpoint() {
            Ok(position) => info!(message = "Checkpoint written on shutdown.", position),
            Err(error) => warn!(message = "No checkpoint on shutdown.", error = %error),
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

/// Kafka mode: follow the group's topics as a standby until this instance holds the lease and
/// has caught up, then lead: publish from the outbox and consume commands until stopped.
fn kafka_loop(shared: &Arc<Shared>, kafka: &KafkaOptions, stop: &Arc<AtomicBool>) {
    let Some(lease) = shared.lease.clone() else {
        return;
    };
    let log = shared
        .ledger
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .log_handle();
    let jobs = shared.jobs.clone();
    let replicate = move |events, results, offsets| {
        let (reply, answered) = oneshot::channel();
        jobs.send(Job::Replicate(ReplicateJob {
            events,
            results,
            offsets,
            reply,
        }))
        .map_err(|_| crate::writer::LedgerError::Replication("the writer stopped".into()))?;
        answered
            .blocking_recv()
            .map_err(|_| crate::writer::LedgerError::Replication("the writer stopped".into()))?
    };
    match crate::ingest::standby::follow(kafka, Arc::clone(&log), &lease, &replicate, stop) {
        Ok(true) => {}
        Ok(false) => return,
        Err(crate::ingest::IngestError::Ledger(crate::writer::LedgerError::Forked {
            position,
        })) => {
            shared.fail(ServerError::Forked { position });
            return;
        }
        Err(error) => {
            shared.fail(ServerError::Kafka(format!("following: {error}")));
            return;
        }
    }
    let publisher = match crate::ingest::Publisher::new(kafka, Arc::clone(&log), Arc::clone(&lease))
    {
        Ok(publisher) => publisher,
        Err(error) => {
            shared.fail(ServerError::Kafka(error.to_string()));
            return;
        }
    };
    let (publisher_stop, kick) = (Arc::clone(stop), shared.kick_rx.clone());
    let publishing = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || publisher.run(&kick, &publisher_stop));
    let jobs = shared.jobs.clone();
    let submit =
        move |submissions: Vec<Submission>, offsets: Vec<(String, i64)>| -> Result<(), String> {
            let (reply, answered) = oneshot::channel();
            jobs.send(Job::Commands(CommandJob {
                submissions,
                offsets,
                reply,
            }))
            .map_err(|_| "the writer stopped".to_string())?;
            answered
                .blocking_recv()
                .map_err(|_| "the writer stopped".to_string())?
                .map(|_| ())
        };
    let lag_shared = Arc::clone(shared);
    let on_lag = move |topic: &str, partition: i32, lag: i64| {
        lag_shared.metrics.consumer_lag(topic, partition, lag)
    };
    if let Err(error) = crate::ingest::consume(kafka, log, &lease, &submit, &on_lag, stop) {
        if lease.held() {
            shared.fail(ServerError::Kafka(format!("ingest stopped: {error}")));
        } else {
            shared.fail(ServerError::LostLease(error.to_string()));
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Ok(thread) = publishing {
        let _ = thread.join();
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

/// Appends a replicated batch and publishes the new position to readers.
fn replicate(shared: &Shared, job: ReplicateJob) {
    let started = Instant::now();
    let result = {
        let mut ledger = shared.ledger.write().unwrap_or_else(|p| p.into_inner());
        ledger.replicate(job.events, job.results, job.offsets)
    };
    if let Ok(head) = &result {
        shared.metrics.apply_batch(started.elapsed().as_secs_f64());
        shared.metrics.positions(head.position, head.position);
        shared.position.send_replace(head.position);
    }
    let _ = job.reply.send(result);
}

fn writer_loop(shared: &Shared, jobs: &Receiver<Job>) {
    let mut checkpointed = shared
        .ledger
        .read()
        .map(|l| l.state().position)
        .unwrap_or(0);
    let mut stopping = false;
    while !stopping {
        let first = match jobs.recv() {
            Ok(Job::Commands(first)) => first,
            Ok(Job::Replicate(job)) => {
                replicate(shared, job);
                continue;
            }
            Ok(Job::Stop) | Err(_) => break,
        };
        let mut deferred = None;
        let mut batch = vec![first];
        let mut commands: usize = batch[0].submissions.len();
        while commands < SUBMIT_BATCH_COMMANDS_MAX {
            match jobs.try_recv() {
                Ok(Job::Commands(job)) => {
                    commands += job.submissions.len();
                    batch.push(job);
                }
                Ok(Job::Stop) => {
                    stopping = true;
                    break;
                }
                Ok(Job::Replicate(job)) => {
                    deferred = Some(job);
                    break;
                }
                Err(_) => break,
            }
        }
        let counts: Vec<usize> = batch.iter().map(|j| j.submissions.len()).collect();
        let offsets: Vec<(String, i64)> = batch
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.offsets))
            .collect();
        let submissions: Vec<Submission> = batch
            .iter_mut()
            .flat_map(|j| std::mem::take(&mut j.submissions))
            .collect();
        let started = Instant::now();
        let submitted = {
            let mut ledger = shared.ledger.write().unwrap_or_else(|p| p.into_inner());
            let result = ledger.submit_with_offsets(submissions, offsets);
            let head = ledger.head().position;
            (result, head)
        };
        match submitted {
            (Ok(result), head) => {
                shared.metrics.apply_batch(started.elapsed().as_secs_f64());
                shared.metrics.events_appended(result.events.len() as u64);
                shared.metrics.positions(head, head);
                let mut lines = Vec::with_capacity(result.outcomes.len());
                for (index, outcome) in result.outcomes.iter().enumerate() {
                    let code = match outcome {
                        crate::writer::outcome::Outcome::Rejected { rejection, .. } => {
                            rejection.code.as_str()
                        }
                        _ => "",
                    };
                    shared.metrics.command(outcome.kind().as_str(), code);
                    let mut line = Vec::new();
                    result.write_outcome_json(index, &mut line);
                    lines.push(line);
                }
                shared.position.send_replace(head);
                let _ = shared.kick.try_send(());
                let mut lines = lines.into_iter();
                for (job, count) in batch.into_iter().zip(counts) {
                    let _ = job.reply.send(Ok(lines.by_ref().take(count).collect()));
                }
                if head >= checkpointed + CHECKPOINT_INTERVAL_EVENTS {
                    // A read lock: reads go on while the checkpoint is written; writes wait.
                    let ledger = shared.ledger.read().unwrap_or_else(|p| p.into_inner());
                    match ledger.checkpoint() {
                        Ok(position) => checkpointed = position,
                        Err(error) => warn!(message = "Checkpoint failed.", error = %error),
                    }
                }
            }
            (Err(failure), _) => {
                error!(message = "Append failed; the ledger stops accepting commands.", error = %failure);
                for job in batch {
                    let _ = job.reply.send(Err(failure.to_string()));
                }
            }
        }
        if let Some(job) = deferred {
            replicate(shared, job);
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(shared): State<Arc<Shared>>| async move {
                axum::Json(json!({"status": "alive", "role": shared.role()}))
            }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(crate::api::openapi::document()) }),
        )
        .route("/v1/commands", post(commands))
        .fallback(read)
        .layer(DefaultBodyLimit::max(COMMAND_BODY_BYTES_MAX))
        .with_state(shared)
}

fn json_response(status: StatusCode, body: &Value, position: Option<u64>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Some(position) = position {
        if let Ok(value) = position.to_string().parse() {
            response.headers_mut().insert("x-ledger-position", value);
        }
    }
    response
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let ledger = shared.ledger.read().unwrap_or_else(|p| p.into_inner());
    let (position, head) = (ledger.state().position, ledger.head().position);
    let ready = position == head;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"ready": ready, "position": position, "head_position": head}),
        Some(position),
    )
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
        .into_response()
}

/// The metrics label of a read path: ids replaced by placeholders.
fn route_label(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.len() >= 32 && segment.contains('-') {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn read(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let request = Request::parse(uri.path_and_query().map_or(uri.path(), |p| p.as_str()));
    if !request.path.starts_with("/v1/") {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"code": "route_not_found", "message": format!("no route for {}", request.path)}),
            None,
        );
    }
    if let Some(wanted) = request
        .params
        .get("min_position")
        .and_then(|m| m.parse::<u64>().ok())
    {
        let mut position = shared.position.subscribe();
        let _ = tokio::time::timeout(
            shared.options.read_wait_max,
            position.wait_for(|p| *p >= wanted),
        )
        .await;
    }
    let started = Instant::now();
    let answered = {
        let ledger = shared.ledger.read().unwrap_or_else(|p| p.into_inner());
        answer(
            ReadView {
                state: ledger.state(),
                log: ledger.log(),
            },
            &request,
        )
    };
    shared
        .metrics
        .query(&route_label(&request.path), started.elapsed().as_secs_f64());
    match answered {
        Ok(body) => {
            let position = body.get("position").and_then(Value::as_u64);
            json_response(StatusCode::OK, &body, position)
        }
        Err(error) => json_response(
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &error.body(),
            None,
        ),
    }
}

async fn commands(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    if let Some(kafka) = &shared.kafka {
        let message = format!(
            "this ledger takes commands from the Kafka topic {}",
            kafka.commands_topic
        );
        return json_response(
            StatusCode::CONFLICT,
            &json!({"code": "kafka_mode", "message": message}),
            None,
        );
    }
    let (submissions, single) = match parse_commands(&body) {
        Ok(parsed) => parsed,
        Err(message) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": "malformed_command", "message": message}),
                None,
            )
        }
    };
    let (reply, answered) = oneshot::channel();
    if shared
        .jobs
        .send(Job::Commands(CommandJob {
            submissions,
            offsets: Vec::new(),
            reply,
        }))
        .is_err()
    {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"code": "shutting_down", "message": "the ledger is stopping"}),
            None,
        );
    }
    match answered.await {
        Ok(Ok(lines)) => {
            let mut out = Vec::new();
            if !single {
                out.push(b'[');
            }
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(line);
            }
            if !single {
                out.push(b']');
            }
            let position = *shared.position.borrow();
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                out,
            )
                .into_response();
            if let Ok(value) = position.to_string().parse() {
                response.headers_mut().insert("x-ledger-position", value);
            }
            response
        }
        Ok(Err(failure)) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"code": "internal_error", "message": failure}),
            None,
        ),
        Err(_) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"code": "internal_error", "message": "the writer stopped"}),
            None,
        ),
    }
}

/// One envelope or an array of envelopes; `true` when it was a single one.
fn parse_commands(body: &[u8]) -> Result<(Vec<Submission>, bool), String> {
    let raw: &RawValue =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if raw.get().trim_start().starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(raw.get())
            .map_err(|e| format!("the body is not a JSON array: {e}"))?;
        if items.is_empty() {
            return Err("the array holds no command".into());
        }
        Ok((
            items
                .iter()
                .enumerate()
                .map(|(i, item)| Submission::parse(Some(i as u64 + 1), item.get().as_bytes()))
                .collect(),
            false,
        ))
    } else {
        Ok((vec![Submission::parse(Some(1), raw.get().as_bytes())], true))
    }
}
