"""What the delivery use cases need, built by the composition root."""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime

from zenthor.db import DirectPool, UnitOfWorkFactory
from zenthor.notify import ChangeFeed
from zenthor.outbox import Kick
from zenthor.retries import DEFAULT_BASE_S, DEFAULT_CAP_S


@dataclass(frozen=True)
class WebhookOptions:
    """The webhook settings (zenthor.config, ZENTHOR_WEBHOOKS_*): the dev address flag, and the
    retry schedule and POST bound each delivery's workflow is started with."""

    allow_private: bool = False
    retry_initial_s: float = 10.0
    retry_max_interval_s: float = 14_400.0
    max_attempts: int = 13
    timeout_s: float = 15.0


JobEventListeners = Callable[[Collection[uuid.UUID], bool], Awaitable[None]]


async def _no_linked_users(contact_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    return {}


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
    # Delivers just-committed outbox events now; the hot paths name their topic.
    kick_outbox: Kick
    rng: random.Random
    # Registers users with agent_queue, which writes job events only for them (the flag: every
    # owner of an endpoint for job events is registered); peers.py. Raises Unavailable.
    job_event_listeners: JobEventListeners
    # Backoff of a failed send (zenthor.retries.retry_delay_s): attempt 1 waits base/2..base, …
    retry_base_s: float = DEFAULT_BASE_S
    retry_cap_s: float = DEFAULT_CAP_S
    # WatchOutbound re-sends the count at least this often, changed or not.
    watch_heartbeat_s: float = 30.0
    # --- completion webhooks ---
    webhooks: WebhookOptions = field(default_factory=WebhookOptions)
    # The web users WhatsApp contacts are linked to (identity, one call for many), for events of
    # contact-owned conversations; implemented in peers.py.
    linked_users: Callable[[Collection[uuid.UUID]], Awaitable[dict[uuid.UUID, uuid.UUID]]] = _no_linked_users
    token_bytes: Callable[[int], bytes] = secrets.token_bytes
