"""`make dev`'s stand-in for Clerk: an RS256 key kept in the data dir, its JWKS served over HTTP on
127.0.0.1, and session tokens signed for any email with the claims Clerk's `convex` template sends.

Dev only, by construction: it signs a token for whoever asks, so the services accept an
`http://` issuer only with `ZENTHOR_DEV_ISSUER=1` and only on a loopback address
(zenthor/config.py), and this process refuses to serve without that flag. `make dev` sets it for
its children alone.

    python -m zenthor.devstack.issuer --port 8090 --data-dir .data   # started by `make dev`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KEY_FILE = "dev-issuer-key.pem"
JWKS_PATH = "/.well-known/jwks.json"
DEV_FLAG = "ZENTHOR_DEV_ISSUER"
# Clerk's session tokens live 60 s and the browser refreshes them; a token pasted into a shell
# should outlive a coffee.
DEFAULT_TTL_S = 3600
# Clerk's `azp`: the origin the session belongs to (the web app's dev server).
AUTHORIZED_PARTY = "http://localhost:3000"


def create_key_if_missing(data_dir: Path) -> None:
    """The stack's signing key, generated once into the data dir (owner-only) and reused, so
    tokens minted before a restart stay valid."""
    path = data_dir / KEY_FILE
    if path.exists():
        return
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.touch(mode=0o600)
    path.write_bytes(pem)


def load_key(data_dir: Path) -> rsa.RSAPrivateKey:
    path = data_dir / KEY_FILE
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA key")
    return loaded


def subject_for(email: str) -> str:
    """A Clerk-like user id, the same for the same email, so a second token is the same user."""
    return "user_dev_" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:24]


class DevIssuer:
    def __init__(self, data_dir: Path, url: str, audience: str = "convex") -> None:
        self.url = url.rstrip("/")
        self.audience = audience
        self.key = load_key(data_dir)
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        # The key's own fingerprint as its id: a new key is a new kid, and verifiers refetch.
        self.kid = "dev-" + hashlib.sha256(f"{jwk['n']}.{jwk['e']}".encode()).hexdigest()[:16]
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        self.jwk = jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def token(self, email: str, name: str | None = None, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> str:
        """A session token for `email`, verified as Clerk would have it (`email_verified`)."""
        issued = int(time.time() if now is None else now)
        address = email.strip().lower()
        subject = subject_for(address)
        claims = {
            "sub": subject,
            "iss": self.url,
            "aud": self.audience,
            "azp": AUTHORIZED_PARTY,
            "sid": "sess_dev_" + hashlib.sha256(f"{subject}:{issued}".encode()).hexdigest()[:24],
            "iat": issued,
            "nbf": issued - 5,
            "exp": issued + ttl_s,
            "email": address,
            "email_verified": True,
            "name": name or address.split("@", 1)[0].capitalize(),
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


def jwks_server(issuer: DevIssuer, host: str, port: int) -> ThreadingHTTPServer:
    """Serves the JWKS (and OIDC discovery, which points at it); anything else is 404."""
    discovery = {"issuer": issuer.url, "jwks_uri": issuer.url + JWKS_PATH, "id_token_signing_alg_values_supported": ["RS256"]}
    documents = {JWKS_PATH: issuer.jwks(), "/.well-known/openid-configuration": discovery}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = documents.get(self.path)
            body = json.dumps(document if document is not None else {"error": "not found"}).encode()
            self.send_response(200 if document is not None else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            print(f"[issuer] {self.address_string()} {format % args}", flush=True)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zenthor.devstack.issuer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--audience", default=os.environ.get("CLERK_JWT_AUDIENCE", "convex"))
    args = parser.parse_args(argv)
    if os.environ.get(DEV_FLAG) != "1":
        print(f"refusing to start: the dev issuer signs tokens for anyone; it runs only with {DEV_FLAG}=1 "
              "(`make dev` sets it)", file=sys.stderr)
        return 2
    issuer = DevIssuer(args.data_dir, f"http://127.0.0.1:{args.port}", args.audience)
    server = jwks_server(issuer, "127.0.0.1", args.port)
    # SIGTERM from the stack: stop serving, then exit 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: threading.Thread(target=server.shutdown).start())
    print(f"[issuer] serving {issuer.url}{JWKS_PATH} (kid {issuer.kid})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
