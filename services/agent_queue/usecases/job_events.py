"""Who gets job events: delivery registers the owners of its endpoints for them
(AddJobEventListeners; why, in store/job_events.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.agent_queue.store import job_events as store
from services.agent_queue.usecases.deps import Deps
from zenthor.errors import InvalidArgument


async def add_job_event_listeners(deps: Deps, users: Sequence[uuid.UUID], all_registered: bool) -> int:
    """Registers `users` (idempotent); with `all_registered`, other users' job events stop being
    written. Answers how many users were new."""
    if len(users) > store.MAX_LISTENERS_PER_CALL:
        raise InvalidArgument("user_ids", f"must hold at most {store.MAX_LISTENERS_PER_CALL} users")
    if store.EVERYONE in users:
        raise InvalidArgument("user_ids", "must name users")
    async with deps.uow() as uow:
        added = await store.add_listeners(uow.conn, users, deps.clock(), all_registered)
        await uow.commit()
    return added
