"""Retries carried by Temporal (docs/architecture.md §8), for any service.

A service that fails something retryably moves it to a waiting state and, in the same
transaction, stores an outbox event (`add_retry`). After commit the outbox relay starts
`RetryWorkflow` by name (`retry_starter`); the workflow (workflows/retry.py) sleeps the
backoff, then calls the target RPC (e.g. `agent_queue.ReleaseJob`) with the stored request.

    service tx: row → WAITING_RETRY + outbox event ──relay──► RetryWorkflow(id retry-<id>-<n>)
                                                               sleep(delay) → target RPC

The workflow id `retry-<entity id>-<attempt>` makes a duplicate start a no-op (the relay is
at-least-once); with Temporal down the event stays undelivered and the relay re-drives it.
Services never import `workflows/`: they start the workflow by its name.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from zenthor.backoff import backoff_delay_s
from zenthor.config import Settings
from zenthor.logs import forward_temporal_core_logs, get_logger
from zenthor.outbox import Handler, add_event
from zenthor.tracing import temporal_interceptors

log = get_logger("zenthor.retries")

RETRY_TOPIC = "temporal.retry"
RETRY_WORKFLOW = "RetryWorkflow"
DEFAULT_BASE_S = 10.0
DEFAULT_CAP_S = 300.0
CONNECT_TIMEOUT = timedelta(seconds=5)


@dataclass
class RetryInput:
    """RetryWorkflow's one input."""

    target: str  # "<service>.<Rpc>", e.g. "agent_queue.ReleaseJob"
    request: dict[str, Any] = field(default_factory=dict)  # the request as proto JSON
    delay_s: float = 0.0


def retry_delay_s(
    attempt: int, rng: random.Random | None = None, *, base_s: float = DEFAULT_BASE_S, cap_s: float = DEFAULT_CAP_S
) -> float:
    """How long RetryWorkflow sleeps before attempt `attempt + 1`: the kit's one backoff rule
    (zenthor.backoff.backoff_delay_s) with the retry defaults (10 s doubling up to 5 min)."""
    return backoff_delay_s(attempt, rng, base_s=base_s, cap_s=cap_s)


def retry_workflow_id(entity_id: str, attempt: int) -> str:
    return f"retry-{entity_id}-{attempt}"


async def add_retry(
    conn: AsyncConnection,
    outbox: sa.Table,
    *,
    target: str,
    entity_id: str,
    attempt: int,
    request: Mapping[str, Any],
    delay_s: float,
    now: datetime,
) -> str:
    """Stores the start of RetryWorkflow in the caller's transaction; returns the workflow
    id (also the outbox key, so a repeated call stores one event)."""
    workflow_id = retry_workflow_id(entity_id, attempt)
    payload = {"workflow_id": workflow_id, "target": target, "request": dict(request), "delay_s": delay_s}
    await add_event(conn, outbox, RETRY_TOPIC, workflow_id, payload, now)
    return workflow_id


class TemporalClientProvider:
    """One Temporal client per process, connected on first use; a failed connect is retried
    on the next use (the outbox relay re-drives the event meanwhile)."""

    def __init__(self, address: str, namespace: str = "default", *, tracing: bool = False) -> None:
        self._address = address
        self._namespace = namespace
        self._tracing = tracing
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> TemporalClientProvider:
        return cls(settings.temporal_address, settings.temporal_namespace, tracing=settings.tracing_enabled)

    @classmethod
    def of(cls, client: Client) -> TemporalClientProvider:
        """A provider for an already connected client (tests: the time-skipping one)."""
        provider = cls(client.service_client.config.target_host, client.namespace)
        provider._client = client
        return provider

    async def get(self) -> Client:
        async with self._lock:
            if self._client is None:
                forward_temporal_core_logs()  # before the first client: JSON lines from Core too
                self._client = await Client.connect(
                    self._address,
                    namespace=self._namespace,
                    connect_timeout=CONNECT_TIMEOUT,
                    # With tracing on, a workflow started here continues the caller's trace.
                    interceptors=temporal_interceptors(self._tracing),
                )
            return self._client


def retry_starter(temporal: TemporalClientProvider, task_queue: str) -> Handler:
    """The outbox handler for RETRY_TOPIC: starts RetryWorkflow; an id already used (running
    or finished) means an earlier delivery started it, which is success."""

    async def start(payload: Mapping[str, Any]) -> None:
        client = await temporal.get()
        try:
            await client.start_workflow(
                RETRY_WORKFLOW,
                RetryInput(target=payload["target"], request=dict(payload["request"]), delay_s=payload["delay_s"]),
                id=payload["workflow_id"],
                task_queue=task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except WorkflowAlreadyStartedError:
            log.info("retry.duplicate_start", workflow_id=payload["workflow_id"])
            return
        log.info("retry.started", workflow_id=payload["workflow_id"], target=payload["target"])

    return start
