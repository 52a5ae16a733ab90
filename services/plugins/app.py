"""Composition root of the plugins service: engine, deps, servicer, server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.plugins.servicer import PluginsServicer
from services.plugins.usecases.deps import Deps
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.plugins.v1 import plugins_pb2, plugins_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(
    settings: Settings, *, clock: Callable[[], datetime] = utc_now
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the plugins service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    deps = Deps(uow=lambda: UnitOfWork(engine), clock=clock)
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=plugins_pb2.DESCRIPTOR.services_by_name["PluginsService"],
        base=plugins_pb2_grpc.PluginsServiceServicer,
        servicer=PluginsServicer(deps),
        add_to_server=plugins_pb2_grpc.add_PluginsServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close, engine.dispose])
