"""Traces through Temporal (zenthor/tracing.py): a retry stored in agent_queue's outbox, started
by the relay, run by the worker and calling agent_queue back is one trace, from the RPC that
made the job wait to the release the workflow's activity calls."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client

from tests.service.agent_queue.conftest import AgentQueueFactory
from tests.service.agent_queue.test_jobs import claim, sweep
from tests.service.agent_queue.test_retries_temporal import started
from tests.support.agent_queue_builders import ManualClock, add_job, conv, job_id, job_row
from tests.support.grpc_client import SERVICE_KEY
from tests.support.tracing import ancestry, exporter_fixture, server_span, spans_fixture  # noqa: F401  (fixtures)
from workflows.worker import build_worker
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.tracing import temporal_interceptors

SWEEP = "/zenthor.agent_queue.v1.AgentQueueService/RequeueStaleJobs"
RELEASE = "/zenthor.agent_queue.v1.AgentQueueService/ReleaseJob"


async def test_a_retry_through_the_outbox_and_the_worker_continues_the_trace_that_queued_it(
    spans: InMemorySpanExporter,
    agent_queue_factory: AgentQueueFactory,
    clock: ManualClock,
    temporal_address: str,
    task_queue: str,
) -> None:
    traced: dict[str, Any] = {"tracing": True, "otel_traces_exporter": "none"}
    aq = await agent_queue_factory(
        temporal_address=temporal_address, temporal_task_queue=task_queue, outbox_poll_s=0.05, retry_base_s=0.2, **traced
    )
    # The worker as `python -m workflows` builds it with tracing on: its client carries Temporal's
    # interceptor, its peers' channels send `traceparent`.
    client = await Client.connect(temporal_address, interceptors=temporal_interceptors(True))
    peers = Peers(Settings(agent_queue_addr=f"127.0.0.1:{aq.server.port}", service_key=SERVICE_KEY, **traced))  # type: ignore[arg-type]
    job = add_job(aq.db, conv())
    await claim(aq, "w1", job, lease_s=1)
    clock.advance(2)
    try:
        async with build_worker(client, task_queue, peers, grace=timedelta(0)):
            spans.clear()
            await sweep(aq)  # the lease ran out: the job waits for a retry, stored in the outbox
            handle = await started(client, f"retry-{job_id(job)}-1")
            await handle.result()
    finally:
        await peers.close()
    assert job_row(aq.db, job)["status"] == "pending"

    release = server_span(spans, RELEASE)
    assert release is not None
    chain = [(span.kind, span.name) for span in ancestry(release, spans)]
    assert chain[:3] == [
        (trace.SpanKind.SERVER, RELEASE),  # agent_queue, called back by the activity
        (trace.SpanKind.CLIENT, RELEASE),  # the worker's peer channel
        (trace.SpanKind.SERVER, "RunActivity:call_retry_target"),  # the worker
    ]
    assert chain[-2:] == [
        (trace.SpanKind.CONSUMER, "outbox deliver temporal.retry"),  # agent_queue's relay
        (trace.SpanKind.SERVER, SWEEP),  # the RPC whose transaction stored the retry
    ]
    assert (trace.SpanKind.CLIENT, "StartWorkflow:RetryWorkflow") in chain
    sweep_span = server_span(spans, SWEEP)
    assert sweep_span is not None and sweep_span.parent is None
    assert {span.context.trace_id for span in ancestry(release, spans)} == {sweep_span.context.trace_id}
