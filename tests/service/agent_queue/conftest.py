"""The real agent_queue server (and identity, for user-mode principals) on real sockets;
Temporal (dev server, session-wide) for the retry tests."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from services.agent_queue.app import build_server
from services.messages.app import build_server as build_messages
from tests.service.conftest import Running, start, stop
from tests.support.agent_queue_builders import ManualClock
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.workflows.conftest import client, task_queue, temporal_address, temporal_env  # noqa: F401  (fixtures)
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.retries import DEFAULT_BASE_S, TemporalClientProvider

# Nothing listens there: retry starts stay in the outbox unless a test brings Temporal.
NO_TEMPORAL = "127.0.0.1:1"

AgentQueueFactory = Callable[..., Awaitable[Running]]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def agent_queue_factory(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running, clock: ManualClock
) -> AsyncIterator[AgentQueueFactory]:
    started: list[Running] = []

    async def make(
        *,
        clock: Callable[..., Any] = clock,
        outbox_poll_s: float = 1.0,
        retry_base_s: float = DEFAULT_BASE_S,
        temporal: TemporalClientProvider | None = None,
        port: int = 0,
        **overrides: Any,
    ) -> Running:
        values: dict[str, Any] = {
            "identity_addr": f"127.0.0.1:{identity.server.port}",
            "db_pool_size": 20,
            "temporal_address": NO_TEMPORAL,
            **overrides,
        }
        settings = settings_for(ServiceName.AGENT_QUEUE, **values)
        server = await build_server(
            settings,
            clock=clock,
            rng=random.Random(7),
            outbox_poll_s=outbox_poll_s,
            retry_base_s=retry_base_s,
            temporal=temporal,
        )
        if port:  # a peer (messages) was pointed at this port before we existed
            await server.start(port)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
            running = Running(server, channel, agent_queue_pb2_grpc.AgentQueueServiceStub(channel), settings, db, clerk_issuer)
        else:
            running = await start(server, agent_queue_pb2_grpc.AgentQueueServiceStub, settings, db, clerk_issuer)
        started.append(running)
        return running

    yield make
    for running in started:
        await stop(running)


@pytest.fixture
async def agent_queue(agent_queue_factory: AgentQueueFactory) -> Running:
    return await agent_queue_factory()


@dataclass
class WithMessages:
    """agent_queue and the real messages server, each pointed at the other."""

    agent_queue: Running
    messages: Running


@pytest.fixture
async def with_messages(
    agent_queue_factory: AgentQueueFactory,
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    identity: Running,
    clock: ManualClock,
) -> AsyncIterator[WithMessages]:
    aq_port = free_port()
    settings = settings_for(
        ServiceName.MESSAGES,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=f"127.0.0.1:{aq_port}",
    )
    messages = await start(
        await build_messages(settings, clock=clock), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer
    )
    aq = await agent_queue_factory(port=aq_port, messages_addr=f"127.0.0.1:{messages.server.port}", outbox_poll_s=0.05)
    yield WithMessages(aq, messages)
    await stop(messages)
