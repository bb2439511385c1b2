//! The log's storage layout: sled keys and the byte encodings of what they hold. Pure
//! functions and types; every sled call is in [`super::log`].
//!
//! Layout: one sled tree, keys prefixed by a record kind.
//!
//! | key | value |
//! |---|---|
//! | `M` | format marker [`FORMAT`] |
//! | `H` | head: last position (u64 BE), its hash (32 bytes), next outcome sequence (u64 BE) |
//! | `E` + first position (u64 BE) | event chunk: per event `len` (u32 LE), hash (32), canonical bytes |
//! | `O` + first sequence (u64 BE) | outcome chunk: per outcome `len` (u32 LE), record |
//! | `P` + subject (16) + commitment (32) | only in a store from before the personal-data store: personal value, salt (16) and UTF-8 value; moved to `personal.sqlite` ([`super::personal`]) and removed at open |
//! | `K` + consumer key | next offset to consume (i64 BE), stored with the batch it ends |
//! | `I` | instance id (16 bytes): this log's name in the leader election |
//! | `C` + publisher name | outbox cursor (u64 BE), written without fsync |
//! | `Q` + next outcome sequence (u64 BE) | consumer offsets of the batch that ends before it, until published |
//! | `R` + next outcome sequence (u64 BE) | round mark: head position (u64 BE) and hash (32) after the batch that ends before it, until a commit record covers it |
//! | `T` + level (u8) + index (u64 BE) | Merkle tree node (32 bytes): the complete subtree of leaves `[index·2^level, (index+1)·2^level)`, for levels ≥ [`TREE_STORED_LEVEL_MIN`]; written in the batch whose events complete it |
//!

use csp_ledger_schemas::values::Commitment;
use sled::IVec;
use uuid::Uuid;

use super::error::LogError;

/// Largest event chunk value in bytes before a new chunk starts; keeps sled values well under
/// its blob threshold (segment size / 4 = 128 KiB).
pub const EVENT_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Lowest Merkle tree level stored under `T`. A node below it (at most 2^8 − 1 = 255 leaves)
/// is hashed from the event hashes of its chunk(s) when a proof needs it: storing every level
/// would add about one sled key per event (sled's cost is per key; a chunk holds ~100 events),
/// while from this level up the tree adds one key per 128 events.
pub const TREE_STORED_LEVEL_MIN: u8 = 8;

/// Largest outcome chunk value in bytes.
pub const OUTCOME_CHUNK_BYTES_MAX: usize = 32 * 1024;

/// The last appended event and the next outcome sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: [u8; 32],
    pub next_outcome_seq: u64,
}

impl Head {
    pub const GENESIS: Head = Head {
        position: 0,
        hash: [0; 32],
        next_outcome_seq: 1,
    };

    pub(super) fn encode(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out[..8].copy_from_slice(&self.position.to_be_bytes());
        out[8..40].copy_from_slice(&self.hash);
        out[40..].copy_from_slice(&self.next_outcome_seq.to_be_bytes());
        out
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<Head> {
        if bytes.len() != 48 {
            return None;
        }
        Some(Head {
            position: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            hash: bytes[8..40].try_into().ok()?,
            next_outcome_seq: u64::from_be_bytes(bytes[40..].try_into().ok()?),
        })
    }
}

/// One stored event: its slot position (from the chunk key and index), its hash and its
/// canonical bytes. The position inside the bytes is checked by readers, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub position: u64,
    pub hash: [u8; 32],
    pub canonical: Vec<u8>,
}

/// What became of a command, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredOutcomeKind {
    Accepted = 0,
    Rejected = 1,
    Duplicate = 2,
    /// Rejected with `command_id_conflict`: does not own the idempotency record.
    Conflict = 3,
    /// Not a valid command, but with a readable `command_id`: answered with
    /// `malformed_command`; does not own the idempotency record.
    Malformed = 4,
    /// Not a command envelope at all (Kafka ingest): bound for the dead-letter topic. `rejection`
    /// holds the metadata JSON length (u32 BE), the metadata JSON and the original bytes.
    DeadLetter = 5,
}

