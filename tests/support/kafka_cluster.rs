//! A small Kafka cluster for fault tests: one tansu broker (SQLite storage in a temp dir), a
//! group of `csp-ledger serve --kafka` instances kept running by a supervisor thread (an
//! instance that exits is started again on the same data directory, as systemd would), a
//! producer that knows which commands the broker took, and a reader of whole topics with
//! their offsets and headers.
//!
//! Helpers copied from `tests/kafka.rs` (free port, broker start and restart, child guard,
//! `serve` on a fixed address, role from `/healthz`) and made robust for processes that are
//! paused, killed and restarted underneath the test: every HTTP call has a timeout, and every
//! process started here is reaped on drop, also when the test panics.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use csp_ledger_testkit::http::Connection;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::Value;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `CSP_LEDGER_FAULT_KEEP=1`: keep the broker's and the instances' directories for
/// inspection (their paths are printed).
fn keep_dirs() -> bool {
    std::env::var_os("CSP_LEDGER_FAULT_KEEP").is_some_and(|v| v == "1")
}

fn release(dir: &mut Option<tempfile::TempDir>, what: &str) {
    if let Some(dir) = dir.take() {
        if keep_dirs() {
            eprintln!("kept {what}: {}", dir.keep().display());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The broker

/// `tansu` from the PATH, else from `~/.cargo/bin` (where `scripts/kafka-dev.sh install`
/// puts it).
fn tansu() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("tansu").is_file()))
        .unwrap_or(false);
    if on_path {
        return PathBuf::from("tansu");
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".cargo/bin/tansu"),
        None => PathBuf::from("tansu"),
    }
}

/// A tansu broker that lives as long as the value. A watchdog thread starts it again if it
/// dies by itself (counted in [`Broker::deaths`]: an environment fault, reported, not one
/// of the test's faults).
pub struct Broker {
    pub address: String,
    path: PathBuf,
    dir: Option<tempfile::TempDir>,
    state: Arc<Mutex<BrokerState>>,
    stop: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<()>>,
}

struct BrokerState {
    /// None while the test holds it down ([`Broker::restart`]).
    child: Option<Child>,
    restarts: u32,
    deaths: Vec<String>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
        if let Some(mut child) = lock(&self.state).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        release(&mut self.dir, "the broker's directory");
    }
}

