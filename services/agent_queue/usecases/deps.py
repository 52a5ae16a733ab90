"""What the use cases need from the outside, built once by the composition root."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from zenthor.db import DirectPool, UnitOfWorkFactory
from zenthor.notify import ChangeFeed
from zenthor.retries import DEFAULT_BASE_S


def _no_kick() -> None:
    return None


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]
    # The hot paths' single statements (enqueue, claim, acknowledge, heartbeat): no unit of work.
    db: DirectPool
    # Jittered backoffs; tests pass a seeded one.
    rng: random.Random = field(default_factory=random.Random)
    # Delivers freshly committed outbox events at once (the relay re-drives failures).
    kick_outbox: Callable[[], None] = _no_kick
    feed: ChangeFeed | None = None
    # First retry waits base/2..base, doubling per attempt (zenthor.retries.retry_delay_s).
    retry_base_s: float = DEFAULT_BASE_S
