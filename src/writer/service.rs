//! The one writer of a log directory, as a running component. `apply`, `POST /v1/commands`,
//! the Kafka consumer and the standby all submit through a [`WriterHandle`]; the writer thread
//! gathers whatever jobs are waiting into one batch (group commit, up to
//! [`SUBMIT_BATCH_COMMANDS_MAX`] commands), decides it, and hands it to a committer thread, so
//! that batch N+1 is decided while batch N is made durable (two batches in flight at most).
//!
//! A job is answered only after its batch is durable. Readers never see the deciding state
//! (it runs ahead of the log while a batch is in flight): with [`WriterOptions::read_model`]
//! the committer folds each durable batch into a second state, [`ReadModel`], which is what
//! reads answer from. A failed commit poisons the writer: every later job is refused until the
//! ledger is reopened. The checkpoint policy lives here too: a checkpoint is written when the
//! pipeline is drained and enough events were folded since the last one, and on shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use csp_ledger_projections::state::LedgerState;
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use super::ledger::{resolve_duplicates, Ledger, LedgerError, Prepared, SUBMIT_BATCH_COMMANDS_MAX};
use super::outcome::BatchResult;
use crate::intake::Submission;
use crate::store::audit::WalkStart;
use crate::store::log::{Head, Log, OutcomeRecord, StoredEvent};
use crate::store::read::replay_onto;

/// Events folded since the last checkpoint before the writer writes a new one.
pub const CHECKPOINT_INTERVAL_EVENTS: u64 = 250_000;

/// Why a job was not answered with outcomes. Edge: HTTP 500 `internal_error` (503
/// `shutting_down` for `Stopped`), exit 1 for `apply`, a stopped consumer for Kafka.
#[derive(Debug, Clone, Error)]
pub enum WriterError {
    /// The batch, or an earlier one, could not be made durable; the writer refuses every job
    /// until the ledger is reopened.
    #[error("the ledger stopped after a failed append: {0}")]
    Failed(Arc<LedgerError>),
    /// The writer has stopped (shutdown).
    #[error("the writer has stopped")]
    Stopped,
}

/// What became of one job's submissions, in submission order. The outcome lines (SPEC.md
/// section 7) are encoded by whoever receives the answer, not on the committer's critical path.
#[derive(Debug, Clone)]
pub struct Answered {
    /// The durable batch the job was part of, shared by all of its jobs.
    result: Arc<BatchResult>,
    /// This job's outcomes in `result`.
    outcomes: std::ops::Range<usize>,
    /// The log head after the batch that answered the job.
    pub head_position: u64,
}

impl Answered {
    /// Appends the outcome line of submission `index` of the job.
    ///
    /// # Panics
    /// When `index >= self.len()`.
    pub fn write_line(&self, index: usize, out: &mut Vec<u8>) {
        self.write_line_as(index, true, out)
    }

    /// [`Self::write_line`] for a reader with (`personal`) or without the `personal` grant.
    ///
    /// # Panics
    /// When `index >= self.len()`.
    pub fn write_line_as(&self, index: usize, personal: bool, out: &mut Vec<u8>) {
        assert!(index < self.len(), "outcome {index} of {}", self.len());
        self.result
            .write_outcome_json_as(self.outcomes.start + index, personal, out);
    }

    /// How many submissions the job had.
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }
}

/// What the writer reports after each durable batch (metrics, waking the publisher).
pub trait CommitObserver: Send + Sync {
    /// Called on the committer thread once `result` is durable, before its jobs are answered.
    fn committed(&self, result: &BatchResult, head: u64, seconds: f64);

    /// Called on the writer thread once a replicated batch is durable (standby).
    fn replicated(&self, _head: u64, _seconds: f64) {}
}

/// An observer that does nothing (`apply`).
pub struct NoObserver;

impl CommitObserver for NoObserver {
    fn committed(&self, _: &BatchResult, _: u64, _: f64) {}
}

/// Settings of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Keep a second, durable-only state for readers (`serve`); `apply` has no readers.
    pub read_model: bool,
    /// Events folded since the last checkpoint before a new one is written.
    pub checkpoint_interval: u64,
    /// Write a checkpoint on stop whatever the interval (`serve`); otherwise only when due.
    pub checkpoint_on_stop: bool,
    /// Also write a due checkpoint while running, whenever the pipeline drains (`serve`, which
    /// may run for months); `apply` writes its due checkpoint once, on stop.
    pub checkpoint_when_idle: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            read_model: true,
            checkpoint_interval: CHECKPOINT_INTERVAL_EVENTS,
            checkpoint_on_stop: true,
            checkpoint_when_idle: true,
        }
    }
}

