"""Verifies Clerk-issued RS256 JWTs against the issuer's JWKS (docs/architecture.md §4), and
remembers each verified token until it expires."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

import jwt
from jwt import PyJWKClient

from zenthor.auth.principal import Identity
from zenthor.errors import Unauthenticated

# Only RS256: `none` and HMAC algorithms (key confusion) are never accepted.
ALGORITHMS = ["RS256"]
# Verified tokens remembered at once (least recently used go first). A client sends the same
# session token on every call until it expires (Clerk's live for a minute), so a few thousand
# cover every caller of a busy process; each entry is about one token's size.
VERIFIED_CACHE_SIZE = 4_096


class JwtVerifier:
    """RS256 signature, issuer, audience and expiry. A token that passed is remembered until its
    `exp` (plus the leeway, as `jwt.decode` allows): the next call with the same token skips the
    RSA verification and the key lookup, and gets the same identity. Nothing else could change a
    verified token's answer before it expires: the claims are signed, and who the subject is now
    (active, role) is the principal resolver's question, asked on every call."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        leeway_s: float = 10.0,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = VERIFIED_CACHE_SIZE,
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        # Keys are cached; an unknown `kid` triggers one refetch (key rotation), then fails.
        self._jwks = PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)
        self._clock = clock
        self._cache_size = cache_size
        # token → (identity, the time after which it is expired)
        self._verified: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    async def verify(self, token: str) -> Identity:
        hit = self._verified.get(token)
        if hit is not None:
            identity, expires_at = hit
            if self._clock() < expires_at:
                self._verified.move_to_end(token)
                return identity
            del self._verified[token]  # expired: the full check below says so
        identity, expires_at = await self._verify(token)
        self._verified[token] = (identity, expires_at)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> tuple[Identity, float]:
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
        identity = Identity(
            subject=subject,
            email=email if isinstance(email, str) and email else None,
            email_verified=claims.get("email_verified") is True,
        )
        # `exp` is required and numeric (jwt.decode checked it); jwt.decode accepts it up to the leeway.
        return identity, float(claims["exp"]) + self._leeway
