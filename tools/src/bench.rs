//! `csp-ledger bench`: apply throughput with durable group commit on a generated workload, and
//! replay throughput (fold from position 1 with the hash chain checked), as a printed report.

use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use csp_ledger::intake::{ParsedCommand, Submission};
use csp_ledger::store::log::LogOptions;
use csp_ledger::store::read::replay;
use csp_ledger::writer::pipeline::{apply_lines, ApplyError};
use csp_ledger::writer::Ledger;
use csp_ledger_testkit::workload::Generator;

/// Figures of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub commands: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub events: u64,
    pub group_commits: u64,
    pub fsync: bool,
    pub apply_seconds: f64,
    pub apply_commands_per_second: f64,
    /// Where the writer thread spent the apply time.
    pub writer_decide_seconds: f64,
    pub writer_append_seconds: f64,
    pub writer_output_seconds: f64,
    pub writer_wait_for_input_seconds: f64,
    pub replay_events: u64,
    pub replay_seconds: f64,
    pub replay_events_per_second: f64,
    pub store_bytes: u64,
    /// Latency of a commit holding a single command (decide, append, flush, fsync when on):
    /// what one interactive caller waits for.
    pub single_command_commits: u64,
    pub single_command_commit_p50_micros: u64,
    pub single_command_commit_p99_micros: u64,
    pub peak_rss_bytes: Option<u64>,
}

pub use csp_ledger::store::rebuild::peak_rss_bytes;

/// Generates `commands` commands, applies them to a fresh log in `dir` through the same
/// pipeline as `csp-ledger apply`, then replays the log.
pub fn run(
    dir: &Path,
    commands: usize,
    seed: u64,
    options: LogOptions,
) -> Result<BenchReport, ApplyError> {
    let mut input = Vec::with_capacity(commands * 450);
    for envelope in Generator::new(seed).take(commands) {
        input.extend_from_slice(envelope.to_json().as_bytes());
        input.push(b'\n');
    }
    let ledger = Ledger::open(dir, options)?;
    let mut sink = std::io::sink();
    let (stats, ledger) = apply_lines(ledger, Cursor::new(input), &mut sink)?;
    let store_bytes = ledger.log().size_on_disk().unwrap_or(0);
    let started = Instant::now();
    let state = replay(ledger.log(), u64::MAX).map_err(csp_ledger::writer::LedgerError::from)?;
    let replay_seconds = started.elapsed().as_secs_f64();
    drop(ledger);
    let single = single_command_commits(&dir.join("single"), seed, options)?;
    Ok(BenchReport {
        commands: stats.commands,
        accepted: stats.accepted,
        rejected: stats.rejected,
        duplicates: stats.duplicates,
        events: stats.events,
        group_commits: stats.batches,
        fsync: options.fsync,
        apply_seconds: stats.seconds,
        apply_commands_per_second: stats.commands as f64 / stats.seconds,
        writer_decide_seconds: stats.decide_seconds,
        writer_append_seconds: stats.append_seconds,
        writer_output_seconds: stats.output_seconds,
        writer_wait_for_input_seconds: stats.wait_seconds,
        replay_events: state.position,
        replay_seconds,
        replay_events_per_second: state.position as f64 / replay_seconds,
        store_bytes,
        single_command_commits: single.len() as u64,
        single_command_commit_p50_micros: percentile(&single, 0.50),
        single_command_commit_p99_micros: percentile(&single, 0.99),
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Commands committed one per flush to measure commit latency.
pub const SINGLE_COMMAND_COMMITS: usize = 2000;

fn single_command_commits(
    dir: &Path,
    seed: u64,
    options: LogOptions,
) -> Result<Vec<u64>, ApplyError> {
    let mut ledger = Ledger::open(dir, options)?;
    let mut micros = Vec::with_capacity(SINGLE_COMMAND_COMMITS);
    for envelope in Generator::new(seed ^ 0x5eed).take(SINGLE_COMMAND_COMMITS) {
        let submission = Submission {
            line: None,
            parsed: Ok(ParsedCommand::new(envelope)),
            source: None,
            principal: csp_ledger::intake::local_principal(),
        };
        let started = Instant::now();
        ledger.submit(vec![submission])?;
        micros.push(started.elapsed().as_micros() as u64);
    }
    micros.sort_unstable();
    Ok(micros)
}

fn percentile(sorted: &[u64], quantile: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}
