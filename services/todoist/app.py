"""Composition root of the todoist service: engine, change feed, the one Todoist HTTP client,
token cipher, Temporal, outbox relay (token revocations), peers, deps, servicer, server."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx

from services.todoist.domain.oauth import OAuthSettings
from services.todoist.domain.tokens import TokenCipher
from services.todoist.peers import (
    GrpcConversationOwners,
    Sleep,
    TemporalOAuthFlows,
    TodoistEndpoints,
    TodoistHttpApi,
    token_revoker,
)
from services.todoist.servicer import TodoistServicer
from services.todoist.store.tables import CHANGES, outbox
from services.todoist.usecases.connections import REVOKE_TOPIC
from services.todoist.usecases.deps import Deps
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2, todoist_pb2_grpc
from zenthor.metrics import DomainGauges, outbox_reading
from zenthor.notify import ChangeFeed
from zenthor.outbox import OutboxRelay
from zenthor.process import peer_resolver
from zenthor.retries import TemporalClientProvider
from zenthor.server import GrpcServer, ServiceRegistration

# Todoist answers in well under a second; connecting may take a TLS handshake.
CONNECT_TIMEOUT_S = 5.0


def oauth_settings(settings: Settings) -> OAuthSettings:
    return OAuthSettings(
        client_id=settings.todoist_client_id,
        has_client_secret=settings.todoist_client_secret is not None,
        redirect_uri=settings.todoist_oauth_redirect_uri,
        scope=settings.todoist_oauth_scope,
        authorize_url=settings.todoist_oauth_authorize_url,
        has_token_key=settings.todoist_token_key is not None,
    )


def todoist_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one client every Todoist call goes through: timeouts on everything, no redirects
    (a redirect would carry the bearer token elsewhere)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.todoist_http_timeout_s, connect=CONNECT_TIMEOUT_S),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
    )


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    temporal: TemporalClientProvider | None = None,
    http_client: httpx.AsyncClient | None = None,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
    new_uuid: Callable[[], uuid.UUID] = uuid.uuid4,
    outbox_poll_s: float = 1.0,
    watch_resync_s: float = 5.0,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the todoist service")
    key = settings.todoist_token_key
    cipher = TokenCipher.from_setting(key.get_secret_value() if key else None)
    engine = create_engine(settings.database_url, settings.db_pool_size)
    resolver, peers = peer_resolver(settings)
    feed = ChangeFeed(settings.listen_url, [CHANGES], resync_s=watch_resync_s)
    client = http_client or todoist_http_client(settings)
    secret = settings.todoist_client_secret
    api = TodoistHttpApi(
        client,
        TodoistEndpoints(
            api_base_url=settings.todoist_api_base_url,
            token_url=settings.todoist_oauth_token_url,
            client_id=settings.todoist_client_id,
            client_secret=secret.get_secret_value() if secret else None,
            redirect_uri=settings.todoist_oauth_redirect_uri,
        ),
        sleep=sleep,
        rng=rng,
    )
    relay = OutboxRelay(engine, outbox, {REVOKE_TOPIC: token_revoker(api, cipher)}, poll_s=outbox_poll_s, clock=clock)
    temporal = temporal or TemporalClientProvider.from_settings(settings)
    deps = Deps(
        uow=lambda: UnitOfWork(engine),
        clock=clock,
        oauth=oauth_settings(settings),
        cipher=cipher,
        todoist=api,
        owners=GrpcConversationOwners(peers, settings.rpc_deadline_s),
        flows=TemporalOAuthFlows(temporal, settings.temporal_task_queue),
        feed=feed,
        kick_outbox=relay.kick,
        new_uuid=new_uuid,
    )
    registration = ServiceRegistration(
        descriptor=todoist_pb2.DESCRIPTOR.services_by_name["TodoistService"],
        base=todoist_pb2_grpc.TodoistServiceServicer,
        servicer=TodoistServicer(deps),
        add_to_server=todoist_pb2_grpc.add_TodoistServiceServicer_to_server,
    )
    # Outbox backlog for /metrics, refreshed in the background (zenthor/metrics.py).
    gauges = DomainGauges.for_service(settings, "todoist", engine, [outbox_reading(outbox, "todoist")], clock=clock)
    await feed.start()
    relay.start()
    gauges.start()
    # The client is closed only when this server made it; an injected one is the caller's.
    on_stop: list[Callable[[], Awaitable[None]]] = [gauges.stop, relay.stop, feed.stop, peers.close, engine.dispose]
    if http_client is None:
        on_stop.append(client.aclose)
    return GrpcServer(settings, [registration], resolver, on_stop=on_stop)
