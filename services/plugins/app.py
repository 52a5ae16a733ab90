"""Composition root of the plugins service."""

from __future__ import annotations

from services.plugins.servicer import PluginsServicer
from zenthor.config import Settings
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings) -> GrpcServer:
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=plugins_pb2.DESCRIPTOR.services_by_name["PluginsService"],
        base=plugins_pb2_grpc.PluginsServiceServicer,
        servicer=PluginsServicer(),  # type: ignore[abstract]  # unbuilt RPCs: UnbuiltMethodInterceptor
        add_to_server=plugins_pb2_grpc.add_PluginsServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
