"""A local stand-in for Clerk's issuer: serves a real JWKS over HTTP and mints RS256 tokens."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.support.http_fake import JsonHandler, LocalHttpServer

AUDIENCE = "convex"


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeClerkIssuer:
    def __init__(self) -> None:
        self.key = new_rsa_key()
        self.kid = "test-key-1"
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        self.requests = 0
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if self.path != "/.well-known/jwks.json":
                    self.send_error(404)
                    return
                self.send_json(200, {"keys": [jwk]})

        self._http = LocalHttpServer(Handler)
        self.issuer = self._http.base_url

    def token(
        self,
        sub: str,
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        issuer: str | None = None,
        audience: str = AUDIENCE,
        expires_in: float = 300,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {"sub": sub, "iss": issuer or self.issuer, "aud": audience, "iat": now, "nbf": now - 1,
                   "exp": now + int(expires_in), **claims}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": kid or self.kid})

    def close(self) -> None:
        self._http.close()
