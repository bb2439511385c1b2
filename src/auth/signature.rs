//! The signature of a Kafka command message (SPEC.md section 10): header `csp-principal` names
//! the publisher, header `csp-signature` carries `hmac-sha256=<base64 of HMAC-SHA256(key,
//! value bytes)>`. The value is signed as sent, byte for byte: no canonicalisation.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::directory::KafkaKey;

/// Header naming the publishing principal.
pub const PRINCIPAL_HEADER: &str = "csp-principal";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "csp-signature";
const SCHEME: &str = "hmac-sha256=";

fn mac(key: &KafkaKey) -> Hmac<Sha256> {
    match Hmac::<Sha256>::new_from_slice(key.bytes()) {
        Ok(mac) => mac,
        // HMAC takes keys of any length.
        Err(error) => unreachable!("HMAC-SHA256 refused a key: {error}"),
    }
}

/// The `csp-signature` header value of a message value.
pub fn sign(key: &KafkaKey, value: &[u8]) -> String {
    let mut mac = mac(key);
    mac.update(value);
    format!("{SCHEME}{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Checks a `csp-signature` header value against the message value, in constant time.
pub fn verify(key: &KafkaKey, header: &[u8], value: &[u8]) -> Result<(), String> {
    let header =
        std::str::from_utf8(header).map_err(|_| "the signature header is not UTF-8".to_string())?;
    let encoded = header
        .strip_prefix(SCHEME)
        .ok_or_else(|| format!("the signature header does not start with {SCHEME:?}"))?;
    let tag = STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the signature is not base64".to_string())?;
    let mut mac = mac(key);
    mac.update(value);
    mac.verify_slice(&tag)
        .map_err(|_| "the signature does not match the message".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> KafkaKey {
        KafkaKey::from_file_bytes(vec![byte; 32]).unwrap()
    }

    #[test]
    fn a_signature_verifies_only_for_its_key_and_its_exact_bytes() {
        let value = br#"{"command_id":"x"}"#;
        let signed = sign(&key(1), value);
        assert!(signed.starts_with("hmac-sha256="));
        assert!(verify(&key(1), signed.as_bytes(), value).is_ok());
        assert!(verify(&key(2), signed.as_bytes(), value).is_err());
        assert!(verify(&key(1), signed.as_bytes(), br#"{"command_id":"y"}"#).is_err());
        assert!(verify(&key(1), br#"{"command_id":"x"} "#, value).is_err());
        assert!(verify(&key(1), b"hmac-sha256=!!", value).is_err());
        assert!(verify(
            &key(1),
            signed.replace("hmac-sha256=", "sha1=").as_bytes(),
            value
        )
        .is_err());
    }

    #[test]
    fn rfc_4231_test_case_2() {
        // RFC 4231 4.3 uses a 4-byte key; checked through the same MAC as production.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
