//! The immutable log on sled. All of sled's rules live here, behind a narrow interface:
//! append a commit (events, command outcomes, personal data, consumer offsets) atomically and
//! durably; read events from a position; read outcomes; load offsets.
//!
//! The clear personal values are not in sled: they go to the personal-data store
//! ([`super::personal`], SQLite), made durable before the sled batch whose events commit to
//! them, so that an erasure can leave no byte of them behind (sled's segments would).
//!
//! The key layout and record encodings are in [`super::layout`].
//!
//! Events are packed into chunks of up to [`EVENT_CHUNK_BYTES_MAX`] so that one sled key
//! carries many events (sled's cost is per key). A commit is one `apply_batch` (atomic), then
//! `flush`, then an fdatasync of sled's data file (see ARCHITECTURE.md, Durability).
//!
//! The RFC 6962 Merkle tree over the event hashes (SPEC.md section 12) grows with the log: the
//! nodes an append completes (from level [`TREE_STORED_LEVEL_MIN`] up) go into the same batch
//! as its events, so the stored tree always covers exactly the head. Roots and proofs of any
//! size up to the head read O(log n) stored nodes and the event hashes of at most one block of
//! 2^[`TREE_STORED_LEVEL_MIN`] leaves.

use std::fs::File;
use std::path::{Path, PathBuf};

use std::cell::RefCell;

use csp_ledger_schemas::merkle::{self, Frontier, Hash, NodeSource};
use csp_ledger_schemas::values::Commitment;
use sled::IVec;
use uuid::Uuid;

pub use super::error::{LogError, ProofError};
use super::files::{io_at, sync_dir};
pub use super::layout::*;
use super::layout::{
    decode_offsets, decode_outcome_chunk, encode_offsets, event_key, key_position, leaf_block_key,
    offset_mark_key, outcome_key, round_mark_key, signed_checkpoint_key, tree_key,
};
use super::personal::{PersonalStore, StoredPersonal};

/// Format marker stored under `M`; a store with another marker is refused.
pub const FORMAT: &[u8] = b"csp-ledger-log/2";

/// sled segment size. sled writes any page larger than a quarter segment to a separate "blob"
/// file, and sled 0.34 never fsyncs blob files; a leaf page holds up to 17 values, so with
/// 8 MiB segments (2 MiB blob threshold) a leaf of 32 KiB chunks stays in the main file, which
/// the durable path syncs. A test checks that a large apply creates no blob.
pub const SLED_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// sled's page cache. Reads of old chunks (as-of queries, duplicates) are rare; the live
/// projection lives in memory, so a small cache keeps the resident size down.
pub const SLED_CACHE_BYTES: u64 = 64 * 1024 * 1024;

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

/// How many events the one-time tree build of an older store hashes per sled batch: bounds
/// its memory (about one node per 128 events) and shows progress in the log.
const TREE_BUILD_BATCH_EVENTS: u64 = 1 << 16;

/// How many personal values the one-time move of an older store's values out of sled copies
/// per SQLite transaction and sled batch: bounds its memory.
const PERSONAL_MIGRATION_BATCH_VALUES: usize = 1 << 16;

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

/// Whether `dir` holds a sled store (`sled/db`), without creating anything: what
/// [`Log::open_existing`] checks first.
pub fn holds_ledger(dir: &Path) -> bool {
    dir.join("sled").join("db").is_file()
}

/// Where a rewrite of the sled store is built (`Log::rewrite_sled`), the mark that it is
/// complete, and where the old store waits while it is swapped out.
const SLED_REWRITE_DIR: &str = "sled.rewrite";
const SLED_REWRITE_COMPLETE: &str = "sled.rewrite.complete";
const SLED_OLD_DIR: &str = "sled.old";

/// Finishes (or discards) a rewrite of the sled store that a crash interrupted: a complete
/// rewrite replaces `sled/`, an incomplete one is removed, and the old store is deleted.
fn finish_sled_rewrite(dir: &Path) -> Result<(), LogError> {
    let (live, new, old) = (
        dir.join("sled"),
        dir.join(SLED_REWRITE_DIR),
        dir.join(SLED_OLD_DIR),
    );
    let mark = dir.join(SLED_REWRITE_COMPLETE);
    if mark.is_file() {
        if live.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(io_at(&old))?;
            }
            std::fs::rename(&live, &old).map_err(io_at(&live))?;
        }
        std::fs::rename(&new, &live).map_err(io_at(&new))?;
        std::fs::remove_file(&mark).map_err(io_at(&mark))?;
        sync_dir(dir)?;
    } else if new.exists() {
        std::fs::remove_dir_all(&new).map_err(io_at(&new))?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_at(&old))?;
    }
    Ok(())
}

