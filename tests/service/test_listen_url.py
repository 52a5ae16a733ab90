"""ZENTHOR_DATABASE_LISTEN_URL (docs/operations.md, PgBouncer): a service whose queries go
through a pooler that cannot keep a LISTEN (PgBouncer in transaction mode) listens on its own
direct URL, and its live views still wake.

The pooler here is a TCP forwarder started by the test in front of the real Postgres, which cuts
any connection that sends a LISTEN, as a transaction-mode pool would lose one; it records the
ports of the connections it opens upstream, so Postgres' own view tells which sessions came
through it and which came directly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import Any

import pytest

from services.agent_queue.app import build_server as build_agent_queue
from services.agent_queue.store.tables import PENDING_CHANNEL
from tests.service.agent_queue.test_jobs import until
from tests.service.conftest import Running, start, stop
from tests.support.agent_queue_builders import conv, conv_id, msg_id
from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from tests.support.jwks import FakeClerkIssuer
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.notify import ChangeFeed

NO_TEMPORAL = "127.0.0.1:1"
READ_TIMEOUT_S = 30.0


class TransactionPooler:
    """Forwards TCP to Postgres; a connection that sends LISTEN is cut (both sides)."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self.connections = 0
        self.listens_refused = 0
        self.upstream_ports: set[int] = set()  # the client ports Postgres sees for our sessions
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        pipes = list(self._pipes)
        for task in pipes:
            task.cancel()
        for task in pipes:
            with suppress(asyncio.CancelledError, OSError):
                await task

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        self.upstream_ports.add(up_writer.get_extra_info("sockname")[1])

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
            try:
                while chunk := await reader.read(65536):
                    # The statement's text is in the Query or Parse message, whichever protocol.
                    if from_client and b"LISTEN" in chunk.upper():
                        self.listens_refused += 1
                        break
                    writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                for w in (client_writer, up_writer):
                    w.close()

        for task in (
            asyncio.create_task(pipe(client_reader, up_writer, True)),
            asyncio.create_task(pipe(up_reader, client_writer, False)),
        ):
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)


@pytest.fixture
async def pooler(db: TestDatabase) -> AsyncIterator[TransactionPooler]:
    forwarder = TransactionPooler(db.pg.port)
    await forwarder.start()
    yield forwarder
    await forwarder.close()


def pooled_url(db: TestDatabase, pooler: TransactionPooler) -> str:
    return db.dsn_for(ServiceName.AGENT_QUEUE).replace(f":{db.pg.port}/", f":{pooler.port}/")


def listening_sessions(db: TestDatabase) -> list[int]:
    """Client ports of agent_queue's sessions whose last statement was a LISTEN (the change feed
    and the principal cache's listener idle right after theirs)."""
    rows = db.sql(
        "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND usename = %s AND query ILIKE 'LISTEN%%'",
        (db.name, ServiceName.AGENT_QUEUE.db_role),
    )
    return [int(port) for (port,) in rows]


async def test_a_service_listens_on_its_listen_url_and_its_watch_wakes_while_queries_go_through_the_pooler(
    pooler: TransactionPooler, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer
) -> None:
    settings = settings_for(
        ServiceName.AGENT_QUEUE,
        database_url=pooled_url(db, pooler),
        database_listen_url=db.dsn_for(ServiceName.AGENT_QUEUE),
        # Behind a transaction pool: no server-side prepared statements (docs/operations.md).
        db_prepared_statements=False,
        # > 0: the principal cache follows identity's changes on a LISTEN connection too.
        principal_cache_ttl_s=5.0,
        temporal_address=NO_TEMPORAL,
    )
    agent_queue: Running = await start(
        await build_agent_queue(settings), agent_queue_pb2_grpc.AgentQueueServiceStub, settings, db, clerk_issuer
    )
    try:
        stream = agent_queue.stub.WatchPendingJobs(pb.WatchPendingJobsRequest(processor_id="w1"), metadata=service())
        await until(stream, lambda snapshot: True, READ_TIMEOUT_S)  # the current state: subscribed
        conversation = conv_id(conv())
        message = msg_id()
        await agent_queue.stub.EnqueueJob(
            pb.EnqueueJobRequest(message_id=message, conversation_id=conversation), metadata=service(), timeout=10
        )
        woken = await until(stream, lambda s: any(j.message_id == message for j in s.jobs), READ_TIMEOUT_S)
        assert [j.message_id for j in woken.jobs] == [message]
        stream.cancel()

        assert pooler.connections >= 1  # the queries went through the pooler
        assert pooler.listens_refused == 0  # no LISTEN was ever sent to it
        listeners = listening_sessions(db)
        assert len(listeners) == 2, listeners  # the change feed and the principal cache's listener
        assert not set(listeners) & pooler.upstream_ports  # both came to Postgres directly
    finally:
        await stop(agent_queue)


async def test_without_a_listen_url_the_change_feed_listens_through_the_pooler_and_never_hears(
    pooler: TransactionPooler, settings_for: Any, db: TestDatabase
) -> None:
    """The control: with only the pooled URL, the listen URL falls back to it, and the service's
    change feed never gets to listen (a service refuses to start then: its start times out)."""
    settings = settings_for(ServiceName.AGENT_QUEUE, database_url=pooled_url(db, pooler))
    assert settings.listen_url == settings.database_url
    feed = ChangeFeed(settings.listen_url, [PENDING_CHANNEL])
    try:
        with pytest.raises(TimeoutError):
            await feed.start()
    finally:
        await feed.stop()
    assert pooler.listens_refused >= 1
