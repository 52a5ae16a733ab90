"""Worker strategies with batched acknowledgements, for figures (a), (b) and (h).

Registered into `bench.jobs.JOB_STRATEGIES` and `bench.outbound.OUTBOUND_STRATEGIES` on import
(bench/__main__.py imports this module), so every drain runs them beside today's
claim-then-complete-each loop:

  claim+complete-batch  one claim, then one CompleteJobs / CompleteOutboundMessages for the batch
  acks-on-claim         the batch's acks ride on the next claim (ClaimJobs.completed,
                        ClaimOutbound.completed_ids): one call per batch; the last batch is
                        flushed with CompleteJobs / CompleteOutboundMessages
  worker-stream         acks-on-claim over one WorkJobs / WorkOutbound stream per worker: one
                        message each way per batch, no call per batch

Job claims ask for JOB_VIEW_BASIC (what a worker reads). Every refused ack fails the drain: in a
bench nobody else holds the leases.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bench.jobs import JOB_STRATEGIES, DrainState, JobWorker
from bench.outbound import OUTBOUND_STRATEGIES, OutboundWorker
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as dpb

STREAM_READ_TIMEOUT_S = 30.0
Ack = TypeVar("Ack")


def _check(refused: Sequence[str]) -> None:
    if refused:
        raise RuntimeError(f"{len(refused)} acks refused, e.g. {refused[0]}")


def _claim(w: JobWorker, completed: Sequence[pb.JobCompletion] = ()) -> pb.ClaimJobsRequest:
    request = w.claim_request()
    request.view = pb.JOB_VIEW_BASIC
    request.completed.extend(completed)
    return request


def _acks(jobs: Sequence[pb.Job]) -> list[pb.JobCompletion]:
    return [pb.JobCompletion(job_id=j.id, model_used="bench") for j in jobs]


async def job_claim_then_complete_batch(w: JobWorker) -> None:
    while not w.drain.done:
        reply = await w.stub.ClaimJobs(_claim(w), metadata=w.metadata)
        if not reply.jobs:
            await w.drain.wait_for_progress()
            continue
        done = await w.stub.CompleteJobs(
            pb.CompleteJobsRequest(processor_id=w.processor_id, completions=_acks(reply.jobs)), metadata=w.metadata
        )
        _check(done.refused_job_ids)
        w.drain.completed(len(reply.jobs))


async def job_acks_on_claim(w: JobWorker) -> None:
    acks: list[pb.JobCompletion] = []
    while not w.drain.done:
        reply = await w.stub.ClaimJobs(_claim(w, acks), metadata=w.metadata)
        _check(reply.refused_job_ids)
        if acks:
            w.drain.completed(len(acks))
        acks = _acks(reply.jobs)
        if not acks:
            await w.drain.wait_for_progress()
    if acks:  # claimed on the last round: nothing more to claim, so flush alone
        done = await w.stub.CompleteJobs(
            pb.CompleteJobsRequest(processor_id=w.processor_id, completions=acks), metadata=w.metadata
        )
        _check(done.refused_job_ids)
        w.drain.completed(len(acks))


async def _work_stream(
    stream: Any,
    drain: DrainState,
    ask: Callable[[list[Ack]], Any],
    answer: Callable[[Any], tuple[Sequence[str], list[Ack]]],
    response_type: type,
) -> None:
    """acks-on-claim over one worker stream: each message carries the last batch's acks and the
    next claim, and `answer` reads the reply as (refused acks, the next batch's acks)."""
    try:
        acks: list[Ack] = []
        while True:
            await stream.write(ask(acks))
            read = await asyncio.wait_for(stream.read(), STREAM_READ_TIMEOUT_S)
            if not isinstance(read, response_type):
                raise RuntimeError("the worker stream ended")
            refused, claimed = answer(read)
            _check(refused)
            if acks:
                drain.completed(len(acks))
            acks = claimed
            if drain.done and not acks:
                break
            if not acks:
                await drain.wait_for_progress()
        await stream.done_writing()
    finally:
        stream.cancel()


async def job_worker_stream(w: JobWorker) -> None:
    await _work_stream(
        w.stub.WorkJobs(metadata=w.metadata),
        w.drain,
        lambda acks: pb.WorkJobsRequest(claim=_claim(w, acks)),
        lambda reply: (reply.claim.refused_job_ids, _acks(reply.claim.jobs)),
        pb.WorkJobsResponse,
    )


async def outbound_claim_then_complete_batch(w: OutboundWorker) -> None:
    while not w.drain.done:
        reply = await w.stub.ClaimOutbound(w.claim_request(), metadata=w.metadata)
        if not reply.outbound_messages:
            await w.drain.wait_for_progress()
            continue
        done = await w.stub.CompleteOutboundMessages(
            dpb.CompleteOutboundMessagesRequest(processor_id=w.processor_id, ids=[m.id for m in reply.outbound_messages]),
            metadata=w.metadata,
        )
        _check(done.refused_ids)
        w.drain.completed(len(reply.outbound_messages))


async def outbound_acks_on_claim(w: OutboundWorker) -> None:
    acks: list[str] = []
    while not w.drain.done:
        request = w.claim_request()
        request.completed_ids.extend(acks)
        reply = await w.stub.ClaimOutbound(request, metadata=w.metadata)
        _check(reply.refused_ids)
        if acks:
            w.drain.completed(len(acks))
        acks = [m.id for m in reply.outbound_messages]
        if not acks:
            await w.drain.wait_for_progress()
    if acks:
        done = await w.stub.CompleteOutboundMessages(
            dpb.CompleteOutboundMessagesRequest(processor_id=w.processor_id, ids=acks), metadata=w.metadata
        )
        _check(done.refused_ids)
        w.drain.completed(len(acks))


async def outbound_worker_stream(w: OutboundWorker) -> None:
    def ask(acks: list[str]) -> dpb.WorkOutboundRequest:
        request = w.claim_request()
        request.completed_ids.extend(acks)
        return dpb.WorkOutboundRequest(claim=request)

    await _work_stream(
        w.stub.WorkOutbound(metadata=w.metadata),
        w.drain,
        ask,
        lambda reply: (reply.claim.refused_ids, [m.id for m in reply.claim.outbound_messages]),
        dpb.WorkOutboundResponse,
    )


JOB_STRATEGIES["claim+complete-batch"] = job_claim_then_complete_batch
JOB_STRATEGIES["acks-on-claim"] = job_acks_on_claim
JOB_STRATEGIES["worker-stream"] = job_worker_stream
OUTBOUND_STRATEGIES["claim+complete-batch"] = outbound_claim_then_complete_batch
OUTBOUND_STRATEGIES["acks-on-claim"] = outbound_acks_on_claim
OUTBOUND_STRATEGIES["worker-stream"] = outbound_worker_stream
