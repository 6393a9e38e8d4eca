#!/usr/bin/env bash
# scripts/gen-test-certs.sh: a throwaway PKI for tests and for trying TLS locally, made with
# Debian's openssl CLI. Never commit its output: it holds private keys.
#
# Usage: scripts/gen-test-certs.sh DIR [NAME]
# Writes into DIR (created):
#   ca.pem ca.key              a test CA
#   server.pem server.key      server certificate for localhost, 127.0.0.1 and ::1 (by the CA)
#   client.pem client.key      client certificate, CN=ringstream-test-client, SAN URI/DNS (by the CA)
#   wrong.key                  a key that matches none of the certificates
#   other-ca.pem other-ca.key  a second CA, and other-client.pem/.key issued by it (untrusted)
# With NAME, the server certificate's CN is NAME (e.g. to tell two certificates apart after a
# reload); the SANs stay the same.
set -euo pipefail

dir=${1:?usage: gen-test-certs.sh DIR [NAME]}
name=${2:-localhost}
mkdir -p "$dir"
cd "$dir"
umask 077

key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

ca() { # ca NAME CN
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days 30 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        -out "$1.pem" 2>/dev/null
}

leaf() { # leaf NAME CA CN EXT
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$4" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days 30 \
        -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "ringstream test CA"
leaf server ca "$name" "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
leaf client ca "ringstream-test-client" "subjectAltName=DNS:client.test,URI:spiffe://test/client
extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
ca other-ca "some other CA"
leaf other-client other-ca "untrusted-client" "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
key wrong.key
chmod 644 ./*.pem
echo "$dir"
