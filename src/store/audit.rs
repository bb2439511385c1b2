//! The hash chain: how an event's hash is computed, the parallel walk that checks the
//! stored events against it, and `verify`, which walks the whole log and checks every stored
//! personal value against its commitment.

use crossbeam_channel::bounded;
use csp_ledger_schemas::event::{EventEnvelope, FoldEvent};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::store::log::{for_each_event_record, Log, LogError, StoredEvent};

/// Threads that check and decode chunks during a parallel walk.
pub const WALK_WORKER_THREADS: usize = 2;

/// Chunks queued per walk worker.
const WALK_QUEUE_CHUNKS: usize = 8;

/// `prev_hash` of the first event: 32 zero bytes (64 zeros in hex).
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// SHA-256 over the previous hash in lower-case hex (64 ASCII bytes) followed by the event's
/// canonical bytes. Documented for auditors in `schemas/CANONICAL.md`.
pub fn chain_hash(prev_hash: &[u8; 32], canonical: &[u8]) -> [u8; 32] {
    let mut hex = [0u8; 64];
    // 32 bytes always fit 64 hex digits.
    let _ = hex::encode_to_slice(prev_hash, &mut hex);
    let mut hasher = Sha256::new();
    hasher.update(hex);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub position: u64,
    pub reason: String,
}

impl From<ChainBreak> for LogError {
    fn from(broken: ChainBreak) -> LogError {
        LogError::Corrupt {
            position: Some(broken.position),
            reason: broken.reason,
        }
    }
}

/// One chunk checked and decoded by a walk worker. Links inside the chunk are checked by the
/// worker; the link from the previous chunk is checked in order by the caller.
struct CheckedChunk<T> {
    first_position: u64,
    first: Option<StoredEvent>,
    last_hash: [u8; 32],
    envelopes: Vec<(T, [u8; 32])>,
    /// The first break inside the chunk, if any (envelopes before it are intact).
    broken: Option<ChainBreak>,
}

/// How a walk decodes canonical bytes: to the value it hands on, and the position inside.
pub type Decoder<T> = fn(&[u8]) -> Result<(u64, T), String>;

/// Full decode: the whole envelope, every field checked (verify, history).
pub fn decode_full(bytes: &[u8]) -> Result<(u64, EventEnvelope), String> {
    EventEnvelope::decode(bytes).map(|e| (e.position, e))
}

/// Fold decode: only what the projections need (replay).
pub fn decode_fold(bytes: &[u8]) -> Result<(u64, FoldEvent), String> {
    FoldEvent::decode(bytes).map(|e| (e.position, e))
}

fn check_chunk<T>(first_position: u64, value: &[u8], decode: Decoder<T>) -> CheckedChunk<T> {
    let mut checked = CheckedChunk {
        first_position,
        first: None,
        last_hash: [0; 32],
        envelopes: Vec::new(),
        broken: None,
    };
    let mut prev: Option<[u8; 32]> = None;
    let mut broken = None;
    let result = for_each_event_record(first_position, value, |position, hash, canonical| {
        if let Some(prev) = prev {
            if chain_hash(&prev, canonical) != *hash {
                broken = Some(ChainBreak {
                    position,
                    reason: format!(
                        "hash of event {position} does not match its bytes and predecessor"
                    ),
                });
                return false;
            }
        }
        let envelope = match decode(canonical) {
            Ok((declared, envelope)) if declared == position => envelope,
            Ok((declared, _)) => {
                broken = Some(ChainBreak {
                    position,
                    reason: format!("slot {position} holds the event of position {declared}"),
                });
                return false;
            }
            Err(error) => {
                broken = Some(ChainBreak {
                    position,
                    reason: format!("event {position} does not decode: {error}"),
                });
                return false;
            }
        };
        prev = Some(*hash);
        checked.last_hash = *hash;
        checked.envelopes.push((envelope, *hash));
        if checked.first.is_none() {
            checked.first = Some(StoredEvent {
                position,
                hash: *hash,
                canonical: canonical.to_vec(),
            });
        }
        true
    });
    checked.broken = match (broken, result) {
        (Some(broken), _) => Some(broken),
        (None, Err(LogError::Corrupt { position, reason })) => Some(ChainBreak {
            position: position.unwrap_or(first_position),
            reason,
        }),
        (None, Err(error)) => Some(ChainBreak {
            position: first_position,
            reason: error.to_string(),
        }),
        (None, Ok(())) => None,
    };
    checked
}

