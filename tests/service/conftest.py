"""Real gRPC servers on real sockets, each against the test's own database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from services.agent_queue.app import build_server as build_agent_queue
from services.agent_queue.store.job_events import EVERYONE
from services.approvals.app import build_server as build_approvals
from services.identity.app import build_server as build_identity
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from zenthor import ids
from zenthor.config import ServiceName, Settings
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc
from zenthor.server import GrpcServer


@dataclass
class Running:
    server: GrpcServer
    channel: grpc.aio.Channel
    stub: Any
    settings: Settings
    db: TestDatabase
    issuer: FakeClerkIssuer


async def start(server: GrpcServer, stub_class: Any, settings: Settings, db: TestDatabase, issuer: FakeClerkIssuer) -> Running:
    port = await server.start(0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return Running(server, channel, stub_class(channel), settings, db, issuer)


async def start_approvals(
    settings_for: Any, db: TestDatabase, issuer: FakeClerkIssuer, identity: Running, **build: Any
) -> Running:
    """The real approvals server, resolving principals through `identity`; `build` goes to its
    build_server (a clock, the watch resync)."""
    settings = settings_for(ServiceName.APPROVALS, identity_addr=f"127.0.0.1:{identity.server.port}")
    return await start(await build_approvals(settings, **build), approvals_pb2_grpc.ApprovalsServiceStub, settings, db, issuer)


async def stop(running: Running) -> None:
    await running.channel.close()
    await running.server.stop(0)


@pytest.fixture
async def identity(settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer) -> AsyncIterator[Running]:
    settings = settings_for(ServiceName.IDENTITY)
    running = await start(await build_identity(settings), identity_pb2_grpc.IdentityServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


# Nothing listens there.
NOBODY = "127.0.0.1:1"


def lone_agent_queue_settings(settings_for: Any) -> Settings:
    """agent_queue's settings with every peer pointed nowhere: a server delivery registers
    endpoint owners with (AddJobEventListeners), nothing more."""
    return settings_for(  # type: ignore[no-any-return]
        ServiceName.AGENT_QUEUE, identity_addr=NOBODY, delivery_addr=NOBODY, messages_addr=NOBODY, temporal_address=NOBODY
    )


@pytest.fixture
async def job_event_registry(settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer) -> AsyncIterator[Running]:
    """A real agent_queue server for delivery to register endpoint owners with."""
    settings = lone_agent_queue_settings(settings_for)
    server = await build_agent_queue(settings)
    running = await start(server, agent_queue_pb2_grpc.AgentQueueServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


def job_event_listeners(db: TestDatabase) -> set[str]:
    """The users agent_queue writes job events for, as `usr_…` ids; `everyone` for the row that
    stands for all of them (migration 0007)."""
    rows = db.sql("SELECT user_id FROM agent_queue.job_event_listeners")
    return {"everyone" if u == EVERYONE else ids.USER.format(u) for (u,) in rows}
