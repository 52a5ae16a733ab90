"""The production Temporal worker (workflows.worker.build_worker) inside the test's process,
reaching the services at the addresses given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import Client

from tests.support.grpc_client import SERVICE_KEY
from workflows.worker import build_worker
from zenthor.clients import Peers
from zenthor.config import Settings


@asynccontextmanager
async def production_worker(client: Client, task_queue: str, **addresses: str) -> AsyncIterator[None]:
    """`addresses`: Settings field names, e.g. `agent_queue_addr="127.0.0.1:5005"`."""
    peers = Peers(Settings.model_validate({"service_key": SERVICE_KEY, **addresses}))
    try:
        async with build_worker(client, task_queue, peers, grace=timedelta(0)):
            yield
    finally:
        await peers.close()
