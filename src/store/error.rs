//! The failures of the store.

use std::path::PathBuf;

use csp_ledger_schemas::merkle::RangeError;
use thiserror::Error;
use uuid::Uuid;

use super::personal::PersonalError;

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
    /// The directory holds no ledger (no `sled/` store in it): `verify` and the read-only
    /// commands open only an existing ledger and never create one. Edge: `verify` exit 2 with
    /// code `no_ledger`; exit 1 elsewhere.
    #[error("{} holds no ledger (no sled/ store)", path.display())]
    NoLedger { path: PathBuf },
    /// The personal-data store (SQLite) failed. Edge: as `Storage` (HTTP 500 / exit 1; the
    /// writer must reopen).
    #[error(transparent)]
    Personal(#[from] PersonalError),
    /// A stored personal value does not match the commitment its event carries:
    /// SHA-256(salt || value) differs (the store was edited). Edge: the read fails, HTTP 500
    /// `personal_data_mismatch`; `verify` exit 2. Names no value.
    #[error("the stored {field} of {subject} (event at position {position}) does not match its commitment")]
    PersonalMismatch {
        subject: Uuid,
        field: &'static str,
        position: u64,
    },
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
    pub(super) fn unreadable(at: Option<sled::DiskPtr>) -> LogError {
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

    pub(crate) fn corrupt(position: Option<u64>, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            position,
            reason: reason.into(),
        }
    }
}

/// Why a Merkle root or proof of the log cannot be given.
#[derive(Debug, Error)]
pub enum ProofError {
    /// The size, index or range lies outside the log's tree: size 0, a size beyond the head,
    /// a leaf index not below the size, or a consistency range that is not `0 < old <= new`.
    /// Edge: HTTP 400 `invalid_range`; the caller's mistake, the log is fine.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// Reading the stored nodes or events failed, or a node is missing. Edge: as
    /// [`LogError`].
    #[error(transparent)]
    Log(#[from] LogError),
}
