#!/usr/bin/env bash
# Prints a JWK set (RFC 7517) for tether-state's jwt_keys_file from PEM public keys.
#
#   deploy/jwks-from-pem.sh KID=PUBLIC.pem [KID=PUBLIC.pem …] > keys.json
#
# Each PUBLIC.pem is a public key in PEM ("BEGIN PUBLIC KEY", SubjectPublicKeyInfo): a P-256
# key becomes an ES256 key, an RSA key (2048 to 8192 bits) an RS256 key, each with its kid.
# Make one from a private key with `openssl pkey -in private.pem -pubout -out public.pem`.
# The set holds public keys only: a host that verifies tokens cannot mint them with it.
#
# Needs openssl and coreutils (basenc); reads nothing else and writes only to stdout.
# Exit status 2 on a usage error, 1 on a key it cannot use.
set -euo pipefail

die() { echo "jwks-from-pem.sh: $*" >&2; exit 1; }
(($#)) || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

b64url() { basenc --base64url -w0 | tr -d '='; }   # stdin bytes -> base64url, no padding
hexbytes() { basenc -d --base16; }                   # upper-case hex on stdin -> bytes

keys=()
for arg in "$@"; do
    [[ $arg == *=* ]] || { echo "jwks-from-pem.sh: '$arg' is not KID=PUBLIC.pem" >&2; exit 2; }
    kid=${arg%%=*} pem=${arg#*=}
    [[ -n $kid && $kid != *[\"\\]* ]] || die "kid '$kid' must be non-empty, without \" or \\"
    text=$(openssl pkey -pubin -in "$pem" -noout -text 2>/dev/null) ||
        die "$pem: not a PEM public key (make one with openssl pkey -in private.pem -pubout)"
    if grep -q 'NIST CURVE: P-256\|ASN1 OID: prime256v1' <<<"$text"; then
        # SubjectPublicKeyInfo of a P-256 key: 91 bytes, 26 of header, then 04 || x || y.
        der=$(openssl pkey -pubin -in "$pem" -outform DER | basenc --base16 -w0)
        ((${#der} == 182)) || die "$pem: unexpected P-256 key encoding"
        x=$(hexbytes <<<"${der:54:64}" | b64url)
        y=$(hexbytes <<<"${der:118:64}" | b64url)
        keys+=("{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"$x\",\"y\":\"$y\",\"alg\":\"ES256\",\"use\":\"sig\",\"kid\":\"$kid\"}")
    elif grep -q '^Modulus\|^RSA Public-Key\|^Public-Key: ([0-9]* bit)' <<<"$text" &&
        modulus=$(openssl rsa -pubin -in "$pem" -noout -modulus 2>/dev/null); then
        hex=${modulus#Modulus=}
        bits=$(grep -m1 -o '([0-9]* bit)' <<<"$text" | tr -dc 0-9)
        ((bits >= 2048 && bits <= 8192)) || die "$pem: RSA key of $bits bits (RS256 takes 2048 to 8192)"
        n=$(hexbytes <<<"$hex" | b64url)
        e=$(grep -o 'Exponent: [0-9]* (0x[0-9a-fA-F]*)' <<<"$text" | sed 's/.*(0x\(.*\))/\1/')
        ((${#e} % 2 == 0)) || e=0$e
        e=$(hexbytes <<<"${e^^}" | b64url)
        keys+=("{\"kty\":\"RSA\",\"n\":\"$n\",\"e\":\"$e\",\"alg\":\"RS256\",\"use\":\"sig\",\"kid\":\"$kid\"}")
    else
        die "$pem: neither a P-256 nor an RSA public key"
    fi
done
printf '{"keys":[\n'
for i in "${!keys[@]}"; do
    ((i == ${#keys[@]} - 1)) && sep='' || sep=','
    printf '  %s%s\n' "${keys[i]}" "$sep"
done
printf ']}\n'
