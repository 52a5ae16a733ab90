"""Live-view latencies, each from the write call's start to the watcher's stream delivering
the change: (g) EnqueueJob → WatchPendingJobs, (j) UpdateStreamingContent → WatchConversation
at the runtime's 200 ms cadence, (k) ResolveApproval → WaitForApproval. Each also reports the
write call alone (`call_p50_ms`…), so the watch path's share is visible."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from google.protobuf import struct_pb2

from bench.core import Bench, Case, Metrics
from bench.stack import service_metadata
from bench.stats import latency_metrics
from zenthor import ids
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as aq
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2_grpc
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as ap
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as ms
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc

READ_TIMEOUT_S = 10.0
STREAMING_CADENCE_S = 0.2


async def read(call: Any) -> Any:
    """The stream's next message, bounded: a watcher that stays silent fails the case."""
    response = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
    if response is grpc.aio.EOF:
        raise RuntimeError("the watch stream ended")
    return response


def _result(seen: list[float], calls: list[float]) -> Metrics:
    return {**latency_metrics(seen), **latency_metrics(calls, "call_"), "samples": float(len(seen))}


async def enqueue_to_pending_watch(bench: Bench) -> Metrics:
    stack, n = bench.stack, bench.options.latency_samples
    await asyncio.to_thread(stack.sql, "TRUNCATE agent_queue.jobs")
    md = service_metadata()
    seen: list[float] = []
    calls: list[float] = []
    async with grpc.aio.insecure_channel(stack.address("agent_queue")) as channel:
        stub = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
        watch = stub.WatchPendingJobs(aq.WatchPendingJobsRequest(processor_id="bench-watch", max_jobs=1000), metadata=md)
        try:
            await read(watch)  # the current snapshot
            for _ in range(n):
                started = time.perf_counter()
                reply = await stub.EnqueueJob(
                    aq.EnqueueJobRequest(
                        message_id=ids.MESSAGE.format(ids.MESSAGE.new()),
                        conversation_id=ids.CONVERSATION.format(ids.CONVERSATION.new()),
                    ),
                    metadata=md,
                )
                calls.append(time.perf_counter() - started)
                while not any(j.id == reply.job.id for j in (await read(watch)).jobs):
                    pass
                seen.append(time.perf_counter() - started)
        finally:
            watch.cancel()
    return _result(seen, calls)


async def streaming_to_conversation_watch(bench: Bench) -> Metrics:
    stack, n = bench.stack, bench.options.latency_samples
    md, user = service_metadata(), stack.user_metadata()
    seen: list[float] = []
    calls: list[float] = []
    async with grpc.aio.insecure_channel(stack.address("messages")) as channel:
        stub = messages_pb2_grpc.MessagesServiceStub(channel)
        conversation = (await stub.CreateConversation(ms.CreateConversationRequest(title="bench"), metadata=user)).conversation
        placeholder = (
            await stub.CreatePlaceholder(ms.CreatePlaceholderRequest(conversation_id=conversation.id), metadata=md)
        ).message
        watch = stub.WatchConversation(ms.WatchConversationRequest(conversation_id=conversation.id), metadata=user)
        try:
            while not (await read(watch)).caught_up:
                pass
            text = ""
            tick = time.perf_counter()
            for i in range(1, n + 1):
                tick += STREAMING_CADENCE_S
                await asyncio.sleep(max(0.0, tick - time.perf_counter()))
                text += f" token{i}"
                started = time.perf_counter()
                await stub.UpdateStreamingContent(
                    ms.UpdateStreamingContentRequest(message_id=placeholder.id, content=text, sequence=i), metadata=md
                )
                calls.append(time.perf_counter() - started)
                while not any(m.id == placeholder.id and m.content == text for m in (await read(watch)).messages):
                    pass
                seen.append(time.perf_counter() - started)
            await stub.FinalizeMessage(ms.FinalizeMessageRequest(message_id=placeholder.id, content=text), metadata=md)
        finally:
            watch.cancel()
    return _result(seen, calls)


async def approval_to_waiter(bench: Bench) -> Metrics:
    stack, n = bench.stack, bench.options.latency_samples
    md, user = service_metadata(), stack.user_metadata()
    assert stack.user_id is not None
    owner = ids.USER.format(stack.user_id)
    conversation = ids.CONVERSATION.format(ids.CONVERSATION.new())
    seen: list[float] = []
    calls: list[float] = []
    async with grpc.aio.insecure_channel(stack.address("approvals")) as channel:
        stub = approvals_pb2_grpc.ApprovalsServiceStub(channel)
        for _ in range(n):
            approval = (
                await stub.CreateApproval(
                    ap.CreateApprovalRequest(
                        conversation_id=conversation,
                        job_id=ids.JOB.format(ids.JOB.new()),
                        tool_name="bench_tool",
                        tool_input=struct_pb2.Value(string_value="{}"),
                        channel=types_pb2.CHANNEL_WEB,
                        conversation_user_id=owner,
                    ),
                    metadata=md,
                )
            ).approval
            wait = stub.WaitForApproval(ap.WaitForApprovalRequest(approval_id=approval.id), metadata=md)
            try:
                first = await read(wait)
                if first.approval.status != ap.APPROVAL_STATUS_PENDING:
                    raise RuntimeError(f"approval {approval.id} not pending: {first.approval.status}")
                # A person answers seconds after the request, when its side effects (the
                # `approval.requested` webhook going out through the outbox) are long done; a
                # resolve 1 ms after the create would measure the two racing for the cores.
                await asyncio.to_thread(stack.wait_quiet)
                started = time.perf_counter()
                await stub.ResolveApproval(
                    ap.ResolveApprovalRequest(approval_id=approval.id, status=ap.APPROVAL_STATUS_APPROVED), metadata=user
                )
                calls.append(time.perf_counter() - started)
                while (await read(wait)).approval.status != ap.APPROVAL_STATUS_APPROVED:
                    pass
                seen.append(time.perf_counter() - started)
            finally:
                wait.cancel()
    return _result(seen, calls)


def live_cases(bench: Bench) -> list[Case]:
    return [
        Case("g", "EnqueueJob → WatchPendingJobs", enqueue_to_pending_watch, ("p99_ms", " ms p99"), quiet=True),
        Case("j", "UpdateStreamingContent → WatchConversation", streaming_to_conversation_watch, ("p99_ms", " ms p99"), quiet=True),
        Case("k", "ResolveApproval → WaitForApproval", approval_to_waiter, ("p99_ms", " ms p99"), quiet=True),
    ]
