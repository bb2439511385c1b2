//! `csp-ledger rebuild`: refolds the read models from position 1 and reports whether the
//! result equals the checkpointed state, so an auditor can confirm that the read models were
//! derived honestly from the log. Shows progress on a terminal during long rebuilds.

use std::io::IsTerminal;
use std::time::Instant;

use serde::Serialize;

use crate::store::audit::WalkStart;
use crate::store::checkpoint;
use crate::store::log::Log;
use crate::store::log::LogError;
use crate::store::read::replay_onto;
use csp_ledger_projections::state::LedgerState;

/// What a rebuild found.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    /// Position of the checkpoint compared against (`null` without a checkpoint).
    pub checkpoint_position: Option<u64>,
    /// Whether the refold up to the checkpoint's position equals the checkpoint (`null` without
    /// one, or when the checkpoint does not belong to this log).
    pub equal: Option<bool>,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// A checkpoint at the head was written (`--write`).
    pub checkpoint_written: bool,
    /// Partners in the rebuilt state.
    pub partners: usize,
    /// Peak resident memory of the process (Linux), in bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Refolds from position 1 to the head.
pub fn rebuild(
    log: &Log,
    write: bool,
    key: &checkpoint::MacKey,
) -> Result<RebuildReport, LogError> {
    let checkpoint = checkpoint::load_untrusted(log.dir(), key)?;
    let head = log.head();
    let started = Instant::now();
    let show = std::io::stderr().is_terminal();
    let mut last_shown = Instant::now();
    let mut progress = |position: u64| {
        if show && position % 4096 == 0 && last_shown.elapsed().as_millis() >= 500 {
            last_shown = Instant::now();
            let rate = position as f64 / started.elapsed().as_secs_f64();
            let percent = 100.0 * position as f64 / head.position.max(1) as f64;
            eprint!(
                "\rrebuild: {position}/{} events ({percent:.1}%), {rate:.0} events/s   ",
                head.position
            );
        }
    };
    let mut state = LedgerState::new();
    let mut equal = None;
    if let Some(checkpoint) = &checkpoint {
        if checkpoint.matches(log)? {
            replay_onto(
                log,
                &mut state,
                WalkStart::GENESIS,
                checkpoint.position,
                &mut progress,
            )?;
            equal = Some(state == checkpoint.state);
        }
    }
    let start = WalkStart {
        position: state.position + 1,
        prev_hash: log.hash_at(state.position)?.unwrap_or([0; 32]),
    };
    replay_onto(log, &mut state, start, u64::MAX, &mut progress)?;
    let seconds = started.elapsed().as_secs_f64();
    if show {
        eprintln!();
    }
    if write {
        checkpoint::save(log.dir(), &state, head.hash, key)?;
    }
    Ok(RebuildReport {
        checkpoint_position: checkpoint.as_ref().map(|c| c.position),
        equal,
        events: state.position,
        seconds,
        events_per_second: state.position as f64 / seconds.max(1e-9),
        checkpoint_written: write,
        partners: state.partners.len(),
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Peak resident set size of this process (Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
