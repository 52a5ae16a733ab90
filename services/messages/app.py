"""Composition root of the messages service: engine, change feed, peers and their outbox relay,
Deps, servicer, server. The only place things are wired."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from services.messages.peers import outbox_handlers
from services.messages.servicer import MessagesServicer
from services.messages.store.tables import outbox
from services.messages.usecases.deps import CHANNELS, Deps
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.messages.v1 import messages_pb2, messages_pb2_grpc
from zenthor.notify import ChangeFeed
from zenthor.outbox import OutboxRelay
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the messages service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    resolver, peers = peer_resolver(settings)
    relay = OutboxRelay(engine, outbox, outbox_handlers(peers), clock=clock)
    feed = ChangeFeed(settings.database_url, CHANNELS)
    await feed.start()  # listening before the first Watch can subscribe
    relay.start()
    deps = Deps(uow=lambda: UnitOfWork(engine), clock=clock, feed=feed, kick_outbox=relay.kick)
    registration = ServiceRegistration(
        descriptor=messages_pb2.DESCRIPTOR.services_by_name["MessagesService"],
        base=messages_pb2_grpc.MessagesServiceServicer,
        servicer=MessagesServicer(deps),
        add_to_server=messages_pb2_grpc.add_MessagesServiceServicer_to_server,
    )
    return GrpcServer(
        settings, [registration], resolver, on_stop=[relay.stop, feed.stop, engine.dispose, peers.close]
    )
