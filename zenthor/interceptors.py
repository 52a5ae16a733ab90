"""Server interceptors of every service, one concern each, and the helper that wraps handlers.

Order (outermost first): RequestContext (request id, logs, deadline, error mapping) → Auth
(zenthor.auth.interceptor) → RateLimit (zenthor.ratelimit: per-caller budgets) → Unbuilt
(UNIMPLEMENTED for RPCs whose issue has not landed) → RequestDecoding (bytes → message, then
zenthor.request_checks). Decoding comes last so that a request which cannot be decoded is
answered INVALID_ARGUMENT with the request id, and only after its caller was authenticated. The
standard health and reflection services pass through untouched (`INFRASTRUCTURE_SERVICES`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, TypeAlias, cast

import grpc
import structlog
from google.protobuf.message import DecodeError, Message
from grpc_status import rpc_status

from zenthor.auth.modes import INFRASTRUCTURE_SERVICES
from zenthor.db import is_database_unavailable
from zenthor.errors import (
    DomainError,
    InvalidArgument,
    Unavailable,
    Unimplemented,
    internal_status,
    to_rpc_status,
)
from zenthor.logs import get_logger
from zenthor.request_checks import check_request

log = get_logger("zenthor.rpc")

REQUEST_ID_HEADER = "x-request-id"
_request_id: ContextVar[str] = ContextVar("zenthor_request_id", default="-")

# What every servicer method receives beside its request.
Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]
# Generic only in the type stubs, hence the string.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable["Handler | None"]]
UnaryBehavior = Callable[[Any, Ctx], Awaitable[Any]]
StreamBehavior = Callable[[Any, Ctx], AsyncIterator[Any]]
# What an interceptor runs around a call: code before `yield` runs first, an exception raised
# by the handler arrives at the `yield`.
CallScope = Callable[[Ctx], AbstractAsyncContextManager[None]]


def current_request_id() -> str:
    return _request_id.get()


def metadata_dict(details: grpc.HandlerCallDetails) -> dict[str, str]:
    return {k.lower(): v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}


def wrap_handler(handler: Handler, scope: CallScope, *, decode: Callable[[bytes], Any] | None = None) -> Handler:
    """The handler run inside `scope`, keeping its serializers. With `decode`, the wrapped
    handler receives the request's raw bytes and decodes them itself, inside the scope (for a
    bidirectional stream, each message as it is read). Client-only streams are not part of any
    contract."""
    deserializer = handler.request_deserializer if decode is None else None
    prepare: Callable[[Any], Any] = decode or (lambda request: request)
    if handler.unary_unary is not None:
        # grpc.aio handlers are coroutine functions; the type stubs describe the sync API.
        inner_unary = cast(UnaryBehavior, handler.unary_unary)

        async def unary(request: Any, context: Ctx) -> Any:
            async with scope(context):
                return await inner_unary(prepare(request), context)

        return grpc.unary_unary_rpc_method_handler(unary, deserializer, handler.response_serializer)
    if handler.unary_stream is not None:
        inner_stream = cast(StreamBehavior, handler.unary_stream)

        async def stream(request: Any, context: Ctx) -> AsyncIterator[Any]:
            async with scope(context):
                async for item in inner_stream(prepare(request), context):
                    yield item

        return grpc.unary_stream_rpc_method_handler(stream, deserializer, handler.response_serializer)
    if handler.stream_stream is not None:
        # A worker's long-lived stream (agent_queue.WorkJobs): the scope (request context, auth,
        # …) is entered once for the whole stream, each request message is decoded as read.
        inner_bidi = cast(StreamBehavior, handler.stream_stream)

        async def bidi(requests: AsyncIterator[Any], context: Ctx) -> AsyncIterator[Any]:
            async with scope(context):
                async for item in inner_bidi(_each(requests, prepare), context):
                    yield item

        return grpc.stream_stream_rpc_method_handler(bidi, deserializer, handler.response_serializer)
    raise TypeError("client-streaming RPCs are not part of any Zenthor contract")


async def _each(requests: AsyncIterator[Any], prepare: Callable[[Any], Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield prepare(request)


def is_infrastructure(method: str) -> bool:
    """Health and reflection: standard services every server carries, open to probes."""
    return method.lstrip("/").split("/", 1)[0] in INFRASTRUCTURE_SERVICES


async def _abort_for(error: BaseException, context: Ctx, method: str) -> None:
    request_id = current_request_id()
    if not isinstance(error, DomainError) and is_database_unavailable(error):
        log.warning("rpc.database_unavailable", method=method, error=type(error).__name__)
        error = Unavailable("the database is unavailable; retry")
    if isinstance(error, DomainError):
        log.info("rpc.rejected", method=method, code=error.code.name, reason=error.message)
        status = to_rpc_status(error, request_id)
    else:
        log.error("rpc.failed", method=method, exc_info=error)
        status = internal_status(request_id)
    converted = rpc_status.to_status(status)
    # abort replaces trailing metadata, so the request id travels with the status details.
    await context.abort(
        converted.code,
        converted.details,
        trailing_metadata=(*converted.trailing_metadata, (REQUEST_ID_HEADER, request_id)),
    )


# The agent runtime's per-job calls: thousands a second in a drain, where one JSON access line per
# call cost more CPU than the call's own work. Their successful calls log at DEBUG; a failed or a
# slow one still logs at INFO, like every other method's.
QUIET_METHODS = frozenset(
    {
        "/zenthor.agent_queue.v1.AgentQueueService/ClaimJobs",
        "/zenthor.agent_queue.v1.AgentQueueService/CompleteJob",
        "/zenthor.agent_queue.v1.AgentQueueService/CompleteJobs",
        "/zenthor.agent_queue.v1.AgentQueueService/HeartbeatJob",
        "/zenthor.delivery.v1.DeliveryService/ClaimOutbound",
        "/zenthor.delivery.v1.DeliveryService/CompleteOutbound",
        "/zenthor.delivery.v1.DeliveryService/CompleteOutboundMessages",
        "/zenthor.messages.v1.MessagesService/UpdateStreamingContent",
    }
)
SLOW_CALL_MS = 250.0


class RequestContextInterceptor(grpc.aio.ServerInterceptor):
    """Request id, access log, deadline check, and the one place errors become a status."""

    def __init__(self, quiet_methods: Collection[str] = QUIET_METHODS) -> None:
        self._quiet = frozenset(quiet_methods)

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or is_infrastructure(handler_call_details.method):
            return handler
        method = handler_call_details.method
        request_id = metadata_dict(handler_call_details).get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        quiet = method in self._quiet

        @asynccontextmanager
        async def request_scope(context: Ctx) -> AsyncIterator[None]:
            _request_id.set(request_id)
            structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
            context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
            started = time.perf_counter()
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline already passed")
            code = "OK"
            try:
                yield
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                code = "ERROR"
                await _abort_for(error, context, method)
            finally:
                ms = round((time.perf_counter() - started) * 1000, 2)
                if quiet and code == "OK" and ms < SLOW_CALL_MS:
                    log.debug("rpc", code=code, ms=ms)
                else:
                    log.info("rpc", code=code, ms=ms)

        return wrap_handler(handler, request_scope)


class UnbuiltMethodInterceptor(grpc.aio.ServerInterceptor):
    """Methods in the contract whose implementation has not landed answer UNIMPLEMENTED
    naming the RPC, never a fake success."""

    def __init__(self, unbuilt: Collection[str]) -> None:
        self._unbuilt = frozenset(unbuilt)

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method not in self._unbuilt:
            return handler

        @asynccontextmanager
        async def refuse(_context: Ctx) -> AsyncIterator[None]:
            raise Unimplemented(method.lstrip("/"))
            yield  # unreachable: makes this an async generator for asynccontextmanager

        return wrap_handler(handler, refuse)


def _no_scope(_context: Ctx) -> AbstractAsyncContextManager[None]:
    return nullcontext()


def _decoded(deserialize: Callable[[bytes], Any], raw: bytes) -> Any:
    try:
        request = deserialize(raw)
    except (DecodeError, RecursionError) as e:
        raise InvalidArgument(
            "request", "could not be decoded (invalid UTF-8 in a string, or nested too deeply)"
        ) from e
    if isinstance(request, Message):
        check_request(request)
    return request


class RequestDecodingInterceptor(grpc.aio.ServerInterceptor):
    """Hands the handler raw bytes and decodes them inside the chain: a malformed request is
    then a DomainError like any other (INVALID_ARGUMENT, request id, logged), never the
    library's UNKNOWN "Unexpected <class DecodeError>" answered before authentication."""

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or is_infrastructure(handler_call_details.method):
            return handler
        deserialize = handler.request_deserializer
        if deserialize is None:
            return handler
        return wrap_handler(handler, _no_scope, decode=lambda raw: _decoded(deserialize, raw))
