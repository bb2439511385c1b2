//! JWT bearer tokens (SPEC.md section 10): which tokens `JwtVerifier` accepts, which it refuses,
//! and the HTTP answers for them. The keys are those of tests/fixtures/jwt
//! (scripts/make-test-keys.sh); tokens are signed here with `jsonwebtoken`.

mod support;

use std::path::{Path, PathBuf};

use base64::Engine;
use csp_ledger::auth::jwt::JwtVerifier;
use csp_ledger::auth::{ActorGrant, AuthError, Authenticator, Directory, ReadGrants};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const AUDIENCE: &str = "csp-ledger";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwt")
        .join(name)
}

fn verifier() -> JwtVerifier {
    JwtVerifier::from_jwks_file(&fixture("jwks.json"), AUDIENCE).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Valid claims: 10 minutes to live, the default audience, partner and model grants.
fn claims() -> Value {
    json!({
        "sub": "portal-jwt",
        "aud": AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "csp_act_as": ["partner:*", "customer:00000000-0000-4000-8000-000000000201"],
        "csp_read": ["models"],
    })
}

fn encoding_key(alg: Algorithm, file: &str) -> EncodingKey {
    let pem = std::fs::read(fixture(file)).unwrap();
    match alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        other => panic!("no fixture key for {other:?}"),
    }
}

/// The fixture key file and kid of each accepted algorithm.
fn key_of(alg: Algorithm) -> (&'static str, &'static str) {
    match alg {
        Algorithm::EdDSA => ("ed25519.pem", "ed-1"),
        Algorithm::ES256 => ("es256.pem", "ec-1"),
        Algorithm::RS256 => ("rs256.pem", "rsa-1"),
        other => panic!("no fixture key for {other:?}"),
    }
}

fn sign_with(alg: Algorithm, kid: Option<&str>, file: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &encoding_key(alg, file)).unwrap()
}

/// A token of `alg` signed by its fixture key, with its kid.
fn sign(alg: Algorithm, claims: &Value) -> String {
    let (file, kid) = key_of(alg);
    sign_with(alg, Some(kid), file, claims)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The reason a token is refused; panics when it is accepted.
fn refused(token: &str) -> String {
    match verifier().verify(token) {
        Ok(principal) => panic!("accepted: {principal:?}"),
        Err(AuthError::Token(reason)) => {
            assert!(!reason.contains(token), "the reason holds the token");
            for part in token.split('.').filter(|p| p.len() > 8) {
                assert!(!reason.contains(part), "the reason holds part of the token");
            }
            reason
        }
        Err(other) => panic!("not a token error: {other:?}"),
    }
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

#[test]
fn tokens_of_each_accepted_algorithm_are_accepted_with_their_grants() {
    let verifier = verifier();
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let principal = verifier
            .verify(&sign(alg, &claims()))
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(principal.id.as_str(), "portal-jwt");
        assert_eq!(
            principal.act_as,
            vec![
                ActorGrant::AnyPartner,
                "customer:00000000-0000-4000-8000-000000000201"
                    .parse()
                    .unwrap()
            ]
        );
        assert_eq!(
            principal.read,
            ReadGrants {
                models: true,
                personal: false
            }
        );
        // Without a kid, the keys of the header's algorithm are tried.
        let (file, _) = key_of(alg);
        assert!(verifier
            .verify(&sign_with(alg, None, file, &claims()))
            .is_ok());
    }
}

#[test]
fn missing_grant_claims_mean_no_grants_and_an_array_audience_may_hold_ours() {
    let claims = with(
        without(without(claims(), "csp_act_as"), "csp_read"),
        "aud",
        json!(["other-service", AUDIENCE]),
    );
    let principal = verifier().verify(&sign(Algorithm::EdDSA, &claims)).unwrap();
    assert!(principal.act_as.is_empty());
    assert_eq!(principal.read, ReadGrants::default());
}

#[test]
fn unsigned_tokens_are_refused() {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims().to_string().as_bytes());
    let reason = refused(&format!("{header}.{payload}."));
    assert!(reason.contains("algorithm"), "{reason}");
}

#[test]
fn hmac_signed_with_the_public_key_is_refused() {
    // Algorithm confusion: the public key (here its JWKS "x" and its raw bytes) as HMAC secret.
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .unwrap();
    for secret in [x.as_bytes(), raw.as_slice()] {
        for kid in [Some("ed-1"), None] {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = kid.map(str::to_string);
            let token = jsonwebtoken::encode(
                &header,
                &claims(),
                &EncodingKey::from_secret(secret).unwrap(),
            )
            .unwrap();
            let reason = refused(&token);
            assert!(reason.contains("HS256"), "{reason}");
        }
    }
}

