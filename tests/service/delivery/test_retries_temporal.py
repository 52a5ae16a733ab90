"""Outbound retries carried by Temporal (docs/hardening.md #14): a failed send or an expired claim lease
waits in WAITING_RETRY; the RetryWorkflow started through the delivery outbox releases it after
its backoff with ReleaseOutbound, and the egress's watch wakes up. Real dev server, real worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Replayer

from tests.service.conftest import Running
from tests.service.delivery.conftest import DeliveryFactory
from tests.support.delivery_builders import WHATSAPP, claim, enqueue, hold_lease, row
from tests.support.fake_clock import FakeClock
from tests.support.grpc_client import SERVICE_KEY, service
from workflows.retry import RetryWorkflow
from workflows.worker import build_worker
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb


@asynccontextmanager
async def retry_worker(client: Client, task_queue: str, delivery: Running) -> AsyncIterator[None]:
    """The production worker (build_worker), reaching delivery over gRPC."""
    peers = Peers(Settings(delivery_addr=f"127.0.0.1:{delivery.server.port}", service_key=SERVICE_KEY))  # type: ignore[arg-type]
    try:
        async with build_worker(client, task_queue, peers, grace=timedelta(0)):
            yield
    finally:
        await peers.close()


async def until_claimable(delivery: Running, account_id: str = "default") -> None:
    """Reads the egress's wake-up stream until something is claimable: no polling."""
    stream = delivery.stub.WatchOutbound(pb.WatchOutboundRequest(account_id=account_id, channel=WHATSAPP), metadata=service())
    try:
        async with asyncio.timeout(30):
            while (await stream.read()).claimable_count == 0:
                pass
    finally:
        stream.cancel()


async def test_a_failed_send_is_released_by_retry_workflow_after_its_backoff(
    delivery_factory: DeliveryFactory, client: Client, task_queue: str, temporal_address: str
) -> None:
    delivery = await delivery_factory(
        temporal_address=temporal_address,
        temporal_task_queue=task_queue,
        build={"outbox_poll_s": 0.05, "retry_base_s": 0.2},
    )
    queued = await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    waiting = (
        await delivery.stub.FailOutbound(
            pb.FailOutboundRequest(id=queued.id, processor_id="wa1", error="socket closed", retry=True),
            metadata=service(),
        )
    ).outbound
    assert waiting.status == pb.OUTBOUND_STATUS_WAITING_RETRY
    assert await claim(delivery, "wa1") == []
    async with retry_worker(client, task_queue, delivery):
        await until_claimable(delivery)
        # Released, so the workflow (named after the row and its attempt) has run.
        handle = client.get_workflow_handle(f"retry-{queued.id}-1")
        result = await handle.result()
    assert result == {"released": True}
    assert row(delivery, queued.id)["status"] == "pending"
    await hold_lease(delivery, "wa2")
    (again,) = await claim(delivery, "wa2")
    assert again.id == queued.id and again.attempt_count == 1
    # Deterministic: the recorded history replays against today's workflow code.
    await Replayer(workflows=[RetryWorkflow]).replay_workflow(await handle.fetch_history())


async def test_an_expired_claim_lease_goes_through_the_same_retry_path(
    delivery_factory: DeliveryFactory, clock: FakeClock, client: Client, task_queue: str, temporal_address: str
) -> None:
    delivery = await delivery_factory(
        temporal_address=temporal_address,
        temporal_task_queue=task_queue,
        build={"outbox_poll_s": 0.05, "retry_base_s": 0.2},
    )
    queued = await enqueue(delivery)
    await hold_lease(delivery, "wa1")
    await claim(delivery, "wa1")
    clock.advance(seconds=31)
    await hold_lease(delivery, "wa2")
    async with retry_worker(client, task_queue, delivery):
        assert await claim(delivery, "wa2") == []  # reclaimed inline, counting an attempt
        await until_claimable(delivery)
        await client.get_workflow_handle(f"retry-{queued.id}-1").result()
    stored = row(delivery, queued.id)
    assert (stored["status"], stored["attempt_count"]) == ("pending", 1)
