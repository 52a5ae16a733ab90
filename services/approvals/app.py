"""Composition root of the approvals service: engine, change feed, deps, servicer, server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.approvals.servicer import ApprovalsServicer
from services.approvals.store.tables import CHANGES
from services.approvals.usecases.deps import Deps
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2, approvals_pb2_grpc
from zenthor.notify import ChangeFeed
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    watch_resync_s: float = 5.0,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the approvals service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    feed = ChangeFeed(settings.database_url, [CHANGES], resync_s=watch_resync_s)
    await feed.start()
    deps = Deps(uow=lambda: UnitOfWork(engine), clock=clock, feed=feed)
    # Principals resolve through identity; approvals calls no other peer.
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=approvals_pb2.DESCRIPTOR.services_by_name["ApprovalsService"],
        base=approvals_pb2_grpc.ApprovalsServiceServicer,
        servicer=ApprovalsServicer(deps),
        add_to_server=approvals_pb2_grpc.add_ApprovalsServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[feed.stop, peers.close, engine.dispose])