/// Where a walk starts: the first position to visit and the hash of the event before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStart {
    pub position: u64,
    pub prev_hash: [u8; 32],
}

impl WalkStart {
    /// From position 1.
    pub const GENESIS: WalkStart = WalkStart {
        position: 1,
        prev_hash: GENESIS_HASH,
    };
}

/// Walks the log from `start` with the chain checked, decoding chunks on
/// [`WALK_WORKER_THREADS`] threads, and hands every event to `visit` in position order. Stops
/// after `until` (inclusive) or at the first break, which it returns with its exact position.
/// Returns the last position visited (or `start.position - 1`) and its hash.
pub fn walk<T: Send>(
    log: &Log,
    start: WalkStart,
    until: u64,
    decode: Decoder<T>,
    mut visit: impl FnMut(u64, &T),
) -> Result<(u64, [u8; 32]), WalkError> {
    std::thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..WALK_WORKER_THREADS {
            let (work_tx, work_rx) = bounded::<(u64, sled::IVec)>(WALK_QUEUE_CHUNKS);
            let (done_tx, done_rx) = bounded::<CheckedChunk<T>>(WALK_QUEUE_CHUNKS);
            scope.spawn(move || {
                for (first, value) in work_rx {
                    if done_tx.send(check_chunk(first, &value, decode)).is_err() {
                        break;
                    }
                }
            });
            senders.push(work_tx);
            receivers.push(done_rx);
        }
        let reader = scope.spawn(move || -> Result<(), LogError> {
            for (index, item) in log.event_chunks_from(start.position).enumerate() {
                let (first, value) = item?;
                if first > until
                    || senders[index % WALK_WORKER_THREADS]
                        .send((first, value))
                        .is_err()
                {
                    break;
                }
            }
            Ok(())
        });
        let mut next = start.position;
        let mut prev_hash = start.prev_hash;
        let mut index = 0usize;
        let broken =
            |position: u64, reason: String| Err(WalkError::Broken(ChainBreak { position, reason }));
        let outcome = 'chunks: loop {
            let Ok(chunk) = receivers[index % WALK_WORKER_THREADS].recv() else {
                break Ok((next - 1, prev_hash));
            };
            index += 1;
            if chunk.first_position > next {
                break broken(
                    next,
                    format!(
                        "event {next} is missing (the next stored slot is {})",
                        chunk.first_position
                    ),
                );
            }
            if chunk.first_position == next {
                if let Some(first) = &chunk.first {
                    if chain_hash(&prev_hash, &first.canonical) != first.hash {
                        break broken(
                            next,
                            format!(
                                "hash of event {next} does not match its bytes and predecessor"
                            ),
                        );
                    }
                }
            }
            for (i, (envelope, hash)) in chunk.envelopes.iter().enumerate() {
                let slot = chunk.first_position + i as u64;
                if slot < next {
                    // Before the start (first chunk of a tail walk): the event just before the
                    // start must be the one the caller named.
                    if slot + 1 == next && *hash != prev_hash {
                        break 'chunks broken(
                            slot,
                            format!(
                                "event {slot} is not the event the walk was told to start after"
                            ),
                        );
                    }
                    continue;
                }
                if next > until {
                    break 'chunks Ok((next - 1, prev_hash));
                }
                visit(next, envelope);
                prev_hash = *hash;
                next += 1;
            }
            if let Some(chain_break) = chunk.broken {
                break Err(WalkError::Broken(chain_break));
            }
            if next > until {
                break Ok((next - 1, prev_hash));
            }
        };
        // Unblock the reader and workers before joining them.
        drop(receivers);
        match reader.join() {
            Ok(Err(error)) if outcome.is_ok() => Err(WalkError::Log(error)),
            _ => outcome,
        }
    })
}

