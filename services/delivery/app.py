"""Composition root of the delivery service: engine, change feed, outbox relay (retry and webhook
delivery workflow starts, message delivery outcomes), deps, servicer, server."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from services.delivery.peers import job_event_listener_registry, linked_user_lookup, outbox_handlers
from services.delivery.servicer import DeliveryServicer
from services.delivery.store.gauges import read_delivery_gauges
from services.delivery.store.tables import OUTBOUND_CHANGES, outbox
from services.delivery.usecases.deps import Deps, WebhookOptions
from services.delivery.usecases.job_event_owners import JobEventOwnerSync
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import DirectPool, UnitOfWork, create_engine
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from zenthor.metrics import DomainGauges, outbox_reading
from zenthor.notify import ChangeFeed
from zenthor.outbox import OutboxRelay
from zenthor.process import peer_resolver
from zenthor.retries import (
    DEFAULT_BASE_S,
    DEFAULT_CAP_S,
    RETRY_TOPIC,
    TemporalClientProvider,
    retry_starter,
)
from zenthor.server import GrpcServer, ServiceRegistration
from zenthor.webhooks import WEBHOOK_DELIVERY_TOPIC, webhook_delivery_starter


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    rng: random.Random | None = None,
    temporal: TemporalClientProvider | None = None,
    outbox_poll_s: float = 1.0,
    watch_resync_s: float = 5.0,
    retry_base_s: float = DEFAULT_BASE_S,
    retry_cap_s: float = DEFAULT_CAP_S,
    job_event_owners_every_s: float = 300.0,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the delivery service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    db = DirectPool(settings.database_url, settings.db_pool_size, prepare=settings.db_prepared_statements)
    resolver, peers = peer_resolver(settings)
    feed = ChangeFeed(settings.listen_url, [OUTBOUND_CHANGES], resync_s=watch_resync_s)
    temporal_client = temporal or TemporalClientProvider.from_settings(settings)
    starter = retry_starter(temporal_client, settings.temporal_task_queue)
    webhook_starter = webhook_delivery_starter(temporal_client, settings.temporal_task_queue)
    relay = OutboxRelay(
        engine,
        outbox,
        {RETRY_TOPIC: starter, WEBHOOK_DELIVERY_TOPIC: webhook_starter, **outbox_handlers(peers)},
        poll_s=outbox_poll_s,
        clock=clock,
    )
    job_event_listeners = job_event_listener_registry(peers)
    deps = Deps(
        uow=lambda: UnitOfWork(engine),
        clock=clock,
        db=db,
        feed=feed,
        default_account_id=settings.whatsapp_account_id,
        kick_outbox=relay.kick,
        rng=rng or random.Random(),
        job_event_listeners=job_event_listeners,
        retry_base_s=retry_base_s,
        retry_cap_s=retry_cap_s,
        webhooks=WebhookOptions(
            allow_private=settings.webhooks_allow_private,
            retry_initial_s=settings.webhooks_retry_initial_s,
            retry_max_interval_s=settings.webhooks_retry_max_interval_s,
            max_attempts=settings.webhooks_max_attempts,
            timeout_s=settings.webhooks_timeout_s,
        ),
        linked_users=linked_user_lookup(peers),
    )
    registration = ServiceRegistration(
        descriptor=delivery_pb2.DESCRIPTOR.services_by_name["DeliveryService"],
        base=delivery_pb2_grpc.DeliveryServiceServicer,
        servicer=DeliveryServicer(deps),
        add_to_server=delivery_pb2_grpc.add_DeliveryServiceServicer_to_server,
    )
    # Outbound backlog, lease holders and outbox for /metrics, refreshed in the background.
    gauges = DomainGauges.for_service(
        settings, "delivery", engine, [read_delivery_gauges, outbox_reading(outbox, "delivery")], clock=clock
    )
    # Tells agent_queue who listens for job events (services/delivery/usecases/job_event_owners.py).
    owner_sync = JobEventOwnerSync(deps.uow, job_event_listeners, every_s=job_event_owners_every_s)
    await db.open()
    await feed.start()
    relay.start()
    gauges.start()
    owner_sync.start()
    return GrpcServer(
        settings,
        [registration],
        resolver,
        on_stop=[owner_sync.stop, gauges.stop, relay.stop, feed.stop, peers.close, db.close, engine.dispose],
    )
