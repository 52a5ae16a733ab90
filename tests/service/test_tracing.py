"""Traces (zenthor/tracing.py): one HTTP request is one trace through the gateway, messages, its
outbox and agent_queue, with every parent link in place; with tracing off nothing is installed
and nothing is recorded. Real servers on real sockets, spans kept by an in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.agent_queue.app import build_server as build_agent_queue
from services.messages.app import build_server as build_messages
from tests.e2e.conftest import gateway_settings, serve_gateway
from tests.service.conftest import Running, start, stop
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer
from tests.support.jwks import FakeClerkIssuer
from tests.support.messages_builders import web_conversation
from tests.support.tracing import ancestry, exporter_fixture, server_span, spans_fixture  # noqa: F401  (fixtures)
from tests.support.waiting import eventually
from zenthor import ids
from zenthor.config import ServiceName, Settings
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc
from zenthor.logs import add_trace_ids
from zenthor.tracing import (
    OUTBOX_TRACE_KEY,
    client_interceptors,
    gateway_telemetry,
    server_interceptors,
    temporal_interceptors,
)

NO_TEMPORAL = "127.0.0.1:1"


def _no_stub(_channel: grpc.aio.Channel) -> None:
    return None


SEND = "/zenthor.messages.v1.MessagesService/SendMessage"
ENQUEUE = "/zenthor.agent_queue.v1.AgentQueueService/EnqueueJob"
RESOLVE = "/zenthor.identity.v1.IdentityService/ResolvePrincipal"


@pytest.fixture
def traced(settings_for: Any) -> Any:
    """Settings of one service with tracing on (spans go to the process's provider, the
    in-memory one here; `none` exports nothing itself)."""

    def make(service: ServiceName, **overrides: object) -> Settings:
        return settings_for(service, tracing=True, otel_traces_exporter="none", **overrides)  # type: ignore[no-any-return]

    return make


@pytest.fixture
async def stack(
    traced: Any, identity_port: int, db: TestDatabase, clerk_issuer: FakeClerkIssuer
) -> AsyncIterator[tuple[Running, Running]]:
    """messages and agent_queue, traced, messages' outbox pointed at agent_queue."""
    identity_addr = f"127.0.0.1:{identity_port}"
    aq_settings = traced(ServiceName.AGENT_QUEUE, identity_addr=identity_addr, temporal_address=NO_TEMPORAL)
    agent_queue = await start(await build_agent_queue(aq_settings), _no_stub, aq_settings, db, clerk_issuer)
    messages_settings = traced(
        ServiceName.MESSAGES,
        identity_addr=identity_addr,
        agent_queue_addr=f"127.0.0.1:{agent_queue.server.port}",
    )
    messages = await start(
        await build_messages(messages_settings), messages_pb2_grpc.MessagesServiceStub, messages_settings, db, clerk_issuer
    )
    yield messages, agent_queue
    await stop(messages)
    await stop(agent_queue)


@pytest.fixture
async def identity_port(traced: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer) -> AsyncIterator[int]:
    from services.identity.app import build_server as build_identity

    settings = traced(ServiceName.IDENTITY)
    running = await start(await build_identity(settings), _no_stub, settings, db, clerk_issuer)
    yield running.server.port
    await stop(running)


async def test_one_request_is_one_trace_from_the_gateway_through_the_outbox_to_agent_queue(
    spans: InMemorySpanExporter,
    stack: tuple[Running, Running],
    identity_port: int,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
) -> None:
    messages, _agent_queue = stack
    alice(db)
    user = bearer(clerk_issuer.token("user_alice"))
    conversation = await web_conversation(messages.stub, user)
    settings = gateway_settings(
        f"127.0.0.1:{identity_port}",
        messages_addr=f"127.0.0.1:{messages.server.port}",
        tracing=True,
        otel_traces_exporter="none",
    )
    async with serve_gateway(settings) as gateway:
        spans.clear()  # the arrangement's calls are traces of their own
        response = await gateway.post(
            f"/v1/conversations/{conversation.id}/messages",
            json={"content": "hello"},
            headers={"authorization": f"Bearer {clerk_issuer.token('user_alice')}"},
        )
        assert response.status_code == 200, response.text
        # The job reaches agent_queue through messages' outbox, after the answer.
        await eventually(lambda: server_span(spans, ENQUEUE) is not None)

    recorded = spans.get_finished_spans()
    enqueue = server_span(spans, ENQUEUE)
    assert enqueue is not None
    chain = ancestry(enqueue, spans)
    assert [(span.kind, span.name) for span in chain] == [
        (trace.SpanKind.SERVER, ENQUEUE),  # agent_queue
        (trace.SpanKind.CLIENT, ENQUEUE),  # messages' relay calling it
        (trace.SpanKind.CONSUMER, "outbox deliver agent_queue.enqueue_job"),  # messages' relay
        (trace.SpanKind.SERVER, SEND),  # messages
        (trace.SpanKind.CLIENT, SEND),  # the gateway calling it
        (trace.SpanKind.SERVER, chain[-1].name),  # the gateway's HTTP span, the root
    ]
    root = chain[-1]
    assert root.parent is None
    assert root.name.startswith("POST /v1/conversations/")
    # messages resolved the caller through identity inside the same trace, under its server span.
    resolve = server_span(spans, RESOLVE)
    assert resolve is not None
    assert [s.name for s in ancestry(resolve, spans)][1:3] == [RESOLVE, SEND]
    # Every span of the request, in every service, is in that one trace.
    assert {span.context.trace_id for span in recorded} == {root.context.trace_id}
    assert {span.resource.attributes["service.name"] for span in recorded} == {"zenthor-tests"}