/// The state readers answer from: equal to the durable log after every commit.
pub struct ReadModel {
    state: RwLock<LedgerState>,
    log: Arc<Log>,
    position: watch::Sender<u64>,
}

impl ReadModel {
    /// The durable state, under a read lock (held only while answering).
    pub fn state(&self) -> RwLockReadGuard<'_, LedgerState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Follows the durable position (reads with `min_position` wait on it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.position.subscribe()
    }

    /// The durable position.
    pub fn position(&self) -> u64 {
        *self.position.borrow()
    }

    fn fold(&self, prepared: &Prepared, head: u64) {
        if !prepared.folded.is_empty() {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            for (meta, event) in &prepared.folded {
                state.apply(meta, event);
            }
        }
        self.position.send_replace(head);
    }

    /// Folds what replication appended after `before` up to `head` from the log.
    fn follow(&self, before: Head, head: u64) -> Result<(), crate::store::log::LogError> {
        if head > before.position {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let start = WalkStart {
                position: before.position + 1,
                prev_hash: before.hash,
            };
            replay_onto(&self.log, &mut state, start, head, &mut |_| {})?;
        }
        self.position.send_replace(head);
        Ok(())
    }

    fn replace(&self, state: &LedgerState) {
        let mut ours = self.state.write().unwrap_or_else(|p| p.into_inner());
        ours.clone_from(state);
        self.position.send_replace(state.position);
    }
}

struct CommandJob {
    submissions: Vec<Submission>,
    /// Consumer offsets to store with the batch (Kafka ingest).
    offsets: Vec<(String, i64)>,
    reply: oneshot::Sender<Result<Answered, WriterError>>,
}

struct ReplicateJob {
    events: Vec<StoredEvent>,
    results: Vec<OutcomeRecord>,
    offsets: Vec<(String, i64)>,
    reply: oneshot::Sender<Result<Head, LedgerError>>,
}

enum Job {
    Commands(CommandJob),
    Replicate(ReplicateJob),
    /// Answer what was taken, then stop.
    Stop,
}

/// A job submitted and not yet answered.
pub struct Pending(oneshot::Receiver<Result<Answered, WriterError>>);

impl Pending {
    /// Waits for the answer on a plain thread (not inside an async runtime).
    pub fn wait(self) -> Result<Answered, WriterError> {
        self.0.blocking_recv().unwrap_or(Err(WriterError::Stopped))
    }

    /// Waits for the answer in async code.
    pub async fn answered(self) -> Result<Answered, WriterError> {
        self.0.await.unwrap_or(Err(WriterError::Stopped))
    }
}

/// The typed way into the writer; cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: Sender<Job>,
}

impl WriterHandle {
    /// Queues `submissions` (with consumer offsets to store in the same commit). The answer
    /// arrives once their batch is durable; jobs are answered in the order they were queued.
    pub fn submit(
        &self,
        submissions: Vec<Submission>,
        offsets: Vec<(String, i64)>,
    ) -> Result<Pending, WriterError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Commands(CommandJob {
                submissions,
                offsets,
                reply,
            }))
            .map_err(|_| WriterError::Stopped)?;
        Ok(Pending(answer))
    }

    /// Appends what another instance decided (standby), after everything queued before it.
    pub fn replicate(
        &self,
        events: Vec<StoredEvent>,
        results: Vec<OutcomeRecord>,
        offsets: Vec<(String, i64)>,
    ) -> Result<Head, LedgerError> {
        let stopped = || LedgerError::Replication("the writer stopped".into());
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Replicate(ReplicateJob {
                events,
                results,
                offsets,
                reply,
            }))
            .map_err(|_| stopped())?;
        answer.blocking_recv().map_err(|_| stopped())?
    }
}

/// The running writer: its thread, its handle, and the read model when it keeps one.
pub struct Writer {
    handle: WriterHandle,
    reads: Option<Arc<ReadModel>>,
    log: Arc<Log>,
    thread: Option<JoinHandle<Ledger>>,
}

