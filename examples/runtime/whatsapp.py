"""The WhatsApp egress loop: hold the account's lease, send what the outbound queue holds.

Only the lease holder gets rows from ClaimOutbound, so a second runtime waits as a standby and
takes over when the lease is released (SIGTERM) or expires (crash). "Sending" here is a local
sink: a log line and one JSON line per message in `<data dir>/whatsapp-sent.jsonl`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import grpc

from examples.runtime.config import Config
from examples.runtime.jobs import seconds
from examples.runtime.stubs import Stubs
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as dl

log = logging.getLogger("runtime.whatsapp")

CLAIM_BATCH = 10
# How often a standby asks for the lease again (there is no lease stream to wait on).
ACQUIRE_EVERY_S = 3.0
# Waits between attempts to reach delivery at start-up, doubling up to the cap.
REGISTER_FIRST_WAIT_S = 0.5
REGISTER_MAX_WAIT_S = 10.0
# Delivery down, restarting or not started yet: another attempt later can succeed.
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class Sink:
    """Stands in for the WhatsApp socket: appends each sent message as one JSON line."""

    def __init__(self, path: Path, sender: str) -> None:
        self._path = path
        self._sender = sender
        path.parent.mkdir(parents=True, exist_ok=True)

    def send(self, row: dl.OutboundMessage) -> None:
        line = {"id": row.id, "to": row.to, "content": row.payload.content, "sender": self._sender,
                "account_id": row.account_id, "sent_at": time.time()}
        with self._path.open("a") as out:
            out.write(json.dumps(line) + "\n")
        log.info("sent %s to %s: %s", row.id, row.to or row.conversation_id, row.payload.content[:60])


class Egress:
    def __init__(self, config: Config, stubs: Stubs, sink: Sink) -> None:
        self._config = config
        self._stubs = stubs
        self._sink = sink

    async def run(self, stopping: asyncio.Event) -> None:
        c = self._config
        if not await self.register(stopping):
            return
        try:
            while not stopping.is_set():
                try:
                    if await self._acquire():
                        await self._while_holding(stopping)
                        continue
                except grpc.aio.AioRpcError as e:
                    if e.code() not in UNREACHABLE:
                        raise
                    log.warning("lease request failed (%s); trying again", e.code().name)
                await _wait(stopping, ACQUIRE_EVERY_S)
        finally:
            # Hand the account to a standby at once instead of after the lease's TTL.
            released = await self._stubs.delivery.ReleaseLease(
                dl.ReleaseLeaseRequest(account_id=c.account_id, owner_id=c.worker_id))
            log.info("lease on %s released: %s", c.account_id, released.released)

    async def register(self, stopping: asyncio.Event) -> bool:
        """Registers the account once delivery answers. A runtime may start before the backend
        (`make dev` starts every process at once; a rollout restarts delivery) and then waits for
        it, with backoff, instead of exiting. False when told to stop first."""
        c = self._config
        request = dl.UpsertWhatsAppAccountRequest(account_id=c.account_id, phone=c.phone, enabled=True)
        delay = REGISTER_FIRST_WAIT_S
        while not stopping.is_set():
            try:
                await self._stubs.delivery.UpsertWhatsAppAccount(request)
                return True
            except grpc.aio.AioRpcError as e:
                if e.code() not in UNREACHABLE:
                    raise
                log.warning("delivery not reachable yet (%s); trying again in %.1f s", e.code().name, delay)
            await _wait(stopping, delay)
            delay = min(delay * 2, REGISTER_MAX_WAIT_S)
        return False

    async def _acquire(self) -> bool:
        c = self._config
        reply = await self._stubs.delivery.AcquireLease(dl.AcquireLeaseRequest(
            account_id=c.account_id, owner_id=c.worker_id, ttl=seconds(c.account_lease_s)))
        if reply.acquired:
            log.info("holding the WhatsApp lease on %s", c.account_id)
        return reply.acquired

    async def _while_holding(self, stopping: asyncio.Event) -> None:
        """Sends until the lease is lost or the runtime stops."""
        lost = asyncio.Event()
        tasks = [asyncio.create_task(self._heartbeat(lost)), asyncio.create_task(self._send_loop())]
        waits = [asyncio.create_task(stopping.wait()), asyncio.create_task(lost.wait())]
        try:
            await asyncio.wait([*waits, tasks[1]], return_when=asyncio.FIRST_COMPLETED)
            if tasks[1].done():
                tasks[1].result()  # the send loop only ends by raising
        finally:
            for task in [*tasks, *waits]:
                task.cancel()
            await asyncio.gather(*tasks, *waits, return_exceptions=True)
        if lost.is_set():
            log.warning("lost the WhatsApp lease on %s", self._config.account_id)

    async def _heartbeat(self, lost: asyncio.Event) -> None:
        c = self._config
        request = dl.HeartbeatLeaseRequest(account_id=c.account_id, owner_id=c.worker_id,
                                           ttl=seconds(c.account_lease_s))
        while True:
            await asyncio.sleep(c.account_lease_s / 3)
            try:
                if not (await self._stubs.delivery.HeartbeatLease(request)).renewed:
                    lost.set()
                    return
            except grpc.aio.AioRpcError as e:
                log.warning("lease heartbeat failed (%s); trying again", e.code().name)

    async def _send_loop(self) -> None:
        """WatchOutbound wakes the loop whenever rows may be claimable; it claims until a claim
        comes back short, then waits for the next wake-up."""
        c = self._config
        watch = dl.WatchOutboundRequest(account_id=c.account_id, channel=types_pb2.CHANNEL_WHATSAPP)
        while True:
            try:
                async for update in self._stubs.delivery.WatchOutbound(
                        watch, metadata=self._stubs.stream_metadata, wait_for_ready=True):
                    if update.claimable_count > 0:
                        await self._drain()
            except grpc.aio.AioRpcError as e:
                log.warning("outbound watch ended (%s); reopening", e.code().name)
            await asyncio.sleep(1.0)

    async def _drain(self) -> None:
        c = self._config
        while True:
            claimed = await self._stubs.delivery.ClaimOutbound(dl.ClaimOutboundRequest(
                account_id=c.account_id, processor_id=c.worker_id, channel=types_pb2.CHANNEL_WHATSAPP,
                max_messages=CLAIM_BATCH))
            for row in claimed.outbound_messages:
                await self._send(row)
            if len(claimed.outbound_messages) < CLAIM_BATCH:
                return

    async def _send(self, row: dl.OutboundMessage) -> None:
        c = self._config
        if not row.to:
            await self._stubs.delivery.FailOutbound(dl.FailOutboundRequest(
                id=row.id, processor_id=c.worker_id, error="missing recipient", retry=False))
            return
        try:
            self._sink.send(row)
        except OSError as e:
            await self._stubs.delivery.FailOutbound(dl.FailOutboundRequest(
                id=row.id, processor_id=c.worker_id, error=repr(e), retry=True))
            return
        await self._stubs.delivery.CompleteOutbound(dl.CompleteOutboundRequest(id=row.id, processor_id=c.worker_id))


async def _wait(stopping: asyncio.Event, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout_s)
    except TimeoutError:
        pass
