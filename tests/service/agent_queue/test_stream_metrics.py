"""A server stream in the gRPC metrics (zenthor/metrics.py): an open WatchPendingJobs counts as
in flight, and a client that cancels it ends it as CANCELLED, no longer in flight."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from tests.service.conftest import Running
from tests.support.grpc_client import service
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb

LABELS = {"grpc_service": "zenthor.agent_queue.v1.AgentQueueService", "grpc_method": "WatchPendingJobs"}
STREAM = {**LABELS, "grpc_type": "server_stream"}


def in_flight() -> float:
    return REGISTRY.get_sample_value("zenthor_grpc_server_in_flight", STREAM) or 0.0


def cancelled() -> float:
    return REGISTRY.get_sample_value("zenthor_grpc_server_handled_total", {**STREAM, "grpc_code": "CANCELLED"}) or 0.0


async def test_an_open_watch_is_in_flight_and_a_cancelled_one_is_counted_cancelled(agent_queue: Running) -> None:
    open_before, cancelled_before = in_flight(), cancelled()
    stream = agent_queue.stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id="observer"), metadata=service())
    await asyncio.wait_for(stream.read(), 30)  # the current state: the stream is being served
    assert in_flight() == open_before + 1
    stream.cancel()
    # The server learns of the cancellation on its own loop: wait for it, bounded.
    for _ in range(3000):
        if cancelled() == cancelled_before + 1 and in_flight() == open_before:
            break
        await asyncio.sleep(0.01)
    assert (cancelled(), in_flight()) == (cancelled_before + 1, open_before)
    # Streams stay out of the latency histogram: they last as long as their client.
    assert REGISTRY.get_sample_value("zenthor_grpc_server_handling_seconds_count", LABELS) is None
