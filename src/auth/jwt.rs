//! JWT bearer tokens checked against a JWKS file (SPEC.md section 10). Filled in by the JWT
//! work of issue 9; until then `--jwks` is refused at start.

use std::path::Path;

use super::principal::Principal;
use super::{AuthError, DirectoryError};

/// Default `aud` a token must carry (`--jwt-audience`).
pub const DEFAULT_AUDIENCE: &str = "csp-ledger";

/// Verifies tokens against the keys of one JWKS file.
pub struct JwtVerifier {
    _private: (),
}

impl JwtVerifier {
    /// Loads a JWKS file (EdDSA, ES256 and RS256 keys).
    pub fn from_jwks_file(path: &Path, _audience: &str) -> Result<JwtVerifier, DirectoryError> {
        Err(DirectoryError::Invalid {
            path: path.to_path_buf(),
            reason: "JWKS support is not built yet".into(),
        })
    }

    /// The principal of a verified token.
    pub fn verify(&self, _token: &str) -> Result<Principal, AuthError> {
        Err(AuthError::Token("JWT support is not built yet".into()))
    }
}
