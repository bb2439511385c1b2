//! Identity and access (SPEC.md section 10): who is calling, and what it may do.
//!
//! - [`principal`]: principals, their actor grants (`act_as`) and read grants (`read`).
//! - [`directory`]: the principals file (strict TOML), API keys by SHA-256 in constant time,
//!   Kafka HMAC keys, and the embedded default's `admin.key`.
//! - [`jwt`]: JWT bearer tokens checked against a JWKS file.
//! - [`signature`]: the `csp-signature` header of Kafka command messages.
//!
//! [`Authenticator`] holds the directory in force (swapped whole on reload, so that a request
//! sees one file or the other, never a mix) and answers the three intakes' questions.

pub mod directory;
pub mod jwt;
pub mod principal;
pub mod signature;

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use directory::{Directory, DirectoryError, KafkaKey};
pub use principal::{ActorGrant, Principal, PrincipalId, ReadGrants};

/// Why a caller was not authenticated. Messages name what was wrong, never the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send Authorization: Bearer <api key or JWT>")]
    Missing,
    #[error("the Authorization header is not \"Bearer <token>\"")]
    Malformed,
    #[error("the API key is not known")]
    UnknownKey,
    #[error("the token is not accepted: {0}")]
    Token(String),
    #[error("{0}")]
    Kafka(String),
}

/// Where the principals come from.
enum Source {
    /// `--principals FILE`: re-read on [`Authenticator::reload`].
    File(PathBuf),
    /// The embedded default (or a directory given by a test): fixed.
    Fixed,
}

/// How `serve` authenticates callers.
pub struct Authenticator {
    directory: RwLock<Arc<Directory>>,
    source: Source,
    jwt: Option<jwt::JwtVerifier>,
    /// `--insecure-no-auth`: every caller is this principal.
    insecure: Option<Arc<Principal>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("insecure", &self.insecure.is_some())
            .field("jwt", &self.jwt.is_some())
            .finish_non_exhaustive()
    }
}

/// Id of the principal every caller is under `--insecure-no-auth`.
pub const INSECURE_PRINCIPAL_ID: &str = "anonymous";

impl Authenticator {
    /// Principals from a file, re-read on reload.
    pub fn from_file(path: PathBuf, jwt: Option<jwt::JwtVerifier>) -> Result<Self, DirectoryError> {
        let directory = Directory::load(&path)?;
        Ok(Authenticator {
            directory: RwLock::new(Arc::new(directory)),
            source: Source::File(path),
            jwt,
            insecure: None,
        })
    }

    /// A fixed directory (the embedded default, or JWT only with an empty one).
    pub fn fixed(directory: Directory, jwt: Option<jwt::JwtVerifier>) -> Self {
        Authenticator {
            directory: RwLock::new(Arc::new(directory)),
            source: Source::Fixed,
            jwt,
            insecure: None,
        }
    }

    /// `--insecure-no-auth`: no credentials asked; every caller is an administrator
    /// [`INSECURE_PRINCIPAL_ID`]. The caller checks that the address is a loopback one.
    pub fn insecure() -> Self {
        let id = PrincipalId::builtin(INSECURE_PRINCIPAL_ID);
        Authenticator {
            directory: RwLock::new(Arc::new(Directory::default())),
            source: Source::Fixed,
            jwt: None,
            insecure: Some(Arc::new(Principal::administrator(id))),
        }
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure.is_some()
    }

    fn current(&self) -> Arc<Directory> {
        match self.directory.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the principals file. On failure the previous directory stays in force.
    /// Returns how many principals are now loaded.
    pub fn reload(&self) -> Result<usize, DirectoryError> {
        let Source::File(path) = &self.source else {
            return Ok(self.current().len());
        };
        let fresh = Arc::new(Directory::load(path)?);
        let count = fresh.len();
        match self.directory.write() {
            Ok(mut guard) => *guard = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(count)
    }

    /// The principal of an HTTP request, from its `Authorization` header value.
    pub fn authenticate_header(&self, header: Option<&str>) -> Result<Arc<Principal>, AuthError> {
        if let Some(principal) = &self.insecure {
            return Ok(Arc::clone(principal));
        }
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        self.authenticate_token(token)
    }

    /// The principal of a bearer token: a JWT (three dot-separated parts) when a JWKS is
    /// configured, else an API key.
    pub fn authenticate_token(&self, token: &str) -> Result<Arc<Principal>, AuthError> {
        if let Some(principal) = &self.insecure {
            return Ok(Arc::clone(principal));
        }
        if token.contains('.') {
            if let Some(jwt) = &self.jwt {
                let principal = jwt.verify(token)?;
                // A token may not speak for a principal of the file (its grants are the file's).
                if self.current().contains(&principal.id) {
                    return Err(AuthError::Token(
                        "its sub names a principal of the principals file".into(),
                    ));
                }
                return Ok(Arc::new(principal));
            }
        }
        self.current()
            .by_api_key(token)
            .ok_or(AuthError::UnknownKey)
    }

    /// The principal of a Kafka command message, from its `csp-principal` and
    /// `csp-signature` headers over the value bytes.
    pub fn authenticate_message(
        &self,
        principal: Option<&[u8]>,
        signature: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Arc<Principal>, AuthError> {
        if let Some(principal) = &self.insecure {
            return Ok(Arc::clone(principal));
        }
        let principal = principal.ok_or_else(|| {
            AuthError::Kafka(format!("no {} header", signature::PRINCIPAL_HEADER))
        })?;
        let signature = signature.ok_or_else(|| {
            AuthError::Kafka(format!("no {} header", signature::SIGNATURE_HEADER))
        })?;
        let principal = std::str::from_utf8(principal)
            .map_err(|_| AuthError::Kafka("the principal header is not UTF-8".into()))?;
        let directory = self.current();
        let (found, key) = directory.kafka_publisher(principal).ok_or_else(|| {
            AuthError::Kafka("the principal is unknown or has no Kafka key".into())
        })?;
        signature::verify(key, signature, value).map_err(AuthError::Kafka)?;
        Ok(found)
    }
}
