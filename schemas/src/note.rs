//! Signed checkpoints (SPEC.md section 12): a C2SP `tlog-checkpoint` body, signed as a C2SP
//! `signed-note` with Ed25519, and the key formats of Go's `golang.org/x/mod/sumdb/note`
//! (verifier key `<name>+<hex id>+<base64(0x01 ‖ public key)>`, private key
//! `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>`), so that transparency-log tooling reads
//! what the ledger signs.
//!
//! A note is its text (ending in a newline), one empty line, and signature lines
//! `— <key name> <base64(key id ‖ signature)>`. [`open`] returns the checkpoint only when a
//! signature by the given verifier key holds over the text; a note with another key's
//! signatures only fails with [`NoteError::NotSigned`].

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::merkle::Hash;

/// Signature type of Ed25519 in the signed-note format.
pub const ALGORITHM_ED25519: u8 = 0x01;

/// Longest note accepted (a checkpoint is about 150 bytes; this bounds a hostile file or
/// record).
pub const NOTE_BYTES_MAX: usize = 64 * 1024;

/// Most signature lines read from one note.
const SIGNATURES_MAX: usize = 100;

/// Why a note, a checkpoint or a key does not parse or verify.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
    #[error("malformed key: {0}")]
    Key(String),
    /// No signature of the verifier key: the note may be signed by others only.
    #[error("the note carries no signature by {0}")]
    NotSigned(String),
    /// A signature line names the key (name and id) but does not verify.
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
}

/// A tlog-checkpoint: origin, tree size and root hash (and no extension lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint's text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint text. Extension lines after the root are allowed (C2SP) and
    /// ignored.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |reason: &str| NoteError::Checkpoint(reason.to_string());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("empty origin line"));
        }
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        // Decimal, no sign, no leading zero (C2SP).
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad("the tree size is not a decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad("the tree size is too large"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| bad("the root hash is not 32 bytes of base64"))?;
        if lines.any(str::is_empty) {
            return Err(bad("an empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// Key names: non-empty, no white space, no `+` (Go's note package).
fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::Key(format!(
            "{name:?} is not a key name (non-empty, no white space, no '+')"
        )));
    }
    Ok(())
}

/// Key id: the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).
pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ALGORITHM_ED25519]);
    hasher.update(public);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A public key that verifies notes, `<name>+<hex id>+<base64(0x01 ‖ key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub id: [u8; 4],
    key: VerifyingKey,
}

impl VerifierKey {
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;
    fn from_str(text: &str) -> Result<VerifierKey, NoteError> {
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key(
                "a verifier key is <name>+<hex id>+<base64 key>".into(),
            ));
        };
        check_name(name)?;
        let (id, public) = decode_id_and_key(id, key)?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| NoteError::Key("not an Ed25519 public key".into()))?;
        if key_id(name, &public) != id {
            return Err(NoteError::Key(
                "the key id does not match the name and key".into(),
            ));
        }
        Ok(VerifierKey {
            name: name.to_string(),
            id,
            key,
        })
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut encoded = vec![ALGORITHM_ED25519];
        encoded.extend_from_slice(&self.key.to_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex(&self.id),
            STANDARD.encode(encoded)
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `<8 hex digits>` and `<base64(0x01 ‖ 32 bytes)>`.
fn decode_id_and_key(id: &str, key: &str) -> Result<([u8; 4], [u8; 32]), NoteError> {
    let id = u32::from_str_radix(id, 16)
        .ok()
        .filter(|_| id.len() == 8)
        .ok_or_else(|| NoteError::Key("the key id is not 8 hex digits".into()))?
        .to_be_bytes();
    let bytes = STANDARD
        .decode(key)
        .map_err(|_| NoteError::Key("the key is not base64".into()))?;
    match bytes.split_first() {
        Some((&ALGORITHM_ED25519, rest)) => {
            let key: [u8; 32] = rest
                .try_into()
                .map_err(|_| NoteError::Key("an Ed25519 key is 32 bytes".into()))?;
            Ok((id, key))
        }
        _ => Err(NoteError::Key(
            "not an Ed25519 key (algorithm byte 0x01)".into(),
        )),
    }
}

/// A private key that signs notes. Its `Debug` shows only the name and id; the secret is
/// written only by [`NoteSigner::to_private_key`], for its key file.
pub struct NoteSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("id", &hex(&self.id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// The signer of `name` with this 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        Ok(NoteSigner {
            name: name.to_string(),
            id: key_id(name, &key.verifying_key().to_bytes()),
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex id>+<base64(0x01 ‖ seed)>`. Errors never quote the
    /// text.
    pub fn from_private_key(text: &str) -> Result<NoteSigner, NoteError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError::Key("a private key starts with PRIVATE+KEY+".into()))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key(
                "a private key is PRIVATE+KEY+<name>+<hex id>+<base64 key>".into(),
            ));
        };
        let (id, seed) = decode_id_and_key(id, key)?;
        let signer = NoteSigner::from_seed(name, &seed)?;
        if signer.id != id {
            return Err(NoteError::Key(
                "the key id does not match the name and key".into(),
            ));
        }
        Ok(signer)
    }

    /// The key file text. A secret: write it only to a file of mode 0600.
    pub fn to_private_key(&self) -> String {
        let mut encoded = vec![ALGORITHM_ED25519];
        encoded.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex(&self.id),
            STANDARD.encode(encoded)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// A key for another purpose derived from this one (SHA-256 of a domain label and the
    /// seed): the projection checkpoint's MAC key. Never the seed itself.
    pub fn derive_key(&self, label: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"csp-ledger derived key\n");
        hasher.update(label.as_bytes());
        hasher.update(b"\n");
        hasher.update(self.key.to_bytes());
        hasher.finalize().into()
    }

    /// Signs `text` (which must end in a newline): the note, text + empty line + signature.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        let signature = self.key.sign(text.as_bytes()).to_bytes();
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&signature);
        Ok(format!(
            "{text}\n\u{2014} {} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }

    /// Signs a checkpoint.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String, NoteError> {
        self.sign(&checkpoint.body())
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the text does not end in a newline".into(),
        ));
    }
    if text.contains('\r') || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed(
            "the text holds control characters".into(),
        ));
    }
    Ok(())
}

