"""The real agent_queue server (and identity, for user-mode principals) on real sockets."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.agent_queue.app import build_server
from tests.service.conftest import Running, start, stop
from tests.support.agent_queue_builders import ManualClock
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc

NO_TEMPORAL = "127.0.0.1:1"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def agent_queue(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running, clock: ManualClock
) -> AsyncIterator[Running]:
    settings = settings_for(
        ServiceName.AGENT_QUEUE,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        db_pool_size=20,
        # Nothing listens there: retry starts stay in the outbox unless a test brings Temporal.
        temporal_address=NO_TEMPORAL,
    )
    server = await build_server(settings, clock=clock, rng=random.Random(7))
    running = await start(server, agent_queue_pb2_grpc.AgentQueueServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)
