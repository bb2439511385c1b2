//! The idempotency index: one small record per command id, rebuilt from the outcome log.

/// Idempotency record of a command id, kept in memory (32 bytes a slot with its key) and
/// rebuilt from the outcome log; the rest of the first outcome is read back from the log when a
/// duplicate arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IdempotencyEntry {
    /// The first 8 bytes of the body hash: enough to tell a retry from a conflicting reuse.
    pub(super) body_hash: u64,
    pub(super) outcome_seq: u64,
}

/// Short body hash of a command whose body is not known: an accepted command replicated from
/// the events topic before its result (which carries the body hash). Matches any body.
pub(super) const UNKNOWN_BODY: u64 = 0;

pub(super) fn short_hash(body_hash: &[u8; 16]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&body_hash[..8]);
    u64::from_be_bytes(first)
}
