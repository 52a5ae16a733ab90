"""A verified JWT is remembered until it expires (zenthor/auth/jwt.py): the same token again costs
no signature check, and is checked again in full once its `exp` (plus the leeway) has passed. Any
other token, a tampered copy included, is verified as if nothing were remembered."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest

from tests.support.jwks import FakeClerkIssuer, new_rsa_key
from zenthor.auth.jwt import JwtVerifier
from zenthor.errors import Unauthenticated

LEEWAY_S = 10.0


class Decodes:
    """Counts the signature checks the verifier runs (jwt.decode, observed, not replaced)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real: Callable[..., Any] = jwt.decode

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(jwt, "decode", counting)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def verifier(issuer: FakeClerkIssuer, clock: Clock, cache_size: int = 100) -> JwtVerifier:
    return JwtVerifier(
        issuer.issuer, "convex", issuer.issuer + "/.well-known/jwks.json", LEEWAY_S, clock=clock, cache_size=cache_size
    )


async def test_a_token_is_checked_once_then_answered_from_memory(
    clerk_issuer: FakeClerkIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = Decodes(monkeypatch)
    check = verifier(clerk_issuer, Clock())
    token = clerk_issuer.token("user_cached", email="cached@example.com", email_verified=True)
    first = await check.verify(token)
    again = await check.verify(token)
    assert first == again and first.subject == "user_cached" and first.email_verified
    assert decodes.count == 1


async def test_a_remembered_token_is_checked_again_once_it_expires(
    clerk_issuer: FakeClerkIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = clerk_issuer.token("user_expiring", expires_in=60)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    decodes = Decodes(monkeypatch)
    clock = Clock()
    check = verifier(clerk_issuer, clock)
    await check.verify(token)
    clock.now = exp + LEEWAY_S - 0.001  # still accepted by the full check too
    await check.verify(token)
    assert decodes.count == 1
    clock.now = exp + LEEWAY_S
    await check.verify(token)  # not answered from memory: checked again (still valid by real time)
    assert decodes.count == 2


async def test_a_tampered_copy_of_a_remembered_token_is_refused(clerk_issuer: FakeClerkIssuer) -> None:
    check = verifier(clerk_issuer, Clock())
    token = clerk_issuer.token("user_victim")
    await check.verify(token)
    forged = clerk_issuer.token("user_victim", key=new_rsa_key())  # same claims, another key
    with pytest.raises(Unauthenticated):
        await check.verify(forged)
    header, payload, signature = token.split(".")
    with pytest.raises(Unauthenticated):
        await check.verify(f"{header}.{payload}.{signature[:-4]}AAAA")


async def test_the_memory_is_bounded(clerk_issuer: FakeClerkIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    decodes = Decodes(monkeypatch)
    check = verifier(clerk_issuer, Clock(), cache_size=2)
    tokens = [clerk_issuer.token(f"user_{n}") for n in range(3)]
    for token in tokens:
        await check.verify(token)
    await check.verify(tokens[2])  # the newest are remembered
    assert decodes.count == 3
    await check.verify(tokens[0])  # the oldest was let go
    assert decodes.count == 4
