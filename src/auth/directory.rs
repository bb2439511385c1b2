//! The principals the ledger knows: loaded from the TOML principals file (SPEC.md section 10)
//! or made by the embedded default (one administrator whose key is in `<data-dir>/admin.key`).
//!
//! Secrets are held only as what is needed to check them: the SHA-256 of each API key, and the
//! HMAC key of a Kafka publisher (which a verifier needs in the clear). Neither is ever
//! formatted: [`KafkaKey`] and [`Directory`] print as redacted.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::principal::{ActorGrant, Principal, PrincipalId, ReadGrants};

/// Shortest Kafka HMAC key accepted, in bytes (SPEC.md section 10).
pub const KAFKA_KEY_BYTES_MIN: usize = 32;

/// Id of the administrator principal of the embedded default.
pub const EMBEDDED_ADMIN_ID: &str = "admin";

/// Shortest administrator key accepted from an existing `admin.key` (a made one has 68).
pub const ADMIN_KEY_CHARS_MIN: usize = 32;

/// File name of the embedded administrator's API key inside the data directory.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Why a principals file (or a key file it names) was refused.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid principals file: {reason}")]
    Invalid { path: PathBuf, reason: String },
    /// `--jwks FILE` that holds no usable key, or a key that is malformed.
    #[error("{path} is not a usable JSON Web Key Set: {reason}")]
    Jwks { path: PathBuf, reason: String },
    #[error("cannot write the administrator key {path}: {source}")]
    WriteKey {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A Kafka publisher's HMAC-SHA256 key. Its bytes are never formatted.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaKey(Vec<u8>);

impl KafkaKey {
    /// The key in a key file's bytes: one trailing newline removed, at least 32 bytes left.
    pub fn from_file_bytes(mut bytes: Vec<u8>) -> Result<KafkaKey, String> {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.len() < KAFKA_KEY_BYTES_MIN {
            return Err(format!(
                "a Kafka HMAC key has at least {KAFKA_KEY_BYTES_MIN} bytes, this one {}",
                bytes.len()
            ));
        }
        Ok(KafkaKey(bytes))
    }

    /// Reads a key file.
    pub fn read(path: &Path) -> Result<KafkaKey, DirectoryError> {
        let bytes = std::fs::read(path).map_err(|source| DirectoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        KafkaKey::from_file_bytes(bytes).map_err(|reason| DirectoryError::Invalid {
            path: path.to_path_buf(),
            reason,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for KafkaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KafkaKey(<redacted>)")
    }
}

struct Entry {
    principal: Arc<Principal>,
    api_key_sha256: Option<[u8; 32]>,
    kafka_key: Option<KafkaKey>,
}

/// The loaded principals.
#[derive(Default)]
pub struct Directory {
    entries: Vec<Entry>,
    by_id: HashMap<PrincipalId, usize>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("principals", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// The SHA-256 of an API key, as stored in a principals file.
pub fn api_key_sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    principal: Vec<PrincipalToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalToml {
    id: String,
    api_key_sha256: Option<String>,
    kafka_hmac_key_file: Option<PathBuf>,
    act_as: Vec<String>,
    read: Vec<String>,
}

impl Directory {
    /// Loads a principals file. Key files it names by relative path are found beside it.
    pub fn load(path: &Path) -> Result<Directory, DirectoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| DirectoryError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let file: FileToml = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut directory = Directory::default();
        for entry in file.principal {
            let id = PrincipalId::parse_external(&entry.id).map_err(invalid)?;
            let act_as = entry
                .act_as
                .iter()
                .map(|s| s.parse::<ActorGrant>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("principal {id}: {e}")))?;
            let read = ReadGrants::parse(entry.read.iter().map(String::as_str))
                .map_err(|e| invalid(format!("principal {id}: {e}")))?;
            let api_key_sha256 = entry
                .api_key_sha256
                .map(|hex_text| parse_sha256(&hex_text))
                .transpose()
                .map_err(|e| invalid(format!("principal {id}: api_key_sha256 {e}")))?;
            let kafka_key = entry
                .kafka_hmac_key_file
                .map(|file| KafkaKey::read(&base.join(file)))
                .transpose()?;
            if api_key_sha256.is_none() && kafka_key.is_none() {
                return Err(invalid(format!(
                    "principal {id} has neither api_key_sha256 nor kafka_hmac_key_file: it could never authenticate"
                )));
            }
            let principal = Principal { id, act_as, read };
            directory
                .insert(principal, api_key_sha256, kafka_key)
                .map_err(invalid)?;
        }
        Ok(directory)
    }

    /// The embedded default: one administrator whose API key is in `<data_dir>/admin.key`,
    /// created (mode 0600) with a random key when missing. Returns the directory and, when the
    /// key was created just now, the key (for the operator to see once).
    pub fn embedded(data_dir: &Path) -> Result<(Directory, Option<String>), DirectoryError> {
        let path = data_dir.join(ADMIN_KEY_FILE);
        let (key, created) = match read_secret(&path) {
            Ok(text) => (text.trim_end().to_string(), false),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = new_api_key();
                write_secret(&path, key.as_bytes())?;
                (key, true)
            }
            Err(source) => return Err(DirectoryError::Read { path, source }),
        };
        if key.len() < ADMIN_KEY_CHARS_MIN {
            return Err(DirectoryError::Invalid {
                path,
                reason: format!(
                    "the administrator key has {} characters, fewer than {ADMIN_KEY_CHARS_MIN}: delete the file and restart for a new one",
                    key.len()
                ),
            });
        }
        let mut directory = Directory::default();
        let admin = Principal::administrator(PrincipalId::builtin(EMBEDDED_ADMIN_ID));
        directory
            .insert(admin, Some(api_key_sha256(&key)), None)
            .map_err(|reason| DirectoryError::Invalid {
                path: path.clone(),
                reason,
            })?;
        Ok((directory, created.then_some(key)))
    }

    /// Adds a principal; ids and API key hashes are unique.
    pub fn insert(
        &mut self,
        principal: Principal,
        api_key_sha256: Option<[u8; 32]>,
        kafka_key: Option<KafkaKey>,
    ) -> Result<(), String> {
        if self.by_id.contains_key(&principal.id) {
            return Err(format!("principal {} is listed twice", principal.id));
        }
        if let Some(hash) = api_key_sha256 {
            if self.by_api_key_hash(&hash).is_some() {
                return Err(format!(
                    "principal {} has the same api_key_sha256 as another principal",
                    principal.id
                ));
            }
        }
        self.by_id.insert(principal.id.clone(), self.entries.len());
        self.entries.push(Entry {
            principal: Arc::new(principal),
            api_key_sha256,
            kafka_key,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a principal of this id is listed.
    pub fn contains(&self, id: &PrincipalId) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal whose API key this is. Every stored hash is compared, in constant time,
    /// whatever matches: the time taken says nothing about which key is close to which.
    pub fn by_api_key(&self, key: &str) -> Option<Arc<Principal>> {
        self.by_api_key_hash(&api_key_sha256(key))
    }

    fn by_api_key_hash(&self, hash: &[u8; 32]) -> Option<Arc<Principal>> {
        let mut found = None;
        for entry in &self.entries {
            if let Some(stored) = &entry.api_key_sha256 {
                if bool::from(stored.ct_eq(hash)) {
                    found = Some(Arc::clone(&entry.principal));
                }
            }
        }
        found
    }

    /// A Kafka publisher: its principal and HMAC key, if it has one.
    pub fn kafka_publisher(&self, id: &str) -> Option<(Arc<Principal>, &KafkaKey)> {
        let id: PrincipalId = id.parse().ok()?;
        let entry = &self.entries[*self.by_id.get(&id)?];
        Some((Arc::clone(&entry.principal), entry.kafka_key.as_ref()?))
    }
}

fn parse_sha256(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| "is not 64 hexadecimal digits (the SHA-256 of the key)".to_string())?;
    Ok(out)
}

/// A new random API key: `csp_` and 64 hex digits (256 bits from the operating system).
pub fn new_api_key() -> String {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        // Without an OS source, fall back to two v4 UUIDs (also OS-seeded where possible).
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    format!("csp_{}", hex::encode(bytes))
}

/// Reads an existing secret file, refusing a symbolic link and, on Unix, a file that its
/// group or others may read or write (someone else could know or have chosen the key).
fn read_secret(path: &Path) -> std::io::Result<String> {
    let metadata = std::fs::symlink_metadata(path)?;
    let refuse = |why: &str| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{why}; the key file must be a regular file readable by its owner only (chmod 600)"
            ),
        ))
    };
    if !metadata.file_type().is_file() {
        return refuse("it is not a regular file");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            return refuse(&format!("its mode is {:o}", mode & 0o777));
        }
    }
    std::fs::read_to_string(path)
}

