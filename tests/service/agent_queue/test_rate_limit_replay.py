"""The agent runtime's normal call pattern never meets the service key's rate limit when it is
sized as docs/operations.md says: 1,000 jobs replayed against the real agent_queue, messages,
approvals and delivery servers, with the key's budget configured on every one of them.

The replay runs in virtual time: the servers' token buckets read a clock the test moves to each
call's moment in the runtime's schedule, so the buckets see the runtime's real rates while the
calls themselves go as fast as the servers answer. The runtime's pattern (examples/runtime/README.md):
messages arrive in waves of 20; up to 20 jobs run at once, each claimed, its context read, a
placeholder streamed every 200 ms then finalized, and completed; every tenth job first waits 20 s
for a tool approval, polling it every second, and heartbeats its lease every 15 s; beside the
jobs, the WhatsApp lease heartbeats every 15 s and egress polls for outbound messages every
second. The services' own calls with the key (agent_queue reading history from messages) spend
the same budgets.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from services.approvals.app import build_server as build_approvals
from services.delivery.app import build_server as build_delivery
from services.messages.app import build_server as build_messages
from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.service.conftest import Running, start, stop
from tests.support.agent_queue_builders import lease, msg_id
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.support.rate_limits import BucketClock, retry_delay_s
from zenthor import ids
from zenthor.config import ServiceName
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as aq
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as ap
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as dl
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as msg
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc

JOBS = 1_000
CONVERSATIONS = 50
MAX_JOBS = 20  # jobs one runtime runs at once
# Messages arrive in waves (people answer the same news at once): 20 every 4 s, 5 jobs/s on average.
WAVE = 20
WAVE_EVERY_S = 4.0
STREAM_EVERY_S = 0.2
STREAM_UPDATES = 5  # a one-second reply: the rate per stream is what counts, not its length
HEARTBEAT_EVERY_S = 15.0
APPROVAL_EVERY = 10  # every tenth job waits for an approval
APPROVAL_WAIT_S = 20
LEASE_HEARTBEAT_EVERY_S = 15.0
EGRESS_POLL_EVERY_S = 1.0
WORKER = "runtime-replay-1"
ACCOUNT = "default"

# The sizing docs/operations.md gives for a runtime running 20 jobs at once against one replica
# of each service: its peak is 20 streams × 5 updates/s = 100 calls/s on messages; twice that.
SERVICE_LIMITS = {"rate_limit_service_calls_per_s": 200, "rate_limit_service_burst": 400}
# Realistic per-person limits too: the runtime never spends them.
USER_LIMITS = {
    "rate_limit_sends_per_minute": 20,
    "rate_limit_sends_burst": 10,
    "rate_limit_watch_streams_per_minute": 30,
    "rate_limit_watch_streams_burst": 30,
}


@dataclass
class Stack:
    agent_queue: Running
    messages: Running
    approvals: Running
    delivery: Running

    def all(self) -> list[Running]:
        return [self.agent_queue, self.messages, self.approvals, self.delivery]


@pytest.fixture
def bucket_clock() -> BucketClock:
    return BucketClock()


@pytest.fixture
async def stack(
    agent_queue_factory: AgentQueueFactory,
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
    identity: Running,
    bucket_clock: BucketClock,
) -> AsyncIterator[Stack]:
    limits = {**SERVICE_LIMITS, **USER_LIMITS}
    identity_addr = f"127.0.0.1:{identity.server.port}"
    aq_port = free_port()
    messages_settings = settings_for(
        ServiceName.MESSAGES, identity_addr=identity_addr, agent_queue_addr=f"127.0.0.1:{aq_port}", db_pool_size=20, **limits
    )
    messages = await start(
        await build_messages(messages_settings), messages_pb2_grpc.MessagesServiceStub, messages_settings, db, clerk_issuer
    )
    agent_queue = await agent_queue_factory(port=aq_port, messages_addr=f"127.0.0.1:{messages.server.port}", **limits)
    approvals_settings = settings_for(ServiceName.APPROVALS, identity_addr=identity_addr, **limits)
    approvals = await start(
        await build_approvals(approvals_settings), approvals_pb2_grpc.ApprovalsServiceStub, approvals_settings, db, clerk_issuer
    )
    delivery_settings = settings_for(
        ServiceName.DELIVERY, identity_addr=identity_addr, messages_addr="127.0.0.1:1", temporal_address="127.0.0.1:1", **limits
    )
    delivery = await start(
        await build_delivery(delivery_settings), delivery_pb2_grpc.DeliveryServiceStub, delivery_settings, db, clerk_issuer
    )
    running = Stack(agent_queue, messages, approvals, delivery)
    for each in running.all():
        each.server.rate_limits.use_clock(bucket_clock)
    yield running
    for each in (delivery, approvals, messages):
        await stop(each)


Action = Callable[[], Awaitable[None]]


@dataclass
class Replay:
    """Runs actions at virtual moments: the clock is set to each moment, and the actions due
    then run together; an action may schedule later ones."""

    clock: BucketClock
    start: float
    _queue: list[tuple[float, int, Action]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    calls: Counter[tuple[str, int]] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)

    def at(self, moment: float, action: Action) -> None:
        heapq.heappush(self._queue, (round(moment, 6), next(self._order), action))

    async def run(self) -> None:
        while self._queue:
            moment = self._queue[0][0]
            due: list[Action] = []
            while self._queue and self._queue[0][0] == moment:
                due.append(heapq.heappop(self._queue)[2])
            self.clock.now = self.start + moment
            async with asyncio.timeout(60):
                await asyncio.gather(*(action() for action in due))

    async def call(self, server: str, rpc: Awaitable[Any]) -> Any:
        """One call of the runtime, counted per server and virtual second; a refusal is kept."""
        self.calls[(server, int(self.clock.now - self.start))] += 1
        try:
            return await rpc
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.refused.append(f"{server} at {self.clock.now - self.start:.1f} s: {e.details()}")
                return None
            raise


# About 13,000 calls: minutes on a loaded machine, hence `make test-slow`.
@pytest.mark.slow
@pytest.mark.timeout(1200)
async def test_the_runtimes_normal_calls_for_1000_jobs_never_meet_the_service_key_limit(
    stack: Stack, db: TestDatabase, identity: Running, bucket_clock: BucketClock
) -> None:
    alice_id = alice(db)
    ana = bearer(identity.issuer.token("user_alice"))
    conversations = [
        (await stack.messages.stub.CreateConversation(msg.CreateConversationRequest(title=f"c{n}"), metadata=ana)).conversation.id
        for n in range(CONVERSATIONS)
    ]
    key = service()
    replay = Replay(bucket_clock, bucket_clock.now)
    jobs_q, msgs, approvals, delivery = (
        stack.agent_queue.stub,
        stack.messages.stub,
        stack.approvals.stub,
        stack.delivery.stub,
    )
    running: set[str] = set()
    claiming = asyncio.Lock()
    completed: list[str] = []
    claimed = 0
    owner = ids.USER.format(alice_id)

    async def claim() -> None:
        nonlocal claimed
        async with claiming:
            free = MAX_JOBS - len(running)
            if free <= 0:
                return
            reply = await replay.call(
                "agent_queue",
                jobs_q.ClaimJobs(aq.ClaimJobsRequest(processor_id=WORKER, max_jobs=free, lease=lease(60)), metadata=key),
            )
            for job in reply.jobs if reply else ():
                running.add(job.id)
                claimed += 1
                schedule_job(job, bucket_clock.now - replay.start, asks_approval=claimed % APPROVAL_EVERY == 0)

    def schedule_job(job: aq.Job, t0: float, asks_approval: bool) -> None:
        placeholder: dict[str, str] = {}
        stream_at = t0 + 0.2 + (APPROVAL_WAIT_S + 0.5 if asks_approval else 0.0)
        end = stream_at + STREAM_EVERY_S * STREAM_UPDATES + 0.2

        async def context() -> None:
            await replay.call(
                "agent_queue", jobs_q.GetConversationContext(aq.GetConversationContextRequest(conversation_id=job.conversation_id), metadata=key)
            )

        async def create_placeholder() -> None:
            reply = await replay.call(
                "messages",
                msgs.CreatePlaceholder(msg.CreatePlaceholderRequest(conversation_id=job.conversation_id, job_id=job.id), metadata=key),
            )
            placeholder["id"] = reply.message.id

        async def create_approval() -> None:
            await replay.call(
                "approvals",
                approvals.CreateApproval(
                    ap.CreateApprovalRequest(
                        conversation_id=job.conversation_id,
                        job_id=job.id,
                        tool_name="schedule_task",
                        tool_input=struct_pb2.Value(string_value="every day"),
                        channel=types_pb2.CHANNEL_WEB,
                        conversation_user_id=owner,
                    ),
                    metadata=key,
                ),
            )

        async def poll_approval() -> None:
            await replay.call("approvals", approvals.ListJobApprovals(ap.ListJobApprovalsRequest(job_id=job.id), metadata=key))

        async def heartbeat() -> None:
            await replay.call(
                "agent_queue", jobs_q.HeartbeatJob(aq.HeartbeatJobRequest(job_id=job.id, processor_id=WORKER, lease=lease(60)), metadata=key)
            )

        def update(n: int) -> Action:
            async def push() -> None:
                text = " ".join(f"w{i}" for i in range(n))
                request = msg.UpdateStreamingContentRequest(message_id=placeholder["id"], content=text, sequence=n)
                await replay.call("messages", msgs.UpdateStreamingContent(request, metadata=key))

            return push

        async def finish() -> None:
            await replay.call(
                "messages", msgs.FinalizeMessage(msg.FinalizeMessageRequest(message_id=placeholder["id"], content="done."), metadata=key)
            )
            await replay.call(
                "agent_queue",
                jobs_q.CompleteJob(aq.CompleteJobRequest(job_id=job.id, processor_id=WORKER, model_used="replay"), metadata=key),
            )
            running.discard(job.id)
            completed.append(job.id)
            await claim()

        replay.at(t0, context)
        replay.at(t0 + 0.1, create_placeholder)
        if asks_approval:
            replay.at(t0 + 0.2, create_approval)
            for second in range(1, APPROVAL_WAIT_S + 1):
                replay.at(t0 + 0.2 + second, poll_approval)
        beat = t0 + HEARTBEAT_EVERY_S
        while beat < end:
            replay.at(beat, heartbeat)
            beat += HEARTBEAT_EVERY_S
        for n in range(1, STREAM_UPDATES + 1):
            replay.at(stream_at + STREAM_EVERY_S * (n - 1), update(n))
        replay.at(stream_at + STREAM_EVERY_S * STREAM_UPDATES, update(STREAM_UPDATES + 1))  # the final, awaited one
        replay.at(end, finish)

    def arrivals(wave: int) -> Action:
        async def enqueue(k: int) -> None:
            # What messages' outbox relay calls for each message sent: the services' own
            # traffic spends the key's budget like the runtime's.
            conversation = conversations[k % CONVERSATIONS]
            request = aq.EnqueueJobRequest(message_id=msg_id(), conversation_id=conversation, conversation_user_id=owner)
            await replay.call("agent_queue", jobs_q.EnqueueJob(request, metadata=key))

        async def wave_arrives() -> None:
            await asyncio.gather(*(enqueue(wave * WAVE + i) for i in range(WAVE)))
            await claim()  # the pending watch pushes the new jobs: the runtime claims what it can

        return wave_arrives

    def every(period: float, action: Action) -> Action:
        async def tick() -> None:
            await action()
            if len(completed) < JOBS:
                replay.at(bucket_clock.now - replay.start + period, tick)

        return tick

    async def lease_heartbeat() -> None:
        await replay.call("delivery", delivery.HeartbeatLease(dl.HeartbeatLeaseRequest(account_id=ACCOUNT, owner_id=WORKER), metadata=key))

    async def egress_poll() -> None:
        await replay.call(
            "delivery",
            delivery.ClaimOutbound(
                dl.ClaimOutboundRequest(account_id=ACCOUNT, processor_id=WORKER, channel=types_pb2.CHANNEL_WHATSAPP, max_messages=1),
                metadata=key,
            ),
        )

    # The WhatsApp side starts as the runtime does: its account, then the lease.
    await delivery.UpsertWhatsAppAccount(dl.UpsertWhatsAppAccountRequest(account_id=ACCOUNT, phone="5511999990000", enabled=True), metadata=key)
    assert (await delivery.AcquireLease(dl.AcquireLeaseRequest(account_id=ACCOUNT, owner_id=WORKER), metadata=key)).acquired
    replay.at(LEASE_HEARTBEAT_EVERY_S, every(LEASE_HEARTBEAT_EVERY_S, lease_heartbeat))
    replay.at(0.5, every(EGRESS_POLL_EVERY_S, egress_poll))
    for wave in range(JOBS // WAVE):
        replay.at(wave * WAVE_EVERY_S, arrivals(wave))

    await replay.run()

    assert replay.refused == [], f"{len(replay.refused)} calls refused, first: {replay.refused[:3]}"
    assert len(completed) == JOBS and claimed == JOBS
    peak = {server: max(n for (s, _), n in replay.calls.items() if s == server) for server, _ in replay.calls}
    total = sum(replay.calls.values())
    print(f"\nreplayed {total} runtime calls for {JOBS} jobs over {bucket_clock.now - replay.start:.0f} virtual s;"
          f" peak calls in one second: {peak}")
    # The replay came near the rate the limit is sized for (5 calls/s per job, 20 jobs).
    assert peak["messages"] >= 60, "the replay did not reach the runtime's streaming peak"

    # The limit was live all along: a runaway loop at one instant is refused.
    flood = await asyncio.gather(
        *(
            replay.call("messages", msgs.BatchGetConversations(msg.BatchGetConversationsRequest(ids=[]), metadata=key))
            for _ in range(SERVICE_LIMITS["rate_limit_service_burst"] + 50)
        )
    )
    assert sum(1 for reply in flood if reply is None) >= 1
    refusal = await rpc_error(msgs.BatchGetConversations(msg.BatchGetConversationsRequest(ids=[]), metadata=key))
    assert 0 < retry_delay_s(refusal) <= 1 / SERVICE_LIMITS["rate_limit_service_calls_per_s"] + 1e-6
