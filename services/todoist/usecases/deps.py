"""What the todoist use cases need, built by the composition root: the unit of work, a clock,
and three ports peers.py implements (Todoist's HTTP API, conversation owners over gRPC, the
OAuth workflows on Temporal)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.todoist.domain.connections import Profile
from services.todoist.domain.oauth import Callback, FlowOutcome, OAuthSettings, TokenGrant
from services.todoist.domain.tasks import TaskPage, TodoistTask
from services.todoist.domain.tokens import TokenCipher
from zenthor.db import UnitOfWorkFactory
from zenthor.notify import ChangeFeed


class TodoistApi(Protocol):
    """Todoist's OAuth token endpoint and API v1, with bounded retries; failures are domain
    errors carrying the original's message."""

    async def exchange_code(self, code: str) -> TokenGrant: ...

    async def profile(self, access_token: str) -> Profile | None:
        """None on any failure: a missing profile never fails a connection."""
        ...

    async def create_task(self, access_token: str, body: dict[str, Any], request_id: str) -> TodoistTask: ...

    async def list_tasks(
        self, access_token: str, filter_query: str | None, cursor: str | None, limit: int
    ) -> TaskPage: ...

    async def close_task(self, access_token: str, task_id: str, request_id: str) -> None: ...

    async def update_task(
        self, access_token: str, task_id: str, body: dict[str, Any], request_id: str
    ) -> TodoistTask: ...


class ConversationOwners(Protocol):
    async def owner_of(self, conversation_id: uuid.UUID) -> uuid.UUID | None:
        """The conversation's user, else its contact's user; None for neither or no conversation."""
        ...


class OAuthFlows(Protocol):
    """The TodoistOAuthWorkflow of each state, on Temporal."""

    async def start(self, state: str, ttl: timedelta) -> None: ...

    async def submit(self, state: str, callback: Callback) -> FlowOutcome:
        """Signals the state's workflow and waits (bounded) for how it ended."""
        ...

    async def cancel(self, states: Sequence[str]) -> None:
        """Ends superseded flows; best effort (their TTL ends them anyway)."""
        ...


def _no_kick() -> None:
    return None


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]
    oauth: OAuthSettings
    # None when TODOIST_TOKEN_KEY is unset: nothing can be connected then.
    cipher: TokenCipher | None
    todoist: TodoistApi
    owners: ConversationOwners
    flows: OAuthFlows
    feed: ChangeFeed | None = None
    # Delivers freshly committed outbox events (token revocations) at once.
    kick_outbox: Callable[[], None] = _no_kick
    # OAuth states and Todoist idempotency keys (uuid4: os.urandom); tests may pin it.
    new_uuid: Callable[[], uuid.UUID] = field(default=uuid.uuid4)
