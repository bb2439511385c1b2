//! JWT bearer tokens checked against a JWKS file (SPEC.md section 10).
//!
//! Parsing and signature checks are the `jsonwebtoken` crate's (RustCrypto backend); this
//! module decides which keys and algorithms count and what the claims mean:
//!
//! - Keys: EdDSA (`OKP`, `Ed25519`), ES256 (`EC`, `P-256`) and RS256 (`RSA`, at least 2048
//!   bits). Other keys of the set (`oct` secrets, other curves, encryption keys, keys whose `alg`
//!   names another algorithm) are skipped with a warning; a set with no usable key is refused.
//! - Header: `alg` must be `EdDSA`, `ES256` or `RS256` (so `none` and `HS256` signed with a
//!   public key as HMAC secret are refused) and match the key's type. The key is the one of the
//!   header's `kid`, else each key of that algorithm. Keys named by the token itself (`jwk`,
//!   `jku`, `x5u`) are never used; a token with `crit` extensions is refused.
//! - Claims: `exp` required and checked, `nbf` checked when present, `aud` required and equal
//!   to (or, as an array, containing) the audience, each with [`LEEWAY_SECONDS`] of leeway for
//!   clock skew. `sub` is the principal id and must be opaque ([`PrincipalId`]); `csp_act_as`
//!   and `csp_read` are arrays of the grant strings of the principals file (missing: no grant).
//!
//! Reasons given for a refused token name the check that failed, never the token, and are
//! never logged here.

use std::collections::HashSet;
use std::path::Path;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tracing::{info, warn};

use super::principal::{ActorGrant, Principal, PrincipalId, ReadGrants};
use super::{AuthError, DirectoryError};

/// Default `aud` a token must carry (`--jwt-audience`).
pub const DEFAULT_AUDIENCE: &str = "csp-ledger";

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// Smallest RSA modulus accepted, in bits.
pub const RSA_BITS_MIN: usize = 2048;

/// The algorithms accepted in a token's header.
pub const ACCEPTED_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

/// One usable key of the set.
struct Key {
    kid: Option<String>,
    /// The one algorithm this key verifies.
    alg: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens against the keys of one JWKS file.
pub struct JwtVerifier {
    keys: Vec<Key>,
    audience: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self
            .keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.alg))
            .collect();
        f.debug_struct("JwtVerifier")
            .field("keys", &kids)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The claims read from a token besides those `jsonwebtoken` validates.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    csp_act_as: Option<Vec<String>>,
    #[serde(default)]
    csp_read: Option<Vec<String>>,
}

impl JwtVerifier {
    /// Loads a JWKS file (EdDSA, ES256 and RS256 keys) whose tokens must carry `aud` =
    /// `audience`.
    pub fn from_jwks_file(path: &Path, audience: &str) -> Result<JwtVerifier, DirectoryError> {
        let invalid = |reason: String| DirectoryError::Jwks {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| DirectoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // serde_json's messages name a position and an expected shape, not key material.
        let set: JwkSet = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let verifier = JwtVerifier::from_jwk_set(&set, audience).map_err(invalid)?;
        info!(message = "JWKS loaded.", path = %path.display(), keys = verifier.keys.len());
        Ok(verifier)
    }

    /// The verifier of the usable keys of `set`; a reason when none is usable, when one that
    /// claims to be usable is malformed, or when two share a `kid`.
    pub fn from_jwk_set(set: &JwkSet, audience: &str) -> Result<JwtVerifier, String> {
        if audience.is_empty() {
            return Err("the JWT audience is empty".into());
        }
        let mut keys = Vec::new();
        let mut kids = HashSet::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            let name = match &jwk.common.key_id {
                Some(kid) => format!("key {kid:?}"),
                None => format!("key #{}", index + 1),
            };
            let alg = match usable_algorithm(jwk) {
                Ok(alg) => alg,
                Err(skipped) => {
                    warn!(message = "JWKS key skipped.", key = %name, reason = %skipped);
                    continue;
                }
            };
            let key = decoding_key(jwk, alg).map_err(|reason| format!("{name}: {reason}"))?;
            if let Some(kid) = &jwk.common.key_id {
                if !kids.insert(kid.clone()) {
                    return Err(format!("{name} appears twice"));
                }
            }
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(format!(
                "no usable key (EdDSA Ed25519, ES256 P-256 or RS256 of at least {RSA_BITS_MIN} bits) among its {}",
                set.keys.len()
            ));
        }
        Ok(JwtVerifier {
            keys,
            audience: audience.to_string(),
        })
    }

