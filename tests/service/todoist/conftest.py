"""The real todoist server, with the real identity (principals, contacts) and messages
(conversation owners) servers beside it, a local fake Todoist on real sockets, and — for the
OAuth flows — the production Temporal worker on the session's dev server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from temporalio.client import Client

from services.messages.app import build_server as build_messages
from services.todoist.app import build_server as build_todoist
from tests.service.conftest import Running, start, stop
from tests.support.database import TestDatabase
from tests.support.fake_clock import FakeClock
from tests.support.grpc_client import SERVICE_KEY, bearer
from tests.support.jwks import FakeClerkIssuer
from tests.workflows.conftest import client, task_queue, temporal_address, temporal_env
from workflows.worker import build_worker
from zenthor.clients import Peers
from zenthor.config import ServiceName, Settings
from zenthor.devstack.fake_todoist import FakeTodoist
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2_grpc
from zenthor.retries import TemporalClientProvider

# The Temporal dev server's fixtures, used here too.
REUSED_FIXTURES = (client, task_queue, temporal_address, temporal_env)

# The scenarios' OAuth app (TODOIST_CLIENT_ID / _SECRET / _OAUTH_REDIRECT_URI).
CLIENT_ID = "tdcid"
CLIENT_SECRET = "tdsec"
REDIRECT_URI = "https://app.example.com/settings"
TOKEN_KEY = Fernet.generate_key().decode()
# Nothing listens there: tests that bring no Temporal fail to start a flow, visibly.
NO_TEMPORAL = "127.0.0.1:1"


def alice_user(issuer: FakeClerkIssuer) -> tuple[tuple[str, str], ...]:
    return bearer(issuer.token("user_alice"))


class RecordingSleep:
    """The HTTP client's waits between retries, recorded and not actually waited."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@dataclass
class TodoistStack:
    todoist: Running
    messages: Running
    fake: FakeTodoist
    clock: FakeClock
    sleeps: RecordingSleep
    db: TestDatabase
    settings: Settings
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stub(self) -> Any:
        return self.todoist.stub

    @property
    def issuer(self) -> FakeClerkIssuer:
        return self.todoist.issuer


TodoistFactory = Callable[..., Awaitable[TodoistStack]]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake_todoist() -> Any:
    fake = FakeTodoist(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    yield fake
    fake.close()


@pytest.fixture
async def messages(settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running) -> AsyncIterator[Running]:
    settings = settings_for(ServiceName.MESSAGES, identity_addr=f"127.0.0.1:{identity.server.port}")
    running = await start(await build_messages(settings), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


@pytest.fixture
async def todoist_factory(
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    identity: Running,
    messages: Running,
    fake_todoist: FakeTodoist,
    clock: FakeClock,
) -> AsyncIterator[TodoistFactory]:
    started: list[Running] = []

    async def make(
        *,
        temporal_address: str = NO_TEMPORAL,
        task_queue: str = "todoist-test",
        temporal: TemporalClientProvider | None = None,
        outbox_poll_s: float = 0.05,
        **overrides: Any,
    ) -> TodoistStack:
        values: dict[str, Any] = {
            "identity_addr": f"127.0.0.1:{identity.server.port}",
            "messages_addr": f"127.0.0.1:{messages.server.port}",
            "todoist_client_id": CLIENT_ID,
            "todoist_client_secret": CLIENT_SECRET,
            "todoist_oauth_redirect_uri": REDIRECT_URI,
            "todoist_oauth_token_url": fake_todoist.token_url,
            "todoist_api_base_url": fake_todoist.api_base_url,
            "todoist_token_key": TOKEN_KEY,
            "temporal_address": temporal_address,
            "temporal_task_queue": task_queue,
            **overrides,
        }
        settings = settings_for(ServiceName.TODOIST, **values)
        sleeps = RecordingSleep()
        server = await build_todoist(
            settings, clock=clock, temporal=temporal, sleep=sleeps, outbox_poll_s=outbox_poll_s, watch_resync_s=0.2
        )
        running = await start(server, todoist_pb2_grpc.TodoistServiceStub, settings, db, clerk_issuer)
        started.append(running)
        return TodoistStack(running, messages, fake_todoist, clock, sleeps, db, settings)

    yield make
    for running in started:
        await stop(running)


@pytest.fixture
async def todoist(todoist_factory: TodoistFactory) -> TodoistStack:
    """The service without Temporal: connection status, disconnect, tasks, cleanup."""
    return await todoist_factory()


@asynccontextmanager
async def oauth_worker(client: Client, task_queue: str, stack: TodoistStack) -> AsyncIterator[None]:
    """The production worker (build_worker), reaching this todoist server over gRPC."""
    peers = Peers(Settings(todoist_addr=f"127.0.0.1:{stack.todoist.server.port}", service_key=SERVICE_KEY))  # type: ignore[arg-type]
    try:
        async with build_worker(client, task_queue, peers, grace=timedelta(0)):
            yield
    finally:
        await peers.close()


@pytest.fixture
async def oauth(
    todoist_factory: TodoistFactory, client: Client, task_queue: str, temporal_address: str
) -> AsyncIterator[TodoistStack]:
    """The service with Temporal and the worker running its OAuth workflows."""
    stack = await todoist_factory(temporal_address=temporal_address, task_queue=task_queue)
    stack.extra["client"] = client
    async with oauth_worker(client, task_queue, stack):
        yield stack
