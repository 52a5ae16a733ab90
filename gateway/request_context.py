"""Per-request context at the edge, like zenthor.interceptors for gRPC: the request id (taken
from `x-request-id` or minted) on every response and in the logs, one access line, and the
last-resort 500 that carries the request id and never a traceback."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import error_response
from zenthor.interceptors import REQUEST_ID_HEADER
from zenthor.logs import get_logger

log = get_logger("gateway.http")

# A client's id goes into gRPC metadata and log lines: short, printable, no spaces; anything
# else is replaced by a fresh one rather than trusted.
_ACCEPTABLE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(headers: Headers) -> str:
    offered = headers.get(REQUEST_ID_HEADER, "")
    return offered if _ACCEPTABLE_ID.fullmatch(offered) else uuid.uuid4().hex


class RequestContextMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so the log context reaches the route's own task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("http.failed", method=scope["method"], path=scope["path"])
                if response_started:
                    raise
                response = error_response(500, "INTERNAL", "Internal error", request_id)
                await response(scope, receive, send_with_id)
            finally:
                ms = round((time.perf_counter() - started) * 1000, 2)
                log.info("http", method=scope["method"], path=scope["path"], status=status, ms=ms)
