"""What the delivery use cases need, built by the composition root."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from zenthor.db import DirectPool, UnitOfWorkFactory
from zenthor.notify import ChangeFeed
from zenthor.retries import DEFAULT_BASE_S, DEFAULT_CAP_S


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]
    # The claim's single statement: no unit of work around it.
    db: DirectPool
    feed: ChangeFeed
    # The deployment's WhatsApp account (`WHATSAPP_ACCOUNT_ID`): rows enqueued without one get
    # it, so no row is unclaimable (docs/hardening.md #10).
    default_account_id: str
    kick_outbox: Callable[[], None]
    rng: random.Random
    # Backoff of a failed send (zenthor.retries.retry_delay_s): attempt 1 waits base/2..base, …
    retry_base_s: float = DEFAULT_BASE_S
    retry_cap_s: float = DEFAULT_CAP_S
    # WatchOutbound re-sends the count at least this often, changed or not.
    watch_heartbeat_s: float = 30.0
