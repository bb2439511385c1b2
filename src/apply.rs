//! The apply pipeline shared by `csp-ledger apply` and the benchmark: a reader thread reads
//! and parses JSON lines; the writer decides and appends whatever has arrived (up to
//! [`SUBMIT_BATCH_COMMANDS_MAX`]) as one group commit, then writes one outcome line per input
//! line, in input order, only after the commit is durable.

use std::io::{BufRead, Write};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver};
use thiserror::Error;

use crate::ledger::{Ledger, LedgerError, Submission, SUBMIT_BATCH_COMMANDS_MAX};

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
                    if sender.send(Read::Line(Submission::parse(Some(number), &line))).is_err() {
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
pub fn apply_lines<R, W>(ledger: &mut Ledger, input: R, output: &mut W) -> Result<ApplyStats, ApplyError>
where
    R: BufRead + Send + 'static,
    W: Write,
{
    let started = Instant::now();
    let receiver = spawn_reader(input);
    let mut stats = ApplyStats::default();
    let mut buffer = Vec::with_capacity(1 << 20);
    loop {
        let waiting = Instant::now();
        let first = match receiver.recv() {
            Ok(Read::Line(submission)) => submission,
            Ok(Read::Failed(error)) => return Err(error.into()),
            Err(_) => break,
        };
        let mut batch = Vec::with_capacity(SUBMIT_BATCH_COMMANDS_MAX.min(receiver.len() + 1));
        batch.push(first);
        let mut read_error = None;
        while batch.len() < SUBMIT_BATCH_COMMANDS_MAX {
            match receiver.try_recv() {
                Ok(Read::Line(submission)) => batch.push(submission),
                Ok(Read::Failed(error)) => {
                    read_error = Some(error);
                    break;
                }
                Err(_) => break,
            }
        }
        stats.wait_seconds += waiting.elapsed().as_secs_f64();
        let result = ledger.submit(batch)?;
        let writing = Instant::now();
        stats.decide_seconds += result.decide_micros as f64 / 1e6;
        stats.append_seconds += result.append_micros as f64 / 1e6;
        stats.batches += 1;
        stats.events += result.events.len() as u64;
        buffer.clear();
        for (index, outcome) in result.outcomes.iter().enumerate() {
            stats.commands += 1;
            match outcome.kind() {
                "accepted" => stats.accepted += 1,
                "rejected" => stats.rejected += 1,
                _ => stats.duplicates += 1,
            }
            result.write_outcome_json(index, &mut buffer);
            buffer.push(b'\n');
        }
        output.write_all(&buffer)?;
        output.flush()?;
        stats.output_seconds += writing.elapsed().as_secs_f64();
        if let Some(error) = read_error {
            return Err(error.into());
        }
    }
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}
