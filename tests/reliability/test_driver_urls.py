"""Live views with a database URL that names a driver, as operators write it for SQLAlchemy
(`postgresql+psycopg://…`, `postgresql+asyncpg://…`): each service with a change feed starts,
and its watch stream sees a change. The LISTEN connection is psycopg's own and takes the URL
without the driver (zenthor.db.libpq_url); given the URL unchanged it never connected, and
the service could not start."""

from __future__ import annotations

from typing import Any

import pytest

from services.agent_queue.app import build_server as build_agent_queue
from services.delivery.app import build_server as build_delivery
from services.messages.app import build_server as build_messages
from tests.service.conftest import Running, start, stop
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.delivery_builders import WHATSAPP, enqueue
from tests.support.grpc_client import bearer, service
from tests.support.jwks import FakeClerkIssuer
from tests.support.service_process import NOBODY
from tests.support.streams import next_message, read_until
from zenthor import ids
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2, agent_queue_pb2_grpc
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2, messages_pb2_grpc

DRIVERS = ["postgresql+psycopg", "postgresql+asyncpg"]


def with_driver(dsn: str, driver: str) -> str:
    assert dsn.startswith("postgresql://")
    return driver + dsn.removeprefix("postgresql")


@pytest.mark.parametrize("driver", DRIVERS)
async def test_messages_watch_sees_a_new_message_with_a_driver_in_the_url(
    driver: str, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running
) -> None:
    settings = settings_for(
        ServiceName.MESSAGES,
        database_url=with_driver(db.dsn_for(ServiceName.MESSAGES), driver),
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=NOBODY,
    )
    messages = await start(await build_messages(settings), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
    try:
        alice(db)
        user = bearer(clerk_issuer.token("user_alice"))
        conversation = (await messages.stub.CreateConversation(messages_pb2.CreateConversationRequest(), metadata=user)).conversation
        stream = messages.stub.WatchConversation(messages_pb2.WatchConversationRequest(conversation_id=conversation.id), metadata=user)
        try:
            assert (await next_message(stream)).caught_up
            await messages.stub.SendMessage(
                messages_pb2.SendMessageRequest(conversation_id=conversation.id, content="over LISTEN"), metadata=user
            )
            await read_until(stream, lambda r: any(m.content == "over LISTEN" for m in r.messages))
        finally:
            stream.cancel()
    finally:
        await stop(messages)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_agent_queue_watch_sees_a_new_job_with_a_driver_in_the_url(
    driver: str, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer
) -> None:
    settings = settings_for(
        ServiceName.AGENT_QUEUE, database_url=with_driver(db.dsn_for(ServiceName.AGENT_QUEUE), driver), temporal_address=NOBODY
    )
    aq = await start(await build_agent_queue(settings), agent_queue_pb2_grpc.AgentQueueServiceStub, settings, db, clerk_issuer)
    try:
        stream = aq.stub.WatchPendingJobs(agent_queue_pb2.WatchPendingJobsRequest(processor_id="w", max_jobs=1), metadata=service())
        try:
            assert not (await next_message(stream)).jobs
            await aq.stub.EnqueueJob(
                agent_queue_pb2.EnqueueJobRequest(
                    message_id=ids.MESSAGE.format(ids.MESSAGE.new()),
                    conversation_id=ids.CONVERSATION.format(ids.CONVERSATION.new()),
                ),
                metadata=service(),
            )
            await read_until(stream, lambda r: len(r.jobs) == 1)
        finally:
            stream.cancel()
    finally:
        await stop(aq)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_delivery_watch_sees_a_new_outbound_message_with_a_driver_in_the_url(
    driver: str, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer
) -> None:
    settings = settings_for(
        ServiceName.DELIVERY, database_url=with_driver(db.dsn_for(ServiceName.DELIVERY), driver),
        temporal_address=NOBODY, messages_addr=NOBODY,
    )
    delivery = await start(await build_delivery(settings), delivery_pb2_grpc.DeliveryServiceStub, settings, db, clerk_issuer)
    try:
        stream = delivery.stub.WatchOutbound(
            delivery_pb2.WatchOutboundRequest(account_id="default", channel=WHATSAPP), metadata=service()
        )
        try:
            assert (await next_message(stream)).claimable_count == 0
            await enqueue(delivery, account_id="default")
            await read_until(stream, lambda r: r.claimable_count == 1)
        finally:
            stream.cancel()
    finally:
        await stop(delivery)
