//! The notary (SPEC.md section 12): signs checkpoints of the Merkle tree over the log, keeps
//! every one it signed, hands the latest to a witness, and refuses a log that a witnessed or
//! published checkpoint shows was rolled back or forked.
//!
//! Invariants: a checkpoint is signed only for the durable head, never per command, and kept
//! (in the log's `S` keys) before it is witnessed or published; a log shorter than the latest
//! checkpoint seen elsewhere, or with another root at its size, is never served or led
//! (`rollback_detected`). The signing key is a secret: it is never formatted.

use std::path::{Path, PathBuf};

use csp_ledger_schemas::note::{self, Checkpoint, NoteError, NoteSigner, VerifierKey};
use thiserror::Error;

use crate::store::checkpoint::MacKey;
use crate::store::log::{Log, LogError, ProofError};

/// The signing key's file inside the data directory, when `--signing-key` is not given.
pub const SIGNING_KEY_FILE: &str = "signing.key";

/// Default interval between checkpoints while the log grows (`--checkpoint-interval-ms`).
pub const CHECKPOINT_INTERVAL_MS: u64 = 1_000;

/// Largest key or witness file read.
const FILE_BYTES_MAX: u64 = 64 * 1024;

/// Why the notary cannot sign, or refuses a log.
#[derive(Debug, Error)]
pub enum NotaryError {
    /// The signing key file is unreadable or not a key (the text is never quoted).
    #[error("signing key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A witnessed or published checkpoint that this ledger's key did not sign, or that
    /// does not parse.
    #[error("checkpoint from {source_name}: {error}")]
    Foreign {
        source_name: String,
        error: NoteError,
    },
    /// The log is shorter than a checkpoint this ledger signed, or holds another tree at its
    /// size. Edge: exit 4, code `rollback_detected`.
    #[error("{}", rollback_message(*own, *checkpoint, *fork, source_name))]
    Rollback {
        own: u64,
        checkpoint: u64,
        fork: bool,
        source_name: String,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Proof(#[from] ProofError),
}

fn rollback_message(own: u64, checkpoint: u64, fork: bool, source: &str) -> String {
    if fork {
        format!("rollback_detected: the log's tree of size {checkpoint} (of {own} events) has another root than the checkpoint of size {checkpoint} in {source}: a fork")
    } else {
        format!("rollback_detected: the log has {own} events, fewer than the {checkpoint} of the checkpoint in {source}")
    }
}

/// Reads a small file whole.
fn read_small(path: &Path) -> Result<Option<String>, NotaryError> {
    let io = |source| NotaryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(error)),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, FILE_BYTES_MAX), &mut text)
        .map_err(io)?;
    Ok(Some(text))
}

/// Whether `path` lies inside `dir` (both resolved; a missing path is resolved through its
/// parent).
fn inside(path: &Path, dir: &Path) -> bool {
    let resolve = |p: &Path| {
        std::fs::canonicalize(p).unwrap_or_else(|_| match (p.parent(), p.file_name()) {
            (Some(parent), Some(name)) => std::fs::canonicalize(parent)
                .map(|parent| parent.join(name))
                .unwrap_or_else(|_| p.to_path_buf()),
            _ => p.to_path_buf(),
        })
    };
    resolve(path).starts_with(resolve(dir))
}

/// Signs and checks checkpoints for one log.
#[derive(Debug)]
pub struct Notary {
    signer: NoteSigner,
    origin: String,
    /// Whether the key file lives outside the data directory (then the projection
    /// checkpoint's MAC is trusted).
    key_outside: bool,
    witness: Option<PathBuf>,
}

/// Where the notary's key is, and what it signs as.
#[derive(Debug, Clone)]
pub struct NotarySettings {
    /// `--signing-key` (default `<data-dir>/signing.key`).
    pub key_file: Option<PathBuf>,
    /// `--origin` (default `csp-ledger/<hostname>`).
    pub origin: Option<String>,
    /// `--witness-file`.
    pub witness: Option<PathBuf>,
}

/// `csp-ledger/<hostname>`.
pub fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace) && !h.contains('+'))
        .unwrap_or_else(|| "localhost".into());
    format!("csp-ledger/{host}")
}