    /// The principal of a verified token.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let refused = |reason: String| AuthError::Token(reason);
        let header = jsonwebtoken::decode_header(token).map_err(|error| match error.kind() {
            ErrorKind::InvalidToken => refused(describe(error.kind())),
            // `alg: none` (and every other unknown algorithm) fails here.
            _ => refused(
                "the header is not valid JSON naming one of the algorithms EdDSA, ES256, RS256"
                    .into(),
            ),
        })?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(refused(format!(
                "algorithm {:?} is not accepted (EdDSA, ES256 or RS256 only)",
                header.alg
            )));
        }
        if header.crit.as_ref().is_some_and(|crit| !crit.is_empty()) {
            return Err(refused(
                "critical header extensions (crit) are not supported".into(),
            ));
        }
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let key = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid.as_str()))
                    .ok_or_else(|| refused("its kid names no key of the JWKS".into()))?;
                if key.alg != header.alg {
                    return Err(refused(format!(
                        "its algorithm {:?} is not that of the key its kid names ({:?})",
                        header.alg, key.alg
                    )));
                }
                vec![key]
            }
            None => self.keys.iter().filter(|k| k.alg == header.alg).collect(),
        };
        if candidates.is_empty() {
            return Err(refused(format!("the JWKS has no {:?} key", header.alg)));
        }
        let mut last = ErrorKind::InvalidSignature;
        let mut verified = None;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &self.validation(key.alg)) {
                Ok(data) => {
                    verified = Some(data.claims);
                    break;
                }
                // Another key of the same algorithm may have signed it.
                Err(error) if matches!(error.kind(), ErrorKind::InvalidSignature) => {}
                // Any other failure is that of the token, whichever key is tried.
                Err(error) => {
                    last = error.into_kind();
                    break;
                }
            }
        }
        let claims = verified.ok_or_else(|| refused(describe(&last)))?;
        principal(claims)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        validation
    }
}

/// The algorithm a JWK verifies, or why it is skipped.
fn usable_algorithm(jwk: &Jwk) -> Result<Algorithm, String> {
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return Err("its use is not \"sig\"".into());
        }
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are not accepted".into())
        }
        _ => return Err("its type or curve is not OKP Ed25519, EC P-256 or RSA".into()),
    };
    if let Some(named) = jwk.common.key_algorithm {
        if Algorithm::try_from(named).ok() != Some(alg) {
            return Err(format!("its alg {named} is not {alg:?}"));
        }
    }
    Ok(alg)
}

/// The decoding key of a usable JWK, checked now rather than at the first token.
fn decoding_key(jwk: &Jwk, alg: Algorithm) -> Result<DecodingKey, String> {
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(rsa.n.as_bytes())
            .map_err(|_| "its modulus n is not base64url".to_string())?;
        let bits = n.iter().position(|byte| *byte != 0).map_or(0, |first| {
            (n.len() - first) * 8 - n[first].leading_zeros() as usize
        });
        if bits < RSA_BITS_MIN {
            return Err(format!(
                "its RSA modulus has {bits} bits, fewer than {RSA_BITS_MIN}"
            ));
        }
    }
    let key = DecodingKey::from_jwk(jwk)
        .map_err(|e| format!("not a valid key: {}", describe(e.kind())))?;
    // Building a verifier parses the key (point on the curve, key length).
    if let Some(provider) = jsonwebtoken::crypto::CryptoProvider::try_get_default() {
        (provider.verifier_factory)(&alg, &key)
            .map_err(|e| format!("not a valid {alg:?} key: {}", describe(e.kind())))?;
    }
    Ok(key)
}

/// What a `jsonwebtoken` failure says about a token, without its content.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken => "it is not a JWT (three base64url parts)".into(),
        ErrorKind::InvalidSignature => "its signature does not verify with the JWKS".into(),
        ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
        ErrorKind::InvalidAudience => "its aud is not this ledger's audience".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("its {claim} claim is malformed"),
        ErrorKind::InvalidAlgorithm => "its algorithm does not match the key".into(),
        ErrorKind::Base64(_) => "a part is not valid base64url".into(),
        ErrorKind::Json(_) => "its header or claims are not JSON of the expected shape (sub a string, csp_act_as and csp_read arrays of strings)".into(),
        ErrorKind::Utf8(_) => "a part is not UTF-8".into(),
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            "the key is malformed".into()
        }
        ErrorKind::InvalidKeyFormat => "the key has the wrong format".into(),
        _ => "it cannot be verified".into(),
    }
}

/// The principal of verified claims.
fn principal(claims: Claims) -> Result<Principal, AuthError> {
    let refused = |reason: String| AuthError::Token(reason);
    let sub = claims
        .sub
        .ok_or_else(|| refused("it has no sub claim".into()))?;
    // The id is not echoed: a refused one may be an e-mail address.
    let id = PrincipalId::parse_external(&sub).map_err(|_| {
        refused(
            "its sub is not an opaque principal id (1 to 128 letters, digits, '.', '_', '-') or is reserved for the ledger's own principals"
                .into(),
        )
    })?;
    let act_as = claims
        .csp_act_as
        .unwrap_or_default()
        .iter()
        .map(|entry| entry.parse::<ActorGrant>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| refused(format!("csp_act_as: {reason}")))?;
    let entries = claims.csp_read.unwrap_or_default();
    let read = ReadGrants::parse(entries.iter().map(String::as_str))
        .map_err(|reason| refused(format!("csp_read: {reason}")))?;
    Ok(Principal { id, act_as, read })
}
