"""A stand-in for Google's OAuth2 token endpoint that checks assertions with Google's own
library (google-auth), for wharf's service-account sign-in test. Bound to 127.0.0.1.

Usage:
  google_token_server.py genkey PEM_PATH          writes a new RSA key
  google_token_server.py serve SA_JSON            serves POST /token; prints the port

For each POST /token (form: grant_type, assertion) it checks, like Google: the grant type is
jwt-bearer; the assertion verifies (RS256) with the public half of the key in SA_JSON and has
not expired; its issuer, scope, audience and key id
equal those of the assertion google-auth's own service_account.Credentials makes from the same
key file. A good assertion gets {"access_token", "expires_in", "token_type"}; a bad one 400
{"error": "invalid_grant", "error_description"}. GET /count answers how many tokens were issued.
"""
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

if sys.argv[1] == "genkey":
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(sys.argv[2], "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    sys.exit(0)

import google.auth.jwt
from cryptography.hazmat.primitives import serialization
from google.oauth2 import service_account

info = json.load(open(sys.argv[2]))
scope = "https://www.googleapis.com/auth/bigquery"
official = service_account.Credentials.from_service_account_info(info, scopes=[scope])
official_claims = google.auth.jwt.decode(
    official._make_authorization_grant_assertion(), verify=False
)
private_key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
public_pem = private_key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
issued = 0


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.answer(200, {"issued": issued})

    def do_POST(self):
        global issued
        length = int(self.headers.get("content-length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        try:
            grant = form["grant_type"][0]
            if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                raise ValueError(f"unsupported grant_type {grant}")
            assertion = form["assertion"][0]
            claims = google.auth.jwt.decode(
                assertion, certs=public_pem.decode(), audience=official_claims["aud"]
            )
            header = google.auth.jwt.decode_header(assertion)
            for claim in ("iss", "scope", "aud"):
                if claims.get(claim) != official_claims.get(claim):
                    raise ValueError(f"{claim} is {claims.get(claim)!r}")
            if header.get("kid") != info["private_key_id"]:
                raise ValueError(f"kid is {header.get('kid')!r}")
        except Exception as e:  # refused like Google refuses: 400 invalid_grant
            self.answer(400, {"error": "invalid_grant", "error_description": str(e)[:200]})
            return
        issued += 1
        self.answer(
            200,
            {"access_token": f"ya29.test-{issued}", "expires_in": 3599, "token_type": "Bearer"},
        )


server = HTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
