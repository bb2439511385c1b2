//! `csp-ledger apply` (and the benchmark) as a client of the one writer: a reader thread reads
//! and parses JSON lines and submits them to the [`Writer`] in jobs of whatever has been read
//! (before any read that could block, the lines read so far are submitted, so an interactive
//! pipe is never kept waiting); this thread writes each job's outcome lines, in input order,
//! as its answer arrives, that is, only after its batch is durable.

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::bounded;
use thiserror::Error;

use super::ledger::{Ledger, LedgerError, SUBMIT_BATCH_COMMANDS_MAX};
use super::outcome::{BatchResult, Outcome};
use super::service::{CommitObserver, Pending, Writer, WriterError, WriterHandle, WriterOptions};
use crate::intake::Submission;

/// Parsed commands the reader may run ahead of the outcomes written; bounds its memory.
pub const PIPELINE_DEPTH_COMMANDS: usize = 4 * SUBMIT_BATCH_COMMANDS_MAX;

/// Most lines the reader puts in one job.
pub const APPLY_JOB_LINES_MAX: usize = 256;

/// Input buffer of the reader.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// Failures of the pipeline (not business rejections, which are outcomes).
#[derive(Debug, Error)]
pub enum ApplyError {
    /// The ledger failed. Edge: exit 1.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The writer refused the commands (a failed append) or stopped. Edge: exit 1.
    #[error(transparent)]
    Writer(#[from] WriterError),
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
    /// Committer time in durable appends.
    pub append_seconds: f64,
    /// Time writing outcome lines.
    pub output_seconds: f64,
    /// Time the output waited for answers.
    pub wait_seconds: f64,
}

/// Counts what the writer committed.
#[derive(Default)]
struct Counter(Mutex<ApplyStats>);

impl CommitObserver for Counter {
    fn committed(&self, result: &BatchResult, _head: u64, _seconds: f64) {
        let mut stats = self.0.lock().unwrap_or_else(|p| p.into_inner());
        stats.batches += 1;
        stats.events += result.events.len() as u64;
        stats.decide_seconds += result.decide_micros as f64 / 1e6;
        stats.append_seconds += result.append_micros as f64 / 1e6;
        for outcome in &result.outcomes {
            stats.commands += 1;
            match outcome {
                Outcome::Accepted { .. } => stats.accepted += 1,
                Outcome::Rejected { .. } => stats.rejected += 1,
                Outcome::Duplicate { .. } => stats.duplicates += 1,
            }
        }
    }
}

enum Queued {
    Job(Pending),
    Failed(std::io::Error),
    Refused(WriterError),
}

/// Longest input line kept in memory: a command envelope at its limit plus line ending slack.
/// A longer line is skipped as it streams past and answered `malformed_command`.
pub const LINE_BYTES_MAX: usize = csp_ledger_schemas::command::COMMAND_BYTES_MAX + 2;

/// What [`read_line_bounded`] read.
#[derive(Debug, PartialEq, Eq)]
enum LineRead {
    /// End of input, nothing read.
    End,
    /// A line (with its newline, unless it ended the input) is in the buffer.
    Line,
    /// A line of `bytes` bytes (newline included) longer than the limit: skipped, not kept.
    TooLong { bytes: u64 },
}

/// Reads one line into `line`, keeping at most `max` bytes of it in memory: a longer line is
/// consumed to its end without being stored.
fn read_line_bounded(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    let mut total: u64 = 0;
    let mut too_long = false;
    loop {
        let available = match input.fill_buf() {
            Ok(buffer) => buffer,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            break;
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (&available[..=end], true),
            None => (available, false),
        };
        let used = chunk.len();
        total += used as u64;
        if !too_long && line.len() + used > max {
            too_long = true;
            line.clear();
        }
        if !too_long {
            line.extend_from_slice(chunk);
        }
        input.consume(used);
        if done {
            break;
        }
    }
    Ok(match (total, too_long) {
        (0, _) => LineRead::End,
        (bytes, true) => LineRead::TooLong { bytes },
        (_, false) => LineRead::Line,
    })
}

/// Reads lines, submits them in jobs, and queues each job's pending answer for the output.
fn spawn_reader<R: Read + Send + 'static>(
    input: R,
    writer: WriterHandle,
) -> Result<crossbeam_channel::Receiver<Queued>, std::io::Error> {
    let (sender, receiver) = bounded(PIPELINE_DEPTH_COMMANDS / APPLY_JOB_LINES_MAX);
    std::thread::Builder::new()
        .name("apply-reader".into())
        .spawn(move || {
            let mut input = BufReader::with_capacity(READ_BUFFER_BYTES, input);
            let mut line = Vec::with_capacity(1024);
            let mut number = 0u64;
            let mut job: Vec<Submission> = Vec::new();
            let flush = |job: &mut Vec<Submission>| -> bool {
                if job.is_empty() {
                    return true;
                }
                let next = match writer.submit(std::mem::take(job), Vec::new()) {
                    Ok(pending) => Queued::Job(pending),
                    Err(error) => Queued::Refused(error),
                };
                sender.send(next).is_ok()
            };
            loop {
                // Hand over what was read when the next read may block, or at the job limit
                // (small jobs: the writer gathers many into one batch, and never waits long).
                if (input.buffer().is_empty() || job.len() >= APPLY_JOB_LINES_MAX)
                    && !flush(&mut job)
                {
                    return;
                }
                line.clear();
                match read_line_bounded(&mut input, &mut line, LINE_BYTES_MAX) {
                    Ok(LineRead::End) => break,
                    Ok(LineRead::Line) => {
                        number += 1;
                        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            line.pop();
                        }
                        job.push(Submission::parse(Some(number), &line));
                    }
                    Ok(LineRead::TooLong { bytes }) => {
                        number += 1;
                        job.push(Submission::oversized(Some(number), bytes));
                    }
                    Err(error) => {
                        if flush(&mut job) {
                            let _ = sender.send(Queued::Failed(error));
                        }
                        return;
                    }
                }
            }
            flush(&mut job);
        })?;
    Ok(receiver)
}

