"""Composition root of the identity service: engine, outbox relay, peers, Clerk client, deps,
servicer, server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import httpx

from services.identity.peers import ClerkBackendApi, outbox_handlers
from services.identity.servicer import IdentityServicer
from services.identity.store.tables import outbox
from services.identity.usecases import users
from services.identity.usecases.deps import Deps
from zenthor.auth.principal import ResolvedUser
from zenthor.auth.resolver import CachingResolver
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.identity.v1 import identity_pb2, identity_pb2_grpc
from zenthor.metrics import DomainGauges, outbox_reading
from zenthor.outbox import OutboxRelay
from zenthor.server import GrpcServer, ServiceRegistration


class LocalResolver:
    """Identity resolves principals from its own tables, without a network hop."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def resolve(self, external_id: str) -> ResolvedUser | None:
        return await users.find_principal(self._deps, external_id)


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    clerk_transport: httpx.AsyncBaseTransport | None = None,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the identity service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    peers = Peers(settings)
    relay = OutboxRelay(engine, outbox, outbox_handlers(peers))
    secret = settings.clerk_secret_key.get_secret_value() if settings.clerk_secret_key else None
    deps = Deps(
        uow=lambda: UnitOfWork(engine),
        clock=clock,
        allowlist=settings.allowlisted_emails,
        clerk=ClerkBackendApi(settings.clerk_api_url, secret, transport=clerk_transport),
        verification_account_id=settings.whatsapp_account_id,
        kick_outbox=relay.kick,
    )
    registration = ServiceRegistration(
        descriptor=identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
        base=identity_pb2_grpc.IdentityServiceServicer,
        servicer=IdentityServicer(deps),
        add_to_server=identity_pb2_grpc.add_IdentityServiceServicer_to_server,
    )
    # Identity caches its own lookups too, and follows the changes it notifies itself (any
    # replica may have written them).
    resolver = CachingResolver(
        LocalResolver(deps), settings.principal_cache_ttl_s, changes_dsn=settings.listen_url
    )
    # Outbox backlog for /metrics, refreshed in the background (zenthor/metrics.py).
    gauges = DomainGauges.for_service(settings, "identity", engine, [outbox_reading(outbox, "identity")], clock=clock)
    relay.start()
    gauges.start()
    return GrpcServer(
        settings, [registration], resolver, on_stop=[gauges.stop, relay.stop, peers.close, engine.dispose]
    )
