//! The personal-data store: the clear personal values (e-mail addresses) and their salts, kept
//! outside the hashed events in SQLite (`<data-dir>/personal.sqlite`), so that an erasure is
//! physical (SPEC.md section 12, "Erasure is physical"). Every SQLite call of the service
//! lives here; [`super::log::Log`] is its only user.
//!
//! Why SQLite and not sled: sled 0.34 is log-structured, so a removed value stays in its
//! segments until it happens to reuse them (tens of thousands of commands later). Here:
//! - `secure_delete` makes SQLite overwrite a deleted cell, a cell a b-tree rebalance moved
//!   away, and every freed page with zeros (measured: without it, 133 of 2,000 values had a
//!   second, stale copy in the file after their inserts; with it, none);
//! - an erasure then `VACUUM`s, so that the guarantee does not rest on that detail of the
//!   b-tree code: every page is written anew from a temporary database (in memory,
//!   `temp_store = MEMORY`) that only ever held the rows still present, and the file is cut to
//!   its new size;
//! - the write-ahead log (`-wal`, which keeps whole old pages) is checkpointed and truncated
//!   to zero bytes (`wal_checkpoint(TRUNCATE)`) before the erasure returns; the `-shm` index
//!   holds page numbers, never content.
//!
//! Durability: `synchronous = FULL` in WAL mode fsyncs the WAL at every commit, and
//! [`PersonalStore::insert`] is one transaction per group commit, written *before* the sled
//! batch whose events commit to the values. A crash between the two leaves rows that no
//! event references (orphans): never answered (a read looks a value up by an event's
//! commitment, and a retried command draws a new salt, hence a new commitment), removed by
//! an erasure of their subject, harmless otherwise.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use csp_ledger_schemas::values::Commitment;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use thiserror::Error;
use uuid::Uuid;

use super::layout::PersonalRecord;

/// The store's file name in the data directory (beside `sled/`).
pub const PERSONAL_FILE: &str = "personal.sqlite";

/// `PRAGMA application_id` of the store ("cspp"): a file with another id is refused.
const APPLICATION_ID: i32 = 0x6373_7070;

/// `PRAGMA user_version`: the layout of the `personal` table.
const LAYOUT_VERSION: i32 = 1;

/// Pages the write-ahead log may hold before a commit checkpoints it into the database
/// (SQLite's default is 1,000). A group commit's values land all over the b-tree (the keys are
/// random ids), so one commit of a few hundred values dirties hundreds of pages; at 1,000 a
/// checkpoint (two more fsyncs) followed every second or third commit. 16,384 pages (64 MiB of
/// WAL) makes that about one in forty. An erasure checkpoints and truncates the WAL anyway.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// How long a statement waits for SQLite's lock (held only by this process's other
/// connection: the reader waits out a commit, the writer a lookup).
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Failures of the personal-data store. Messages name files and SQLite's reasons, never a
/// value, a salt or a commitment.
#[derive(Debug, Error)]
pub enum PersonalError {
    /// SQLite failed (I/O, full disk, a damaged file, a lock). Edge: as [`super::LogError`]'s
    /// `Storage`: HTTP 500 / exit 1; the writer is poisoned until reopen.
    #[error("personal-data store {}: {error}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        error: rusqlite::Error,
    },
    /// A row does not decode (a key or salt of the wrong length, a file of another kind).
    /// Edge: the store is damaged; as `LogError::Corrupt`.
    #[error("personal-data store {}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// The write-ahead log could not be checkpointed and truncated (another connection held a
    /// read): the erased values may still be in the `-wal` file. Edge: exit 1; run the erasure
    /// again.
    #[error("personal-data store {}: the write-ahead log could not be truncated (busy)", path.display())]
    CheckpointBusy { path: PathBuf },
}