/// A command outcome record (the idempotency record is the first one per `command_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeRecord {
    pub command_id: Uuid,
    pub body_hash: [u8; 16],
    pub kind: StoredOutcomeKind,
    /// For accepted commands: the first event's position (0 when none). For duplicates: the
    /// sequence number of the original outcome.
    pub first_position: u64,
    pub event_count: u32,
    /// Ledger clock, microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// The command's `correlation_id`, for the results topic's header.
    pub correlation_id: Option<String>,
    /// For rejections: `{"code","message","details"}` as JSON.
    pub rejection: Vec<u8>,
}

const OUTCOME_FIXED_BYTES: usize = 16 + 16 + 1 + 8 + 4 + 8;
/// Length marker of an absent correlation id.
const NO_CORRELATION: u16 = u16::MAX;

impl OutcomeRecord {
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.command_id.as_bytes());
        out.extend_from_slice(&self.body_hash);
        out.push(self.kind as u8);
        out.extend_from_slice(&self.first_position.to_be_bytes());
        out.extend_from_slice(&self.event_count.to_be_bytes());
        out.extend_from_slice(&self.recorded_at_micros.to_be_bytes());
        match &self.correlation_id {
            Some(correlation) => {
                let bytes = &correlation.as_bytes()
                    [..correlation.len().min(usize::from(NO_CORRELATION) - 1)];
                out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            None => out.extend_from_slice(&NO_CORRELATION.to_be_bytes()),
        }
        out.extend_from_slice(&self.rejection);
    }

    pub(super) fn decode(bytes: &[u8]) -> Option<OutcomeRecord> {
        if bytes.len() < OUTCOME_FIXED_BYTES {
            return None;
        }
        let kind = match bytes[32] {
            0 => StoredOutcomeKind::Accepted,
            1 => StoredOutcomeKind::Rejected,
            2 => StoredOutcomeKind::Duplicate,
            3 => StoredOutcomeKind::Conflict,
            4 => StoredOutcomeKind::Malformed,
            5 => StoredOutcomeKind::DeadLetter,
            _ => return None,
        };
        let length = u16::from_be_bytes(
            bytes
                .get(OUTCOME_FIXED_BYTES..OUTCOME_FIXED_BYTES + 2)?
                .try_into()
                .ok()?,
        );
        let mut rest = OUTCOME_FIXED_BYTES + 2;
        let correlation_id = if length == NO_CORRELATION {
            None
        } else {
            let text = bytes.get(rest..rest + usize::from(length))?;
            rest += usize::from(length);
            Some(String::from_utf8(text.to_vec()).ok()?)
        };
        Some(OutcomeRecord {
            command_id: Uuid::from_slice(&bytes[..16]).ok()?,
            body_hash: bytes[16..32].try_into().ok()?,
            kind,
            first_position: u64::from_be_bytes(bytes[33..41].try_into().ok()?),
            event_count: u32::from_be_bytes(bytes[41..45].try_into().ok()?),
            recorded_at_micros: i64::from_be_bytes(bytes[45..53].try_into().ok()?),
            correlation_id,
            rejection: bytes[rest..].to_vec(),
        })
    }
}

/// A clear personal value with its salt, stored outside the hashed events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalRecord {
    pub subject: Uuid,
    pub commitment: Commitment,
    pub salt: [u8; 16],
    pub value: String,
}

/// One atomic, durable append.
#[derive(Debug, Default)]
pub struct Commit<'a> {
    /// Hash of the event before the first one here (the head's hash).
    pub prev_hash: [u8; 32],
    pub events: &'a [&'a StoredEvent],
    pub outcomes: &'a [OutcomeRecord],
    pub personal: &'a [PersonalRecord],
    /// Consumer offsets to store with these events (Kafka ingest).
    pub offsets: &'a [(String, i64)],
    /// Publisher cursors to move with these events (replication: what was replicated is
    /// already published).
    pub cursors: &'a [(&'a str, u64)],
    /// Store a round mark (`R`) after this commit: a boundary where a publisher's commit
    /// record may cut. Set for consumed Kafka batches only (nothing else is published from
    /// this log, and marks are removed only by the publisher).
    pub round_mark: bool,
}

