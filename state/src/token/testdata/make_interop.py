#!/usr/bin/env python3
"""Writes openssl-jwks.json and openssl-tokens.txt from es256.pem and rs256.pem with the
openssl command line only (no Rust): the public keys as a JWK set, and one ES256 and one
RS256 token for device "interop" expiring at 2000000000, so the unit tests check tokens
another implementation signed. Run from this folder: python3 make_interop.py"""
import base64, json, re, subprocess


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def run(args, data=None):
    return subprocess.run(args, input=data, capture_output=True, check=True).stdout


der = run(["openssl", "pkey", "-in", "es256.pem", "-pubout", "-outform", "DER"])
assert len(der) == 91 and der[-65] == 4  # SubjectPublicKeyInfo: ... 04 || x || y
ec = {"kty": "EC", "crv": "P-256", "x": b64(der[-64:-32]), "y": b64(der[-32:]), "kid": "openssl-ec"}
text = run(["openssl", "pkey", "-in", "rs256.pem", "-noout", "-text"]).decode()
hexmod = re.search(r"modulus:\s*\n((?:\s+[0-9a-f:]+\n)+)", text).group(1)
n = bytes.fromhex(re.sub(r"[\s:]", "", hexmod)).lstrip(b"\0")
rsa = {"kty": "RSA", "n": b64(n), "e": "AQAB", "kid": "openssl-rsa"}

claims = b64(json.dumps({"sub": "interop", "exp": 2000000000}, separators=(",", ":")).encode())


def token(alg, kid, sign):
    header = b64(json.dumps({"alg": alg, "kid": kid}, separators=(",", ":")).encode())
    signed = f"{header}.{claims}"
    return f"{signed}.{b64(sign(signed.encode()))}"


def ecdsa_fixed(message):
    """openssl signs ECDSA as DER SEQUENCE { r, s }; JWS wants r || s, 32 bytes each."""
    der = run(["openssl", "dgst", "-sha256", "-sign", "es256.pem"], message)
    ints = re.findall(r"INTEGER\s+:([0-9A-F]+)", run(["openssl", "asn1parse", "-inform", "DER"], der).decode())
    return b"".join(bytes.fromhex(i.rjust(64, "0"))[-32:] for i in ints)


es = token("ES256", "openssl-ec", ecdsa_fixed)
rs = token("RS256", "openssl-rsa", lambda m: run(["openssl", "dgst", "-sha256", "-sign", "rs256.pem"], m))
with open("openssl-jwks.json", "w") as f:
    json.dump({"keys": [ec, rsa]}, f, indent=1)
    f.write("\n")
with open("openssl-tokens.txt", "w") as f:
    f.write(es + "\n" + rs + "\n")
