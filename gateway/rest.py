"""REST and SSE for every RPC people may call, built from the contracts' HTTP rules
(gateway/http_rules.py): a new RPC gets its route by declaring it in its `.proto`.

One generic handler per route turns the HTTP request into the request message
(gateway/protojson.py), calls the RPC on the caller's behalf — their bearer token and the
request id forwarded through zenthor.clients.Peers — and answers the reply as JSON.
Authorization and ownership are the services' (their auth modes), not the gateway's.

Server streams are Server-Sent Events: each response is one `change` event; when the stream can
resume (gateway.http_rules.HttpBinding.resumable) the event id is the response's position and
`Last-Event-ID` resumes after it, so a browser's EventSource misses nothing across reconnects.
Every read is bounded: the first response (the current state) within the RPC deadline, the
stream as a whole by `SseConfig.max_stream_s`, after which it ends and EventSource reconnects;
comment lines every `heartbeat_s` keep idle streams open through proxies and find dead clients.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import cast

import grpc
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.convertors import Convertor, register_url_convertor

from gateway.deps import CallMetadata, Metadata, RequestId
from gateway.errors import error_response, rpc_error
from gateway.http_rules import POSITION_FIELD, RESUME_FIELD, HttpBinding
from gateway.openapi import SchemaRegistry, operation_extra, responses
from gateway.protojson import request_from_http, response_json, set_from_text
from zenthor.clients import Peers
from zenthor.config import Settings
from zenthor.interceptors import REQUEST_ID_HEADER
from zenthor.logs import get_logger

log = get_logger("gateway.rest")


@dataclass(frozen=True)
class SseConfig:
    # Comment lines keep idle streams open through proxies; a write that fails ends the stream.
    heartbeat_s: float = 15.0
    # The gRPC stream's deadline: the SSE stream then ends and EventSource reconnects (with
    # Last-Event-ID where the stream resumes), so no stream is held forever.
    max_stream_s: float = 900.0
    # A client that stops reading is dropped after this long.
    send_timeout_s: float = 30.0
    # EventSource's reconnect delay, sent with the first event.
    retry_ms: int = 2000


class _SegmentConvertor(Convertor[str]):
    """One path segment up to a custom verb: `{id}` in `/v1/conversations/{id}:archive` never
    swallows `:archive`, whatever order the routes are tried in."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("segment", _SegmentConvertor())


def starlette_path(binding: HttpBinding) -> str:
    path = binding.template
    for name in binding.path_fields:
        path = path.replace(f"{{{name}}}", f"{{{name}:segment}}")
    return path


def contract_router(bindings: Sequence[HttpBinding], sse: SseConfig) -> tuple[APIRouter, SchemaRegistry]:
    """A route per binding, and the schemas of the messages their OpenAPI operations name."""
    router = APIRouter()
    registry = SchemaRegistry()
    for binding in bindings:
        router.add_api_route(
            starlette_path(binding),
            _endpoint(binding, sse),
            methods=[binding.verb.value],
            name=binding.rpc_name,
            operation_id=binding.rpc_name,
            summary=f"{binding.rpc_name} ({binding.mode.name}{', SSE' if binding.streaming else ''})",
            tags=[binding.service.value],
            response_model=None,
            response_class=EventSourceResponse if binding.streaming else JSONResponse,
            responses=responses(binding, registry),
            openapi_extra=operation_extra(binding, registry),
        )
    return router, registry


def _endpoint(binding: HttpBinding, sse: SseConfig) -> Callable[..., Awaitable[Response]]:
    if binding.public:
        # No credentials to forward: the route says so in OpenAPI (no security).
        async def public_endpoint(request: Request, request_id: RequestId) -> Response:
            return await _serve(binding, sse, request, ((REQUEST_ID_HEADER, request_id),))

        return public_endpoint

    async def endpoint(request: Request, metadata: CallMetadata) -> Response:
        return await _serve(binding, sse, request, metadata)

    return endpoint


async def _serve(binding: HttpBinding, sse: SseConfig, request: Request, metadata: Metadata) -> Response:
    message = request_from_http(
        GetMessageClass(binding.method.input_type)(),
        path=request.path_params,
        query=request.query_params.multi_items(),
        query_fields=binding.query_fields,
        body=await request.body() if binding.body else None,
        body_fields=binding.body_fields,
    )
    peers: Peers = request.app.state.peers
    if binding.streaming:
        return await _event_stream(binding, sse, request, peers, message, metadata)
    method = peers.unary_method(binding.service, binding.method.name)
    reply = await method.call(message, metadata=metadata)
    return JSONResponse(response_json(reply))


async def _event_stream(
    binding: HttpBinding, sse: SseConfig, request: Request, peers: Peers, message: Message, metadata: Metadata
) -> Response:
    """Reads the first response before answering, so a refused watch (auth, bad id) is a
    normal JSON error with its HTTP status rather than a broken event stream."""
    settings: Settings = request.app.state.settings
    request_id = str(request.state.request_id)
    last_event_id = request.headers.get("last-event-id", "")
    if binding.resumable and last_event_id and not getattr(message, RESUME_FIELD):
        # Sent by the browser when EventSource reconnects; a query parameter wins.
        set_from_text(message, RESUME_FIELD, last_event_id)
    stream = peers.channel(binding.service).unary_stream(
        f"/{binding.method.containing_service.full_name}/{binding.method.name}",
        request_serializer=type(message).SerializeToString,
        response_deserializer=GetMessageClass(binding.method.output_type).FromString,
    )
    call = stream(message, metadata=metadata, timeout=sse.max_stream_s)
    try:
        async with asyncio.timeout(settings.rpc_deadline_s):
            first = await call.read()
    except TimeoutError:
        call.cancel()
        log.warning("http.peer_unavailable", grpc_code="DEADLINE_EXCEEDED", details="no first response", rpc=binding.rpc_name)
        return error_response(503, "DEADLINE_EXCEEDED", "Service unavailable, retry later", request_id)
    except grpc.aio.AioRpcError:
        call.cancel()
        raise

    def event(response: Message, retry: int | None) -> ServerSentEvent:
        return ServerSentEvent(
            data=json.dumps(response_json(response), separators=(",", ":")),
            event="change",
            id=getattr(response, POSITION_FIELD) if binding.resumable else None,
            retry=retry,
        )

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            if first is grpc.aio.EOF:
                return
            yield event(cast(Message, first), sse.retry_ms)
            while (response := await call.read()) is not grpc.aio.EOF:
                yield event(cast(Message, response), None)
        except grpc.aio.AioRpcError as e:
            # DEADLINE_EXCEEDED is the stream's lifetime ending: EventSource reconnects.
            if e.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                _, body = rpc_error(e, request_id)
                yield ServerSentEvent(data=json.dumps(body, separators=(",", ":")), event="error")
        finally:
            call.cancel()  # the client left or the stream ended: end the gRPC stream too

    return EventSourceResponse(events(), ping=sse.heartbeat_s, send_timeout=sse.send_timeout_s)