impl Writer {
    /// Starts the writer threads for `ledger`.
    pub fn start(
        mut ledger: Ledger,
        options: WriterOptions,
        observer: Arc<dyn CommitObserver>,
    ) -> Result<Writer, std::io::Error> {
        let log = ledger.log_handle();
        let reads = options.read_model.then(|| {
            Arc::new(ReadModel {
                state: RwLock::new(ledger.state().clone()),
                log: Arc::clone(&log),
                position: watch::Sender::new(ledger.state().position),
            })
        });
        ledger.keep_folded(options.read_model);
        let (jobs, jobs_rx) = unbounded();
        let loop_reads = reads.clone();
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let mut run = Run::start(ledger, options, loop_reads, observer);
                run.serve(&jobs_rx);
                run.finish()
            })?;
        Ok(Writer {
            handle: WriterHandle { jobs },
            reads,
            log,
            thread: Some(thread),
        })
    }

    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// The durable state for readers (`None` when started without one).
    pub fn reads(&self) -> Option<&Arc<ReadModel>> {
        self.reads.as_ref()
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Answers every job queued so far, writes a checkpoint, and returns the ledger.
    pub fn stop(mut self) -> Option<Ledger> {
        let _ = self.handle.jobs.send(Job::Stop);
        self.thread.take().and_then(|thread| thread.join().ok())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.handle.jobs.send(Job::Stop);
            let _ = thread.join();
        }
    }
}

/// A decided batch on its way to the committer, with the jobs it answers.
struct InFlight {
    prepared: Prepared,
    /// Each job's reply and its number of submissions.
    replies: Vec<(oneshot::Sender<Result<Answered, WriterError>>, usize)>,
    started: Instant,
}

/// The writer thread's side: the ledger (deciding state) and the committer it feeds.
struct Run {
    ledger: Ledger,
    options: WriterOptions,
    reads: Option<Arc<ReadModel>>,
    observer: Arc<dyn CommitObserver>,
    commit_tx: Option<Sender<InFlight>>,
    done_rx: Receiver<Retired>,
    /// Answered batches whose last reader may still hold them: freed on this thread, which
    /// allocated them (freeing on other threads contends for the allocator's arena).
    retired: Vec<Arc<BatchResult>>,
    committer: Option<JoinHandle<()>>,
    /// Set by the committer when a commit failed.
    failed: Arc<FailedCommit>,
    in_flight: usize,
    checkpointed: u64,
}

#[derive(Default)]
struct FailedCommit {
    failed: AtomicBool,
    error: std::sync::Mutex<Option<Arc<LedgerError>>>,
}

