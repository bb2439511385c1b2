//! The immutable log on sled. All of sled's rules live here, behind a narrow interface:
//! append a commit (events, command outcomes, personal data, consumer offsets) atomically and
//! durably; read events from a position; read outcomes; load offsets.
//!
//! Layout: one sled tree, keys prefixed by a record kind.
//!
//! | key | value |
//! |---|---|
//! | `M` | format marker [`FORMAT`] |
//! | `H` | head: last position (u64 BE), its hash (32 bytes), next outcome sequence (u64 BE) |
//! | `E` + first position (u64 BE) | event chunk: per event `len` (u32 LE), hash (32), canonical bytes |
//! | `O` + first sequence (u64 BE) | outcome chunk: per outcome `len` (u32 LE), record |
//! | `P` + subject (16) + commitment (32) | personal value: salt (16), UTF-8 value |
//! | `K` + consumer key | next offset to consume (i64 BE), stored with the batch it ends |
//! | `I` | instance id (16 bytes): this log's name in the leader election |
//! | `C` + publisher name | outbox cursor (u64 BE), written without fsync |
//! | `Q` + next outcome sequence (u64 BE) | consumer offsets of the batch that ends before it, until published |
//!
//! Events are packed into chunks of up to [`EVENT_CHUNK_BYTES_MAX`] so that one sled key
//! carries many events (sled's cost is per key). A commit is one `apply_batch` (atomic), then
//! `flush`, then an fdatasync of sled's data file (see ARCHITECTURE.md, Durability).

use std::fs::File;
use std::path::{Path, PathBuf};

use csp_ledger_schemas::values::Commitment;
use sled::IVec;
use thiserror::Error;
use uuid::Uuid;

/// Format marker stored under `M`; a store with another marker is refused.
pub const FORMAT: &[u8] = b"csp-ledger-log/2";

/// Largest event chunk value in bytes before a new chunk starts; keeps sled values well under
/// its blob threshold (segment size / 4 = 128 KiB).
pub const EVENT_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// sled segment size. sled writes any page larger than a quarter segment to a separate "blob"
/// file, and sled 0.34 never fsyncs blob files; a leaf page holds up to 17 values, so with
/// 8 MiB segments (2 MiB blob threshold) a leaf of 32 KiB chunks stays in the main file, which
/// the durable path syncs. A test checks that a large apply creates no blob.
pub const SLED_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// sled's page cache. Reads of old chunks (as-of queries, duplicates) are rare; the live
/// projection lives in memory, so a small cache keeps the resident size down.
pub const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Largest outcome chunk value in bytes.
pub const OUTCOME_CHUNK_BYTES_MAX: usize = 32 * 1024;

/// Failures of the log. None of them is a business answer; each one stops the writer.
#[derive(Debug, Error)]
pub enum LogError {
    /// sled reported an I/O or internal error. Edge: HTTP 500 / exit 1; the writer must reopen.
    /// (sled's `Corruption` becomes [`LogError::Corrupt`]: the store is unreadable.)
    #[error("storage error: {0}")]
    Storage(#[source] sled::Error),
    /// An fsync or file error outside sled. Edge: as `Storage`.
    #[error("I/O error on {path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// The store is damaged: a record does not decode, the head disagrees with the events, or
    /// the hash chain breaks. Edge: refuse to serve; exit 2 from `verify`.
    /// `position` is the first event found bad, `None` when no event position is known (sled
    /// cannot read its own files).
    #[error("the log is damaged{}: {reason}", position.map(|p| format!(" at position {p}")).unwrap_or_default())]
    Corrupt {
        position: Option<u64>,
        reason: String,
    },
    /// The directory holds something that is not a csp-ledger log of this format.
    #[error("{0}")]
    Incompatible(String),
    /// Another process holds the store's lock (sled's flock on its data file). Edge: exit 1
    /// with this message; a second writer on one directory is never allowed.
    #[error("{} is in use by another process (sled holds its lock)", path.display())]
    InUse { path: PathBuf },
    /// A caller broke the append contract (positions not contiguous, wrong prev hash): a bug.
    #[error("append contract broken: {0}")]
    Contract(String),
}

impl From<sled::Error> for LogError {
    fn from(error: sled::Error) -> LogError {
        match error {
            sled::Error::Corruption { at, .. } => LogError::unreadable(at),
            error => LogError::Storage(error),
        }
    }
}

impl LogError {
    /// sled found its own files corrupt: no event position is known, only where in sled's
    /// files, when sled says.
    fn unreadable(at: Option<sled::DiskPtr>) -> LogError {
        let reason = match at {
            Some(sled::DiskPtr::Inline(offset)) => format!(
                "the store is unreadable: sled reports corruption at byte offset {offset} of its \
                 data file"
            ),
            Some(sled::DiskPtr::Blob(offset, blob)) => format!(
                "the store is unreadable: sled reports corruption in blob {blob} (referenced at \
                 byte offset {offset} of its data file)"
            ),
            None => "the store is unreadable: sled reports corruption and does not say where"
                .to_string(),
        };
        LogError::corrupt(None, reason)
    }

