#!/bin/sh
# Creates a throw-away CA and the certificates the compose stack needs, once (a volume
# keeps them): the gateway's listener certificate (for "localhost" and "gateway"), the
# FHIR backend's (for "fhir-backend"), and the access-record checkpoint signing key that
# both replicas share (`audit verify` over the shared store trusts one key). For trying the stack out only: in production the
# certificates come from your own CA or a public one.
set -eu
out=/certs
[ -f "$out/ca.pem" ] && exit 0
apk add --no-cache openssl >/dev/null
# Ed25519 (PKCS#8 PEM), readable by the gateway's user only (DATA-ENC-2).
openssl genpkey -algorithm ed25519 -out /keys/audit-signing.pem
chown 65532:65532 /keys/audit-signing.pem
chmod 0600 /keys/audit-signing.pem
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=phr-gateway compose CA" -keyout ca-key.pem -out ca.pem
issue() { # name, subjectAltName
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$1-key.pem" -out "$1.csr"
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 90 \
    -extfile "$1.ext" -out "$1.pem"
  rm "$1.csr" "$1.ext"
}
issue gateway "DNS:localhost,DNS:gateway,IP:127.0.0.1"
issue fhir-backend "DNS:fhir-backend"
rm ca-key.pem
# The gateway (uid 65532) and HAPI read these; the CA key is gone.
chmod 0444 ./*.pem
