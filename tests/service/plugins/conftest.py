"""The real plugins server (with the real identity server resolving admin principals) on a clock
the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.plugins.app import build_server
from tests.service.conftest import Running, start, stop
from tests.support.database import TestDatabase
from tests.support.fake_clock import FakeClock
from tests.support.jwks import FakeClerkIssuer
from zenthor.config import ServiceName
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2_grpc


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def plugins(
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    identity: Running,
    clock: FakeClock,
) -> AsyncIterator[Running]:
    settings = settings_for(ServiceName.PLUGINS, identity_addr=f"127.0.0.1:{identity.server.port}")
    server = await build_server(settings, clock=clock)
    running = await start(server, plugins_pb2_grpc.PluginsServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)
