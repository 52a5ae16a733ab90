"""A WhatsApp egress sender killed holding claims: sender A (a process holding the account
lease) claims a batch, sends part of it and is killed after a send it never acknowledged.
Once its account lease and claim leases run out, sender B takes the lease over; A's claims are
reclaimed, released by RetryWorkflow (real Temporal), and B sends them. Every message reaches
WhatsApp exactly once, except the ones A had sent but not acknowledged — sent twice, counted."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from services.delivery.app import build_server
from tests.reliability.conftest import Record, Tally
from tests.service.conftest import Running, start, stop
from tests.support.database import TestDatabase
from tests.support.delivery_builders import enqueue
from tests.support.fake_clock import FakeClock
from tests.support.grpc_client import service
from tests.support.jwks import FakeClerkIssuer
from tests.support.service_process import NOBODY, REPO
from tests.support.temporal_worker import production_worker
from zenthor.config import ServiceName
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc

ACCOUNT = "wa-crash"
WAIT_S = 120.0


@dataclass
class Sender:
    """One sender process and what it put on the (fake) WhatsApp socket."""

    proc: asyncio.subprocess.Process
    sent: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    holding: int = 0
    _reader: asyncio.Task[None] | None = None
    hung: asyncio.Event = field(default_factory=asyncio.Event)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            said: dict[str, Any] = json.loads(line)
            if "sent" in said:
                self.sent.append(said["sent"])
            elif "acked" in said:
                self.acked.append(said["acked"])
            elif "holding" in said:
                self.holding = said["holding"]
            elif "hanging_before_ack" in said:
                self.hung.set()

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 30)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 30)

    async def terminate(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 30)


async def spawn(delivery: Running, owner: str, hold: int, hang_after: int, log: Path) -> Sender:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.egress_sender", f"127.0.0.1:{delivery.server.port}", ACCOUNT, owner,
            str(hold), str(hang_after), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=err,
        )
    sender = Sender(proc)
    sender._reader = asyncio.create_task(sender._read())
    return sender


@asynccontextmanager
async def delivery_server(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, clock: FakeClock, temporal_address: str, task_queue: str
) -> AsyncIterator[Running]:
    settings = settings_for(
        ServiceName.DELIVERY, temporal_address=temporal_address, temporal_task_queue=task_queue,
        messages_addr=NOBODY, whatsapp_account_id=ACCOUNT, db_pool_size=20,
    )
    server = await build_server(settings, clock=clock, outbox_poll_s=0.05, retry_base_s=0.02, retry_cap_s=0.1)
    running = await start(server, delivery_pb2_grpc.DeliveryServiceStub, settings, db, clerk_issuer)
    try:
        yield running
    finally:
        await stop(running)


def statuses(db: TestDatabase) -> Counter[str]:
    return Counter({s: int(n) for s, n in db.sql("SELECT status, count(*) FROM delivery.outbound_messages GROUP BY status")})


async def run_scenario(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, client: Client, task_queue: str,
    temporal_address: str, tmp_path: Path, *, claims: int, sends_before_kill: int, record: Record, name: str,
) -> tuple[Tally, int]:
    clock = FakeClock()
    async with (
        delivery_server(settings_for, db, clerk_issuer, clock, temporal_address, task_queue) as delivery,
        production_worker(client, task_queue, delivery_addr=f"127.0.0.1:{delivery.server.port}"),
    ):
        await delivery.stub.UpsertWhatsAppAccount(
            pb.UpsertWhatsAppAccountRequest(account_id=ACCOUNT, phone="5511900000000", enabled=True), metadata=service()
        )
        # One message per recipient, so every message is its recipient's head and claimable at once.
        queued = [
            (await enqueue(delivery, account_id=ACCOUNT, to=f"55119{n:08d}", content=f"message {n}")).id
            for n in range(claims)
        ]

        a = await spawn(delivery, "sender-a", claims, sends_before_kill, tmp_path / "sender-a.log")
        await asyncio.wait_for(a.hung.wait(), WAIT_S)
        await a.kill()
        unacked = len(set(a.sent) - set(a.acked))

        # A's account lease (45 s) and claim leases (30 s) run out; B takes over.
        clock.advance(seconds=60)
        b = await spawn(delivery, "sender-b", 0, 0, tmp_path / "sender-b.log")
        try:
            async with asyncio.timeout(WAIT_S):
                while statuses(db)["sent"] < claims and b.proc.returncode is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass  # counted as stuck below
        finally:
            await b.terminate()

    sends = Counter(a.sent + b.sent)
    final = statuses(db)
    tally = Tally(
        name,
        lost=sum(1 for message in queued if sends[message] == 0),
        duplicated=sum(n - 1 for n in sends.values()),
        stuck=sum(final.values()) - final["sent"],
        details=f"A held {a.holding} claims, sent {len(a.sent)}, acknowledged {len(a.acked)}; {unacked} sent unacknowledged; B sent {len(b.sent)}",
    )
    record(tally)
    return tally, unacked


async def test_a_sender_killed_holding_claims_resends_only_what_it_had_not_acknowledged(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, client: Client, task_queue: str,
    temporal_address: str, tmp_path: Path, record_tally: Record,
) -> None:
    tally, unacked = await run_scenario(
        settings_for, db, clerk_issuer, client, task_queue, temporal_address, tmp_path,
        claims=12, sends_before_kill=5, record=record_tally, name="egress sender kill -9",
    )
    assert unacked == 1
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, unacked, 0)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_a_sender_killed_holding_140_claims_resends_only_what_it_had_not_acknowledged(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, client: Client, task_queue: str,
    temporal_address: str, tmp_path: Path, record_tally: Record,
) -> None:
    tally, unacked = await run_scenario(
        settings_for, db, clerk_issuer, client, task_queue, temporal_address, tmp_path,
        claims=140, sends_before_kill=60, record=record_tally, name="egress sender kill -9 (soak)",
    )
    assert unacked == 1
    assert (tally.lost, tally.duplicated, tally.stuck) == (0, unacked, 0)
