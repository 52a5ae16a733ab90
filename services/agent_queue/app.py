"""Composition root of the agent_queue service: engine, change feed, outbox relay (retry
workflows, trigger messages, placeholders of ended job attempts), deps, servicer, server."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from services.agent_queue.peers import (
    GrpcConversationDirectory,
    job_placeholder_failer,
    task_workflow_signaller,
    trigger_message_sender,
)
from services.agent_queue.servicer import AgentQueueServicer
from services.agent_queue.store.gauges import read_job_gauges
from services.agent_queue.store.tables import JOBS_CHANNEL, PENDING_CHANNEL, outbox
from services.agent_queue.usecases.deps import Deps
from services.agent_queue.usecases.jobs import FAIL_PLACEHOLDERS_TOPIC
from services.agent_queue.usecases.pending_watch import PendingJobsBroadcast
from services.agent_queue.usecases.tasks import TASK_WORKFLOW_TOPIC, TRIGGER_TOPIC
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import DirectPool, UnitOfWork, create_engine
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2, agent_queue_pb2_grpc
from zenthor.metrics import DomainGauges, outbox_reading
from zenthor.notify import ChangeFeed
from zenthor.outbox import OutboxRelay
from zenthor.process import peer_resolver
from zenthor.retries import DEFAULT_BASE_S, RETRY_TOPIC, TemporalClientProvider, retry_starter
from zenthor.server import GrpcServer, ServiceRegistration
from zenthor.webhooks import WEBHOOK_EVENT_TOPIC, webhook_event_handler


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    rng: random.Random | None = None,
    temporal: TemporalClientProvider | None = None,
    outbox_poll_s: float = 1.0,
    retry_base_s: float = DEFAULT_BASE_S,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the agent_queue service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    db = DirectPool(settings.database_url, settings.db_pool_size, prepare=settings.db_prepared_statements)
    resolver, peers = peer_resolver(settings)
    channels = [JOBS_CHANNEL, PENDING_CHANNEL]
    # The hand-over trigger lists a statement's conversations in one notification (migration 0006).
    feed = ChangeFeed(settings.listen_url, channels, multi_key=channels)
    temporal = temporal or TemporalClientProvider.from_settings(settings)
    relay = OutboxRelay(
        engine,
        outbox,
        {
            RETRY_TOPIC: retry_starter(temporal, settings.temporal_task_queue),
            TRIGGER_TOPIC: trigger_message_sender(peers),
            FAIL_PLACEHOLDERS_TOPIC: job_placeholder_failer(peers),
            TASK_WORKFLOW_TOPIC: task_workflow_signaller(temporal, settings.temporal_task_queue),
            # job.completed / job.failed (store/job_events.py) to delivery's PublishWebhookEvents.
            WEBHOOK_EVENT_TOPIC: webhook_event_handler(peers),
        },
        poll_s=outbox_poll_s,
        clock=clock,
    )
    deps = Deps(
        uow=lambda: UnitOfWork(engine),
        clock=clock,
        db=db,
        rng=rng or random.Random(),
        kick_outbox=relay.kick,
        feed=feed,
        retry_base_s=retry_base_s,
    )
    pending = PendingJobsBroadcast(deps)
    registration = ServiceRegistration(
        descriptor=agent_queue_pb2.DESCRIPTOR.services_by_name["AgentQueueService"],
        base=agent_queue_pb2_grpc.AgentQueueServiceServicer,
        servicer=AgentQueueServicer(deps, pending, GrpcConversationDirectory(peers, settings.rpc_deadline_s)),
        add_to_server=agent_queue_pb2_grpc.add_AgentQueueServiceServicer_to_server,
    )
    # Queue depth and outbox backlog for /metrics, refreshed in the background (zenthor/metrics.py).
    gauges = DomainGauges.for_service(
        settings, "agent_queue", engine, [read_job_gauges, outbox_reading(outbox, "agent_queue")], clock=clock
    )
    await db.open()
    await feed.start()
    relay.start()
    gauges.start()
    return GrpcServer(
        settings,
        [registration],
        resolver,
        on_stop=[gauges.stop, pending.stop, relay.stop, feed.stop, peers.close, db.close, engine.dispose],
    )
