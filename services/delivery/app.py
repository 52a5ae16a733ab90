"""Composition root of the delivery service."""

from __future__ import annotations

from services.delivery.servicer import DeliveryServicer
from zenthor.config import Settings
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings) -> GrpcServer:
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
        base=delivery_pb2_grpc.DeliveryServiceServicer,
        servicer=DeliveryServicer(),  # type: ignore[abstract]  # unbuilt RPCs: UnbuiltMethodInterceptor
        add_to_server=delivery_pb2_grpc.add_DeliveryServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
