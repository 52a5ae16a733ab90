"""What the use cases need from the outside, built once by the composition root, and the names
they share with it (change-feed channels, outbox topics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from zenthor.db import UnitOfWorkFactory
from zenthor.notify import ChangeFeed

# Change-feed channels (zenthor.notify); keys: conversation id hex / domain.conversations.owner_keys.
CONVERSATION_CHANNEL = "messages_conversation"
CONVERSATION_LIST_CHANNEL = "messages_conversation_list"
CHANNELS = (CONVERSATION_CHANNEL, CONVERSATION_LIST_CHANNEL)

# Outbox topic: agent_queue.EnqueueJob, idempotent by message id (docs/architecture.md §7).
ENQUEUE_JOB_TOPIC = "agent_queue.enqueue_job"


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]
    feed: ChangeFeed
    # Wakes the outbox relay right after a commit that stored an event.
    kick_outbox: Callable[[], None]
