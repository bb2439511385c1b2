#!/usr/bin/env bash
# Makes the test keys (never used outside the tests):
# - tests/fixtures/jwt: private keys that sign test tokens (Ed25519, P-256, RSA 2048; PKCS#8
#   PEM), jwks.json with the public halves of the first three, and other-ed25519.pem, a key the
#   JWKS does not hold.
# - tests/fixtures/tls: a self-signed certificate for localhost and 127.0.0.1 (cert.pem, key.pem)
#   and other-key.pem, a key that does not match it.
# Usage: scripts/make-test-keys.sh   (needs openssl, xxd, basenc)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
jwt="$here/tests/fixtures/jwt"
tls="$here/tests/fixtures/tls"
mkdir -p "$jwt" "$tls"

b64url() { basenc --base64url -w0 | tr -d '='; }

openssl genpkey -algorithm ed25519 -out "$jwt/ed25519.pem"
openssl genpkey -algorithm ed25519 -out "$jwt/other-ed25519.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$jwt/es256.pem"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$jwt/rs256.pem"

# Ed25519: the SubjectPublicKeyInfo ends with the 32 key bytes.
ed_x=$(openssl pkey -in "$jwt/ed25519.pem" -pubout -outform DER | tail -c 32 | b64url)
# P-256: the SubjectPublicKeyInfo ends with the uncompressed point 04 || x || y.
point=$(openssl pkey -in "$jwt/es256.pem" -pubout -outform DER | tail -c 65 | xxd -p -c 200)
ec_x=$(echo "${point:2:64}" | xxd -r -p | b64url)
ec_y=$(echo "${point:66:64}" | xxd -r -p | b64url)
# RSA: the modulus in hex; the exponent openssl uses is 65537 (AQAB).
rsa_n=$(openssl rsa -in "$jwt/rs256.pem" -noout -modulus | sed 's/^Modulus=//' | xxd -r -p | b64url)
openssl rsa -in "$jwt/rs256.pem" -noout -text | grep -q 'publicExponent: 65537' \
  || { echo "unexpected RSA exponent" >&2; exit 1; }

cat > "$jwt/jwks.json" <<JSON
{
  "keys": [
    {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig", "alg": "EdDSA", "x": "$ed_x"},
    {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256", "x": "$ec_x", "y": "$ec_y"},
    {"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": "$rsa_n", "e": "AQAB"}
  ]
}
JSON

config=$(mktemp)
trap 'rm -f "$config"' EXIT
cat > "$config" <<'CNF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = ext
[dn]
CN = localhost
[ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
CNF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 36500 \
  -config "$config" -keyout "$tls/key.pem" -out "$tls/cert.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/other-key.pem"
echo "wrote $jwt and $tls"