impl FailedCommit {
    fn set(&self, error: Arc<LedgerError>) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
        self.failed.store(true, Ordering::Release);
    }

    fn error(&self) -> Option<Arc<LedgerError>> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Run {
    fn start(
        ledger: Ledger,
        options: WriterOptions,
        reads: Option<Arc<ReadModel>>,
        observer: Arc<dyn CommitObserver>,
    ) -> Run {
        // A rendezvous channel: the committer takes batch N while this thread decides N+1,
        // and deciding N+2 waits until N is done. Two batches in flight at most.
        let (commit_tx, commit_rx) = bounded::<InFlight>(0);
        let (done_tx, done_rx) = unbounded::<Retired>();
        let failed = Arc::new(FailedCommit::default());
        let committer = {
            let (log, reads, failed) = (ledger.log_handle(), reads.clone(), Arc::clone(&failed));
            let observer = Arc::clone(&observer);
            std::thread::Builder::new()
                .name("committer".into())
                .spawn(move || {
                    for batch in commit_rx {
                        let retired =
                            commit_batch(&log, reads.as_deref(), &*observer, &failed, batch);
                        if done_tx.send(retired).is_err() {
                            break;
                        }
                    }
                })
        };
        let checkpointed = ledger.state().position;
        let (commit_tx, committer) = match committer {
            Ok(thread) => (Some(commit_tx), Some(thread)),
            Err(error) => {
                // Without a committer nothing can be made durable: refuse every job.
                error!(message = "Could not start the committer thread.", error = %error);
                failed.set(Arc::new(LedgerError::Poisoned));
                (None, None)
            }
        };
        Run {
            ledger,
            options,
            reads,
            observer,
            commit_tx,
            done_rx,
            retired: Vec::new(),
            committer,
            failed,
            in_flight: 0,
            checkpointed,
        }
    }

    fn serve(&mut self, jobs: &Receiver<Job>) {
        loop {
            // With nothing in flight, wait for work (a due checkpoint first: the deciding state
            // equals the log now). With a batch in flight, take whichever comes first: a job
            // (decided while the committer works: pipelining) or the end of that commit.
            let first = if self.in_flight == 0 {
                if self.options.checkpoint_when_idle {
                    self.checkpoint_if_due();
                }
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            } else {
                let done = self.done_rx.clone();
                crossbeam_channel::select! {
                    recv(jobs) -> job => match job {
                        Ok(job) => job,
                        Err(_) => return,
                    },
                    recv(done) -> finished => {
                        self.finished(finished);
                        continue;
                    }
                }
            };
            let mut batch = match first {
                Job::Commands(job) => vec![job],
                Job::Replicate(job) => {
                    self.replicate(job);
                    continue;
                }
                Job::Stop => return,
            };
            let mut commands = batch[0].submissions.len();
            let mut then = None;
            while commands < SUBMIT_BATCH_COMMANDS_MAX {
                match jobs.try_recv() {
                    Ok(Job::Commands(job)) => {
                        commands += job.submissions.len();
                        batch.push(job);
                    }
                    Ok(other) => {
                        then = Some(other);
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.decide(batch);
            match then {
                Some(Job::Replicate(job)) => self.replicate(job),
                Some(Job::Stop) => return,
                _ => {}
            }
        }
    }

    /// Decides a batch and hands it to the committer (or refuses it when poisoned).
    fn decide(&mut self, batch: Vec<CommandJob>) {
        let started = Instant::now();
        if let Some(error) = self.failed.error() {
            self.ledger.poison();
            refuse(batch, &error);
            return;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let mut submissions = Vec::new();
        let mut offsets = Vec::new();
        for job in batch {
            replies.push((job.reply, job.submissions.len()));
            submissions.extend(job.submissions);
            offsets.extend(job.offsets);
        }
        let prepared = match self.ledger.prepare(submissions, offsets) {
            Ok(mut prepared) => {
                // The batch's personal values are made durable here, while the committer may
                // still be committing the batch before: their SQLite fsync overlaps that
                // commit instead of adding to this one.
                match prepared.store_personal(self.ledger.log()) {
                    Ok(()) => prepared,
                    Err(error) => {
                        // The deciding state already holds this batch: poisoned, as after a
                        // failed commit.
                        error!(message = "Storing personal values failed.", error = %error);
                        self.ledger.poison();
                        let error = Arc::new(LedgerError::from(error));
                        self.failed.set(Arc::clone(&error));
                        for (reply, _) in replies {
                            let _ = reply.send(Err(WriterError::Failed(Arc::clone(&error))));
                        }
                        return;
                    }
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for (reply, _) in replies {
                    let _ = reply.send(Err(WriterError::Failed(Arc::clone(&error))));
                }
                return;
            }
        };
        let in_flight = InFlight {
            prepared,
            replies,
            started,
        };
        // Two in flight at most: this one, decided, and the one the committer holds.
        if self.in_flight >= 1 {
            self.finish_one();
        }
        let Some(commit_tx) = &self.commit_tx else {
            refuse_in_flight(in_flight, &Arc::new(LedgerError::Poisoned));
            return;
        };
        match commit_tx.send(in_flight) {
            Ok(()) => self.in_flight += 1,
            Err(returned) => {
                self.ledger.poison();
                let error = Arc::new(LedgerError::Poisoned);
                refuse_in_flight(returned.into_inner(), &error);
            }
        }
    }

    /// Waits for the committer to finish one batch.
    fn finish_one(&mut self) {
        if self.in_flight == 0 {
            return;
        }
        let finished = self.done_rx.recv();
        self.finished(finished);
    }

    /// The committer finished a batch (an error: it stopped).
    fn finished(&mut self, finished: Result<Retired, crossbeam_channel::RecvError>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let ok = match finished {
            Ok(retired) => {
                drop(retired.prepared);
                self.retired.extend(retired.result);
                self.retired.retain(|result| Arc::strong_count(result) > 1);
                true
            }
            Err(_) => false,
        };
        if !ok || self.failed.error().is_some() {
            self.ledger.poison();
        }
    }

    fn drain(&mut self) {
        while self.in_flight > 0 {
            self.finish_one();
        }
    }

    fn replicate(&mut self, job: ReplicateJob) {
        self.drain();
        let started = Instant::now();
        let before = self.ledger.head();
        let replicated = self.ledger.replicate(job.events, job.results, job.offsets);
        if let (Ok(head), Some(reads)) = (&replicated, &self.reads) {
            if let Err(error) = reads.follow(before, head.position) {
                // The log is durable and checked; only the readers' copy fell behind.
                error!(message = "The read model could not follow replication.", error = %error);
                reads.replace(self.ledger.state());
            }
        }
        if let Ok(head) = &replicated {
            self.observer
                .replicated(head.position, started.elapsed().as_secs_f64());
        }
        let _ = job.reply.send(replicated);
    }

    fn checkpoint_if_due(&mut self) {
        if self.failed.error().is_some() || self.ledger.is_poisoned() {
            return;
        }
        let position = self.ledger.state().position;
        if position >= self.checkpointed + self.options.checkpoint_interval.max(1) {
            match self.ledger.checkpoint() {
                Ok(position) => self.checkpointed = position,
                Err(error) => warn!(message = "Checkpoint failed.", error = %error),
            }
        }
    }

    /// Drains the pipeline, stops the committer, writes a checkpoint and returns the ledger.
    fn finish(mut self) -> Ledger {
        self.drain();
        self.commit_tx = None;
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        if !self.options.checkpoint_on_stop {
            self.checkpoint_if_due();
        } else if self.failed.error().is_none() && !self.ledger.is_poisoned() {
            let position = self.ledger.state().position;
            if position > self.checkpointed {
                match self.ledger.checkpoint() {
                    Ok(position) => info!(message = "Checkpoint written.", position),
                    Err(error) => warn!(message = "No checkpoint written.", error = %error),
                }
            }
        }
        self.ledger
    }
}

/// What the committer hands back to the writer thread to free.
struct Retired {
    prepared: Option<Prepared>,
    result: Option<Arc<BatchResult>>,
}

/// The committer's work on one batch: make it durable, fill in duplicates, fold it into the
/// read model, report it, and answer its jobs (in that order: an answer implies durability).
fn commit_batch(
    log: &Log,
    reads: Option<&ReadModel>,
    observer: &dyn CommitObserver,
    failed: &FailedCommit,
    mut batch: InFlight,
) -> Retired {
    let nothing = Retired {
        prepared: None,
        result: None,
    };
    if let Some(error) = failed.error() {
        // An earlier batch failed: this one was decided on top of it and cannot follow.
        refuse_in_flight(batch, &error);
        return nothing;
    }
    let head = match batch.prepared.commit(log) {
        Ok(head) => head,
        Err(error) => {
            error!(message = "Append failed; the ledger stops accepting commands.", error = %error);
            let error = Arc::new(LedgerError::from(error));
            failed.set(Arc::clone(&error));
            refuse_in_flight(batch, &error);
            return nothing;
        }
    };
    if let Err(error) = resolve_duplicates(log, &mut batch.prepared.result) {
        error!(message = "Reading back an original outcome failed.", error = %error);
        let error = Arc::new(error);
        failed.set(Arc::clone(&error));
        refuse_in_flight(batch, &error);
        return nothing;
    }
    if let Some(reads) = reads {
        reads.fold(&batch.prepared, head.position);
    }
    let result = Arc::new(std::mem::take(&mut batch.prepared.result));
    observer.committed(
        &result,
        head.position,
        batch.started.elapsed().as_secs_f64(),
    );
    let mut start = 0;
    for (reply, count) in batch.replies {
        let _ = reply.send(Ok(Answered {
            result: Arc::clone(&result),
            outcomes: start..start + count,
            head_position: head.position,
        }));
        start += count;
    }
    Retired {
        prepared: Some(batch.prepared),
        result: Some(result),
    }
}

fn refuse(batch: Vec<CommandJob>, error: &Arc<LedgerError>) {
    for job in batch {
        let _ = job.reply.send(Err(WriterError::Failed(Arc::clone(error))));
    }
}

fn refuse_in_flight(batch: InFlight, error: &Arc<LedgerError>) {
    for (reply, _) in batch.replies {
        let _ = reply.send(Err(WriterError::Failed(Arc::clone(error))));
    }
}
