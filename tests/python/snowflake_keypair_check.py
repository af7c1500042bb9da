"""Checks a key-pair JWT made by wharf against Snowflake's official Python connector.

Usage: snowflake_keypair_check.py KEY_PEM ACCOUNT USER WHARF_TOKEN

The connector's own AuthByKeyPair makes a token from the same key; wharf's must carry the
same issuer and subject (account and user folded the connector's way, the public key's
SHA-256 fingerprint), verify with the key's public half under RS256, and not outlive an hour.
Prints "ok" or raises.
"""
import sys
import time

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from snowflake.connector.auth.keypair import AuthByKeyPair

key_path, account, user, token = sys.argv[1:5]
private_key = load_pem_private_key(open(key_path, "rb").read(), password=None)
official = AuthByKeyPair(private_key).prepare(account=account, user=user)
expected = jwt.decode(official, options={"verify_signature": False})
ours = jwt.decode(token, private_key.public_key(), algorithms=["RS256"])
header = jwt.get_unverified_header(token)
assert header["alg"] == "RS256", header
for claim in ("iss", "sub"):
    assert ours[claim] == expected[claim], (claim, ours[claim], expected[claim])
now = time.time()
assert ours["iat"] <= now + 5 and ours["exp"] > now, ours
assert ours["exp"] - ours["iat"] <= 3600, ours
print("ok")
