"""Composition root of the agent_queue service: engine, deps, servicer, server."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime

from services.agent_queue.servicer import AgentQueueServicer
from services.agent_queue.usecases.deps import Deps
from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2, agent_queue_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


async def build_server(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    rng: random.Random | None = None,
) -> GrpcServer:
    if not settings.database_url:
        raise SystemExit("ZENTHOR_DATABASE_URL is required for the agent_queue service")
    engine = create_engine(settings.database_url, settings.db_pool_size)
    resolver, peers = peer_resolver(settings)
    deps = Deps(uow=lambda: UnitOfWork(engine), clock=clock, rng=rng or random.Random())
    registration = ServiceRegistration(
        descriptor=agent_queue_pb2.DESCRIPTOR.services_by_name["AgentQueueService"],
        base=agent_queue_pb2_grpc.AgentQueueServiceServicer,
        servicer=AgentQueueServicer(deps),  # type: ignore[abstract]  # unbuilt RPCs: UnbuiltMethodInterceptor
        add_to_server=agent_queue_pb2_grpc.add_AgentQueueServiceServicer_to_server,
    )
    return GrpcServer(settings, [registration], resolver, on_stop=[peers.close, engine.dispose])
