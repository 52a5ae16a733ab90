"""Composition root of the approvals service."""

from __future__ import annotations

from services.approvals.servicer import ApprovalsServicer
from zenthor.config import Settings
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2, approvals_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings) -> GrpcServer:
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=approvals_pb2.DESCRIPTOR.services_by_name["ApprovalsService"],
        base=approvals_pb2_grpc.ApprovalsServiceServicer,
        servicer=ApprovalsServicer(),  # type: ignore[abstract]  # unbuilt RPCs: UnbuiltMethodInterceptor
        add_to_server=approvals_pb2_grpc.add_ApprovalsServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