/// Publisher cursor of the events topic: the next position to publish.
pub const EVENTS_CURSOR: &str = "events";
/// Publisher cursor of the results topic: the next outcome sequence to publish.
pub const RESULTS_CURSOR: &str = "results";
/// Publisher cursor of the dead-letter topic: the next outcome sequence to look at.
pub const DLQ_CURSOR: &str = "dlq";
/// The next outcome sequence not yet final: every outcome before it was covered by a commit
/// record this instance published (or was replicated from another leader's). Outcomes from
/// here on are void if another instance starts a newer term (docs/RELIABILITY.md).
pub const COMMITTED_CURSOR: &str = "committed";
/// The last event position a commit record of this instance covered: what a Kafka leader
/// signs checkpoints of (never its durable head, whose tail a takeover may void).
pub const COMMITTED_POSITION_CURSOR: &str = "committed-position";

/// Chunk value tag: the records follow as they are.
const CHUNK_RAW: u8 = 0;
/// Chunk value tag: the records follow LZ4-compressed, with their length prepended.
const CHUNK_LZ4: u8 = 1;

/// Encodes events into chunks: (first position, value). Each chunk's records are compressed
/// with LZ4 (canonical JSON compresses about 4:1, and sled's cost is in bytes written).
pub fn encode_event_chunks(events: &[&StoredEvent]) -> Vec<(u64, Vec<u8>)> {
    let mut chunks = encode_event_chunks_raw(events);
    for (_, value) in &mut chunks {
        let mut compressed = Vec::with_capacity(value.len() / 3 + 16);
        compressed.push(CHUNK_LZ4);
        compressed.extend_from_slice(&lz4_flex::block::compress_prepend_size(&value[1..]));
        *value = compressed;
    }
    chunks
}

fn encode_event_chunks_raw(events: &[&StoredEvent]) -> Vec<(u64, Vec<u8>)> {
    let mut chunks: Vec<(u64, Vec<u8>)> = Vec::new();
    for event in events {
        let record_len = 4 + 32 + event.canonical.len();
        let start_new = match chunks.last() {
            Some((_, value)) => value.len() + record_len > EVENT_CHUNK_BYTES_MAX,
            None => true,
        };
        if start_new {
            let mut value = Vec::with_capacity(EVENT_CHUNK_BYTES_MAX.min(record_len * 64));
            value.push(CHUNK_RAW);
            chunks.push((event.position, value));
        }
        if let Some((_, value)) = chunks.last_mut() {
            value.extend_from_slice(&(event.canonical.len() as u32).to_le_bytes());
            value.extend_from_slice(&event.hash);
            value.extend_from_slice(&event.canonical);
        }
    }
    chunks
}

/// Decodes an event chunk whose first slot is `first_position`.
pub fn decode_event_chunk(first_position: u64, value: &[u8]) -> Result<Vec<StoredEvent>, LogError> {
    let mut events = Vec::new();
    for_each_event_record(first_position, value, |position, hash, canonical| {
        events.push(StoredEvent {
            position,
            hash: *hash,
            canonical: canonical.to_vec(),
        });
        true
    })?;
    Ok(events)
}

