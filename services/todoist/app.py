"""Composition root of the todoist service."""

from __future__ import annotations

from services.todoist.servicer import TodoistServicer
from zenthor.config import Settings
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2, todoist_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings) -> GrpcServer:
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=todoist_pb2.DESCRIPTOR.services_by_name["TodoistService"],
        base=todoist_pb2_grpc.TodoistServiceServicer,
        servicer=TodoistServicer(),  # type: ignore[abstract]  # unbuilt RPCs: UnbuiltMethodInterceptor
        add_to_server=todoist_pb2_grpc.add_TodoistServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
