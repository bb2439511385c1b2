//! `csp-ledger history`: event envelopes as JSON lines, filtered by stream, start position and
//! an upper bound (a position, or a time matched against `recorded_at`).

use std::io::Write;

use chrono::{DateTime, Utc};
use csp_ledger_schemas::event::{EventEnvelope, StreamId};

use crate::store::log::{Log, LogError};
use crate::store::read::{join_personal, AnsweredEvent};
use crate::writer::LedgerError;

/// An upper bound on history: a position, or a `recorded_at` time (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Position(u64),
    Time(DateTime<Utc>),
}

impl std::str::FromStr for Until {
    type Err = String;
    fn from_str(s: &str) -> Result<Until, String> {
        if let Ok(position) = s.parse::<u64>() {
            return Ok(Until::Position(position));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Until::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("{s:?} is neither a position nor an RFC 3339 time"))
    }
}

/// Which events `history` prints.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub stream: Option<StreamId>,
    pub from: u64,
    pub until: Option<Until>,
}

/// Writes matching events as JSON lines; returns how many.
pub fn write_history(
    log: &Log,
    filter: &HistoryFilter,
    out: &mut impl Write,
) -> Result<u64, LedgerError> {
    let mut prev_hash = [0u8; 32];
    let mut written = 0;
    let mut line = Vec::with_capacity(1024);
    let start = filter.from.max(1);
    for item in log.events_from(start.saturating_sub(1).max(1)) {
        let stored = item?;
        let hash = stored.hash;
        if stored.position < start {
            prev_hash = hash;
            continue;
        }
        if let Some(Until::Position(until)) = filter.until {
            if stored.position > until {
                break;
            }
        }
        let envelope =
            EventEnvelope::decode(&stored.canonical).map_err(|reason| LogError::Corrupt {
                position: Some(stored.position),
                reason,
            })?;
        if let Some(Until::Time(until)) = filter.until {
            if envelope.recorded_at > until {
                break;
            }
        }
        if filter.stream.is_none_or(|s| s == envelope.stream) {
            let personal = join_personal(log, &stored)?;
            line.clear();
            AnsweredEvent {
                stored,
                prev_hash,
                personal,
            }
            .line()
            .encode(&mut line);
            line.push(b'\n');
            out.write_all(&line).map_err(|error| LogError::Io {
                path: "<output>".into(),
                error,
            })?;
            written += 1;
        }
        prev_hash = hash;
    }
    Ok(written)
}
