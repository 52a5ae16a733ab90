"""`kill -9` of the messages server during sends, several times: clients send messages with an
idempotency key (CreateSystemMessage with a job, the form peers' outboxes use) and retry what
the dead server could not answer. Every acknowledged send is stored exactly once, and the
outbox still turns every message into exactly one agent_queue job — including the events the
killed process had leased, once their lease (zenthor.outbox.LEASE) has run out."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.agent_queue.app import build_server as build_agent_queue
from tests.reliability.conftest import Record, Tally
from tests.service.conftest import start, stop
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.support.retrying_client import IDEMPOTENT_RETRY, RetryingClient
from tests.support.service_process import NOBODY, ServiceProcess, service_env
from zenthor import ids
from zenthor.clients import open_channel
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.outbox import LEASE

SEND_TIMEOUT_S = 300.0
# Events the killed process had leased are re-delivered after the lease, not before.
DRAIN_TIMEOUT_S = LEASE.total_seconds() + 90.0


@dataclass(frozen=True)
class Size:
    clients: int
    sends_per_client: int
    kills: int
    # The small run moves the leases of the killed process's events to now instead of waiting
    # LEASE out (as if that time had passed); the soak run waits it out for real.
    wait_out_leases: bool

    @property
    def sends(self) -> int:
        return self.clients * self.sends_per_client


async def send_all(stub: Any, client_no: int, size: Size, acked: list[str], retries: RetryingClient) -> None:
    """One client: its own conversation, then its sends one after the other."""
    user = ids.USER.format(ids.USER.new())
    conversation = (
        await retries.call(
            lambda: stub.GetOrCreateConversation(
                pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WEB, user_id=user), metadata=service(), timeout=5
            )
        )
    ).conversation
    for n in range(size.sends_per_client):
        key = f"client-{client_no}-send-{n}"
        request = pb.CreateSystemMessageRequest(
            conversation_id=conversation.id, content=key, idempotency_key=key, enqueue_job=True
        )
        await retries.call(lambda request=request: stub.CreateSystemMessage(request, metadata=service(), timeout=5))
        acked.append(key)


def lapse_leases(db: TestDatabase) -> int:
    """Makes every undelivered event due now (those the killed relay had leased among them);
    returns how many were not due yet."""
    rows = db.sql(
        "UPDATE messages.outbox SET next_attempt_at = now()"
        " WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at > now() RETURNING id"
    )
    return len(rows)


def outbox_done(db: TestDatabase) -> bool:
    [(undelivered,)] = db.sql("SELECT count(*) FROM messages.outbox WHERE delivered_at IS NULL")
    return int(undelivered) == 0


async def run_scenario(
    db: TestDatabase, tmp_path: Path, settings_for: Any, clerk_issuer: FakeClerkIssuer, size: Size, record: Record, name: str
) -> Tally:
    aq_settings = settings_for(ServiceName.AGENT_QUEUE, temporal_address=NOBODY)
    agent_queue = await start(
        await build_agent_queue(aq_settings), agent_queue_pb2_grpc.AgentQueueServiceStub, aq_settings, db, clerk_issuer
    )
    messages = ServiceProcess(
        ServiceName.MESSAGES,
        free_port(),
        service_env(ServiceName.MESSAGES, db, ZENTHOR_AGENT_QUEUE_ADDR=f"127.0.0.1:{agent_queue.server.port}"),
        tmp_path / "messages.log",
    )
    acked: list[str] = []
    retries = RetryingClient(retry_on=IDEMPOTENT_RETRY, give_up_s=SEND_TIMEOUT_S)
    try:
        await messages.start()
        async with open_channel(messages.address, None) as channel:
            stub = messages_pb2_grpc.MessagesServiceStub(channel)
            sending = asyncio.gather(*(send_all(stub, c, size, acked, retries) for c in range(size.clients)))
            for kill in range(1, size.kills + 1):
                async with asyncio.timeout(SEND_TIMEOUT_S):
                    while len(acked) < size.sends * kill // (size.kills + 1):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                await messages.restart_after_kill()
            await asyncio.wait_for(sending, SEND_TIMEOUT_S)
        stranded = 0 if size.wait_out_leases else lapse_leases(db)
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while not outbox_done(db):  # noqa: ASYNC110 - the state lives in the database
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pass  # counted as stuck below
    finally:
        await messages.stop()
        await stop(agent_queue)

    stored = Counter(key for (key,) in db.sql("SELECT idempotency_key FROM messages.messages WHERE role = 'system'"))
    message_ids = [m for (m,) in db.sql("SELECT id FROM messages.messages WHERE role = 'system'")]
    jobs = Counter(m for (m,) in db.sql("SELECT message_id FROM agent_queue.jobs"))
    tally = Tally(
        name,
        lost=sum(1 for key in acked if key not in stored),
        duplicated=sum(n - 1 for n in stored.values()) + sum(n - 1 for n in jobs.values()),
        stuck=sum(1 for m in message_ids if m not in jobs),
        details=(
            f"{len(acked)} of {size.sends} sends acknowledged, {size.kills} kills, "
            + ("leases waited out, " if size.wait_out_leases else f"{stranded} undelivered events made due at once, ")
            + f"{retries.retried_calls} calls retried ({dict(retries.failures)})"
        ),
    )
    record(tally)
    return tally


async def test_killed_messages_server_loses_and_duplicates_no_message_or_job(
    db: TestDatabase, tmp_path: Path, settings_for: Any, clerk_issuer: FakeClerkIssuer, record_tally: Record
) -> None:
    size = Size(clients=4, sends_per_client=15, kills=1, wait_out_leases=False)
    tally = await run_scenario(db, tmp_path, settings_for, clerk_issuer, size, record_tally, "messages kill -9")
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_killed_messages_server_loses_and_duplicates_no_message_or_job(
    db: TestDatabase, tmp_path: Path, settings_for: Any, clerk_issuer: FakeClerkIssuer, record_tally: Record
) -> None:
    size = Size(clients=6, sends_per_client=50, kills=7, wait_out_leases=True)
    tally = await run_scenario(db, tmp_path, settings_for, clerk_issuer, size, record_tally, "messages kill -9 (soak)")
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, 0, 0)
