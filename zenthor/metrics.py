"""Prometheus metrics of every process, one way for all (prometheus-client, default registry):
the /metrics endpoint on its own port, the gRPC server metrics, and the domain gauges a service
refreshes from its own tables (docs/operations.md §8 lists the names and the alerts on them).

    ZENTHOR_METRICS_PORT set ──► serve_metrics(): GET /metrics on a daemon thread
    MetricsInterceptor (in the chain) ──► zenthor_grpc_server_{handled_total,handling_seconds,in_flight}
    DomainGauges (one background task per service) ──► zenthor_<service>_… and zenthor_outbox_…

The gateway's HTTP metrics are gateway/metrics.py, the worker's Temporal SDK metrics
workflows/metrics.py; both are served by the same endpoint.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import grpc
import sqlalchemy as sa
from prometheus_client import REGISTRY, Counter, Gauge, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zenthor.config import Settings
from zenthor.convert import utc_now
from zenthor.interceptors import Continuation, Ctx, Handler, is_infrastructure
from zenthor.logs import get_logger
from zenthor.outbox import outbox_stats
from zenthor.shutdown import cancel_and_wait

log = get_logger("zenthor.metrics")

# Latency buckets in seconds: the runtime's claim/ack calls take about a millisecond, a page of
# history tens; anything past the 5 s peer deadline is already a failure.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- the endpoint ---


@dataclass
class MetricsEndpoint:
    """A running /metrics endpoint (prometheus-client's WSGI server on a daemon thread)."""

    host: str
    port: int
    _server: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(settings: Settings, *, process: str) -> MetricsEndpoint | None:
    """Starts GET /metrics on ZENTHOR_METRICS_HOST:ZENTHOR_METRICS_PORT (None when unset).
    Each process calls this once at start: the registry is the process's."""
    if settings.metrics_port is None:
        return None
    server, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    endpoint = MetricsEndpoint(settings.metrics_host, int(server.server_address[1]), server)
    log.info("metrics.serving", process=process, url=f"http://{endpoint.host}:{endpoint.port}/metrics")
    return endpoint


# --- gRPC server metrics ---
#
# The runtime's claim/ack calls come thousands a second, so a call only bumps plain numbers of
# its method's record (one event-loop thread writes them; no lock per value as prometheus-client's
# own metric objects take), and a collector turns the records into the three families at scrape
# time, on the endpoint's thread. A scrape may see one call's count before its latency: harmless.


class _MethodStats:
    """One method's numbers, made once per method and process."""

    __slots__ = ("buckets", "by_code", "grpc_type", "in_flight", "latency_count", "latency_sum", "method", "service")

    def __init__(self, full_method: str, grpc_type: str) -> None:
        self.service, _, self.method = full_method.lstrip("/").partition("/")
        self.grpc_type = grpc_type
        self.in_flight = 0
        self.by_code: dict[grpc.StatusCode, int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.latency_count = 0
        self.latency_sum = 0.0

    def handled(self, code: grpc.StatusCode) -> None:
        self.by_code[code] = self.by_code.get(code, 0) + 1

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_count += 1
        self.latency_sum += seconds


_GRPC_STATS: dict[str, _MethodStats] = {}


def _grpc_stats(full_method: str, grpc_type: str) -> _MethodStats:
    stats = _GRPC_STATS.get(full_method)
    if stats is None:
        stats = _GRPC_STATS[full_method] = _MethodStats(full_method, grpc_type)
    return stats


class _GrpcServerCollector:
    """zenthor_grpc_server_{handled_total,handling_seconds,in_flight} from the method records."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        handled = CounterMetricFamily(
            "zenthor_grpc_server_handled",
            "gRPC calls finished, by service, method, type (unary, server_stream) and status code.",
            labels=["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
        )
        latency = HistogramMetricFamily(
            "zenthor_grpc_server_handling_seconds",
            "Time to answer a unary gRPC call (server streams are left out: they last as long as the client watches).",
            labels=["grpc_service", "grpc_method"],
        )
        in_flight = GaugeMetricFamily(
            "zenthor_grpc_server_in_flight",
            "gRPC calls being served now (open Watch streams included, as grpc_type server_stream).",
            labels=["grpc_service", "grpc_method", "grpc_type"],
        )
        for stats in list(_GRPC_STATS.values()):
            names = [stats.service, stats.method]
            for code, count in list(stats.by_code.items()):
                handled.add_metric([*names, stats.grpc_type, code.name], count)
            in_flight.add_metric([*names, stats.grpc_type], stats.in_flight)
            if stats.grpc_type == "unary":
                cumulative, counts = 0, list(stats.buckets)
                buckets: list[tuple[str, float]] = []
                for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], counts, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                latency.add_metric(names, buckets, stats.latency_sum)
        yield from (handled, latency, in_flight)


REGISTRY.register(_GrpcServerCollector())

UnaryBehavior = Callable[[Any, Ctx], Awaitable[Any]]
StreamBehavior = Callable[[Any, Ctx], AsyncIterator[Any]]


def _failed_code(error: BaseException, context: Ctx) -> grpc.StatusCode:
    """The status a call that raised ends with: the one it was aborted with (every error the
    chain maps, zenthor.interceptors), CANCELLED when the client went away, else UNKNOWN (what
    grpc answers for an exception nobody mapped)."""
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _ended_code(context: Ctx) -> grpc.StatusCode:
    """The status of a call that returned: OK, unless the servicer set another one (grpc reports
    an unset code as its own integer zero, not a grpc.StatusCode)."""
    code = context.code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.OK


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Around every interceptor that answers (zenthor/server.py), so it counts every answer, the
    ones the request context, auth, rate limit and decoding interceptors give included. Health and reflection are left out: probes would
    drown the real calls."""

    def __init__(self) -> None:
        # Per method: its record, or None for health and reflection (decided once per method).
        self._seen: dict[str, _MethodStats | None] = {}

    def _stats_for(self, method: str, handler: Handler) -> _MethodStats | None:
        if method in self._seen:
            return self._seen[method]
        grpc_type = "unary" if handler.unary_unary is not None else "server_stream"
        stats = None if is_infrastructure(method) else _grpc_stats(method, grpc_type)
        self._seen[method] = stats
        return stats

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        m = self._stats_for(handler_call_details.method, handler)
        if m is None:
            return handler
        if handler.unary_unary is not None:
            inner_unary = cast(UnaryBehavior, handler.unary_unary)

            async def unary(request: Any, context: Ctx) -> Any:
                m.in_flight += 1
                started = time.perf_counter()
                try:
                    reply = await inner_unary(request, context)
                except BaseException as error:
                    m.handled(_failed_code(error, context))
                    raise
                else:
                    m.handled(_ended_code(context))
                    return reply
                finally:
                    m.observe(time.perf_counter() - started)
                    m.in_flight -= 1

            return grpc.unary_unary_rpc_method_handler(
                unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            inner_stream = cast(StreamBehavior, handler.unary_stream)

            async def stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
                m.in_flight += 1
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as error:
                    m.handled(_failed_code(error, context))
                    raise
                else:
                    m.handled(_ended_code(context))
                finally:
                    m.in_flight -= 1

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        return handler


# --- domain gauges ---


@dataclass(frozen=True)
class DomainGauge:
    """A gauge a service reads from its tables; declared in the service's store."""

    name: str
    documentation: str
    labelnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    gauge: DomainGauge
    value: float
    labels: tuple[str, ...] = ()


# A store's reading: one or a few cheap queries on the connection, `now` from the service's clock.
Reading = Callable[[AsyncConnection, datetime], Awaitable[Iterable[Sample]]]

_GAUGES: dict[str, Gauge] = {}


def _gauge(declared: DomainGauge) -> Gauge:
    """One prometheus Gauge per name for the process (tests build a service many times)."""
    gauge = _GAUGES.get(declared.name)
    if gauge is None:
        gauge = _GAUGES[declared.name] = Gauge(declared.name, declared.documentation, list(declared.labelnames))
    return gauge


REFRESH_FAILURES = Counter(
    "zenthor_domain_gauges_refresh_failures",
    "Rounds of domain-gauge queries that failed or timed out (the gauges keep their last values).",
    ["service"],
)
REFRESHED_AT = Gauge(
    "zenthor_domain_gauges_refreshed_timestamp_seconds",
    "Unix time of the last successful round of domain-gauge queries.",
    ["service"],
)

OUTBOX_BACKLOG = DomainGauge(
    "zenthor_outbox_backlog", "Outbox events not yet delivered and not dead.", ("service",)
)
OUTBOX_DEAD_LETTERS = DomainGauge(
    "zenthor_outbox_dead_letters",
    "Outbox events parked as dead letters (python -m zenthor outbox list|redrive).",
    ("service",),
)
OUTBOX_OLDEST_AGE = DomainGauge(
    "zenthor_outbox_oldest_pending_age_seconds",
    "Age of the oldest undelivered, live outbox event (0 when there is none).",
    ("service",),
)


def age_s(now: datetime, since: datetime | None) -> float:
    """Seconds from `since` to `now`, 0 for none (an empty queue has no age)."""
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def outbox_reading(table: sa.Table, service: str) -> Reading:
    """The backlog, dead letters and oldest undelivered event of a service's outbox."""

    async def read(conn: AsyncConnection, now: datetime) -> list[Sample]:
        stats = await outbox_stats(conn, table)
        return [
            Sample(OUTBOX_BACKLOG, stats.backlog, (service,)),
            Sample(OUTBOX_DEAD_LETTERS, stats.dead_letters, (service,)),
            Sample(OUTBOX_OLDEST_AGE, age_s(now, stats.oldest_created_at), (service,)),
        ]

    return read


# A round's queries together may take this long, in Postgres (statement_timeout) and here.
REFRESH_TIMEOUT_S = 10.0


class DomainGauges:
    """Refreshes a service's domain gauges every `interval_s` on one connection of its engine, in
    one read-only transaction bounded by REFRESH_TIMEOUT_S. Scrapes read the last values, so a
    scrape never costs a query, and a failed round keeps the previous values (and counts the
    failure). Started only when the process serves metrics."""

    def __init__(
        self,
        service: str,
        engine: AsyncEngine,
        readings: Sequence[Reading],
        *,
        interval_s: float,
        enabled: bool = True,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._service = service
        self._engine = engine
        self._readings = list(readings)
        self._interval_s = interval_s
        self._enabled = enabled
        self._clock = clock
        # Label sets each gauge was given last round: a set that disappears is removed.
        self._shown: dict[str, set[tuple[str, ...]]] = {}
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_service(
        cls,
        settings: Settings,
        service: str,
        engine: AsyncEngine,
        readings: Sequence[Reading],
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> DomainGauges:
        return cls(
            service, engine, readings, interval_s=settings.metrics_refresh_s,
            enabled=settings.metrics_port is not None, clock=clock,
        )

    async def refresh(self) -> None:
        """One round: every reading, then every gauge set at once."""
        async with asyncio.timeout(REFRESH_TIMEOUT_S), self._engine.connect() as conn:
            await conn.execute(sa.text(f"SET LOCAL statement_timeout = {int(REFRESH_TIMEOUT_S * 1000)}"))
            now = self._clock()
            samples = [sample for reading in self._readings for sample in await reading(conn, now)]
            await conn.rollback()
        self._publish(samples)
        REFRESHED_AT.labels(self._service).set(time.time())

    def _publish(self, samples: list[Sample]) -> None:
        fresh: dict[str, set[tuple[str, ...]]] = {}
        for sample in samples:
            gauge = _gauge(sample.gauge)
            (gauge.labels(*sample.labels) if sample.labels else gauge).set(sample.value)
            fresh.setdefault(sample.gauge.name, set()).add(sample.labels)
        for name, shown in self._shown.items():
            gone = shown - fresh.get(name, set())
            for labels in gone:
                if labels:
                    with contextlib.suppress(KeyError):
                        _GAUGES[name].remove(*labels)
        self._shown = fresh

    def start(self) -> None:
        if self._enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"domain-gauges-{self._service}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task], what="domain gauges")
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as e:  # a database hiccup must not end the loop; the next round retries
                REFRESH_FAILURES.labels(self._service).inc()
                log.warning("metrics.refresh_failed", service=self._service, error=f"{type(e).__name__}: {e}")
            await asyncio.sleep(self._interval_s)
