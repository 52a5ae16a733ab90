"""Composition root of the messages service."""

from __future__ import annotations

from services.messages.servicer import MessagesServicer
from zenthor.config import Settings
from zenthor.gen.zenthor.messages.v1 import messages_pb2, messages_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings) -> GrpcServer:
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=messages_pb2.DESCRIPTOR.services_by_name["MessagesService"],
        base=messages_pb2_grpc.MessagesServiceServicer,
        servicer=MessagesServicer(),  # type: ignore[abstract]  # unbuilt RPCs: UnbuiltMethodInterceptor
        add_to_server=messages_pb2_grpc.add_MessagesServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
