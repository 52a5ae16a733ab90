"""Composition root of the approvals service: engine, change feed, deps, servicer, server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy.engine import make_url

from services.approvals import store, usecases
from services.approvals.servicer import ApprovalsServicer
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2, approvals_pb2_grpc
from zenthor.notify import ChangeFeed
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


def libpq_dsn(url: str) -> str:
    """The database URL as psycopg's LISTEN connection takes it (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    watch_resync_s: float = 5.0,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the approvals service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    feed = ChangeFeed(libpq_dsn(settings.database_url), [store.CHANGES], resync_s=watch_resync_s)
    await feed.start()
    deps = usecases.Deps(uow=lambda: UnitOfWork(engine), clock=clock, feed=feed)
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=approvals_pb2.DESCRIPTOR.services_by_name["ApprovalsService"],
        base=approvals_pb2_grpc.ApprovalsServiceServicer,
        servicer=ApprovalsServicer(deps),
        add_to_server=approvals_pb2_grpc.add_ApprovalsServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[feed.stop, peers.close, engine.dispose])
