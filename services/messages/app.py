"""Composition root of the messages service: engine, change feed, peers and their outbox relay,
Deps, servicer, server. The only place things are wired."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.messages.peers import GrpcActiveJobs, outbox_handlers
from services.messages.servicer import MessagesServicer
from services.messages.store.tables import outbox
from services.messages.usecases.deps import CHANNELS, ENQUEUE_JOB_TOPIC, Deps
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import DirectPool, UnitOfWork, create_engine
from zenthor.gen.zenthor.messages.v1 import messages_pb2, messages_pb2_grpc
from zenthor.metrics import DomainGauges, outbox_reading
from zenthor.notify import ChangeFeed
from zenthor.outbox import OutboxRelay
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the messages service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    db = DirectPool(settings.database_url, settings.db_pool_size, prepare=settings.db_prepared_statements)
    resolver, peers = peer_resolver(settings)
    # A conversation's jobs are queued in the order of its messages (zenthor/outbox.py).
    relay = OutboxRelay(
        engine, outbox, outbox_handlers(peers), clock=clock, ordered_by={ENQUEUE_JOB_TOPIC: "conversation_id"}
    )
    feed = ChangeFeed(settings.listen_url, CHANNELS)
    await feed.start()  # listening before the first Watch can subscribe
    relay.start()
    await db.open()
    deps = Deps(
        uow=lambda: UnitOfWork(engine),
        clock=clock,
        feed=feed,
        db=db,
        kick_outbox=relay.kick,
        active_jobs=GrpcActiveJobs(peers, settings.rpc_deadline_s),
    )
    registration = ServiceRegistration(
        descriptor=messages_pb2.DESCRIPTOR.services_by_name["MessagesService"],
        base=messages_pb2_grpc.MessagesServiceServicer,
        servicer=MessagesServicer(deps),
        add_to_server=messages_pb2_grpc.add_MessagesServiceServicer_to_server,
    )
    # Outbox backlog for /metrics, refreshed in the background (zenthor/metrics.py).
    gauges = DomainGauges.for_service(settings, "messages", engine, [outbox_reading(outbox, "messages")], clock=clock)
    gauges.start()
    return GrpcServer(
        settings, [registration], resolver, on_stop=[gauges.stop, relay.stop, feed.stop, db.close, engine.dispose, peers.close]
    )