impl Notary {
    /// Loads the signing key, creating it (mode 0600, named after the origin) when the file
    /// is missing. Returns whether it was created.
    pub fn load_or_create(
        data_dir: &Path,
        settings: &NotarySettings,
    ) -> Result<(Notary, bool), NotaryError> {
        let origin = settings.origin.clone().unwrap_or_else(default_origin);
        if origin.is_empty() || origin.contains('\n') {
            return Err(NotaryError::Key {
                path: PathBuf::from("--origin"),
                reason: "the origin is one non-empty line".into(),
            });
        }
        let path = settings
            .key_file
            .clone()
            .unwrap_or_else(|| data_dir.join(SIGNING_KEY_FILE));
        let key_error = |reason: String| NotaryError::Key {
            path: path.clone(),
            reason,
        };
        let (signer, created) = match read_small(&path)? {
            Some(text) => (
                NoteSigner::from_private_key(&text).map_err(|e| key_error(e.to_string()))?,
                false,
            ),
            None => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).map_err(|e| key_error(format!("no randomness: {e}")))?;
                let name = origin.replace(char::is_whitespace, "_").replace('+', "_");
                let signer =
                    NoteSigner::from_seed(&name, &seed).map_err(|e| key_error(e.to_string()))?;
                crate::auth::directory::write_secret(&path, signer.to_private_key().as_bytes())
                    .map_err(|e| key_error(e.to_string()))?;
                tracing::info!(message = "Created a signing key.", path = %path.display(), verifier_key = %signer.verifier());
                (signer, true)
            }
        };
        let key_outside = !inside(&path, data_dir);
        Ok((
            Notary {
                signer,
                origin,
                key_outside,
                witness: settings.witness.clone(),
            },
            created,
        ))
    }

    /// A notary with a key in memory (tests).
    pub fn from_signer(signer: NoteSigner, origin: &str, witness: Option<PathBuf>) -> Notary {
        Notary {
            signer,
            origin: origin.to_string(),
            key_outside: true,
            witness,
        }
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The verifier key, `<name>+<hex id>+<base64>`.
    pub fn verifier(&self) -> VerifierKey {
        self.signer.verifier()
    }

    /// The projection checkpoint's MAC key, trusted only when the signing key lives outside
    /// the data directory.
    pub fn checkpoint_key(&self) -> MacKey {
        MacKey::new(
            self.signer.derive_key("projection checkpoint"),
            self.key_outside,
        )
    }

    /// Signs a checkpoint of the durable head unless one of that size was signed already;
    /// keeps it in the log, then replaces the witness file with it. Returns the new note.
    pub fn sign(&self, log: &Log) -> Result<Option<String>, NotaryError> {
        self.sign_at(log, log.head().position)
    }

    /// Signs a checkpoint of the first `size` events (at most the head; a Kafka leader signs
    /// only what its commit records covered), as [`Notary::sign`].
    pub fn sign_at(&self, log: &Log, size: u64) -> Result<Option<String>, NotaryError> {
        let size = size.min(log.head().position);
        if size == 0 || log.signed_checkpoint(Some(size))?.is_some() {
            return Ok(None);
        }
        let checkpoint = Checkpoint {
            origin: self.origin.clone(),
            size,
            root: log.tree_root(size)?,
        };
        let note =
            self.signer
                .sign_checkpoint(&checkpoint)
                .map_err(|error| NotaryError::Foreign {
                    source_name: "--origin".into(),
                    error,
                })?;
        log.keep_signed_checkpoint(size, &note)?;
        if let Some(witness) = &self.witness {
            crate::store::files::replace_file(witness, &[note.as_bytes()])?;
        }
        tracing::debug!(message = "Signed a checkpoint.", size);
        Ok(Some(note))
    }

    /// Refuses `log` if the signed checkpoint `note` (from `source_name`) shows it rolled
    /// back (shorter) or forked (another root at the checkpoint's size).
    pub fn check(&self, log: &Log, note: &str, source_name: &str) -> Result<(), NotaryError> {
        let checkpoint =
            note::open(note, &self.verifier()).map_err(|error| NotaryError::Foreign {
                source_name: source_name.to_string(),
                error,
            })?;
        let own = log.head().position;
        let rollback = |fork| NotaryError::Rollback {
            own,
            checkpoint: checkpoint.size,
            fork,
            source_name: source_name.to_string(),
        };
        if checkpoint.size > own {
            return Err(rollback(false));
        }
        if checkpoint.size > 0 && log.tree_root(checkpoint.size)? != checkpoint.root {
            return Err(rollback(true));
        }
        Ok(())
    }

    /// [`Notary::check`] of the latest checkpoint on the group's checkpoints topic. One that
    /// another key signed is logged and passed: another instance of the group signs with its
    /// own key, and its checkpoint says nothing this key can check (share one key, as
    /// docker-compose does, for the check to hold across instances).
    pub fn check_published(&self, log: &Log, note: &str, topic: &str) -> Result<(), NotaryError> {
        match self.check(log, note, topic) {
            Err(NotaryError::Foreign { error, .. }) => {
                tracing::warn!(message = "The latest checkpoint on the checkpoints topic is not signed by this instance's key; not checked. Give every instance of the group the same --signing-key.", error = %error);
                Ok(())
            }
            checked => checked,
        }
    }

    /// [`Notary::check`] against the witness file, if there is one and it holds a checkpoint.
    pub fn check_witness(&self, log: &Log) -> Result<(), NotaryError> {
        let Some(path) = &self.witness else {
            return Ok(());
        };
        match read_small(path)? {
            Some(note) => self.check(log, &note, &path.display().to_string()),
            None => Ok(()),
        }
    }
}
