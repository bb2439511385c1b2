//! The hash chain: how an event's hash is computed, the walker that checks a sequence of
//! stored events against it, and `verify`, which walks the whole log.

use csp_ledger_schemas::event::EventEnvelope;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::log::{Log, LogError, StoredEvent};

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
        LogError::Corrupt { position: Some(broken.position), reason: broken.reason }
    }
}

/// Checks stored events one after another: contiguous positions from 1, the position inside
/// the canonical bytes equal to the slot, and the hash link.
#[derive(Debug, Clone)]
pub struct ChainWalker {
    pub next_position: u64,
    pub prev_hash: [u8; 32],
}

impl Default for ChainWalker {
    fn default() -> Self {
        ChainWalker { next_position: 1, prev_hash: GENESIS_HASH }
    }
}

impl ChainWalker {
    /// Checks one event and returns it decoded.
    pub fn check(&mut self, stored: &StoredEvent) -> Result<EventEnvelope, ChainBreak> {
        let position = self.next_position;
        if stored.position != position {
            return Err(ChainBreak {
                position,
                reason: format!("event {position} is missing (the next stored slot is {})", stored.position),
            });
        }
        if chain_hash(&self.prev_hash, &stored.canonical) != stored.hash {
            return Err(ChainBreak { position, reason: format!("hash of event {position} does not match its bytes and predecessor") });
        }
        let envelope = EventEnvelope::decode(&stored.canonical)
            .map_err(|error| ChainBreak { position, reason: format!("event {position} does not decode: {error}") })?;
        if envelope.position != position {
            return Err(ChainBreak {
                position,
                reason: format!("slot {position} holds the event of position {}", envelope.position),
            });
        }
        self.next_position += 1;
        self.prev_hash = stored.hash;
        Ok(envelope)
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
}

/// Walks the chain from position 1 to the head.
pub fn verify(log: &Log) -> VerifyReport {
    let head = log.head();
    let mut walker = ChainWalker::default();
    let broken = |walker: &ChainWalker, position: u64, reason: String| VerifyReport {
        ok: false,
        events: walker.next_position - 1,
        head_hash: hex::encode(head.hash),
        first_bad_position: Some(position),
        reason: Some(reason),
    };
    for item in log.events_from(1) {
        let stored = match item {
            Ok(stored) => stored,
            Err(LogError::Corrupt { position, reason }) => {
                return broken(&walker, position.unwrap_or(walker.next_position).min(walker.next_position), reason)
            }
            Err(error) => return broken(&walker, walker.next_position, error.to_string()),
        };
        if let Err(chain_break) = walker.check(&stored) {
            return broken(&walker, chain_break.position, chain_break.reason);
        }
    }
    let walked = walker.next_position - 1;
    if walked != head.position {
        return broken(&walker, walked + 1, format!("the head names position {} but the log ends at {walked}", head.position));
    }
    if walker.prev_hash != head.hash {
        return broken(&walker, walked, "the head hash differs from the last event's hash".to_string());
    }
    VerifyReport { ok: true, events: walked, head_hash: hex::encode(head.hash), first_bad_position: None, reason: None }
}
