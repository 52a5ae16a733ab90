"""The outbound (WhatsApp egress) drain, figure (h).

N messages to N/per_recipient recipients (10 each by default, as the issue's 5,000 to 500;
enqueued per recipient in order) over one account per worker; each worker first takes its account's lease with its processor id (ClaimOutbound is
lease-gated for the lease holder), then drains with an outbound strategy. Every outbound row
names a real stored message (one WhatsApp conversation per recipient, written into messages'
tables untimed), so the outcome each ack reports to messages (`MarkMessageDelivery`, through
delivery's outbox) does the real work; its CPU is the "other services" column. Enqueueing goes
through EnqueueOutbound (untimed); the drain is timed from the first claim to the last ack.

A new strategy (batched acks, …) is one function added to OUTBOUND_STRATEGIES, as for jobs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import grpc
import psycopg
from google.protobuf.duration_pb2 import Duration

from bench.core import Bench, Case, Metrics
from bench.jobs import DRAIN_LIMIT_S, DrainState, measured
from bench.stack import service_metadata
from zenthor import ids
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc

WHATSAPP = types_pb2.CHANNEL_WHATSAPP
ENQUEUE_IN_FLIGHT = 32
CLAIM_LEASE_S = 120
ACCOUNT_LEASE_S = 600  # the longest lease the service grants


@dataclass
class OutboundWorker:
    """One egress process: holds `account_id`'s lease as `processor_id`."""

    stub: delivery_pb2_grpc.DeliveryServiceAsyncStub
    account_id: str
    processor_id: str
    drain: DrainState
    batch: int
    metadata: tuple[tuple[str, str], ...] = field(default_factory=service_metadata)

    def claim_request(self) -> pb.ClaimOutboundRequest:
        lease = Duration()
        lease.FromSeconds(CLAIM_LEASE_S)
        return pb.ClaimOutboundRequest(
            account_id=self.account_id, processor_id=self.processor_id, channel=WHATSAPP,
            max_messages=self.batch, lease=lease,
        )


OutboundStrategy = Callable[[OutboundWorker], Awaitable[None]]


async def claim_then_complete_each(w: OutboundWorker) -> None:
    """Today's runtime: ClaimOutbound(max batch), then one CompleteOutbound per message."""
    while not w.drain.done:
        reply = await w.stub.ClaimOutbound(w.claim_request(), metadata=w.metadata)
        if not reply.outbound_messages:
            await w.drain.wait_for_progress()
            continue
        await asyncio.gather(
            *(
                w.stub.CompleteOutbound(pb.CompleteOutboundRequest(id=m.id, processor_id=w.processor_id), metadata=w.metadata)
                for m in reply.outbound_messages
            )
        )
        w.drain.completed(len(reply.outbound_messages))


OUTBOUND_STRATEGIES: dict[str, OutboundStrategy] = {
    "claim+complete-each": claim_then_complete_each,
}


def phone(account: int, recipient: int) -> str:
    return f"55119{account:02d}{recipient:06d}"


# One WhatsApp conversation per recipient and `each` stored assistant replies in it, as the
# runtime leaves them before delivery sends them (status sent, not streaming).
LOAD_MESSAGES = """
WITH conv AS (
    INSERT INTO messages.conversations (id, channel, contact_id, status, created_at, updated_at, revision, meta_revision)
    SELECT c, 'whatsapp', uuidv7(), 'active', now(), now(), %(each)s, 1 FROM unnest(%(conversations)s::uuid[]) AS c
    RETURNING id
)
INSERT INTO messages.messages (id, conversation_id, role, content, channel, status, revision, created_at, updated_at)
SELECT m.id, m.conversation_id, 'assistant', 'bench', 'whatsapp', 'sent', m.seq, now(), now()
FROM unnest(%(messages)s::uuid[], %(message_conversations)s::uuid[], %(seqs)s::int[]) AS m(id, conversation_id, seq)
"""


