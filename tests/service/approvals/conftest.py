"""The real approvals server (with the real identity server resolving principals) on a clock the
test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.service.conftest import Running, start_approvals, stop
from tests.support.database import TestDatabase
from tests.support.fake_clock import FakeClock
from tests.support.jwks import FakeClerkIssuer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def approvals(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running, clock: FakeClock
) -> AsyncIterator[Running]:
    # A short resync lets streams notice time the test moved (no write, no wake-up) promptly.
    running = await start_approvals(settings_for, db, clerk_issuer, identity, clock=clock, watch_resync_s=0.05)
    yield running
    await stop(running)