/// Applies every line of `input` and writes one outcome line per input line to `output`.
/// Returns the counts and the ledger (the writer stopped, the checkpoint written when due).
pub fn apply_lines<R, W>(
    ledger: Ledger,
    input: R,
    output: &mut W,
) -> Result<(ApplyStats, Ledger), ApplyError>
where
    R: Read + Send + 'static,
    W: Write,
{
    let started = Instant::now();
    let counter = Arc::new(Counter::default());
    let writer = Writer::start(
        ledger,
        WriterOptions {
            read_model: false,
            checkpoint_on_stop: false,
            checkpoint_when_idle: false,
            ..WriterOptions::default()
        },
        Arc::clone(&counter) as Arc<dyn CommitObserver>,
    )?;
    let answers = spawn_reader(input, writer.handle())?;
    let mut output_seconds = 0.0;
    let mut wait_seconds = 0.0;
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut failure: Option<ApplyError> = None;
    for answer in answers {
        let waiting = Instant::now();
        let answered = match answer {
            Queued::Job(pending) => pending.wait(),
            Queued::Refused(error) => Err(error),
            Queued::Failed(error) => {
                failure = Some(error.into());
                break;
            }
        };
        wait_seconds += waiting.elapsed().as_secs_f64();
        let answered = match answered {
            Ok(answered) => answered,
            Err(error) => {
                failure = Some(error.into());
                break;
            }
        };
        let writing = Instant::now();
        buffer.clear();
        for index in 0..answered.len() {
            answered.write_line(index, &mut buffer);
            buffer.push(b'\n');
        }
        if let Err(error) = output.write_all(&buffer).and_then(|()| output.flush()) {
            failure = Some(error.into());
            break;
        }
        output_seconds += writing.elapsed().as_secs_f64();
    }
    // Every answer is out: the run's time ends here (the due checkpoint follows, as it
    // followed `apply` before the writer wrote it).
    let seconds = started.elapsed().as_secs_f64();
    let ledger = writer.stop();
    if let Some(failure) = failure {
        return Err(failure);
    }
    let ledger = ledger.ok_or(ApplyError::Writer(WriterError::Stopped))?;
    let mut stats = *counter.0.lock().unwrap_or_else(|p| p.into_inner());
    stats.seconds = seconds;
    stats.output_seconds = output_seconds;
    stats.wait_seconds = wait_seconds;
    Ok((stats, ledger))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_over_the_limit_is_skipped_without_being_kept() {
        let input = format!("short\n{}\nlast", "x".repeat(100));
        let mut reader = std::io::BufReader::with_capacity(8, input.as_bytes());
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 16).unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"short\n");
        line.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 16).unwrap(),
            LineRead::TooLong { bytes: 101 }
        );
        assert!(line.capacity() <= 64, "the long line was not kept");
        line.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 16).unwrap(),
            LineRead::Line
        );
        assert_eq!(line, b"last");
        line.clear();
        assert_eq!(
            read_line_bounded(&mut reader, &mut line, 16).unwrap(),
            LineRead::End
        );
    }
}