def load_messages(dsn: str, recipients: int, each: int) -> list[list[tuple[uuid.UUID, uuid.UUID]]]:
    """Stores the messages delivery will send: [recipient][seq] → (conversation id, message id)."""
    conversations = [ids.CONVERSATION.new() for _ in range(recipients)]
    plan = [[(c, ids.MESSAGE.new()) for _ in range(each)] for c in conversations]
    flat = [(c, m, seq) for row in plan for seq, (c, m) in enumerate(row, start=1)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(LOAD_MESSAGES, {
            "each": each, "conversations": conversations, "messages": [m for _, m, _ in flat],
            "message_conversations": [c for c, _, _ in flat], "seqs": [s for _, _, s in flat],
        })
    return plan


async def enqueue_all(
    stub: delivery_pb2_grpc.DeliveryServiceAsyncStub, accounts: list[str], plan: list[list[tuple[uuid.UUID, uuid.UUID]]]
) -> None:
    """Each recipient's messages in sequence order (one round per sequence number), recipients
    concurrently; recipient r belongs to account r mod len(accounts)."""
    limit = asyncio.Semaphore(ENQUEUE_IN_FLIGHT)
    md = service_metadata()

    async def one(account: int, recipient: int, seq: int) -> None:
        conversation_id, message_id = plan[recipient][seq]
        async with limit:
            await stub.EnqueueOutbound(
                pb.EnqueueOutboundRequest(
                    channel=WHATSAPP,
                    account_id=accounts[account],
                    conversation_id=ids.CONVERSATION.format(conversation_id),
                    message_id=ids.MESSAGE.format(message_id),
                    to=phone(account, recipient),
                    content=f"bench {recipient}/{seq}",
                    metadata=pb.OutboundMetadata(kind="assistant_message"),
                ),
                metadata=md,
            )

    for seq in range(len(plan[0]) if plan else 0):
        await asyncio.gather(*(one(r % len(accounts), r, seq) for r in range(len(plan))))


def count_sent(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM delivery.outbound_messages WHERE status = 'sent'").fetchone()
        return int(row[0]) if row else 0


async def drain_outbound(bench: Bench, strategy: OutboundStrategy) -> Metrics:
    opts, stack = bench.options, bench.stack
    recipients = max(1, opts.outbound // opts.per_recipient)
    n = recipients * opts.per_recipient
    accounts = [f"bench-account-{i}" for i in range(opts.workers)]
    await asyncio.to_thread(stack.sql, "TRUNCATE delivery.outbound_messages")
    channels = [grpc.aio.insecure_channel(stack.address("delivery")) for _ in range(opts.workers)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), 10)
        stubs = [delivery_pb2_grpc.DeliveryServiceStub(c) for c in channels]
        ttl = Duration()
        ttl.FromSeconds(ACCOUNT_LEASE_S)
        for i, account in enumerate(accounts):
            await stubs[i].UpsertWhatsAppAccount(
                pb.UpsertWhatsAppAccountRequest(account_id=account, phone=phone(i, 999_999), enabled=True),
                metadata=service_metadata(),
            )
            lease = await stubs[i].AcquireLease(
                pb.AcquireLeaseRequest(account_id=account, owner_id=f"bench-sender-{i}", ttl=ttl), metadata=service_metadata()
            )
            if not lease.acquired:
                raise RuntimeError(f"could not take the lease of {account}")
        plan = await asyncio.to_thread(load_messages, stack.admin_dsn(), recipients, opts.per_recipient)
        await enqueue_all(stubs[0], accounts, plan)
        await asyncio.to_thread(stack.sql, "VACUUM ANALYZE delivery.outbound_messages")
        state = DrainState(n)
        workers = [OutboundWorker(stubs[i], a, f"bench-sender-{i}", state, opts.claim_batch) for i, a in enumerate(accounts)]
        # Each account's share: a worker stops when its account is empty, not the whole queue.
        shares = [len(range(i, recipients, len(accounts))) for i in range(len(accounts))]
        async with measured(bench, n, "delivery") as metrics, asyncio.timeout(DRAIN_LIMIT_S):
            await asyncio.gather(*(_until_share(strategy, w, share * opts.per_recipient) for w, share in zip(workers, shares, strict=True)))
    finally:
        for channel in channels:
            await channel.close()
    sent = await asyncio.to_thread(count_sent, stack.admin_dsn())
    if sent != n:
        raise RuntimeError(f"outbound drain ended with {sent} of {n} messages sent")
    return metrics


async def _until_share(strategy: OutboundStrategy, worker: OutboundWorker, share: int) -> None:
    """Runs the strategy on a per-account drain state, reporting progress to the shared one."""
    shared = worker.drain
    own = _AccountDrain(share, shared)
    worker.drain = own
    try:
        await strategy(worker)
    finally:
        worker.drain = shared


class _AccountDrain(DrainState):
    def __init__(self, total: int, shared: DrainState) -> None:
        super().__init__(total)
        self._shared = shared

    def completed(self, n: int) -> None:
        super().completed(n)
        self._shared.completed(n)


def outbound_cases(bench: Bench) -> list[Case]:
    return [
        Case("h", f"ours {name}", partial(drain_outbound, strategy=strategy), windowed=True)
        for name, strategy in OUTBOUND_STRATEGIES.items()
    ]