/// Writes a new secret file readable by its owner only (0600 on Unix); refuses to overwrite.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), DirectoryError> {
    let failed = |source| DirectoryError::WriteKey {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(parent).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.write_all(b"\n").map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_file_loads_with_keys_by_hash_and_relative_key_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "portal.key", &format!("{}\n", "k".repeat(32)));
        let file = write(
            dir.path(),
            "principals.toml",
            &format!(
                "[[principal]]\nid = \"partner-portal\"\napi_key_sha256 = \"{}\"\nkafka_hmac_key_file = \"portal.key\"\nact_as = [\"partner:*\"]\nread = [\"models\"]\n",
                hex::encode(api_key_sha256("secret-1"))
            ),
        );
        let directory = Directory::load(&file).unwrap();
        let principal = directory.by_api_key("secret-1").unwrap();
        assert_eq!(principal.id.as_str(), "partner-portal");
        assert_eq!(principal.act_as, vec![ActorGrant::AnyPartner]);
        assert!(directory.by_api_key("secret-2").is_none());
        let (_, key) = directory.kafka_publisher("partner-portal").unwrap();
        assert_eq!(key.bytes(), "k".repeat(32).as_bytes());
        assert_eq!(format!("{key:?}"), "KafkaKey(<redacted>)");
    }

    #[test]
    fn strict_parsing_refuses_unknown_keys_bad_ids_and_short_keys() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "short.key", "too-short\n");
        let hash = hex::encode(api_key_sha256("x"));
        let cases = [
            format!("[[principal]]\nid = \"a\"\napi_key_sha256 = \"{hash}\"\nact_as = []\nread = []\nadmin = true\n"),
            format!("[[principal]]\nid = \"ops@example.com\"\napi_key_sha256 = \"{hash}\"\nact_as = []\nread = []\n"),
            "[[principal]]\nid = \"a\"\napi_key_sha256 = \"abc\"\nact_as = []\nread = []\n".to_string(),
            format!("[[principal]]\nid = \"a\"\napi_key_sha256 = \"{hash}\"\nact_as = [\"root\"]\nread = []\n"),
            "[[principal]]\nid = \"a\"\nkafka_hmac_key_file = \"short.key\"\nact_as = []\nread = []\n".to_string(),
            "[[principal]]\nid = \"a\"\nact_as = []\nread = []\n".to_string(),
            format!("[[principal]]\nid = \"a\"\napi_key_sha256 = \"{hash}\"\nact_as = []\nread = []\n[[principal]]\nid = \"a\"\napi_key_sha256 = \"{}\"\nact_as = []\nread = []\n", hex::encode(api_key_sha256("y"))),
            "[principals]\n".to_string(),
        ];
        for (i, text) in cases.iter().enumerate() {
            let file = write(dir.path(), &format!("p{i}.toml"), text);
            let error = Directory::load(&file).expect_err(text);
            assert!(!error.to_string().contains(&"k".repeat(32)));
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_embedded_key_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (directory, key) = Directory::embedded(dir.path()).unwrap();
        let key = key.expect("created on first start");
        let mode = std::fs::metadata(dir.path().join(ADMIN_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(directory.by_api_key(&key).unwrap().id.as_str(), "admin");
        let (again, shown) = Directory::embedded(dir.path()).unwrap();
        assert!(shown.is_none(), "printed only once");
        assert!(again.by_api_key(&key).is_some());
    }

    #[cfg(unix)]
    #[test]
    fn an_existing_key_that_others_could_read_or_choose_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_KEY_FILE);
        // World-readable.
        std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Directory::embedded(dir.path()).unwrap_err().to_string();
        assert!(error.contains("mode is 644"), "{error}");
        assert!(!error.contains(&"k".repeat(40)));
        // Owner-only but guessable.
        std::fs::write(&path, "a\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Directory::embedded(dir.path()).is_err());
        // A symbolic link to a key elsewhere.
        std::fs::remove_file(&path).unwrap();
        let elsewhere = dir.path().join("elsewhere.key");
        std::fs::write(&elsewhere, "k".repeat(40)).unwrap();
        std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(Directory::embedded(dir.path()).is_err());
    }
}