/// Why a walk stopped early.
#[derive(Debug)]
pub enum WalkError {
    Broken(ChainBreak),
    Log(LogError),
}

impl From<WalkError> for LogError {
    fn from(error: WalkError) -> LogError {
        match error {
            WalkError::Broken(broken) => broken.into(),
            WalkError::Log(error) => error,
        }
    }
}

/// Result of walking the whole log (`/v1/audit/verify`, `csp-ledger verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// Events checked and found intact.
    pub events: u64,
    pub head_hash: String,
    pub first_bad_position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when the failure has a code of its own: `no_ledger` (the directory holds no
    /// ledger), `personal_data_mismatch` (a stored personal value does not match its
    /// commitment). Absent for a broken chain (the report of earlier releases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
}

impl VerifyReport {
    /// The report on a directory that holds no ledger (`verify` exit 2).
    pub fn no_ledger(reason: String) -> VerifyReport {
        VerifyReport {
            ok: false,
            events: 0,
            head_hash: String::new(),
            first_bad_position: None,
            reason: Some(reason),
            code: Some("no_ledger"),
        }
    }
}

/// Walks the chain from position 1 to the head.
pub fn verify(log: &Log) -> VerifyReport {
    let head = log.head();
    let mut intact = 0u64;
    let broken = |intact: u64, position: Option<u64>, reason: String| VerifyReport {
        ok: false,
        events: intact,
        head_hash: hex::encode(head.hash),
        first_bad_position: position,
        reason: Some(reason),
        code: None,
    };
    let (walked, last_hash) = match walk(log, WalkStart::GENESIS, u64::MAX, decode_full, |_, _| {
        intact += 1
    }) {
        Ok(done) => done,
        Err(WalkError::Broken(chain_break)) => {
            return broken(intact, Some(chain_break.position), chain_break.reason)
        }
        // A position only when the error names one: sled failing to read its files does not.
        Err(WalkError::Log(LogError::Corrupt { position, reason })) => {
            return broken(intact, position, reason)
        }
        Err(WalkError::Log(error)) => return broken(intact, None, error.to_string()),
    };
    if walked != head.position {
        return broken(
            walked,
            Some(walked + 1),
            format!(
                "the head names position {} but the log ends at {walked}",
                head.position
            ),
        );
    }
    if last_hash != head.hash {
        return broken(
            walked,
            Some(walked),
            "the head hash differs from the last event's hash".to_string(),
        );
    }
    // Every stored personal value against the commitment it is stored under (SHA-256 of salt
    // and value), so that an edited value is found without a read (SPEC.md section 12).
    let mut mismatched: Vec<(uuid::Uuid, csp_ledger_schemas::values::Commitment)> = Vec::new();
    let checked = log.for_each_personal(|stored| {
        if csp_ledger_domain::commit(&stored.salt, stored.value) != stored.commitment {
            mismatched.push((stored.subject, stored.commitment));
        }
    });
    match checked {
        Err(error) => return broken(walked, None, error.to_string()),
        Ok(_) if !mismatched.is_empty() => {
            let (subject, commitment) = mismatched[0];
            return VerifyReport {
                code: Some("personal_data_mismatch"),
                ..broken(
                    walked,
                    None,
                    format!(
                        "{} stored personal value(s) do not match their commitment; the first: \
                         subject {subject}, commitment {commitment}",
                        mismatched.len()
                    ),
                )
            };
        }
        Ok(_) => {}
    }
    VerifyReport {
        ok: true,
        events: walked,
        head_hash: hex::encode(head.hash),
        first_bad_position: None,
        reason: None,
        code: None,
    }
}
