//! Checkpoints of the projection state: `LedgerState` with the position and hash it reflects,
//! so that start-up folds only the tail of the log. Written atomically (temporary file, fsync,
//! rename, directory fsync) and checked on load (format, HMAC-SHA256, and the hash of its
//! position in the log); a checkpoint that does not match is ignored and the log replayed from 1.
//!
//! The MAC key is derived from the signing key (SPEC.md section 12). A checkpoint is trusted
//! only when that key lives outside the data directory: whoever can write the directory can
//! read a key kept in it, and so forge a checkpoint with a valid MAC. [`MacKey::PUBLIC`] (the
//! library default) is a key everyone knows: a checksum against damage, not against forgery.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use csp_ledger_projections::state::LedgerState;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::store::files::{io_at, replace_file};
use crate::store::log::{Log, LogError};

/// File name inside the data directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";

/// Format marker at the start of the file.
/// Version 2: `LedgerState` gained `verification_decided_at`. Version 3: an HMAC-SHA256 of
/// the header and payload replaces the SHA-256 checksum. An older checkpoint is ignored (the
/// state is refolded from the log once, then saved as version 3).
const MAGIC: &[u8; 8] = b"CSPCKPT3";

/// The key of a checkpoint's MAC, and whether a checkpoint it verifies may be used.
#[derive(Clone, Copy)]
pub struct MacKey {
    key: [u8; 32],
    trusted: bool,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacKey")
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl MacKey {
    /// A key everyone knows (all zeros), trusted: embedders and tests that sign nothing.
    pub const PUBLIC: MacKey = MacKey {
        key: [0; 32],
        trusted: true,
    };

    /// A secret key; `trusted` when it lives outside the data directory.
    pub fn new(key: [u8; 32], trusted: bool) -> MacKey {
        MacKey { key, trusted }
    }

    pub fn trusted(&self) -> bool {
        self.trusted
    }

    fn mac(&self, header: &[u8], payload: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(header);
        mac.update(payload);
        mac
    }
}

/// Largest checkpoint read back, in bytes (a bound on a damaged length field).
pub const CHECKPOINT_BYTES_MAX: u64 = 16 * 1024 * 1024 * 1024;

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    pub position: u64,
    pub hash: [u8; 32],
    pub state: LedgerState,
}

impl Checkpoint {
    /// Whether the log holds, at the checkpoint's position, the event it was taken after.
    pub fn matches(&self, log: &Log) -> Result<bool, LogError> {
        Ok(self.position <= log.head().position && log.hash_at(self.position)? == Some(self.hash))
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

/// Writes `state` (reflecting the event with hash `hash`) as the checkpoint of `dir`.
pub fn save(dir: &Path, state: &LedgerState, hash: [u8; 32], key: &MacKey) -> Result<(), LogError> {
    let payload = postcard::to_stdvec(state)
        .map_err(|e| LogError::Contract(format!("checkpoint encoding: {e}")))?;
    let mut header = Vec::with_capacity(8 + 8 + 32 + 8 + 32);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&state.position.to_be_bytes());
    header.extend_from_slice(&hash);
    header.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    let tag: [u8; 32] = key.mac(&header, &payload).finalize().into_bytes().into();
    header.extend_from_slice(&tag);
    replace_file(&path(dir), &[&header, &payload])?;
    Ok(())
}

/// Loads the checkpoint of `dir`: `None` when there is none, when it is damaged or its MAC does
/// not hold under `key`, or when `key` is not trusted (logged; the caller replays from
/// position 1 instead).
pub fn load(dir: &Path, key: &MacKey) -> Result<Option<Checkpoint>, LogError> {
    if !key.trusted {
        tracing::info!(message = "Not using the projection checkpoint: the signing key lives in the data directory, so its MAC proves nothing; refolding from the log.");
        return Ok(None);
    }
    load_untrusted(dir, key)
}

/// Loads the checkpoint whether or not `key` is trusted (the MAC must still hold): for
/// `rebuild`, which only compares it with a refold.
pub fn load_untrusted(dir: &Path, key: &MacKey) -> Result<Option<Checkpoint>, LogError> {
    let target = path(dir);
    let mut file = match File::open(&target) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(LogError::Io {
                path: target,
                error,
            })
        }
    };
    let mut header = [0u8; 88];
    if file.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
        tracing::warn!(message = "Ignoring a checkpoint with a bad header.", path = %target.display());
        return Ok(None);
    }
    let position = u64::from_be_bytes(header[8..16].try_into().unwrap_or_default());
    let hash: [u8; 32] = header[16..48].try_into().unwrap_or_default();
    let length = u64::from_be_bytes(header[48..56].try_into().unwrap_or_default());
    let tag: [u8; 32] = header[56..88].try_into().unwrap_or_default();
    if length > CHECKPOINT_BYTES_MAX {
        tracing::warn!(
            message = "Ignoring a checkpoint with an implausible length.",
            length
        );
        return Ok(None);
    }
    let mut payload = Vec::with_capacity(length as usize);
    file.take(length)
        .read_to_end(&mut payload)
        .map_err(io_at(&target))?;
    if payload.len() as u64 != length
        || key.mac(&header[..56], &payload).verify_slice(&tag).is_err()
    {
        tracing::warn!(message = "Ignoring a checkpoint whose MAC does not hold (damaged, forged, or written under another signing key).", path = %target.display());
        return Ok(None);
    }
    match postcard::from_bytes::<LedgerState>(&payload) {
        Ok(state) if state.position == position => Ok(Some(Checkpoint {
            position,
            hash,
            state,
        })),
        _ => {
            tracing::warn!(message = "Ignoring a checkpoint that does not decode.", path = %target.display());
            Ok(None)
        }
    }
}
