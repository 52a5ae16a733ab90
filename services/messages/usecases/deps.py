"""What the use cases need from the outside, built once by the composition root, and the names
they share with it (change-feed channels, outbox topics)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from zenthor.db import DirectPool, UnitOfWorkFactory
from zenthor.notify import ChangeFeed

# Change-feed channels (zenthor.notify); keys: conversation id hex / domain.conversations.owner_keys.
CONVERSATION_CHANNEL = "messages_conversation"
CONVERSATION_LIST_CHANNEL = "messages_conversation_list"
CHANNELS = (CONVERSATION_CHANNEL, CONVERSATION_LIST_CHANNEL)

# Outbox topic: agent_queue.EnqueueJob, idempotent by message id (docs/architecture.md §7).
ENQUEUE_JOB_TOPIC = "agent_queue.enqueue_job"
# Outbox topic: agent_queue.CancelConversationJobs for an interrupting send (docs/double-texting.md),
# keyed by the interrupting message's id.
CANCEL_JOBS_TOPIC = "agent_queue.cancel_conversation_jobs"


class ActiveJobs(Protocol):
    """agent_queue's view of a conversation's queue (peers.py implements it over gRPC)."""

    async def any_active(self, conversation_id: uuid.UUID) -> bool:
        """Whether a job of the conversation is pending, processing or waiting for its retry."""
        ...


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]
    feed: ChangeFeed
    # The runtime's per-reply hot path (UpdateStreamingContent) as one statement: no unit of work.
    db: DirectPool
    # Wakes the outbox relay right after a commit that stored an event.
    kick_outbox: Callable[[], None]
    # Asked by a double-texting `reject` send.
    active_jobs: ActiveJobs