impl PersonalError {
    /// SQLite's error, or [`PersonalError::Malformed`] when SQLite says the file is damaged
    /// or not a database.
    fn from_sqlite(path: &Path, error: rusqlite::Error) -> PersonalError {
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                PersonalError::Malformed {
                    path: path.to_path_buf(),
                    reason: format!("SQLite reports a damaged file: {error}"),
                }
            }
            _ => PersonalError::Sqlite {
                path: path.to_path_buf(),
                error,
            },
        }
    }

    /// The store is damaged (not an operational failure): `verify` reports it, exit 2.
    pub fn is_damage(&self) -> bool {
        matches!(self, PersonalError::Malformed { .. })
    }
}

/// One stored value, as [`PersonalStore::for_each`] hands it out.
pub struct StoredPersonal<'a> {
    pub subject: Uuid,
    pub commitment: Commitment,
    pub salt: [u8; 16],
    pub value: &'a str,
}

/// The personal-data store: one connection that writes (the committer, an erasure, the
/// migration) and one that reads (answers), each behind its own lock.
pub struct PersonalStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl PersonalStore {
    /// Opens (or creates) `<dir>/personal.sqlite`. `durable`: every commit fsyncs
    /// (`synchronous = FULL`); off only for throwaway data (`--fsync false`).
    pub fn open(dir: &Path, durable: bool) -> Result<PersonalStore, PersonalError> {
        let path = dir.join(PERSONAL_FILE);
        let sqlite = |error| PersonalError::from_sqlite(&path, error);
        let writer = Connection::open(&path).map_err(sqlite)?;
        writer.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(PersonalError::Malformed {
                path: path.clone(),
                reason: format!("journal mode is {mode:?}, not WAL"),
            });
        }
        writer
            .execute_batch(if durable {
                "PRAGMA synchronous = FULL;"
            } else {
                "PRAGMA synchronous = OFF;"
            })
            .map_err(sqlite)?;
        writer
            .execute_batch(&format!(
                "PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;
                 PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
            ))
            .map_err(sqlite)?;
        let application_id: i32 = writer
            .query_row("PRAGMA application_id", [], |row| row.get(0))
            .map_err(sqlite)?;
        let version: i32 = writer
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(sqlite)?;
        match (application_id, version) {
            (0, 0) => {
                writer
                    .execute_batch(&format!(
                        "BEGIN IMMEDIATE;
                         CREATE TABLE IF NOT EXISTS personal (
                             subject BLOB NOT NULL,
                             commitment BLOB NOT NULL,
                             salt BLOB NOT NULL,
                             value TEXT NOT NULL,
                             PRIMARY KEY (subject, commitment)
                         ) WITHOUT ROWID;
                         PRAGMA application_id = {APPLICATION_ID};
                         PRAGMA user_version = {LAYOUT_VERSION};
                         COMMIT;"
                    ))
                    .map_err(sqlite)?;
            }
            (APPLICATION_ID, LAYOUT_VERSION) => {}
            (id, version) => {
                return Err(PersonalError::Malformed {
                    path: path.clone(),
                    reason: format!(
                        "not a csp-ledger personal-data store of this layout (application_id \
                         {id:#x}, user_version {version})"
                    ),
                })
            }
        }
        let reader = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        Ok(PersonalStore {
            path,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, error: rusqlite::Error) -> PersonalError {
        PersonalError::from_sqlite(&self.path, error)
    }

    /// Stores `records` in one transaction, durable when this returns (when `durable`). A
    /// record already stored under its key is replaced (the same salt and value: a key is a
    /// commitment to them).
    pub fn insert(&self, records: &[PersonalRecord]) -> Result<(), PersonalError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut connection = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let transaction = connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| self.sqlite(e))?;
        {
            let mut statement = transaction
                .prepare_cached(
                    "INSERT OR REPLACE INTO personal (subject, commitment, salt, value)
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.sqlite(e))?;
            for record in records {
                statement
                    .execute(params![
                        &record.subject.as_bytes()[..],
                        &record.commitment.0[..],
                        &record.salt[..],
                        record.value.as_str(),
                    ])
                    .map_err(|e| self.sqlite(e))?;
            }
        }
        transaction.commit().map_err(|e| self.sqlite(e))
    }

    /// The salt and clear value stored under (`subject`, `commitment`), unless erased.
    /// Not checked against the commitment here: see `store::read::join_personal`.
    pub fn get(
        &self,
        subject: Uuid,
        commitment: &Commitment,
    ) -> Result<Option<([u8; 16], String)>, PersonalError> {
        let connection = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = connection
            .prepare_cached(
                "SELECT salt, value FROM personal WHERE subject = ?1 AND commitment = ?2",
            )
            .map_err(|e| self.sqlite(e))?;
        let row: Option<(Vec<u8>, String)> = statement
            .query_row(params![&subject.as_bytes()[..], &commitment.0[..]], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(|e| self.sqlite(e))?;
        let Some((salt, value)) = row else {
            return Ok(None);
        };
        let salt: [u8; 16] = salt.try_into().map_err(|_| PersonalError::Malformed {
            path: self.path.clone(),
            reason: format!("a salt of subject {subject} is not 16 bytes"),
        })?;
        Ok(Some((salt, value)))
    }

    /// Erases every value of `subject` and leaves no byte of them in the store's files:
    /// deletes the rows (`secure_delete` zeroes their cells), rewrites the database
    /// (`VACUUM`), then checkpoints and truncates the write-ahead log. Returns how many values
    /// were removed.
    pub fn erase_subject(&self, subject: Uuid) -> Result<usize, PersonalError> {
        let connection = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let removed = connection
            .execute(
                "DELETE FROM personal WHERE subject = ?1",
                params![&subject.as_bytes()[..]],
            )
            .map_err(|e| self.sqlite(e))?;
        connection
            .execute_batch("VACUUM")
            .map_err(|e| self.sqlite(e))?;
        self.truncate_wal(&connection)?;
        Ok(removed)
    }

    /// Copies every page the write-ahead log holds into the database and truncates the log
    /// to zero bytes; fails when a reader kept it from finishing.
    fn truncate_wal(&self, connection: &Connection) -> Result<(), PersonalError> {
        let (busy, _frames, _copied): (i64, i64, i64) = connection
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .map_err(|e| self.sqlite(e))?;
        if busy != 0 {
            return Err(PersonalError::CheckpointBusy {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Calls `each` with every stored value, in key order (for `verify`).
    pub fn for_each(&self, mut each: impl FnMut(StoredPersonal<'_>)) -> Result<u64, PersonalError> {
        let connection = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut statement = connection
            .prepare("SELECT subject, commitment, salt, value FROM personal ORDER BY subject, commitment")
            .map_err(|e| self.sqlite(e))?;
        let mut rows = statement.query([]).map_err(|e| self.sqlite(e))?;
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let malformed = |what: &str| PersonalError::Malformed {
                path: self.path.clone(),
                reason: format!("a row's {what} has the wrong length"),
            };
            let subject: Vec<u8> = row.get(0).map_err(|e| self.sqlite(e))?;
            let commitment: Vec<u8> = row.get(1).map_err(|e| self.sqlite(e))?;
            let salt: Vec<u8> = row.get(2).map_err(|e| self.sqlite(e))?;
            let value: String = row.get(3).map_err(|e| self.sqlite(e))?;
            let subject = Uuid::from_slice(&subject).map_err(|_| malformed("subject"))?;
            let commitment: [u8; 32] =
                commitment.try_into().map_err(|_| malformed("commitment"))?;
            let salt: [u8; 16] = salt.try_into().map_err(|_| malformed("salt"))?;
            each(StoredPersonal {
                subject,
                commitment: Commitment(commitment),
                salt,
                value: &value,
            });
            count += 1;
        }
        Ok(count)
    }
}