#[test]
fn time_claims_are_checked() {
    let expired = with(claims(), "exp", json!(now() - 3600));
    assert!(refused(&sign(Algorithm::EdDSA, &expired)).contains("expired"));
    let early = with(claims(), "nbf", json!(now() + 3600));
    assert!(refused(&sign(Algorithm::ES256, &early)).contains("nbf"));
    let no_exp = without(claims(), "exp");
    assert!(refused(&sign(Algorithm::RS256, &no_exp)).contains("no exp"));
    // Within the leeway, both are still accepted.
    let skewed = with(
        with(claims(), "exp", json!(now() - 5)),
        "nbf",
        json!(now() + 5),
    );
    assert!(verifier().verify(&sign(Algorithm::EdDSA, &skewed)).is_ok());
}

#[test]
fn the_audience_is_required_and_checked() {
    let wrong = with(claims(), "aud", json!("another-service"));
    assert!(refused(&sign(Algorithm::EdDSA, &wrong)).contains("aud"));
    let missing = without(claims(), "aud");
    assert!(refused(&sign(Algorithm::EdDSA, &missing)).contains("no aud"));
    // The same token passes a verifier of that audience.
    let other = JwtVerifier::from_jwks_file(&fixture("jwks.json"), "another-service").unwrap();
    assert!(other.verify(&sign(Algorithm::EdDSA, &wrong)).is_ok());
}

#[test]
fn keys_are_chosen_by_kid_and_must_match_the_algorithm() {
    let unknown = sign_with(Algorithm::EdDSA, Some("ed-9"), "ed25519.pem", &claims());
    assert!(refused(&unknown).contains("kid"));
    // An RS256 token naming the EdDSA key.
    let confused = sign_with(Algorithm::RS256, Some("ed-1"), "rs256.pem", &claims());
    let reason = refused(&confused);
    assert!(
        reason.contains("RS256") && reason.contains("EdDSA"),
        "{reason}"
    );
    // A valid ES256 token naming the RSA key.
    let confused = sign_with(Algorithm::ES256, Some("rsa-1"), "es256.pem", &claims());
    assert!(refused(&confused).contains("ES256"));
}

#[test]
fn signatures_must_verify() {
    // Signed by a key the JWKS does not hold, with and without the kid of one it does.
    for kid in [Some("ed-1"), None] {
        let foreign = sign_with(Algorithm::EdDSA, kid, "other-ed25519.pem", &claims());
        assert!(refused(&foreign).contains("signature"));
    }
    // The payload changed after signing (more grants), the signature kept.
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let token = sign(alg, &claims());
        let parts: Vec<&str> = token.split('.').collect();
        let more = with(claims(), "csp_read", json!(["models", "personal"]));
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(more.to_string().as_bytes()),
            parts[2]
        );
        assert!(refused(&tampered).contains("signature"), "{alg:?}");
    }
    assert!(refused("not-a-token").contains("not a JWT"));
    assert!(refused("a.b.c").contains("header"));
}

#[test]
fn the_subject_and_the_grants_must_be_valid() {
    let email = with(claims(), "sub", json!("ops@example.com"));
    let reason = refused(&sign(Algorithm::EdDSA, &email));
    assert!(reason.contains("sub"), "{reason}");
    assert!(!reason.contains("ops@example.com"), "{reason}");
    assert!(refused(&sign(Algorithm::EdDSA, &without(claims(), "sub"))).contains("sub"));
    let bad_act = with(claims(), "csp_act_as", json!(["partner:*", "admin"]));
    assert!(refused(&sign(Algorithm::EdDSA, &bad_act)).contains("csp_act_as"));
    let bad_read = with(claims(), "csp_read", json!(["everything"]));
    assert!(refused(&sign(Algorithm::EdDSA, &bad_read)).contains("csp_read"));
    let not_array = with(claims(), "csp_read", json!("models"));
    assert!(refused(&sign(Algorithm::EdDSA, &not_array)).contains("csp_read"));
}

fn jwks_refusal(jwks: Value) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    match JwtVerifier::from_jwks_file(&path, AUDIENCE) {
        Ok(verifier) => panic!("accepted: {verifier:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn key_sets_without_a_usable_key_are_refused() {
    assert!(jwks_refusal(json!({"keys": []})).contains("no usable key"));
    // An HMAC secret, a P-384 key, an encryption key, a key for another algorithm.
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).unwrap();
    let x = jwks["keys"][0]["x"].clone();
    let ed = |extra: Value| {
        let mut key = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
        key.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        key
    };
    let unusable = json!({"keys": [
        {"kty": "oct", "k": b64(b"a shared secret of 32 bytes long")},
        {"kty": "EC", "crv": "P-384", "x": b64(&[1; 48]), "y": b64(&[2; 48])},
        ed(json!({"use": "enc"})),
        {"kty": "RSA", "alg": "PS256", "n": b64(&[0xc5; 256]), "e": "AQAB"},
    ]});
    assert!(jwks_refusal(unusable).contains("no usable key"));
    // Malformed keys of an accepted type refuse the file.
    let short_rsa = json!({"keys": [{"kty": "RSA", "n": b64(&[0xc5; 128]), "e": "AQAB"}]});
    assert!(jwks_refusal(short_rsa).contains("1024 bits"));
    let off_curve =
        json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[1; 32])}]});
    assert!(jwks_refusal(off_curve).contains("not a valid ES256 key"));
    let duplicate = json!({"keys": [ed(json!({"kid": "a"})), ed(json!({"kid": "a"}))]});
    assert!(jwks_refusal(duplicate).contains("twice"));
    assert!(jwks_refusal(json!({"not": "a set"})).contains("JSON Web Key Set"));
}

