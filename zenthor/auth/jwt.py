"""Verifies Clerk-issued RS256 JWTs against the issuer's JWKS (docs/architecture.md §4)."""

from __future__ import annotations

import asyncio

import jwt
from jwt import PyJWKClient

from zenthor.auth.principal import Identity
from zenthor.errors import Unauthenticated

# Only RS256: `none` and HMAC algorithms (key confusion) are never accepted.
ALGORITHMS = ["RS256"]


class JwtVerifier:
    def __init__(self, issuer: str, audience: str, jwks_url: str, leeway_s: float = 10.0) -> None:
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        # Keys are cached; an unknown `kid` triggers one refetch (key rotation), then fails.
        self._jwks = PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    async def verify(self, token: str) -> Identity:
        try:
            # The JWKS fetch is blocking urllib; keep it off the event loop.
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
            claims = jwt.decode(
                token,
                key=signing_key.key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError as e:
            raise Unauthenticated("Not authenticated: token expired") from e
        except jwt.InvalidAudienceError as e:
            raise Unauthenticated("Not authenticated: wrong audience") from e
        except jwt.InvalidIssuerError as e:
            raise Unauthenticated("Not authenticated: wrong issuer") from e
        except jwt.PyJWKClientError as e:
            raise Unauthenticated("Not authenticated: unknown signing key") from e
        except jwt.PyJWTError as e:
            raise Unauthenticated("Not authenticated: invalid token") from e
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("Not authenticated: token has no subject")
        email = claims.get("email")
        return Identity(
            subject=subject,
            email=email if isinstance(email, str) and email else None,
            email_verified=claims.get("email_verified") is True,
        )
