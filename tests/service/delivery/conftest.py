"""The real delivery server on real sockets, on a clock the test moves; Temporal (dev server,
session-wide) for the tests that follow a retry through RetryWorkflow."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from services.delivery.app import build_server
from tests.service.conftest import NOBODY, Running, start, stop
from tests.support.database import TestDatabase
from tests.support.fake_clock import FakeClock
from tests.support.jwks import FakeClerkIssuer
from tests.workflows.conftest import client, task_queue, temporal_address, temporal_env  # noqa: F401  (fixtures)
from zenthor.config import ServiceName
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc

# NOBODY listens there: retry starts stay in the outbox unless a test brings Temporal, and
# delivery outcomes for messages stay there unless a test brings the messages server.

DeliveryFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def delivery_factory(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, clock: FakeClock, job_event_registry: Running
) -> AsyncIterator[DeliveryFactory]:
    started: list[Running] = []

    async def make(*, clock: Callable[..., Any] = clock, build: dict[str, Any] | None = None, **overrides: Any) -> Running:
        values: dict[str, Any] = {
            "db_pool_size": 20,
            "temporal_address": NOBODY,
            "messages_addr": NOBODY,
            # Endpoints for job events register their owners there (usecases/job_event_owners.py).
            "agent_queue_addr": f"127.0.0.1:{job_event_registry.server.port}",
            "whatsapp_account_id": "default",
            **overrides,
        }
        settings = settings_for(ServiceName.DELIVERY, **values)
        options: dict[str, Any] = {"rng": random.Random(7), "watch_resync_s": 0.05, **(build or {})}
        server = await build_server(settings, clock=clock, **options)
        running = await start(server, delivery_pb2_grpc.DeliveryServiceStub, settings, db, clerk_issuer)
        started.append(running)
        return running

    yield make
    for running in started:
        await stop(running)


@pytest.fixture
async def delivery(delivery_factory: DeliveryFactory) -> Running:
    return await delivery_factory()