    fn corrupt(position: Option<u64>, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            position,
            reason: reason.into(),
        }
    }
}

/// Durability and tuning switches.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// fdatasync sled's data file after every flush (default true): sled's own flush uses
    /// `sync_file_range`, which does not persist file metadata.
    pub fsync: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions { fsync: true }
    }
}

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

    fn encode(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out[..8].copy_from_slice(&self.position.to_be_bytes());
        out[8..40].copy_from_slice(&self.hash);
        out[40..].copy_from_slice(&self.next_outcome_seq.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Head> {
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
    fn encode_into(&self, out: &mut Vec<u8>) {
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

    fn decode(bytes: &[u8]) -> Option<OutcomeRecord> {
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
}

/// Publisher cursor of the events topic: the next position to publish.
pub const EVENTS_CURSOR: &str = "events";
/// Publisher cursor of the results topic: the next outcome sequence to publish.
pub const RESULTS_CURSOR: &str = "results";
/// Publisher cursor of the dead-letter topic: the next outcome sequence to look at.
pub const DLQ_CURSOR: &str = "dlq";

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

fn event_key(position: u64) -> [u8; 9] {
    let mut key = [b'E'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

fn outcome_key(seq: u64) -> [u8; 9] {
    let mut key = [b'O'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

fn offset_mark_key(seq: u64) -> [u8; 9] {
    let mut key = [b'Q'; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// Offsets as: per entry the name's length (u16 BE), the name, the offset (i64 BE).
fn encode_offsets(offsets: &[(String, i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, offset) in offsets {
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&offset.to_be_bytes());
    }
    out
}

fn decode_offsets(mut bytes: &[u8]) -> Option<Vec<(String, i64)>> {
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

fn personal_key(subject: Uuid, commitment: &Commitment) -> Vec<u8> {
    let mut key = Vec::with_capacity(49);
    key.push(b'P');
    key.extend_from_slice(subject.as_bytes());
    key.extend_from_slice(&commitment.0);
    key
}

fn key_position(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// How long `Log::open` waits for a lock left by a store this process closed a moment ago.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// The sled configuration of a log directory (also for forensic tools and tests that edit a
/// store directly: sled refuses to open a store with another segment size).
pub fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir.join("sled"))
        .flush_every_ms(None)
        .segment_size(SLED_SEGMENT_BYTES)
        .cache_capacity(SLED_CACHE_BYTES)
}

/// The log. One writer per directory (sled takes a file lock).
pub struct Log {
    dir: PathBuf,
    db: sled::Db,
    data_file: Option<File>,
    data_path: PathBuf,
    /// The durable head; the lock also serialises appends (one writer).
    head: std::sync::Mutex<Head>,
    options: LogOptions,
}

impl Log {
    /// Opens (or creates) the log in `dir` and checks that the head agrees with the last
    /// stored event. A damaged store is reported as [`LogError::Corrupt`], never served.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir).map_err(|error| LogError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        let config = sled_config(dir);
        // sled 0.34 closes its files from its I/O threads some time after the last `Db` handle
        // is dropped (spacejam/sled#1289), so a store closed a moment ago in this process can
        // still be locked: wait a little for that before calling it in use.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let opened = loop {
            // sled 0.34 may panic on some damaged files instead of returning an error.
            let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
            match &opened {
                Ok(Err(sled::Error::Io(error)))
                    if error.to_string().contains("could not acquire lock") =>
                {
                    if std::time::Instant::now() >= deadline {
                        return Err(LogError::InUse {
                            path: dir.to_path_buf(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                _ => break opened,
            }
        };
        let db = match opened {
            Ok(Ok(db)) => db,
            // Corruption becomes `Corrupt` with no position (`From<sled::Error>`).
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => {
                return Err(LogError::corrupt(
                    None,
                    "the store is unreadable: sled panicked while opening it",
                ))
            }
        };
        match db.get(b"M")? {
            None if db.is_empty() => {
                db.insert(b"M", FORMAT)?;
                db.insert(b"H", &Head::GENESIS.encode()[..])?;
                db.flush()?;
            }
            Some(marker) if marker.as_ref() == FORMAT => {}
            Some(marker) => {
                return Err(LogError::Incompatible(format!(
                    "{} holds format {:?}, this build reads {:?}",
                    dir.display(),
                    String::from_utf8_lossy(&marker),
                    String::from_utf8_lossy(FORMAT)
                )))
            }
            None => {
                return Err(LogError::corrupt(
                    None,
                    "format marker missing from a non-empty store",
                ))
            }
        }
        let head = db
            .get(b"H")?
            .and_then(|raw| Head::decode(&raw))
            .ok_or_else(|| LogError::corrupt(None, "head record missing or malformed"))?;
        let data_path = dir.join("sled").join("db");
        let data_file = if options.fsync {
            Some(File::open(&data_path).map_err(|error| LogError::Io {
                path: data_path.clone(),
                error,
            })?)
        } else {
            None
        };
        let log = Log {
            dir: dir.to_path_buf(),
            db,
            data_file,
            data_path,
            head: std::sync::Mutex::new(head),
            options,
        };
        log.check_tail()?;
        Ok(log)
    }

    /// The head agrees with the last chunk: same last position, same hash.
    fn check_tail(&self) -> Result<(), LogError> {
        let head = self.head();
        let last = self.db.scan_prefix(b"E").next_back().transpose()?;
        match last {
            None if head.position == 0 => Ok(()),
            None => Err(LogError::corrupt(
                Some(1),
                format!("head says {} events, the store holds none", head.position),
            )),
            Some((key, value)) => {
                let first = key_position(&key)
                    .ok_or_else(|| LogError::corrupt(None, "malformed event key"))?;
                let events = decode_event_chunk(first, &value)?;
                let last = events
                    .last()
                    .ok_or_else(|| LogError::corrupt(Some(first), "empty event chunk"))?;
                if last.position != head.position || last.hash != head.hash {
                    return Err(LogError::corrupt(
                        Some(last.position.min(head.position + 1)),
                        format!(
                            "head (position {}) disagrees with the last stored event (position {})",
                            head.position, last.position
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The durable head.
    pub fn head(&self) -> Head {
        *self
            .head
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn options(&self) -> LogOptions {
        self.options
    }

    /// Appends a commit atomically and durably: nothing of it is visible after a crash unless
    /// all of it is, and it is on disk when this returns `Ok`.
    pub fn append(&self, commit: Commit<'_>) -> Result<Head, LogError> {
        let mut current = self
            .head
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if commit.prev_hash != current.hash {
            return Err(LogError::Contract(
                "prev_hash is not the head's hash".into(),
            ));
        }
        for (i, event) in commit.events.iter().enumerate() {
            if event.position != current.position + 1 + i as u64 {
                return Err(LogError::Contract(format!(
                    "event position {} is not contiguous with head {}",
                    event.position, current.position
                )));
            }
        }
        let mut batch = sled::Batch::default();
        for (first, value) in encode_event_chunks(commit.events) {
            batch.insert(&event_key(first), value);
        }
        let mut seq = current.next_outcome_seq;
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_seq = seq;
        let mut record = Vec::new();
        for outcome in commit.outcomes {
            record.clear();
            outcome.encode_into(&mut record);
            if !chunk.is_empty() && chunk.len() + 4 + record.len() > OUTCOME_CHUNK_BYTES_MAX {
                batch.insert(&outcome_key(chunk_seq), std::mem::take(&mut chunk));
                chunk_seq = seq;
            }
            chunk.extend_from_slice(&(record.len() as u32).to_le_bytes());
            chunk.extend_from_slice(&record);
            seq += 1;
        }
        if !chunk.is_empty() {
            batch.insert(&outcome_key(chunk_seq), chunk);
        }
        for personal in commit.personal {
            let mut value = Vec::with_capacity(16 + personal.value.len());
            value.extend_from_slice(&personal.salt);
            value.extend_from_slice(personal.value.as_bytes());
            batch.insert(personal_key(personal.subject, &personal.commitment), value);
        }
        for (name, offset) in commit.offsets {
            let mut key = vec![b'K'];
            key.extend_from_slice(name.as_bytes());
            batch.insert(key, &offset.to_be_bytes());
        }
        for (name, value) in commit.cursors {
            let mut key = vec![b'C'];
            key.extend_from_slice(name.as_bytes());
            batch.insert(key, &value.to_be_bytes());
        }
        if !commit.offsets.is_empty() {
            // Kept until the batch's outcomes are published; then they may be committed to
            // the consumer group (the offsets a takeover resumes from).
            batch.insert(&offset_mark_key(seq), encode_offsets(commit.offsets));
        }
        let head = match commit.events.last() {
            Some(last) => Head {
                position: last.position,
                hash: last.hash,
                next_outcome_seq: seq,
            },
            None => Head {
                next_outcome_seq: seq,
                ..*current
            },
        };
        batch.insert(b"H", &head.encode()[..]);
        self.db.apply_batch(batch)?;
        self.sync()?;
        *current = head;
        Ok(head)
    }

    /// Makes everything applied so far durable.
    fn sync(&self) -> Result<(), LogError> {
        self.db.flush()?;
        if let Some(file) = &self.data_file {
            file.sync_data().map_err(|error| LogError::Io {
                path: self.data_path.clone(),
                error,
            })?;
        }
        Ok(())
    }

    /// Events from `position` (1-based) to the head, in order, chunk by chunk.
    pub fn events_from(&self, position: u64) -> EventIter<'_> {
        let start = position.max(1);
        // The chunk holding `start` begins at or before it.
        let chunk_start = self
            .db
            .range(event_key(0)..=event_key(start))
            .next_back()
            .and_then(|r| r.ok())
            .and_then(|(key, _)| key_position(&key))
            .unwrap_or(start);
        EventIter {
            inner: self.db.range(event_key(chunk_start)..event_key(u64::MAX)),
            buffer: Vec::new().into_iter(),
            start,
            failed: false,
            _log: std::marker::PhantomData,
        }
    }

    /// The raw event chunks in position order from the one holding `position`.
    pub fn event_chunks_from(
        &self,
        position: u64,
    ) -> impl Iterator<Item = Result<(u64, IVec), LogError>> + '_ {
        let chunk_start = self
            .db
            .range(event_key(0)..=event_key(position.max(1)))
            .next_back()
            .and_then(|r| r.ok())
            .and_then(|(key, _)| key_position(&key))
            .unwrap_or(1);
        self.db
            .range(event_key(chunk_start)..event_key(u64::MAX))
            .map(|item| {
                let (key, value) = item?;
                let first = key_position(&key)
                    .ok_or_else(|| LogError::corrupt(None, "malformed event key"))?;
                Ok((first, value))
            })
    }

    /// The chunk whose key is the greatest at or below `key` among keys from `lowest`: the
    /// chunk that holds the record `key` names. Returns its first record number and value.
    fn chunk_holding(
        &self,
        lowest: [u8; 9],
        key: [u8; 9],
    ) -> Result<Option<(u64, IVec)>, LogError> {
        let Some((found, value)) = self.db.range(lowest..=key).next_back().transpose()? else {
            return Ok(None);
        };
        let first =
            key_position(&found).ok_or_else(|| LogError::corrupt(None, "malformed chunk key"))?;
        Ok(Some((first, value)))
    }

    /// The hash of the event at `position` (the genesis hash for 0).
    pub fn hash_at(&self, position: u64) -> Result<Option<[u8; 32]>, LogError> {
        if position == 0 {
            return Ok(Some([0; 32]));
        }
        let Some((first, value)) = self.chunk_holding(event_key(0), event_key(position))? else {
            return Ok(None);
        };
        let mut found = None;
        for_each_event_record(first, &value, |slot, hash, _| {
            if slot == position {
                found = Some(*hash);
            }
            slot < position
        })?;
        Ok(found)
    }

    /// The stored events at the given positions (ascending), decoding each chunk once.
    pub fn read_positions(&self, positions: &[u64]) -> Result<Vec<StoredEvent>, LogError> {
        let mut out = Vec::with_capacity(positions.len());
        let mut index = 0;
        while index < positions.len() {
            let position = positions[index];
            let Some((first, value)) = self.chunk_holding(event_key(0), event_key(position))?
            else {
                return Err(LogError::corrupt(
                    Some(position),
                    "no chunk holds this position",
                ));
            };
            let before = index;
            for_each_event_record(first, &value, |slot, hash, canonical| {
                while index < positions.len() && positions[index] < slot {
                    index += 1;
                }
                if index < positions.len() && positions[index] == slot {
                    out.push(StoredEvent {
                        position: slot,
                        hash: *hash,
                        canonical: canonical.to_vec(),
                    });
                    index += 1;
                }
                index < positions.len()
            })?;
            if index == before {
                return Err(LogError::corrupt(
                    Some(position),
                    "position not found in its chunk",
                ));
            }
        }
        Ok(out)
    }

    /// The raw event chunks in position order: (first position, value).
    pub fn event_chunks(&self) -> impl Iterator<Item = Result<(u64, IVec), LogError>> + '_ {
        self.db.scan_prefix(b"E").map(|item| {
            let (key, value) = item?;
            let first =
                key_position(&key).ok_or_else(|| LogError::corrupt(None, "malformed event key"))?;
            Ok((first, value))
        })
    }

    /// Every stored command outcome, in order.
    pub fn outcomes(&self) -> impl Iterator<Item = Result<(u64, OutcomeRecord), LogError>> + '_ {
        self.db
            .scan_prefix(b"O")
            .flat_map(|item| -> Vec<Result<(u64, OutcomeRecord), LogError>> {
                match item {
                    Err(error) => vec![Err(error.into())],
                    Ok((key, value)) => match key_position(&key) {
                        None => vec![Err(LogError::corrupt(None, "malformed outcome key"))],
                        Some(first) => decode_outcome_chunk(first, &value),
                    },
                }
            })
    }

    /// The outcome with sequence number `seq`.
    pub fn outcome_at(&self, seq: u64) -> Result<Option<OutcomeRecord>, LogError> {
        let Some((first, value)) = self.chunk_holding(outcome_key(0), outcome_key(seq))? else {
            return Ok(None);
        };
        for item in decode_outcome_chunk(first, &value) {
            let (s, record) = item?;
            if s == seq {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// The clear value and salt committed to by `commitment` for `subject`, unless erased.
    pub fn personal(
        &self,
        subject: Uuid,
        commitment: &Commitment,
    ) -> Result<Option<([u8; 16], String)>, LogError> {
        let Some(raw) = self.db.get(personal_key(subject, commitment))? else {
            return Ok(None);
        };
        if raw.len() < 16 {
            return Err(LogError::corrupt(
                None,
                format!("personal record of {subject} is truncated"),
            ));
        }
        let salt: [u8; 16] = raw[..16]
            .try_into()
            .map_err(|_| LogError::corrupt(None, "salt"))?;
        let value = String::from_utf8(raw[16..].to_vec()).map_err(|_| {
            LogError::corrupt(None, format!("personal record of {subject} is not UTF-8"))
        })?;
        Ok(Some((salt, value)))
    }

    /// Erases every personal value of a data subject; returns how many were removed.
    /// The hashed events keep their commitments, so the chain stays valid.
    pub fn erase_subject(&self, subject: Uuid) -> Result<usize, LogError> {
        let mut prefix = vec![b'P'];
        prefix.extend_from_slice(subject.as_bytes());
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in self.db.scan_prefix(&prefix) {
            let (key, _) = item?;
            batch.remove(key);
            count += 1;
        }
        self.db.apply_batch(batch)?;
        self.sync()?;
        Ok(count)
    }

    /// The id of this log (created on first use): names the instance that writes it in the
    /// leader election, so that a restart on the same directory is the same instance.
    pub fn instance_id(&self) -> Result<Uuid, LogError> {
        if let Some(value) = self.db.get(b"I")? {
            return Uuid::from_slice(&value)
                .map_err(|_| LogError::corrupt(None, "malformed instance id"));
        }
        let id = Uuid::new_v4();
        self.db.insert(b"I", id.as_bytes())?;
        self.sync()?;
        Ok(id)
    }

    /// The stored consumer offset under `name` (the next offset to consume).
    pub fn offset(&self, name: &str) -> Result<Option<i64>, LogError> {
        let mut key = vec![b'K'];
        key.extend_from_slice(name.as_bytes());
        match self.db.get(key)? {
            Some(value) => Ok(Some(i64::from_be_bytes(
                value
                    .as_ref()
                    .try_into()
                    .map_err(|_| LogError::corrupt(None, "malformed offset"))?,
            ))),
            None => Ok(None),
        }
    }

    /// A publisher cursor (0 when never set).
    pub fn cursor(&self, name: &str) -> Result<u64, LogError> {
        let mut key = vec![b'C'];
        key.extend_from_slice(name.as_bytes());
        match self.db.get(key)? {
            Some(value) => {
                Ok(u64::from_be_bytes(value.as_ref().try_into().map_err(
                    |_| LogError::corrupt(None, "malformed cursor"),
                )?))
            }
            None => Ok(0),
        }
    }

    /// Moves a publisher cursor. Not synced on its own: after a crash a cursor may be behind,
    /// so a publisher repeats some messages (at least once), never skips one.
    pub fn set_cursor(&self, name: &str, value: u64) -> Result<(), LogError> {
        let mut key = vec![b'C'];
        key.extend_from_slice(name.as_bytes());
        self.db.insert(key, &value.to_be_bytes())?;
        Ok(())
    }

    /// Moves a publisher cursor together with consumer offsets of the topic it publishes to
    /// (where a follower of that topic would resume). Not synced, as [`Log::set_cursor`].
    pub fn set_cursor_with_offsets(
        &self,
        name: &str,
        value: u64,
        offsets: &[(String, i64)],
    ) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        let mut key = vec![b'C'];
        key.extend_from_slice(name.as_bytes());
        batch.insert(key, &value.to_be_bytes());
        for (name, offset) in offsets {
            let mut key = vec![b'K'];
            key.extend_from_slice(name.as_bytes());
            batch.insert(key, &offset.to_be_bytes());
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// The consumer offsets of every batch whose outcomes all lie before sequence `published`
    /// (merged: the highest per key), and the marks they came from, for
    /// [`Log::remove_offset_marks`].
    pub fn offset_marks(
        &self,
        published: u64,
    ) -> Result<(Vec<(String, i64)>, Vec<IVec>), LogError> {
        let mut merged: Vec<(String, i64)> = Vec::new();
        let mut keys = Vec::new();
        for item in self
            .db
            .range(offset_mark_key(0)..=offset_mark_key(published))
        {
            let (key, value) = item?;
            for (name, offset) in decode_offsets(&value)
                .ok_or_else(|| LogError::corrupt(None, "malformed offset mark"))?
            {
                match merged.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, kept)) => *kept = (*kept).max(offset),
                    None => merged.push((name, offset)),
                }
            }
            keys.push(key);
        }
        Ok((merged, keys))
    }

    /// Removes offset marks once their offsets were committed to the consumer group.
    pub fn remove_offset_marks(&self, keys: Vec<IVec>) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Outcome records from sequence `from` on, at most `limit`.
    pub fn outcomes_from(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OutcomeRecord)>, LogError> {
        let start = self
            .db
            .range(outcome_key(0)..=outcome_key(from.max(1)))
            .next_back()
            .transpose()?
            .and_then(|(key, _)| key_position(&key))
            .unwrap_or(1);
        let mut out = Vec::new();
        for item in self.db.range(outcome_key(start)..outcome_key(u64::MAX)) {
            let (key, value) = item?;
            let first = key_position(&key)
                .ok_or_else(|| LogError::corrupt(None, "malformed outcome key"))?;
            for decoded in decode_outcome_chunk(first, &value) {
                let (seq, record) = decoded?;
                if seq >= from {
                    out.push((seq, record));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Stored consumer offsets by key.
    pub fn offsets(&self) -> Result<Vec<(String, i64)>, LogError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"K") {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key[1..]).into_owned();
            let offset = i64::from_be_bytes(
                value
                    .as_ref()
                    .try_into()
                    .map_err(|_| LogError::corrupt(None, "malformed offset"))?,
            );
            out.push((name, offset));
        }
        Ok(out)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        Ok(self.db.size_on_disk()?)
    }
}

fn decode_outcome_chunk(first: u64, value: &IVec) -> Vec<Result<(u64, OutcomeRecord), LogError>> {
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

/// Iterator over stored events; see [`Log::events_from`].
pub struct EventIter<'a> {
    inner: sled::Iter,
    buffer: std::vec::IntoIter<StoredEvent>,
    start: u64,
    failed: bool,
    #[allow(dead_code)]
    _log: std::marker::PhantomData<&'a Log>,
}

impl Iterator for EventIter<'_> {
    type Item = Result<StoredEvent, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            for event in self.buffer.by_ref() {
                if event.position >= self.start {
                    return Some(Ok(event));
                }
            }
            let (key, value) = match self.inner.next()? {
                Ok(kv) => kv,
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error.into()));
                }
            };
            let decoded = key_position(&key)
                .ok_or_else(|| LogError::corrupt(None, "malformed event key"))
                .and_then(|first| decode_event_chunk(first, &value));
            match decoded {
                Ok(events) => self.buffer = events.into_iter(),
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}
