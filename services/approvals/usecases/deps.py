"""What the approvals use cases need, built by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from zenthor.db import DirectPool, UnitOfWorkFactory
from zenthor.notify import ChangeFeed


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    # The runtime's hot pair in single statements (docs/architecture.md §6): ResolveApproval's
    # common case and WaitForApproval's re-read after each wake-up.
    db: DirectPool
    clock: Callable[[], datetime]
    # Wakes the two watches (WatchApprovals, WaitForApproval) when an approval changes.
    feed: ChangeFeed
    # Delivers the outbox's events (approval.requested webhooks) at once after a commit.
    kick_outbox: Callable[[], None] = lambda: None