/// Calls `visit(position, hash, canonical bytes)` for each record of a chunk without copying
/// the records; stops early when `visit` returns false.
pub fn for_each_event_record(
    first_position: u64,
    value: &[u8],
    mut visit: impl FnMut(u64, &[u8; 32], &[u8]) -> bool,
) -> Result<(), LogError> {
    let damaged = |position: u64, what: &str| {
        LogError::corrupt(
            Some(position),
            format!("event chunk at {first_position}: {what}"),
        )
    };
    let decompressed;
    let records: &[u8] = match value.split_first() {
        Some((&CHUNK_RAW, rest)) => rest,
        Some((&CHUNK_LZ4, rest)) => {
            let size = rest
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
            if size.is_none_or(|size| size > 2 * EVENT_CHUNK_BYTES_MAX + 1024 * 1024) {
                return Err(damaged(first_position, "implausible decompressed size"));
            }
            decompressed = lz4_flex::block::decompress_size_prepended(rest)
                .map_err(|e| damaged(first_position, &format!("does not decompress: {e}")))?;
            &decompressed
        }
        _ => return Err(damaged(first_position, "unknown chunk format")),
    };
    let mut rest = records;
    let mut position = first_position;
    while !rest.is_empty() {
        if rest.len() < 36 {
            return Err(damaged(position, "truncated record header"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() < 36 + len {
            return Err(damaged(position, "record longer than the chunk"));
        }
        let hash: &[u8; 32] = rest[4..36]
            .try_into()
            .map_err(|_| damaged(position, "hash"))?;
        if !visit(position, hash, &rest[36..36 + len]) {
            return Ok(());
        }
        rest = &rest[36 + len..];
        position += 1;
    }
    Ok(())
}

pub(super) fn event_key(position: u64) -> [u8; 9] {
    let mut key = [b'E'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The key of the stored Merkle node at `level`, `index`.
pub(super) fn tree_key(level: u8, index: u64) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = b'T';
    key[1] = level;
    key[2..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The leaf hashes of a complete block of 2^[`TREE_STORED_LEVEL_MIN`] leaves, concatenated:
/// what a proof hashes its lowest levels from, without decoding event chunks.
pub(super) fn leaf_block_key(block: u64) -> [u8; 9] {
    let mut key = [b'L'; 9];
    key[1..].copy_from_slice(&block.to_be_bytes());
    key
}

pub(super) fn signed_checkpoint_key(size: u64) -> [u8; 9] {
    let mut key = [b'S'; 9];
    key[1..].copy_from_slice(&size.to_be_bytes());
    key
}

pub(super) fn outcome_key(seq: u64) -> [u8; 9] {
    let mut key = [b'O'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn round_mark_key(seq: u64) -> [u8; 9] {
    let mut key = [b'R'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

pub(super) fn offset_mark_key(seq: u64) -> [u8; 9] {
    let mut key = [b'Q'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Offsets as: per entry the name's length (u16 BE), the name, the offset (i64 BE).
pub(super) fn encode_offsets(offsets: &[(String, i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, offset) in offsets {
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out
}

pub(super) fn decode_offsets(mut bytes: &[u8]) -> Option<Vec<(String, i64)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let length = usize::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?));
        let name = std::str::from_utf8(bytes.get(2..2 + length)?)
            .ok()?
            .to_string();
        let offset = i64::from_be_bytes(bytes.get(2 + length..10 + length)?.try_into().ok()?);
        out.push((name, offset));
        bytes = &bytes[10 + length..];
    }
    Some(out)
}

pub(super) fn key_position(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

pub(super) fn decode_outcome_chunk(
    first: u64,
    value: &IVec,
) -> Vec<Result<(u64, OutcomeRecord), LogError>> {
    let mut out = Vec::new();
    let mut rest: &[u8] = value;
    let mut seq = first;
    while !rest.is_empty() {
        if rest.len() < 4 {
            out.push(Err(LogError::corrupt(
                None,
                format!("outcome chunk {first}: truncated"),
            )));
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        match rest.get(4..4 + len).and_then(OutcomeRecord::decode) {
            Some(record) => out.push(Ok((seq, record))),
            None => {
                out.push(Err(LogError::corrupt(
                    None,
                    format!("outcome {seq} does not decode"),
                )));
                break;
            }
        }
        rest = &rest[4 + len..];
        seq += 1;
    }
    out
}
