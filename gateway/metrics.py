"""The gateway's HTTP metrics (served with the process's others on ZENTHOR_METRICS_PORT,
zenthor/metrics.py): requests by route template, method and status, their latency, and how many
are in flight. The label is the route's template (`/v1/conversations/{conversation_id}`), never
the path, so ids cannot multiply the series."""

from __future__ import annotations

import asyncio
import functools
import re
import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zenthor.metrics import LATENCY_BUCKETS

# Requests that matched no route (404s, probes of random paths) share one label.
UNMATCHED = "<unmatched>"
# The status of a request whose client left before any answer (nginx's convention).
CLIENT_GONE = "499"

HTTP_REQUESTS = Counter(
    "zenthor_http_requests",
    "Gateway HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "zenthor_http_request_duration_seconds",
    "Time until the gateway starts its response (for an SSE watch: until the stream opens).",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge("zenthor_http_requests_in_flight", "Gateway HTTP requests being served now (open SSE streams included).")


# `{name:convertor}` in a Starlette path.
_CONVERTOR = re.compile(r"\{(\w+):\w+\}")


@functools.cache
def route_label(path: str) -> str:
    """The route's template as the contract writes it: `{id:segment}` (a Starlette convertor,
    gateway/rest.py) shown as `{id}`. Cached: there are as many as routes."""
    return _CONVERTOR.sub(r"{\1}", path)


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (FastAPI puts it in the scope while
    routing, which has happened by the time the response starts)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return route_label(path) if isinstance(path, str) else UNMATCHED


class HttpMetricsMiddleware:
    """Pure ASGI, outermost (gateway/app.py), so the 500 the request-context middleware writes
    for an unexpected error is counted too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"]
        answered = False

        async def send_counted(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                route = route_of(scope)
                HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
                HTTP_REQUESTS.labels(route, method, str(message["status"])).inc()
            await send(message)

        HTTP_IN_FLIGHT.inc()
        unanswered = "500"  # the server answers 500 for an app that raised before responding
        try:
            await self.app(scope, receive, send_counted)
        except asyncio.CancelledError:
            unanswered = CLIENT_GONE
            raise
        finally:
            HTTP_IN_FLIGHT.dec()
            if not answered:
                HTTP_REQUESTS.labels(route_of(scope), method, unanswered).inc()