fn tail_of(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Broker {
    pub fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let address = format!("127.0.0.1:{}", free_port());
        let state = Arc::new(Mutex::new(BrokerState {
            child: Some(start_tansu(&path, &address)),
            restarts: 0,
            deaths: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (state, stop, path, address) = (
                Arc::clone(&state),
                Arc::clone(&stop),
                path.clone(),
                address.clone(),
            );
            std::thread::Builder::new()
                .name("broker-watchdog".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        {
                            let mut state = lock(&state);
                            let died = match state.child.as_mut() {
                                Some(child) => child.try_wait().ok().flatten(),
                                None => None,
                            };
                            if let Some(status) = died {
                                let death = format!(
                                    "tansu exited by itself ({status}); the end of its output:\n{}",
                                    tail_of(&path.join("tansu.log"), 10)
                                );
                                eprintln!("{death}");
                                state.deaths.push(death);
                                state.child = Some(start_tansu(&path, &address));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
                .unwrap()
        };
        Broker {
            address,
            path,
            dir: Some(dir),
            state,
            stop,
            watchdog: Some(watchdog),
        }
    }

    /// Stops the broker (SIGKILL) and starts it again on the same address and storage.
    pub fn restart(&mut self, down_for: Duration) {
        if let Some(mut child) = lock(&self.state).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(down_for);
        let child = start_tansu(&self.path, &self.address);
        let mut state = lock(&self.state);
        state.child = Some(child);
        state.restarts += 1;
    }

    /// Restarts by the test.
    pub fn restarts(&self) -> u32 {
        lock(&self.state).restarts
    }

    /// Deaths not caused by the test, each with the end of tansu's output.
    pub fn deaths(&self) -> Vec<String> {
        lock(&self.state).deaths.clone()
    }
}

fn start_tansu(dir: &Path, address: &str) -> Child {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .unwrap();
    let mut child = Command::new(tansu())
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://{address}"),
            "--advertised-listener-url",
            &format!("tcp://{address}"),
            "--storage-engine",
            "sqlite://tansu.db",
        ])
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("tansu is needed for the Kafka tests: scripts/kafka-dev.sh install");
    let started = Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        if started.elapsed() > Duration::from_secs(30) || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tansu did not start on {address}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

// ---------------------------------------------------------------------------------------------
// HTTP with timeouts (a paused process accepts connections but never answers)

/// `GET path` as JSON; `Value::Null` when the server is down, paused, restarting or says
/// something that is not JSON.
pub fn get(http: &str, path: &str) -> Value {
    let Ok(addr) = http.parse::<SocketAddr>() else {
        return Value::Null;
    };
    let Ok(mut connection) =
        Connection::open_timeout(addr, Duration::from_millis(500), Duration::from_secs(2))
    else {
        return Value::Null;
    };
    match connection.request("GET", path, &[("Connection", "close")], &[]) {
        Ok(response) => serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// `leader`, `standby`, `single`, or `down` (no answer).
pub fn role(http: &str) -> String {
    get(http, "/healthz")["role"]
        .as_str()
        .unwrap_or("down")
        .to_string()
}

/// The position of the instance's durable log, when it answers.
pub fn position(http: &str) -> Option<u64> {
    get(http, "/v1/events?limit=1")["position"].as_u64()
}

// ---------------------------------------------------------------------------------------------
// Ledger instances under a supervisor

/// A child process killed (SIGKILL) and reaped when the value goes.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to `pid`.
fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// How one instance is started.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub name: String,
    pub data: PathBuf,
    pub http: String,
    /// stdout and stderr of every run of the instance, appended.
    pub log: PathBuf,
}

struct Slot {
    spec: InstanceSpec,
    child: Option<Running>,
    /// Not started again before then (after an exit).
    next_start: Instant,
    /// When the current run started, and the delay before the next start: doubled after a
    /// run shorter than [`CRASH_LOOP_RUN`] (an instance that fails at once), up to
    /// [`RESTART_DELAY_MAX`].
    started_at: Instant,
    delay: Duration,
    starts: u32,
    /// How each run ended (`exit 3`, `signal 9`, ...), in order.
    exits: Vec<String>,
    /// Held back by the test (not started by the supervisor).
    held: bool,
}

struct Shared {
    slots: Mutex<Vec<Slot>>,
    stop: AtomicBool,
}

/// A group of ledger instances on one broker, restarted when they exit.
pub struct Cluster {
    shared: Arc<Shared>,
    supervisor: Option<JoinHandle<()>>,
    brokers: String,
    env: Vec<(String, String)>,
    dir: Option<tempfile::TempDir>,
}

/// How long the supervisor waits after an exit before starting the instance again.
const RESTART_DELAY: Duration = Duration::from_millis(300);
/// A run shorter than this that ends counts as failing at once: the next delay doubles.
const CRASH_LOOP_RUN: Duration = Duration::from_secs(5);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(5);

fn spawn(spec: &InstanceSpec, brokers: &str, env: &[(String, String)]) -> std::io::Result<Running> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_csp-ledger"));
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .arg("--data-dir")
        .arg(&spec.data)
        .args([
            "serve",
            "--http",
            &spec.http,
            "--insecure-no-auth",
            "--kafka",
            brokers,
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map(Running)
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => "unknown".to_string(),
    }
}

fn supervise(shared: &Shared, brokers: &str, env: &[(String, String)]) {
    while !shared.stop.load(Ordering::SeqCst) {
        {
            let mut slots = lock(&shared.slots);
            for slot in slots.iter_mut() {
                if let Some(running) = slot.child.as_mut() {
                    if let Ok(Some(status)) = running.0.try_wait() {
                        slot.exits.push(describe(status));
                        slot.child = None;
                        slot.delay = if slot.started_at.elapsed() < CRASH_LOOP_RUN {
                            (slot.delay * 2).clamp(RESTART_DELAY, RESTART_DELAY_MAX)
                        } else {
                            RESTART_DELAY
                        };
                        slot.next_start = Instant::now() + slot.delay;
                    }
                }
                if slot.child.is_none()
                    && !slot.held
                    && Instant::now() >= slot.next_start
                    && !shared.stop.load(Ordering::SeqCst)
                {
                    match spawn(&slot.spec, brokers, env) {
                        Ok(child) => {
                            slot.child = Some(child);
                            slot.starts += 1;
                            slot.started_at = Instant::now();
                        }
                        Err(error) => {
                            slot.exits.push(format!("spawn failed: {error}"));
                            slot.next_start = Instant::now() + Duration::from_secs(1);
                        }
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Cluster {
    /// `count` instances of one group on `brokers`, with `env` (lease timeout, group, batch
    /// size). Instance 0 starts first and is waited for until it leads; the others start as
    /// standbys after it.
    pub fn start(brokers: &str, count: usize, env: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let slots = (0..count)
            .map(|i| {
                let name = format!("i{i}");
                let home = dir.path().join(&name);
                std::fs::create_dir_all(&home).unwrap();
                Slot {
                    spec: InstanceSpec {
                        data: home.join("data"),
                        http: format!("127.0.0.1:{}", free_port()),
                        log: home.join("serve.log"),
                        name,
                    },
                    child: None,
                    next_start: Instant::now(),
                    started_at: Instant::now(),
                    delay: Duration::ZERO,
                    starts: 0,
                    exits: Vec::new(),
                    held: i > 0,
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            slots: Mutex::new(slots),
            stop: AtomicBool::new(false),
        });
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let supervisor = {
            let (shared, brokers, env) = (Arc::clone(&shared), brokers.to_string(), env.clone());
            std::thread::Builder::new()
                .name("supervisor".into())
                .spawn(move || supervise(&shared, &brokers, &env))
                .unwrap()
        };
        let cluster = Cluster {
            shared,
            supervisor: Some(supervisor),
            brokers: brokers.to_string(),
            env,
            dir: Some(dir),
        };
        let first = cluster.http(0);
        let started = Instant::now();
        while role(&first) != "leader" {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the first instance did not lead within 60 s: {}",
                cluster.log_tail(0, 20)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for slot in lock(&cluster.shared.slots).iter_mut() {
            slot.held = false;
        }
        for i in 1..count {
            let http = cluster.http(i);
            let started = Instant::now();
            while role(&http) != "standby" {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "instance {i} did not follow within 60 s: {}",
                    cluster.log_tail(i, 20)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    pub fn len(&self) -> usize {
        lock(&self.shared.slots).len()
    }

    pub fn http(&self, i: usize) -> String {
        lock(&self.shared.slots)[i].spec.http.clone()
    }

    pub fn data_dirs(&self) -> Vec<PathBuf> {
        lock(&self.shared.slots)
            .iter()
            .map(|s| s.spec.data.clone())
            .collect()
    }

    /// Directories the binary moved aside after a fork (`data.forked-…`), per instance.
    pub fn forked_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for slot in lock(&self.shared.slots).iter() {
            let Some(home) = slot.spec.data.parent() else {
                continue;
            };
            if let Ok(entries) = std::fs::read_dir(home) {
                for entry in entries.flatten() {
                    if entry
                        .file_name()
                        .to_string_lossy()
                        .starts_with("data.forked-")
                    {
                        out.push(entry.path());
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// The roles the instances report now (`down` for no answer).
    pub fn roles(&self) -> Vec<String> {
        (0..self.len()).map(|i| role(&self.http(i))).collect()
    }

    /// Waits until exactly one instance reports `leader`; None after `within`.
    pub fn leader(&self, within: Duration) -> Option<usize> {
        let started = Instant::now();
        loop {
            let roles = self.roles();
            let leaders: Vec<usize> = (0..roles.len()).filter(|&i| roles[i] == "leader").collect();
            if leaders.len() == 1 {
                return Some(leaders[0]);
            }
            if started.elapsed() >= within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends `signal` to instance `i` if it is running (the child is not reaped while the
    /// lock is held, so its pid cannot have been reused). Returns the pid signalled.
    pub fn signal(&self, i: usize, signal: &str) -> Option<u32> {
        let mut slots = lock(&self.shared.slots);
        let running = slots[i].child.as_mut()?;
        if !matches!(running.0.try_wait(), Ok(None)) {
            return None;
        }
        let pid = running.0.id();
        send_signal(pid, signal).then_some(pid)
    }

    /// Instance `i`'s pid, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        lock(&self.shared.slots)[i].child.as_ref().map(|r| r.0.id())
    }

    /// How often each instance was started, and how its runs ended.
    pub fn history(&self) -> Vec<(String, u32, Vec<String>)> {
        lock(&self.shared.slots)
            .iter()
            .map(|s| (s.spec.name.clone(), s.starts, s.exits.clone()))
            .collect()
    }

    /// The last `lines` lines of instance `i`'s output.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = lock(&self.shared.slots)[i].spec.log.clone();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The distinct lines of instance `i`'s output that start with `prefix`, with how often
    /// each came (most frequent first).
    pub fn distinct_lines(&self, i: usize, prefix: &str) -> Vec<(usize, String)> {
        let path = lock(&self.shared.slots)[i].spec.log.clone();
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            if line.starts_with(prefix) {
                *counts.entry(line.to_string()).or_default() += 1;
            }
        }
        let mut out: Vec<(usize, String)> = counts.into_iter().map(|(l, n)| (n, l)).collect();
        out.sort_by_key(|line| std::cmp::Reverse(line.0));
        out
    }

    /// Every line of every instance's output that contains `needle`, counted.
    pub fn count_in_logs(&self, needle: &str) -> usize {
        lock(&self.shared.slots)
            .iter()
            .map(|s| {
                std::fs::read_to_string(&s.spec.log)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .count()
            })
            .sum()
    }

    /// Stops the supervisor, then every instance: SIGCONT (in case it is paused), SIGTERM,
    /// and SIGKILL if it has not exited within `grace`. Returns how many needed SIGKILL.
    pub fn stop_all(&mut self, grace: Duration) -> usize {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        let mut slots = lock(&self.shared.slots);
        for slot in slots.iter_mut() {
            if let Some(running) = slot.child.as_mut() {
                let pid = running.0.id();
                if matches!(running.0.try_wait(), Ok(None)) {
                    send_signal(pid, "CONT");
                    send_signal(pid, "TERM");
                }
            }
        }
        let deadline = Instant::now() + grace;
        let mut forced = 0;
        for slot in slots.iter_mut() {
            if let Some(mut running) = slot.child.take() {
                loop {
                    match running.0.try_wait() {
                        Ok(Some(status)) => {
                            slot.exits.push(format!("{} (stopped)", describe(status)));
                            break;
                        }
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        _ => {
                            forced += 1;
                            let _ = running.0.kill();
                            if let Ok(status) = running.0.wait() {
                                slot.exits
                                    .push(format!("{} (SIGKILL at stop)", describe(status)));
                            }
                            break;
                        }
                    }
                }
            }
        }
        forced
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        // Running's drop kills (SIGKILL works on a stopped process too) and reaps.
        for slot in lock(&self.shared.slots).iter_mut() {
            slot.child = None;
        }
        release(&mut self.dir, "the instances' directory");
    }
}

// ---------------------------------------------------------------------------------------------
// Producing commands

/// Which commands the broker acknowledged: one flag per index of the command list.
pub struct Deliveries {
    state: Mutex<Vec<u8>>,
}

const PENDING: u8 = 0;
const DELIVERED: u8 = 1;
const FAILED: u8 = 2;

/// The producer's context: records each delivery report.
pub struct Tracker(Arc<Deliveries>);

impl ClientContext for Tracker {}

impl ProducerContext for Tracker {
    type DeliveryOpaque = Box<usize>;

    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let mut state = lock(&self.0.state);
        if let Some(slot) = state.get_mut(*index) {
            *slot = if result.is_ok() { DELIVERED } else { FAILED };
        }
    }
}

impl Deliveries {
    pub fn new(count: usize) -> Arc<Deliveries> {
        Arc::new(Deliveries {
            state: Mutex::new(vec![PENDING; count]),
        })
    }

    /// (delivered, failed, pending) counts among the first `sent` messages.
    pub fn counts(&self, sent: usize) -> (usize, usize, usize) {
        let state = lock(&self.state);
        let state = &state[..sent.min(state.len())];
        let delivered = state.iter().filter(|&&s| s == DELIVERED).count();
        let failed = state.iter().filter(|&&s| s == FAILED).count();
        (delivered, failed, state.len() - delivered - failed)
    }

    pub fn delivered(&self, index: usize) -> bool {
        lock(&self.state).get(index) == Some(&DELIVERED)
    }
}

/// A producer to `csp.commands` whose delivery reports land in `deliveries`. Idempotent and
/// with a long message timeout, so that it rides out broker restarts without losing or
/// doubling a message.
pub fn command_producer(brokers: &str, deliveries: &Arc<Deliveries>) -> BaseProducer<Tracker> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "300000")
        .create_with_context(Tracker(Arc::clone(deliveries)))
        .unwrap()
}

/// Sends line `index` (keyed as `csp-ledger submit` keys it), waiting while the local queue
/// is full.
pub fn send_command(producer: &BaseProducer<Tracker>, index: usize, line: &str) {
    let key = csp_ledger::ingest::command_key(line);
    let mut opaque = Box::new(index);
    loop {
        match producer.send(
            BaseRecord::with_opaque_to("csp.commands", opaque)
                .key(&key)
                .payload(line),
        ) {
            Ok(()) => break,
            Err((_, record)) => {
                opaque = record.delivery_opaque;
                producer.poll(Duration::from_millis(50));
            }
        }
    }
    producer.poll(Duration::ZERO);
}

/// Waits for every delivery report (at most `within`).
pub fn flush(producer: &BaseProducer<Tracker>, within: Duration) {
    let _ = producer.flush(within);
}

// ---------------------------------------------------------------------------------------------
// Reading topics

/// One record of a topic partition.
#[derive(Debug, Clone)]
pub struct Record {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

fn record_of(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let headers = message
        .headers()
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
        .unwrap_or_default();
    Record {
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().unwrap_or_default().to_vec(),
        headers,
    }
}

fn reader(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("fault-checker-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()
        .unwrap()
}

/// The high watermark of partition 0 of `topic` (retried while the broker is busy).
pub fn high_watermark(brokers: &str, topic: &str) -> i64 {
    let consumer = reader(brokers);
    let mut last = String::new();
    for _ in 0..12 {
        match consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
            Ok((_, high)) => return high,
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no watermark for {topic}: {last}");
}

/// A reader of partition 0 of one topic from its beginning, handing out what arrived since
/// the last call.
pub struct Tail {
    consumer: BaseConsumer,
    pub topic: String,
    /// The offset after the last record handed out.
    pub next: i64,
}

impl Tail {
    pub fn new(brokers: &str, topic: &str) -> Tail {
        let consumer = reader(brokers);
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&assignment).unwrap();
        Tail {
            consumer,
            topic: topic.to_string(),
            next: 0,
        }
    }

    /// The records that arrive within `within` (returns early once a poll comes back empty
    /// after something was read).
    pub fn poll(&mut self, within: Duration) -> Vec<Record> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) if message.offset() >= self.next => {
                    self.next = message.offset() + 1;
                    out.push(record_of(&message));
                }
                // A record handed out before (a seek back after a reconnect).
                Some(Ok(_)) => {}
                Some(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                None if !out.is_empty() => break,
                None => {}
            }
        }
        out
    }

    /// Reads until the offset before `high` has been handed out; panics after `within`
    /// (a harness failure, not a finding).
    pub fn read_to(&mut self, high: i64, within: Duration) -> Vec<Record> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while self.next < high {
            assert!(
                Instant::now() < deadline,
                "read {} of {high} records of {} within {within:?}",
                self.next,
                self.topic
            );
            out.extend(self.poll(Duration::from_millis(500)));
        }
        out
    }
}

/// Every record of partition 0 of `topic`, from its beginning up to its high watermark now,
/// in offset order.
pub fn read_all(brokers: &str, topic: &str, within: Duration) -> Vec<Record> {
    let high = high_watermark(brokers, topic);
    let mut tail = Tail::new(brokers, topic);
    let records = tail.read_to(high, within);
    assert!(
        records.windows(2).all(|w| w[0].offset < w[1].offset),
        "{topic} read out of offset order"
    );
    records
}
