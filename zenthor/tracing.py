"""Traces: OpenTelemetry across gateway → services → outbox → Temporal worker, off unless the
environment turns it on (zenthor.config: ZENTHOR_TRACING, OTEL_TRACES_EXPORTER, an OTLP endpoint).

With tracing off nothing here is installed: no interceptor on any server or channel, no
middleware, no Temporal interceptor, and the OpenTelemetry API stays the no-op it is without an
SDK, so the outbox stores no trace context and starts no span. With it on, a process sets up one
tracer provider (`configure_tracing`), and the composition roots ask this module for their parts:

    gateway     FastAPI's server span per request (`gateway_telemetry`)
    channels    a client span per outgoing call; `traceparent` injected into the gRPC metadata
                (`client_interceptors`, used by zenthor.clients.open_channel)
    servers     a server span per call, child of the caller's (`server_interceptors`, outermost
                in zenthor.server, so the request-context interceptor's access line carries it)
    outbox      the writer's `traceparent` stored with the event; the relay's delivery span is
                its child (zenthor.outbox)
    Temporal    temporalio.contrib.opentelemetry.TracingInterceptor on every client, and so on
                the worker built from it (`temporal_interceptors`)

zenthor.logs adds `trace_id` and `span_id` to every log line written inside a span.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from zenthor.logs import get_logger

if TYPE_CHECKING:
    import grpc
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.sdk.trace.export import SpanExporter
    from temporalio.client import Interceptor as TemporalInterceptor

    from zenthor.config import Settings

log = get_logger("zenthor.tracing")

# Where a traced outbox event keeps its writer's context, inside the event's JSON payload (the
# outbox table's shape is the kit's, shared by every service: no column of its own).
OUTBOX_TRACE_KEY = "_trace"
# Probes and tools, not requests: no span for them.
UNTRACED_GRPC_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")
UNTRACED_HTTP_PATHS = frozenset({"/healthz", "/readyz"})

_configured = False


def configure_tracing(settings: Settings, service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Sets up this process's tracer provider once, from `settings`; True when tracing is on.
    `exporter` replaces the configured one (tests: an in-memory exporter, spans kept at once)."""
    global _configured
    name = settings.trace_exporter if exporter is None else "given"
    if name is None:
        return False
    if _configured:
        current = trace.get_tracer_provider()
        if exporter is not None and hasattr(current, "add_span_processor"):
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor

            current.add_span_processor(SimpleSpanProcessor(exporter))
        return True
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our name, as operators expect.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: f"zenthor-{service}"}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        chosen = _exporter(name)
        if chosen is not None:
            provider.add_span_processor(BatchSpanProcessor(chosen))
    trace.set_tracer_provider(provider)
    _configured = True
    log.info("tracing.on", exporter=name, service=service)
    return True


def _exporter(name: str) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # One JSON object per line on stdout (the default is indented over many lines).
        return ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    if name == "otlp":
        # OTLP over HTTP/protobuf (port 4318), locked with the rest: the collector's address and
        # headers come from the standard OTEL_EXPORTER_OTLP_* variables, read by the exporter.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: SpanExporter = OTLPSpanExporter()
        return exporter
    return None  # "none"


def flush_tracing() -> None:
    """Exports the spans still batched. For processes that end without atexit: uvicorn re-raises
    SIGTERM after its graceful shutdown, the worker ends with os._exit."""
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if _configured and flush is not None:
        flush()


def _traced_grpc_call(details: Any) -> bool:
    method = details.method.decode() if isinstance(details.method, bytes) else str(details.method)
    return not method.lstrip("/").startswith(UNTRACED_GRPC_SERVICES)


def server_interceptors(settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The server span interceptor, or nothing when tracing is off."""
    if not settings.tracing_enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(filter_=_traced_grpc_call)  # type: ignore[no-untyped-call]
    return [interceptor]


def client_interceptors(enabled: bool) -> list[grpc.aio.ClientInterceptor]:
    """Client span interceptors that inject `traceparent`, or nothing when tracing is off."""
    if not enabled:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(  # type: ignore[no-untyped-call]
        filter_=_traced_grpc_call
    )
    return interceptors


def gateway_telemetry(settings: Settings) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry support (`FastAPI(telemetry=…)`): with tracing on, one server
    span per request, continuing an incoming `traceparent`, outermost (around every middleware,
    so the access line is inside it), probes excluded. Always off otherwise, even where a tracer
    provider exists, and never its metrics or logs (the gateway's metrics are gateway/metrics.py)."""
    return {
        "tracing": settings.tracing_enabled,
        "metrics": False,
        "logs": False,
        # Dependency resolution and serialization as spans of their own: noise beside the gRPC
        # call that is the request's work.
        "operation_spans": False,
        "exclude": lambda scope: scope.get("path") in UNTRACED_HTTP_PATHS,
    }


def temporal_interceptors(enabled: bool) -> Sequence[TemporalInterceptor]:
    """Temporal's own OpenTelemetry interceptor: on a client, it traces starts and signals and
    carries the context in the workflow's headers; a worker built from that client traces the
    workflow and its activities as children."""
    if not enabled:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def current_trace_carrier() -> dict[str, str] | None:
    """The current span's context as W3C headers (`traceparent`, `tracestate`), or None outside
    a recorded span (always so with tracing off)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier or None


def with_trace(payload: Mapping[str, Any]) -> dict[str, Any]:
    """An outbox payload with the writer's trace context beside it, when there is one."""
    stored = dict(payload)
    carrier = current_trace_carrier()
    if carrier is not None:
        stored[OUTBOX_TRACE_KEY] = carrier
    return stored


def split_trace(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, str] | None]:
    """An outbox payload as its handler expects it, and the writer's trace context if stored."""
    carrier = payload.get(OUTBOX_TRACE_KEY)
    if not isinstance(carrier, Mapping):
        return payload, None
    return {k: v for k, v in payload.items() if k != OUTBOX_TRACE_KEY}, {
        str(k): str(v) for k, v in carrier.items()
    }
