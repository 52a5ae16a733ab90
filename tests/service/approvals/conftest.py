"""The real approvals server (with the real identity server resolving principals) on a clock the
test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.approvals.app import build_server
from tests.service.conftest import Running, start, stop
from tests.support.database import TestDatabase
from tests.support.fake_clock import FakeClock
from tests.support.jwks import FakeClerkIssuer
from zenthor.config import ServiceName
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def approvals(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running, clock: FakeClock
) -> AsyncIterator[Running]:
    settings = settings_for(ServiceName.APPROVALS, identity_addr=f"127.0.0.1:{identity.server.port}")
    # A short resync lets streams notice time the test moved (no write, no wake-up) promptly.
    server = await build_server(settings, clock=clock, watch_resync_s=0.05)
    running = await start(server, approvals_pb2_grpc.ApprovalsServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)