async def test_the_outbox_stores_the_writers_trace_context_and_the_handler_never_sees_it(
    spans: InMemorySpanExporter, stack: tuple[Running, Running], db: TestDatabase, clerk_issuer: FakeClerkIssuer
) -> None:
    messages, _agent_queue = stack
    alice(db)
    user = bearer(clerk_issuer.token("user_alice"))
    conversation = await web_conversation(messages.stub, user)
    sent = (await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=conversation.id, content="hi"), metadata=user)).message
    [(stored,)] = db.sql("SELECT payload FROM messages.outbox WHERE key = %s", (sent.id,))
    send = server_span(spans, SEND)
    assert send is not None
    traceparent = stored[OUTBOX_TRACE_KEY]["traceparent"]
    assert traceparent.split("-")[1:3] == [f"{send.context.trace_id:032x}", f"{send.context.span_id:016x}"]
    message_id = ids.MESSAGE.parse(sent.id, "id")
    await eventually(lambda: bool(db.sql("SELECT 1 FROM agent_queue.jobs WHERE message_id = %s", (message_id,))))


async def test_with_tracing_off_nothing_is_installed_and_nothing_recorded(
    spans: InMemorySpanExporter,
    settings_for: Any,
    db: TestDatabase,
    clerk_issuer: FakeClerkIssuer,
) -> None:
    off = settings_for(ServiceName.MESSAGES)
    assert not off.tracing_enabled
    assert server_interceptors(off) == []
    assert client_interceptors(False) == []
    assert temporal_interceptors(False) == []
    assert gateway_telemetry(off)["tracing"] is False

    # The same request path as above, every process untraced, while the process does have a
    # recording provider (the session's): no span anywhere, no trace context stored.
    from services.identity.app import build_server as build_identity

    id_settings = settings_for(ServiceName.IDENTITY)
    identity = await start(await build_identity(id_settings), _no_stub, id_settings, db, clerk_issuer)
    aq_settings = settings_for(
        ServiceName.AGENT_QUEUE, identity_addr=f"127.0.0.1:{identity.server.port}", temporal_address=NO_TEMPORAL
    )
    agent_queue = await start(await build_agent_queue(aq_settings), _no_stub, aq_settings, db, clerk_issuer)
    m_settings = settings_for(
        ServiceName.MESSAGES,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=f"127.0.0.1:{agent_queue.server.port}",
    )
    messages = await start(await build_messages(m_settings), messages_pb2_grpc.MessagesServiceStub, m_settings, db, clerk_issuer)
    try:
        alice(db)
        user = bearer(clerk_issuer.token("user_alice"))
        conversation = await web_conversation(messages.stub, user)
        async with serve_gateway(
            gateway_settings(f"127.0.0.1:{identity.server.port}", messages_addr=f"127.0.0.1:{messages.server.port}")
        ) as gateway:
            response = await gateway.post(
                f"/v1/conversations/{conversation.id}/messages",
                json={"content": "hello"},
                headers={"authorization": f"Bearer {clerk_issuer.token('user_alice')}"},
            )
            assert response.status_code == 200, response.text
        sent_id = response.json()["message"]["id"]
        await eventually(lambda: bool(db.sql("SELECT delivered_at FROM messages.outbox WHERE key = %s AND delivered_at IS NOT NULL", (sent_id,))))
        [(stored,)] = db.sql("SELECT payload FROM messages.outbox WHERE key = %s", (sent_id,))
        assert OUTBOX_TRACE_KEY not in stored
        assert [(s.name, s.kind) for s in spans.get_finished_spans()] == []
    finally:
        await stop(messages)
        await stop(agent_queue)
        await stop(identity)


async def test_a_log_line_written_in_a_span_carries_its_trace_and_span_ids(exporter: InMemorySpanExporter) -> None:
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("work") as span:
        line = add_trace_ids(None, "info", {"event": "x"})
    context = span.get_span_context()
    assert line == {"event": "x", "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
    assert add_trace_ids(None, "info", {"event": "y"}) == {"event": "y"}  # outside any span: nothing


async def test_a_grpc_call_without_tracing_sends_no_traceparent(exporter: InMemorySpanExporter) -> None:
    """The untraced channel adds no metadata even inside a recording span: a caller that has not
    turned tracing on never leaks its context to peers."""
    seen: list[dict[str, str]] = []

    async def echo(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        seen.append({k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)})
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("t.Echo", {"Call": grpc.unary_unary_rpc_method_handler(echo)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    from zenthor.clients import open_channel

    try:
        with trace.get_tracer("tests").start_as_current_span("caller"):
            for tracing in (False, True):
                async with open_channel(f"127.0.0.1:{port}", None, tracing=tracing) as channel:
                    await asyncio.wait_for(channel.unary_unary("/t.Echo/Call")(b"x"), 10)  # type: ignore[arg-type]  # raw bytes, no serializer
    finally:
        await server.stop(0)
    assert "traceparent" not in seen[0]
    assert "traceparent" in seen[1]


def test_an_unknown_trace_exporter_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_EXPORTER"):
        Settings(otel_traces_exporter="zipkin")
    assert Settings().trace_exporter is None  # off by default
    assert Settings(tracing=True).trace_exporter == "console"
    assert Settings(otel_exporter_otlp_endpoint="http://collector:4317").trace_exporter == "otlp"
    assert Settings(otel_exporter_otlp_endpoint="http://collector:4317", tracing=False).trace_exporter is None
    assert Settings(otel_traces_exporter="console", otel_sdk_disabled=True).trace_exporter is None



def test_the_otlp_exporter_ships_with_the_image_and_reads_the_standard_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from zenthor.tracing import _exporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector.monitoring:4318/v1/traces")
    exporter = _exporter("otlp")
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://collector.monitoring:4318/v1/traces"
    exporter.shutdown()
