"""What the use cases need from the outside, built once by the composition root."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from zenthor.clerk import ClerkProfile
from zenthor.db import UnitOfWorkFactory


class ClerkDirectory(Protocol):
    """Every user Clerk knows, oldest first (peers.ClerkBackendApi reads the Backend API)."""

    def users(self) -> AsyncIterator[ClerkProfile]: ...


def _no_kick() -> None:
    return None


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]
    # Lower-cased emails whose users are admins when no role is stored.
    allowlist: frozenset[str]
    clerk: ClerkDirectory
    # The WhatsApp account whose egress sends verification codes (docs/hardening.md #10).
    verification_account_id: str = "default"
    # Verification codes come from a CSPRNG; tests pass a predictable one.
    randbelow: Callable[[int], int] = secrets.randbelow
    # Wakes the outbox relay once a unit of work that stored events has committed.
    kick_outbox: Callable[[], None] = _no_kick
