"""The real messages server on a real socket, with the real identity server resolving user
principals, against the test's own database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from services.messages.app import build_server
from tests.service.conftest import Running, start, stop
from tests.support.builders import add_contact, alice, bob
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer
from tests.support.jwks import FakeClerkIssuer
from tests.support.messages_builders import TestClock
from tests.support.ports import free_port
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
async def messages(
    identity: Running, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, clock: TestClock
) -> AsyncIterator[Running]:
    # Nothing listens on the agent_queue address unless a test starts it there.
    settings = settings_for(
        ServiceName.MESSAGES,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=f"127.0.0.1:{free_port()}",
        rpc_deadline_s=2.0,
    )
    running = await start(
        await build_server(settings, clock=clock), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer
    )
    yield running
    await stop(running)


@dataclass(frozen=True)
class People:
    """The test people: Alice (with WhatsApp contact K1 linked), Bob; their call metadata."""

    alice_id: Any
    bob_id: Any
    k1_id: Any
    alice: tuple[tuple[str, str], ...]
    bob: tuple[tuple[str, str], ...]


@pytest.fixture
def people(db: TestDatabase, clerk_issuer: FakeClerkIssuer) -> People:
    alice_id = alice(db)
    bob_id = bob(db)
    k1 = add_contact(db, "5511999990000", user_id=alice_id)
    return People(
        alice_id=alice_id,
        bob_id=bob_id,
        k1_id=k1,
        alice=bearer(clerk_issuer.token("user_alice")),
        bob=bearer(clerk_issuer.token("user_bob")),
    )
