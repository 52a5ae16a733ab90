"""Peer channels (zenthor.clients.open_channel) send the service key and the request id on
every call type: unary calls and server streams (Watch…) alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.grpc_client import SERVICE_KEY
from zenthor.clients import open_channel
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import Ctx, GrpcServer, ServiceRegistration


class TwoCallTypes(agent_queue_pb2_grpc.AgentQueueServiceServicer):
    """One unary and one server-streaming SERVICE RPC; the kit's chain checks the key."""

    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        return pb.GetJobResponse()

    async def WatchPendingJobs(self, request: pb.WatchPendingJobsRequest, context: Ctx) -> AsyncIterator[pb.WatchPendingJobsResponse]:
        yield pb.WatchPendingJobsResponse(pending_count=7)


@pytest.fixture
async def address(settings_for: Any) -> AsyncIterator[str]:
    settings = settings_for(ServiceName.AGENT_QUEUE)
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=pb.DESCRIPTOR.services_by_name["AgentQueueService"],
        base=agent_queue_pb2_grpc.AgentQueueServiceServicer,
        servicer=TwoCallTypes(),
        add_to_server=agent_queue_pb2_grpc.add_AgentQueueServiceServicer_to_server,
    )
    server = GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
    port = await server.start(0)
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_unary_calls_and_server_streams_both_carry_the_service_key(address: str) -> None:
    channel = open_channel(address, SERVICE_KEY)
    try:
        stub = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
        await stub.GetJob(pb.GetJobRequest(id="job_x"), timeout=10)
        stream = stub.WatchPendingJobs(pb.WatchPendingJobsRequest(), timeout=10)
        first = await asyncio.wait_for(stream.read(), 10)
        assert isinstance(first, pb.WatchPendingJobsResponse) and first.pending_count == 7
        stream.cancel()
    finally:
        await channel.close()
