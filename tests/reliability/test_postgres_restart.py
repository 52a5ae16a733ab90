"""A PostgreSQL restart during sends: several users send messages in a loop through the real
messages server (and identity resolving them) while their PostgreSQL — a dedicated server, not
the session's — stops and starts again. Every failed call is UNAVAILABLE, which a client may
retry, never INTERNAL; a client that retries UNAVAILABLE loses nothing: messages stored =
sends acknowledged = sends made."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.identity.app import build_server as build_identity
from services.messages.app import build_server as build_messages
from tests.reliability.conftest import Record, Tally
from tests.service.conftest import Running, start, stop
from tests.support.builders import add_user
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.support.postgres_process import RestartablePostgres
from tests.support.retrying_client import UNAVAILABLE_ONLY, RetryingClient
from zenthor.config import ServiceName
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.migrate import migrate
from zenthor.provision import provision

SERVICES = (ServiceName.IDENTITY, ServiceName.MESSAGES)
SEND_TIMEOUT_S = 240.0


@dataclass(frozen=True)
class Size:
    users: int
    sends_per_user: int
    restarts: int

    @property
    def sends(self) -> int:
        return self.users * self.sends_per_user


@dataclass(frozen=True)
class OwnPostgres:
    server: RestartablePostgres
    db: TestDatabase


@pytest.fixture
async def own_pg(tmp_path: Path) -> AsyncIterator[OwnPostgres]:
    """A PostgreSQL of this test's own, so restarting it disturbs no other test."""
    server = RestartablePostgres(tmp_path / "pg" / "data", free_port())
    await server.start()
    try:
        admin = server.pg.admin_dsn("zenthor")
        await asyncio.to_thread(server.pg.ensure_database, "zenthor")
        await asyncio.to_thread(provision, admin, SERVICES)
        for service in SERVICES:
            await asyncio.to_thread(migrate, service, admin)
        yield OwnPostgres(server, TestDatabase(server.pg, "zenthor"))
    finally:
        await server.stop()


@dataclass
class Stack:
    identity: Running
    messages: Running


@pytest.fixture
async def stack(own_pg: OwnPostgres, settings_for: Any, clerk_issuer: FakeClerkIssuer) -> AsyncIterator[Stack]:
    db = own_pg.db
    identity_settings = settings_for(ServiceName.IDENTITY, database_url=db.dsn_for(ServiceName.IDENTITY))
    identity = await start(
        await build_identity(identity_settings), identity_pb2_grpc.IdentityServiceStub, identity_settings, db, clerk_issuer
    )
    messages_settings = settings_for(
        ServiceName.MESSAGES,
        database_url=db.dsn_for(ServiceName.MESSAGES),
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=f"127.0.0.1:{free_port()}",  # nobody: the job events wait in the outbox
    )
    messages = await start(
        await build_messages(messages_settings), messages_pb2_grpc.MessagesServiceStub, messages_settings, db, clerk_issuer
    )
    try:
        yield Stack(identity, messages)
    finally:
        await stop(messages)
        await stop(identity)


async def send_all(stub: Any, user: Any, n_user: int, size: Size, acked: list[str], retries: RetryingClient) -> None:
    conversation = (await retries.call(lambda: stub.CreateConversation(pb.CreateConversationRequest(), metadata=user, timeout=15))).conversation
    for n in range(size.sends_per_user):
        content = f"user-{n_user}-send-{n}"
        request = pb.SendMessageRequest(conversation_id=conversation.id, content=content)
        await retries.call(lambda request=request: stub.SendMessage(request, metadata=user, timeout=15))
        acked.append(content)


async def run_scenario(
    own_pg: OwnPostgres, stack: Stack, clerk_issuer: FakeClerkIssuer, size: Size, record: Record, name: str
) -> tuple[Tally, Counter[str]]:
    users = []
    for n in range(size.users):
        add_user(own_pg.db, f"user_sender_{n}", email=f"sender{n}@example.com")
        users.append(bearer(clerk_issuer.token(f"user_sender_{n}")))
    acked: list[str] = []
    # Only UNAVAILABLE is retried: any other failure ends the scenario and is counted.
    retries = RetryingClient(retry_on=UNAVAILABLE_ONLY, give_up_s=SEND_TIMEOUT_S)
    stub = stack.messages.stub
    sending = asyncio.gather(*(send_all(stub, user, n, size, acked, retries) for n, user in enumerate(users)))
    try:
        for restart_no in range(1, size.restarts + 1):
            async with asyncio.timeout(SEND_TIMEOUT_S):
                while len(acked) < size.sends * restart_no // (size.restarts + 1) and not sending.done():  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            await own_pg.server.restart()
        await asyncio.wait_for(sending, SEND_TIMEOUT_S)
    except grpc.aio.AioRpcError:
        pass  # a status other than UNAVAILABLE: counted in retries.failures
    finally:
        sending.cancel()
    stored = Counter(content for (content,) in own_pg.db.sql("SELECT content FROM messages.messages WHERE role = 'user'"))
    tally = Tally(
        name,
        lost=size.sends - sum(1 for content in acked if stored[content] >= 1),
        duplicated=sum(n - 1 for n in stored.values()),
        stuck=0,
        details=f"{len(acked)} of {size.sends} sends, {size.restarts} restarts, failed attempts by status {dict(retries.failures)}",
    )
    record(tally)
    return tally, retries.failures


async def test_a_postgres_restart_reaches_senders_as_unavailable_and_loses_nothing(
    own_pg: OwnPostgres, stack: Stack, clerk_issuer: FakeClerkIssuer, record_tally: Record
) -> None:
    size = Size(users=4, sends_per_user=20, restarts=1)
    tally, failures = await run_scenario(own_pg, stack, clerk_issuer, size, record_tally, "postgres restart")
    assert set(failures) <= {"UNAVAILABLE"}, failures
    assert failures["UNAVAILABLE"] > 0, "no send met the restart: the scenario proved nothing"
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_postgres_restarts_reach_senders_as_unavailable_and_lose_nothing(
    own_pg: OwnPostgres, stack: Stack, clerk_issuer: FakeClerkIssuer, record_tally: Record
) -> None:
    size = Size(users=6, sends_per_user=50, restarts=3)
    tally, failures = await run_scenario(own_pg, stack, clerk_issuer, size, record_tally, "postgres restart (soak)")
    assert set(failures) <= {"UNAVAILABLE"}, failures
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)