/// A note split into its text and signature lines, none verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    /// Key name, key id, signature bytes (64 for Ed25519; others are kept, never verified).
    pub signatures: Vec<(String, [u8; 4], Vec<u8>)>,
}

impl Note {
    pub fn parse(note: &str) -> Result<Note, NoteError> {
        let bad = |reason: &str| NoteError::Malformed(reason.to_string());
        if note.len() > NOTE_BYTES_MAX {
            return Err(bad("longer than 64 KiB"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no empty line before the signatures"))?;
        let text = &note[..=split];
        check_text(text)?;
        let lines = note[split + 2..]
            .strip_suffix('\n')
            .ok_or_else(|| bad("the signatures do not end in a newline"))?;
        let mut signatures = Vec::new();
        for line in lines.split('\n') {
            if signatures.len() == SIGNATURES_MAX {
                return Err(bad("too many signatures"));
            }
            let rest = line
                .strip_prefix("\u{2014} ")
                .ok_or_else(|| bad("a signature line does not start with an em dash"))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| bad("a signature line has no signature"))?;
            check_name(name).map_err(|_| bad("a signature line names no valid key"))?;
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| bad("a signature is not base64"))?;
            if blob.len() < 5 {
                return Err(bad("a signature is shorter than its key id"));
            }
            let id = [blob[0], blob[1], blob[2], blob[3]];
            signatures.push((name.to_string(), id, blob[4..].to_vec()));
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// The text, if a signature by `verifier` holds over it and none by it fails (as Go's
    /// `note.Open`: a failing signature of a known key is an error, whatever else holds).
    pub fn verified_text(&self, verifier: &VerifierKey) -> Result<&str, NoteError> {
        let mut verified = false;
        for (name, id, signature) in &self.signatures {
            if *name != verifier.name || *id != verifier.id {
                continue;
            }
            let holds = <[u8; 64]>::try_from(signature.as_slice())
                .ok()
                .map(|bytes| Signature::from_bytes(&bytes))
                .is_some_and(|signature| {
                    verifier
                        .key
                        .verify_strict(self.text.as_bytes(), &signature)
                        .is_ok()
                });
            if !holds {
                return Err(NoteError::BadSignature(verifier.name.clone()));
            }
            verified = true;
        }
        if verified {
            Ok(&self.text)
        } else {
            Err(NoteError::NotSigned(verifier.name.clone()))
        }
    }
}

/// The checkpoint of a signed note, if `verifier` signed it.
pub fn open(note: &str, verifier: &VerifierKey) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse(Note::parse(note)?.verified_text(verifier)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go's golang.org/x/mod/sumdb/note tests: a known key pair and its signature.
    const GO_VERIFIER: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_SIGNER: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_SIGNATURE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn go_known_answer() {
        let signer = NoteSigner::from_private_key(GO_SIGNER).unwrap();
        assert_eq!(signer.verifier().to_string(), GO_VERIFIER);
        let note = signer.sign(GO_TEXT).unwrap();
        assert_eq!(note, format!("{GO_TEXT}\n{GO_SIGNATURE}"));
        let verifier: VerifierKey = GO_VERIFIER.parse().unwrap();
        assert_eq!(
            Note::parse(&note)
                .unwrap()
                .verified_text(&verifier)
                .unwrap(),
            GO_TEXT
        );
        assert_eq!(signer.to_private_key(), GO_SIGNER);
    }

    #[test]
    fn checkpoint_round_trip_and_tampering() {
        let signer = NoteSigner::from_seed("csp-ledger/test", &[7; 32]).unwrap();
        let checkpoint = Checkpoint {
            origin: "csp-ledger/test".into(),
            size: 12,
            root: [3; 32],
        };
        let note = signer.sign_checkpoint(&checkpoint).unwrap();
        assert_eq!(open(&note, &signer.verifier()).unwrap(), checkpoint);
        let other = NoteSigner::from_seed("csp-ledger/test", &[8; 32]).unwrap();
        assert_eq!(
            open(&note, &other.verifier()),
            Err(NoteError::NotSigned("csp-ledger/test".into())),
            "same name, another key: another id"
        );
        let edited = note.replacen("\n12\n", "\n13\n", 1);
        assert_eq!(
            open(&edited, &signer.verifier()),
            Err(NoteError::BadSignature("csp-ledger/test".into()))
        );
        // A second, failing signature by the same key spoils the note (Go's rule).
        let mut doubled = note.clone();
        let line = note.lines().last().unwrap().to_string();
        let mut broken = line.clone();
        broken.replace_range(
            line.len() - 4..line.len() - 3,
            if &line[line.len() - 4..line.len() - 3] == "A" {
                "B"
            } else {
                "A"
            },
        );
        doubled.push_str(&format!("{broken}\n"));
        assert_eq!(
            open(&doubled, &signer.verifier()),
            Err(NoteError::BadSignature("csp-ledger/test".into()))
        );
        assert!(Checkpoint::parse("o\n012\nAAAA\n").is_err());
        assert!(Checkpoint::parse("o\n1\n").is_err());
    }
}
