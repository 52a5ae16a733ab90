"""Composition root of the approvals service: engine, direct pool, change feed, outbox relay (webhook events),
deps, servicer, server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.approvals.peers import outbox_handlers
from services.approvals.servicer import ApprovalsServicer
from services.approvals.store.gauges import read_approval_gauges
from services.approvals.store.tables import CHANGES, outbox
from services.approvals.usecases.deps import Deps
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import DirectPool, UnitOfWork, create_engine
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2, approvals_pb2_grpc
from zenthor.metrics import DomainGauges
from zenthor.notify import ChangeFeed
from zenthor.outbox import OutboxRelay
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    watch_resync_s: float = 5.0,
    outbox_poll_s: float = 1.0,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the approvals service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    db = DirectPool(settings.database_url, settings.db_pool_size, prepare=settings.db_prepared_statements)
    feed = ChangeFeed(settings.listen_url, [CHANGES], resync_s=watch_resync_s)
    await feed.start()
    # Principals resolve through identity; delivery gets the webhook events through the outbox.
    resolver, peers = peer_resolver(settings)
    relay = OutboxRelay(engine, outbox, outbox_handlers(peers), poll_s=outbox_poll_s, clock=clock)
    await db.open()
    deps = Deps(uow=lambda: UnitOfWork(engine), db=db, clock=clock, feed=feed, kick_outbox=relay.kick)
    registration = ServiceRegistration(
        descriptor=approvals_pb2.DESCRIPTOR.services_by_name["ApprovalsService"],
        base=approvals_pb2_grpc.ApprovalsServiceServicer,
        servicer=ApprovalsServicer(deps),
        add_to_server=approvals_pb2_grpc.add_ApprovalsServiceServicer_to_server,
    )
    # Pending approvals for /metrics, refreshed in the background (zenthor/metrics.py).
    gauges = DomainGauges.for_service(settings, "approvals", engine, [read_approval_gauges], clock=clock)
    gauges.start()
    relay.start()
    return GrpcServer(
        settings, [registration], resolver, on_stop=[gauges.stop, relay.stop, feed.stop, peers.close, db.close, engine.dispose]
    )
