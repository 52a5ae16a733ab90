"""Composition root of the agent_queue service."""

from __future__ import annotations

from services.agent_queue.servicer import AgentQueueServicer
from zenthor.config import Settings
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2, agent_queue_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings) -> GrpcServer:
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=agent_queue_pb2.DESCRIPTOR.services_by_name["AgentQueueService"],
        base=agent_queue_pb2_grpc.AgentQueueServiceServicer,
        servicer=AgentQueueServicer(),  # type: ignore[abstract]  # unbuilt RPCs: UnbuiltMethodInterceptor
        add_to_server=agent_queue_pb2_grpc.add_AgentQueueServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