#[test]
fn over_http_a_token_is_a_principal_with_its_grants() {
    let dir = tempfile::tempdir().unwrap();
    support::build_fixture(dir.path());
    let addr = support::start_server_with(
        dir.path(),
        Authenticator::fixed(Directory::default(), Some(verifier())),
    );
    let get = |token: &str| {
        let bearer = format!("Bearer {token}");
        csp_ledger_testkit::http::request_once(
            addr,
            "GET",
            &format!("/v1/partners/{}", support::DIST),
            &[("Authorization", &bearer)],
            b"",
        )
        .unwrap()
    };
    let reader = get(&sign(Algorithm::EdDSA, &claims()));
    assert_eq!(reader.status, 200, "{}", reader.text());

    let no_read = sign(Algorithm::ES256, &without(claims(), "csp_read"));
    let response = get(&no_read);
    assert_eq!(response.status, 403, "{}", response.text());
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["code"], "forbidden");
    assert_eq!(body["details"]["principal"], "portal-jwt");

    let expired = sign(
        Algorithm::RS256,
        &with(claims(), "exp", json!(now() - 3600)),
    );
    let response = get(&expired);
    assert_eq!(response.status, 401, "{}", response.text());
    let body: Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["code"], "unauthenticated");
    assert!(!response.text().contains(&expired));
    let challenge = response.header("www-authenticate").unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
}

#[test]
fn over_http_a_token_claims_only_the_actors_it_is_granted() {
    let dir = tempfile::tempdir().unwrap();
    support::build_fixture(dir.path());
    let addr = support::start_server_with(
        dir.path(),
        Authenticator::fixed(Directory::default(), Some(verifier())),
    );
    let post = |token: &str, body: &str| {
        let bearer = format!("Bearer {token}");
        let response = csp_ledger_testkit::http::request_once(
            addr,
            "POST",
            "/v1/commands",
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        serde_json::from_slice::<Value>(&response.body).unwrap()
    };
    // The first fixture command enrolls a partner on its own behalf (a partner actor).
    let enrollment = &support::fixture_commands()[0];
    let customers_only = with(claims(), "csp_act_as", json!(["customer:*"]));
    let outcome = post(&sign(Algorithm::EdDSA, &customers_only), enrollment);
    assert_eq!(outcome["outcome"], "rejected", "{outcome}");
    assert_eq!(
        outcome["rejection"]["code"], "actor_not_permitted",
        "{outcome}"
    );
    assert_eq!(
        outcome["rejection"]["details"]["principal"], "portal-jwt",
        "{outcome}"
    );
    // With the partner grant it is the duplicate of the recorded enrollment.
    let outcome = post(&sign(Algorithm::ES256, &claims()), enrollment);
    assert_eq!(outcome["outcome"], "duplicate", "{outcome}");
}

#[test]
fn serve_refuses_a_jwks_file_without_a_usable_key() {
    let data = tempfile::tempdir().unwrap();
    let jwks = data.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_csp-ledger"))
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .args(["serve", "--http", "127.0.0.1:0", "--jwks"])
        .arg(&jwks)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no usable key"), "{stderr}");
    assert!(!stderr.contains("c2VjcmV0"), "{stderr}");
}

#[test]
fn a_token_cannot_speak_for_the_ledgers_own_principals_or_those_of_the_file() {
    for reserved in csp_ledger::auth::principal::RESERVED_IDS {
        let token = sign(Algorithm::EdDSA, &with(claims(), "sub", json!(reserved)));
        assert!(refused(&token).contains("reserved"), "{reserved}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.toml");
    std::fs::write(
        &file,
        format!(
            "[[principal]]\nid = \"partner-portal\"\napi_key_sha256 = \"{}\"\nact_as = []\nread = [\"models\"]\n",
            hex::encode(csp_ledger::auth::directory::api_key_sha256("portal-key-0123456789"))
        ),
    )
    .unwrap();
    let auth = Authenticator::from_file(file, Some(verifier())).unwrap();
    let token = sign(
        Algorithm::EdDSA,
        &with(claims(), "sub", json!("partner-portal")),
    );
    match auth.authenticate_token(&token) {
        Err(AuthError::Token(reason)) => assert!(reason.contains("principals file"), "{reason}"),
        other => panic!("a token for a file principal: {other:?}"),
    }
    let token = sign(
        Algorithm::EdDSA,
        &with(claims(), "sub", json!("sso-user-17")),
    );
    assert_eq!(
        auth.authenticate_token(&token).unwrap().id.as_str(),
        "sso-user-17"
    );
}