/// The log. One writer per directory (sled takes a file lock).
pub struct Log {
    dir: PathBuf,
    db: sled::Db,
    data_file: Option<File>,
    data_path: PathBuf,
    /// The clear personal values and their salts (SQLite, `personal.sqlite`).
    personal: PersonalStore,
    /// The durable head; the lock also serialises appends (one writer).
    head: std::sync::Mutex<Head>,
    /// The Merkle tree's right edge at the durable head (taken after `head` when both are
    /// locked), with the leaf hashes of its last incomplete block. Invariant:
    /// `tree.frontier.size() == head.position`, every complete block's leaf hashes are stored
    /// under `L`, and every node at level ≥
    /// [`TREE_STORED_LEVEL_MIN`] of the tree of that size is stored.
    tree: std::sync::Mutex<TreeEdge>,
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
        finish_sled_rewrite(dir)?;
        Log::open_in(dir, options, true)
    }

    /// Opens the log in `dir` only if a ledger is there: never creates the directory or a
    /// store. A directory without `sled/` (mistyped, deleted) or whose sled store is empty is
    /// [`LogError::NoLedger`]. For `verify` and the read-only commands.
    pub fn open_existing(dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        if dir.join(SLED_REWRITE_COMPLETE).is_file() {
            finish_sled_rewrite(dir)?;
        }
        if !holds_ledger(dir) {
            return Err(LogError::NoLedger {
                path: dir.to_path_buf(),
            });
        }
        Log::open_in(dir, options, false)
    }

    fn open_in(dir: &Path, options: LogOptions, create: bool) -> Result<Log, LogError> {
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
            None if db.is_empty() && !create => {
                return Err(LogError::NoLedger {
                    path: dir.to_path_buf(),
                })
            }
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
        let personal = PersonalStore::open(dir, options.fsync)?;
        let log = Log {
            dir: dir.to_path_buf(),
            db,
            data_file,
            data_path,
            personal,
            head: std::sync::Mutex::new(head),
            tree: std::sync::Mutex::new(TreeEdge::default()),
            options,
        };
        log.check_tail()?;
        log.open_tree(head.position)?;
        if log.migrate_personal()? > 0 {
            // sled keeps removed values in its segments until it reuses them: copy the store
            // into fresh files and drop the old ones, so that no clear value stays on disk.
            log.rewrite_sled()?;
            drop(log);
            finish_sled_rewrite(dir)?;
            return Log::open_in(dir, options, create);
        }
        Ok(log)
    }

    /// Copies every live key of the store into a fresh sled store beside it (`sled.rewrite`)
    /// and marks it complete; [`finish_sled_rewrite`] then swaps it in. Old segments, with
    /// whatever they held, are deleted with the old store.
    fn rewrite_sled(&self) -> Result<(), LogError> {
        let new = self.dir.join(SLED_REWRITE_DIR);
        if new.exists() {
            std::fs::remove_dir_all(&new).map_err(io_at(&new))?;
        }
        self.db.flush()?;
        let copy = || -> Result<(), LogError> {
            let target = sled::Config::new()
                .path(&new)
                .flush_every_ms(None)
                .segment_size(SLED_SEGMENT_BYTES)
                .cache_capacity(SLED_CACHE_BYTES)
                .open()?;
            target.import(self.db.export());
            target.flush()?;
            Ok(())
        };
        // sled's import panics instead of returning an error.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(copy)) {
            Ok(result) => result?,
            Err(_) => {
                return Err(LogError::corrupt(
                    None,
                    "sled panicked while copying the store into fresh files",
                ))
            }
        }
        let data = new.join("db");
        File::open(&data)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&data))?;
        sync_dir(&new)?;
        super::files::replace_file(&self.dir.join(SLED_REWRITE_COMPLETE), &[])?;
        tracing::info!(message = "Rewrote the sled store into fresh files.", path = %new.display());
        Ok(())
    }

    /// Moves the personal values a store from before the SQLite personal-data store kept in
    /// sled (`P` + subject + commitment: salt, value) into it: copied durably first, then
    /// removed from sled. Idempotent: a crash part way copies again on the next open. Returns
    /// how many moved; the caller then rewrites sled into fresh files, since its old segments
    /// keep removed values until it reuses them.
    fn migrate_personal(&self) -> Result<usize, LogError> {
        let mut moved = 0usize;
        loop {
            let mut records = Vec::new();
            let mut keys = Vec::new();
            for item in self
                .db
                .scan_prefix(b"P")
                .take(PERSONAL_MIGRATION_BATCH_VALUES)
            {
                let (key, value) = item?;
                if key.len() != 1 + 16 + 32 || value.len() < 16 {
                    return Err(LogError::corrupt(None, "malformed personal record in sled"));
                }
                let subject = Uuid::from_slice(&key[1..17])
                    .map_err(|_| LogError::corrupt(None, "malformed personal key in sled"))?;
                let mut commitment = [0u8; 32];
                commitment.copy_from_slice(&key[17..49]);
                let mut salt = [0u8; 16];
                salt.copy_from_slice(&value[..16]);
                let value = String::from_utf8(value[16..].to_vec()).map_err(|_| {
                    LogError::corrupt(None, format!("personal record of {subject} is not UTF-8"))
                })?;
                records.push(PersonalRecord {
                    subject,
                    commitment: Commitment(commitment),
                    salt,
                    value,
                });
                keys.push(key);
            }
            if records.is_empty() {
                break;
            }
            self.personal.insert(&records)?;
            let mut batch = sled::Batch::default();
            for key in keys {
                batch.remove(key);
            }
            self.db.apply_batch(batch)?;
            self.sync()?;
            moved += records.len();
        }
        if moved > 0 {
            tracing::info!(
                message = "Moved the personal values of an older store from sled to the personal-data store.",
                values = moved
            );
        }
        Ok(moved)
    }

    /// Loads the tree's right edge at `size` (the head) from the stored nodes, first building
    /// the nodes once if the store predates the tree (its last complete stored node is
    /// missing).
    fn open_tree(&self, size: u64) -> Result<(), LogError> {
        let width = 1u64 << TREE_STORED_LEVEL_MIN;
        if size >= width
            && self
                .db
                .get(tree_key(TREE_STORED_LEVEL_MIN, size / width - 1))?
                .is_none()
        {
            self.build_tree(size)?;
        }
        let frontier =
            Frontier::load(&self.stored_tree(size), size).map_err(|error| match error {
                ProofError::Log(error) => error,
                ProofError::Range(error) => {
                    LogError::corrupt(None, format!("Merkle tree: {error}"))
                }
            })?;
        let width = 1u64 << TREE_STORED_LEVEL_MIN;
        let tail = if size % width == 0 {
            Vec::new()
        } else {
            self.stored_tree(size).read_block(size / width)?
        };
        *self
            .tree
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = TreeEdge { frontier, tail };
        Ok(())
    }

    /// Hashes the tree of the first `size` events and stores its nodes, in batches of
    /// [`TREE_BUILD_BATCH_EVENTS`] events (a crash part way leaves the last node missing, so
    /// the next open builds again; the writes are idempotent).
    fn build_tree(&self, size: u64) -> Result<(), LogError> {
        tracing::info!(
            message = "Building the Merkle tree of a store that predates it.",
            events = size
        );
        let started = std::time::Instant::now();
        let mut frontier = Frontier::default();
        let mut block: Vec<Hash> = Vec::with_capacity(1 << TREE_STORED_LEVEL_MIN);
        let mut batch = sled::Batch::default();
        for event in self.events_from(1) {
            let event = event?;
            if event.position > size {
                break;
            }
            if event.position != frontier.size() + 1 {
                return Err(LogError::corrupt(
                    Some(event.position),
                    "event positions are not contiguous",
                ));
            }
            let leaf = merkle::leaf_hash(&event.hash);
            for (level, index, hash) in frontier.push(leaf) {
                if level >= TREE_STORED_LEVEL_MIN {
                    batch.insert(&tree_key(level, index), &hash[..]);
                }
            }
            block.push(leaf);
            if block.len() == 1 << TREE_STORED_LEVEL_MIN {
                let index = (frontier.size() - 1) >> TREE_STORED_LEVEL_MIN;
                batch.insert(&leaf_block_key(index), block.concat());
                block.clear();
            }
            if frontier.size() % TREE_BUILD_BATCH_EVENTS == 0 {
                self.db.apply_batch(std::mem::take(&mut batch))?;
                tracing::info!(
                    message = "Merkle tree build progress.",
                    events = frontier.size(),
                    of = size
                );
            }
        }
        if frontier.size() != size {
            return Err(LogError::corrupt(
                Some(frontier.size() + 1),
                format!(
                    "head says {size} events, the store holds {}",
                    frontier.size()
                ),
            ));
        }
        self.db.apply_batch(batch)?;
        self.sync()?;
        tracing::info!(
            message = "Merkle tree built.",
            events = size,
            elapsed_ms = started.elapsed().as_millis() as u64
        );
        Ok(())
    }

    /// A node source over the stored tree of the first `size` events.
    fn stored_tree(&self, size: u64) -> StoredTree<'_> {
        StoredTree {
            log: self,
            size,
            block: RefCell::new(None),
        }
    }

    /// The Merkle root of the tree of the first `size` events (`0 < size <= head`).
    pub fn tree_root(&self, size: u64) -> Result<Hash, ProofError> {
        {
            let tree = self
                .tree
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if size != 0 && size == tree.frontier.size() {
                return Ok(tree.frontier.root());
            }
        }
        merkle::tree_root(&self.stored_tree(self.head().position), size)
    }

    /// The leaf hash of leaf `index` and its inclusion proof in the tree of size `size`, from
    /// one read of the stored nodes and the leaf's block (no event decoded).
    pub fn leaf_and_inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<(Hash, Vec<Hash>), ProofError> {
        let tree = self.stored_tree(self.head().position);
        let proof = merkle::prove_inclusion(&tree, index, size)?;
        Ok((tree.node(0, index)?, proof))
    }

    /// The inclusion proof of leaf `index` (the event at position `index + 1`) in the tree of
    /// size `size` (`index < size <= head`), leaf's sibling first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        merkle::prove_inclusion(&self.stored_tree(self.head().position), index, size)
    }

    /// The consistency proof from the tree of size `old` to that of size `new`
    /// (`0 < old <= new <= head`; empty when equal).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        merkle::prove_consistency(&self.stored_tree(self.head().position), old, new)
    }

    /// Removes every stored tree node (and the leaf-hash blocks): a store as it was before
    /// the tree, for the upgrade test. The next open builds them again. Returns the nodes
    /// removed.
    #[doc(hidden)]
    pub fn remove_tree_nodes_for_test(&self) -> Result<usize, LogError> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in self.db.scan_prefix(b"T") {
            let (key, _) = item?;
            batch.remove(key);
            count += 1;
        }
        for item in self.db.scan_prefix(b"L") {
            let (key, _) = item?;
            batch.remove(key);
        }
        self.db.apply_batch(batch)?;
        self.sync()?;
        Ok(count)
    }

    /// How many tree nodes are stored (for tests).
    #[doc(hidden)]
    pub fn tree_node_count(&self) -> usize {
        self.db.scan_prefix(b"T").count()
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
        let mut tree_guard = self
            .tree
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut tree = tree_guard.clone();
        let mut batch = sled::Batch::default();
        for (first, value) in encode_event_chunks(commit.events) {
            batch.insert(&event_key(first), value);
        }
        for event in commit.events {
            let leaf = merkle::leaf_hash(&event.hash);
            for (level, index, hash) in tree.frontier.push(leaf) {
                if level >= TREE_STORED_LEVEL_MIN {
                    batch.insert(&tree_key(level, index), &hash[..]);
                }
            }
            tree.tail.push(leaf);
            if tree.tail.len() == 1 << TREE_STORED_LEVEL_MIN {
                let block = (tree.frontier.size() - 1) >> TREE_STORED_LEVEL_MIN;
                batch.insert(&leaf_block_key(block), tree.tail.concat());
                tree.tail.clear();
            }
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
        if commit.round_mark && seq > current.next_outcome_seq {
            // A boundary a commit record may cut at: whole batches, never part of one.
            let mut mark = Vec::with_capacity(40);
            mark.extend_from_slice(&head.position.to_be_bytes());
            mark.extend_from_slice(&head.hash);
            batch.insert(&round_mark_key(seq), mark);
        }
        batch.insert(b"H", &head.encode()[..]);
        // The personal values first, durable (one SQLite transaction per commit, none when the
        // commit carries none): an event that commits to a value never lacks it after a crash.
        // A crash before the sled batch leaves orphan rows no event names (harmless).
        self.personal.insert(commit.personal)?;
        self.db.apply_batch(batch)?;
        self.sync()?;
        *current = head;
        *tree_guard = tree;
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

    /// The clear value and salt committed to by `commitment` for `subject`, unless erased
    /// (as stored: `store::read::join_personal` checks it against the commitment).
    pub fn personal(
        &self,
        subject: Uuid,
        commitment: &Commitment,
    ) -> Result<Option<([u8; 16], String)>, LogError> {
        Ok(self.personal.get(subject, commitment)?)
    }

    /// Stores personal values durably in the personal-data store ahead of the commit whose
    /// events commit to them (that commit then carries none): lets the writer overlap the
    /// SQLite fsync with the commit before. Values no commit ever references are harmless.
    pub fn store_personal(&self, records: &[PersonalRecord]) -> Result<(), LogError> {
        Ok(self.personal.insert(records)?)
    }

    /// Every stored personal value, in key order; returns how many (for `verify`).
    pub fn for_each_personal(&self, each: impl FnMut(StoredPersonal<'_>)) -> Result<u64, LogError> {
        Ok(self.personal.for_each(each)?)
    }

    /// The personal-data store's file (for tests and forensic tools).
    pub fn personal_path(&self) -> &Path {
        self.personal.path()
    }

    /// Erases every personal value of a data subject; returns how many were removed. When it
    /// returns, no byte of them or their salts is left in the personal-data store's files
    /// (`store::personal`). The hashed events keep their commitments, so the chain, the
    /// Merkle tree and every proof stay valid.
    pub fn erase_subject(&self, subject: Uuid) -> Result<usize, LogError> {
        Ok(self.personal.erase_subject(subject)?)
    }

    /// Keeps a checkpoint note this ledger signed at tree size `size` (durably: it may be
    /// published next). A second note at the same size replaces the first.
    pub fn keep_signed_checkpoint(&self, size: u64, note: &str) -> Result<(), LogError> {
        self.db
            .insert(signed_checkpoint_key(size), note.as_bytes())?;
        self.sync()
    }

    /// The checkpoint note signed at tree size `size`, or the latest one (`None`).
    pub fn signed_checkpoint(&self, size: Option<u64>) -> Result<Option<(u64, String)>, LogError> {
        let found = match size {
            Some(size) => self
                .db
                .get(signed_checkpoint_key(size))?
                .map(|note| (signed_checkpoint_key(size).to_vec().into(), note)),
            None => self.db.scan_prefix(b"S").next_back().transpose()?,
        };
        let Some((key, note)) = found else {
            return Ok(None);
        };
        let size = key
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| LogError::corrupt(None, "a signed checkpoint key is truncated"))?;
        let note = String::from_utf8(note.to_vec())
            .map_err(|_| LogError::corrupt(None, "a signed checkpoint is not UTF-8"))?;
        Ok(Some((size, note)))
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

    /// The last batch boundary at or before outcome sequence `published`: the next outcome
    /// sequence after that batch, and the head (position, hash) after it. A commit record
    /// cuts there, so that it covers whole batches (their events, outcomes and offsets).
    pub fn round_cut(&self, published: u64) -> Result<Option<(u64, u64, [u8; 32])>, LogError> {
        let Some((key, value)) = self
            .db
            .range(round_mark_key(0)..=round_mark_key(published))
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let seq = key_position(&key)
            .ok_or_else(|| LogError::corrupt(None, "malformed round mark key"))?;
        if value.len() != 40 {
            return Err(LogError::corrupt(None, "malformed round mark"));
        }
        let mut position = [0u8; 8];
        position.copy_from_slice(&value[..8]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&value[8..]);
        Ok(Some((seq, u64::from_be_bytes(position), hash)))
    }

    /// Forgets the round marks before `seq` (a commit record covers them).
    pub fn remove_round_marks_before(&self, seq: u64) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for item in self.db.range(round_mark_key(0)..round_mark_key(seq)) {
            let (key, _) = item?;
            batch.remove(key);
        }
        self.db.apply_batch(batch)?;
        Ok(())
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

/// The stored tree of a log's first `size` events as a [`NodeSource`]: nodes from level
/// [`TREE_STORED_LEVEL_MIN`] up from their `T` keys; lower ones hashed from the event hashes of
/// their block of 2^[`TREE_STORED_LEVEL_MIN`] leaves, read once per source and kept.
struct StoredTree<'a> {
    log: &'a Log,
    size: u64,
    /// The last block read: (block number, its leaf hashes up to `size`).
    block: RefCell<Option<(u64, Vec<Hash>)>>,
}

/// The tree's right edge at the durable head, and the leaf hashes of its last, incomplete
/// block (a complete block's are stored under `L`).
#[derive(Debug, Clone, Default)]
struct TreeEdge {
    frontier: Frontier,
    tail: Vec<Hash>,
}

impl StoredTree<'_> {
    /// The leaf hashes of block `block` (leaves `[block·2^L, (block+1)·2^L)`, cut at `size`):
    /// a complete block's from its `L` key, the last one's from memory, and (a store from
    /// before the `L` keys, or a head that moved on) from the event chunks.
    fn read_block(&self, block: u64) -> Result<Vec<Hash>, LogError> {
        let first = block << TREE_STORED_LEVEL_MIN;
        let width = 1u64 << TREE_STORED_LEVEL_MIN;
        if first + width <= self.size {
            if let Some(raw) = self.log.db.get(leaf_block_key(block))? {
                if raw.len() == 32 * width as usize {
                    return Ok(raw
                        .chunks_exact(32)
                        .filter_map(|c| Hash::try_from(c).ok())
                        .collect());
                }
                return Err(LogError::corrupt(
                    Some(first + 1),
                    format!("the leaf hashes of Merkle block {block} are malformed"),
                ));
            }
        } else {
            let edge = self
                .log
                .tree
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let tail_first = edge.frontier.size() - edge.tail.len() as u64;
            let wanted = (self.size - first) as usize;
            if tail_first == first && edge.tail.len() >= wanted {
                return Ok(edge.tail[..wanted].to_vec());
            }
        }
        self.read_block_from_events(block)
    }

    fn read_block_from_events(&self, block: u64) -> Result<Vec<Hash>, LogError> {
        let first = block << TREE_STORED_LEVEL_MIN;
        let end = (first + (1u64 << TREE_STORED_LEVEL_MIN)).min(self.size);
        let mut leaves = Vec::with_capacity((end - first) as usize);
        // Leaf i is the event at position i + 1.
        for chunk in self.log.event_chunks_from(first + 1) {
            let (chunk_first, value) = chunk?;
            if chunk_first > end {
                break;
            }
            for_each_event_record(chunk_first, &value, |position, hash, _| {
                if position > first && position <= end {
                    leaves.push(merkle::leaf_hash(hash));
                }
                position < end
            })?;
            if leaves.len() as u64 == end - first {
                break;
            }
        }
        if leaves.len() as u64 != end - first {
            return Err(LogError::corrupt(
                Some(first + leaves.len() as u64 + 1),
                "an event the Merkle tree needs is missing",
            ));
        }
        Ok(leaves)
    }
}

impl NodeSource for StoredTree<'_> {
    type Error = ProofError;

    fn leaf_count(&self) -> u64 {
        self.size
    }

    fn node(&self, level: u8, index: u64) -> Result<Hash, ProofError> {
        if level >= TREE_STORED_LEVEL_MIN {
            let raw = self
                .log
                .db
                .get(tree_key(level, index))
                .map_err(LogError::from)?
                .ok_or_else(|| {
                    LogError::corrupt(None, format!("Merkle node {level}/{index} is missing"))
                })?;
            return Hash::try_from(raw.as_ref()).map_err(|_| {
                LogError::corrupt(None, format!("Merkle node {level}/{index} is malformed")).into()
            });
        }
        let first = index << level;
        let block = first >> TREE_STORED_LEVEL_MIN;
        let mut cached = self.block.borrow_mut();
        if cached.as_ref().is_none_or(|(held, _)| *held != block) {
            *cached = Some((block, self.read_block(block)?));
        }
        let Some((_, leaves)) = cached.as_ref() else {
            return Err(LogError::corrupt(None, "Merkle block cache").into());
        };
        let offset = (first - (block << TREE_STORED_LEVEL_MIN)) as usize;
        let width = 1usize << level;
        let slice = leaves
            .get(offset..offset + width)
            .ok_or(merkle::RangeError::BeyondSize {
                size: first + width as u64,
                available: self.size,
            })?;
        Ok(merkle::root(slice))
    }
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
