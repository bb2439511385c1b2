//! The apply pipeline shared by `csp-ledger apply` and the benchmark: a reader thread reads
//! and parses JSON lines; the writer decides and appends whatever has arrived (up to
//! [`SUBMIT_BATCH_COMMANDS_MAX`]) as one group commit, then writes one outcome line per input
//! line, in input order, only after the commit is durable.

use std::io::{BufRead, Write};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};
use csp_ledger_schemas::OutcomeKind;
use thiserror::Error;

use crate::intake::Submission;
use crate::store::log::LogError;
use crate::writer::{Ledger, LedgerError, Prepared, SUBMIT_BATCH_COMMANDS_MAX};

/// Parsed commands waiting for the writer; bounds the memory the reader can run ahead with.
pub const PIPELINE_DEPTH_COMMANDS: usize = 4 * SUBMIT_BATCH_COMMANDS_MAX;

/// Failures of the pipeline (not business rejections, which are outcomes).
#[derive(Debug, Error)]
pub enum ApplyError {
    /// The ledger failed. Edge: exit 1.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Reading input or writing outcomes failed. Edge: exit 1.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ApplyStats {
    pub commands: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub events: u64,
    pub batches: u64,
    pub seconds: f64,
    /// Writer time deciding and encoding.
    pub decide_seconds: f64,
    /// Writer time in durable appends.
    pub append_seconds: f64,
    /// Writer time writing outcome lines.
    pub output_seconds: f64,
    /// Writer time waiting for parsed input.
    pub wait_seconds: f64,
}

enum Read {
    Line(Submission),
    Failed(std::io::Error),
}

fn spawn_reader<R: BufRead + Send + 'static>(mut input: R) -> Receiver<Read> {
    let (sender, receiver) = bounded(PIPELINE_DEPTH_COMMANDS);
    std::thread::spawn(move || {
        let mut line = Vec::with_capacity(1024);
        let mut number = 0u64;
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    number += 1;
                    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        line.pop();
                    }
                    if sender
                        .send(Read::Line(Submission::parse(Some(number), &line)))
                        .is_err()
                    {
                        break;
                    }
                }
                Err(error) => {
                    let _ = sender.send(Read::Failed(error));
                    break;
                }
            }
        }
    });
    receiver
}

/// Applies every line of `input` and writes one outcome line per input line to `output`.
///
/// Two batches are in flight at most: while a committer thread makes batch N durable, this
/// thread decides batch N+1. Outcomes of a batch are written only after its commit returned.
pub fn apply_lines<R, W>(
    ledger: &mut Ledger,
    input: R,
    output: &mut W,
) -> Result<ApplyStats, ApplyError>
where
    R: BufRead + Send + 'static,
    W: Write,
{
    let started = Instant::now();
    let receiver = spawn_reader(input);
    let log = ledger.log_handle();
    let mut stats = ApplyStats::default();
    let (commit_tx, commit_rx) = bounded::<Prepared>(1);
    let (done_tx, done_rx) = bounded::<(Prepared, Result<(), LogError>)>(1);
    let committer = std::thread::Builder::new()
        .name("committer".into())
        .spawn(move || {
            for mut prepared in commit_rx {
                let committed = prepared.commit(&log).map(|_| ());
                let failed = committed.is_err();
                if done_tx.send((prepared, committed)).is_err() || failed {
                    break;
                }
            }
        })?;
    let outcome = pipeline(ledger, &receiver, &commit_tx, &done_rx, output, &mut stats);
    drop(commit_tx);
    let _ = committer.join();
    outcome?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

fn pipeline<W: Write>(
    ledger: &mut Ledger,
    receiver: &Receiver<Read>,
    commit_tx: &Sender<Prepared>,
    done_rx: &Receiver<(Prepared, Result<(), LogError>)>,
    output: &mut W,
    stats: &mut ApplyStats,
) -> Result<(), ApplyError> {
    let mut in_flight = 0usize;
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut input_done = false;
    loop {
        // Gather what has arrived. Block for input only when nothing is in flight.
        let mut batch = Vec::new();
        let mut read_error = None;
        if !input_done {
            let waiting = Instant::now();
            let first = if in_flight == 0 {
                receiver.recv().map_err(|_| TryRecvError::Disconnected)
            } else {
                receiver.try_recv()
            };
            stats.wait_seconds += waiting.elapsed().as_secs_f64();
            match first {
                Ok(Read::Line(submission)) => batch.push(submission),
                Ok(Read::Failed(error)) => read_error = Some(error),
                Err(TryRecvError::Disconnected) => input_done = true,
                Err(TryRecvError::Empty) => {}
            }
            while !batch.is_empty()
                && batch.len() < SUBMIT_BATCH_COMMANDS_MAX
                && read_error.is_none()
            {
                match receiver.try_recv() {
                    Ok(Read::Line(submission)) => batch.push(submission),
                    Ok(Read::Failed(error)) => read_error = Some(error),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            let prepared = ledger.prepare(batch, Vec::new())?;
            stats.decide_seconds += prepared.result.decide_micros as f64 / 1e6;
            if commit_tx.send(prepared).is_err() {
                ledger.poison();
                return Err(ApplyError::Io(std::io::Error::other(
                    "the committer thread stopped",
                )));
            }
            in_flight += 1;
        }
        // Finish a commit when the pipeline is full, when input is idle, or at the end.
        if in_flight > 0
            && (in_flight >= 2 || batch_idle(receiver) || input_done || read_error.is_some())
        {
            finish_one(ledger, done_rx, output, &mut buffer, stats)?;
            in_flight -= 1;
        }
        if let Some(error) = read_error {
            while in_flight > 0 {
                finish_one(ledger, done_rx, output, &mut buffer, stats)?;
                in_flight -= 1;
            }
            return Err(error.into());
        }
        if input_done && in_flight == 0 {
            return Ok(());
        }
    }
}

fn batch_idle(receiver: &Receiver<Read>) -> bool {
    receiver.is_empty()
}

fn finish_one<W: Write>(
    ledger: &mut Ledger,
    done_rx: &Receiver<(Prepared, Result<(), LogError>)>,
    output: &mut W,
    buffer: &mut Vec<u8>,
    stats: &mut ApplyStats,
) -> Result<(), ApplyError> {
    let Ok((prepared, committed)) = done_rx.recv() else {
        ledger.poison();
        return Err(ApplyError::Io(std::io::Error::other(
            "the committer thread stopped",
        )));
    };
    if let Err(error) = committed {
        ledger.poison();
        return Err(ApplyError::Ledger(error.into()));
    }
    let writing = Instant::now();
    let mut result = prepared.result;
    ledger.resolve(&mut result)?;
    stats.append_seconds += result.append_micros as f64 / 1e6;
    stats.batches += 1;
    stats.events += result.events.len() as u64;
    buffer.clear();
    for (index, outcome) in result.outcomes.iter().enumerate() {
        stats.commands += 1;
        match outcome.kind() {
            OutcomeKind::Accepted => stats.accepted += 1,
            OutcomeKind::Rejected => stats.rejected += 1,
            OutcomeKind::Duplicate => stats.duplicates += 1,
        }
        result.write_outcome_json(index, buffer);
        buffer.push(b'\n');
    }
    output.write_all(buffer)?;
    output.flush()?;
    stats.output_seconds += writing.elapsed().as_secs_f64();
    Ok(())
}
