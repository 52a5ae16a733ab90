"""Errors at the edge: a peer's gRPC status → HTTP status and one JSON body for every error.

    {"error": {"code": "INVALID_ARGUMENT", "message": "id: ...", "field": "id", "request_id": "…"}}

gRPC codes map as below; anything else is 500 `Internal error` with the request id to quote,
never the peer's details or a traceback. A 429 carries `Retry-After` (whole seconds, rounded
up) from the status's `google.rpc.RetryInfo` when the service sent one (zenthor.ratelimit).
Starlette's own errors (unknown path, bad method), request validation and inputs a request
message cannot take (gateway.protojson.InvalidInput) use the same body; an SSE stream that
fails after it started sends it as an `error` event.
"""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from google.rpc import error_details_pb2
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.protojson import InvalidInput
from zenthor.clients import rpc_status_of, violated_fields
from zenthor.logs import get_logger

log = get_logger("gateway.errors")

HTTP_STATUS_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}
# Transport failures carry peer addresses in their details: callers get a fixed sentence.
_UNAVAILABLE_MESSAGE = "Service unavailable, retry later"


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str
    field: str | None = None


class ErrorBody(BaseModel):
    """Every error the gateway answers (documented in OpenAPI with this schema)."""

    error: ErrorDetail


def error_body(code: str, message: str, request_id: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if field is not None:
        body["field"] = field
    return {"error": body}


def error_response(
    status: int, code: str, message: str, request_id: str, field: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, request_id, field), status_code=status)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def rpc_error(error: grpc.aio.AioRpcError, request_id: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body for a failed call."""
    code = error.code()
    status = HTTP_STATUS_OF.get(code, 500)
    if status == 500:
        log.error("http.peer_failed", grpc_code=code.name, details=error.details())
        return 500, error_body("INTERNAL", "Internal error", request_id)
    if status == 503:
        log.warning("http.peer_unavailable", grpc_code=code.name, details=error.details())
        return 503, error_body(code.name, _UNAVAILABLE_MESSAGE, request_id)
    fields = violated_fields(error) if code == grpc.StatusCode.INVALID_ARGUMENT else []
    field = fields[0] if fields else None
    # Domain messages are written for callers (zenthor.errors: `message` is safe to show).
    return status, error_body(code.name, error.details() or code.name, request_id, field)


def retry_after_s(error: grpc.aio.AioRpcError) -> int | None:
    """The `Retry-After` for a failed call: its RetryInfo's delay in whole seconds, rounded up
    (at least 1: a client told 0 would come straight back); None without RetryInfo."""
    status = rpc_status_of(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            nanoseconds: int = info.retry_delay.ToNanoseconds()
            return max(1, math.ceil(nanoseconds / 1e9))
    return None


def rpc_error_response(error: grpc.aio.AioRpcError, request_id: str) -> JSONResponse:
    status, body = rpc_error(error, request_id)
    response = JSONResponse(body, status_code=status)
    if status == 429 and (retry_after := retry_after_s(error)) is not None:
        response.headers["retry-after"] = str(retry_after)
    return response


async def _on_rpc_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, grpc.aio.AioRpcError)
    return rpc_error_response(error, _request_id(request))


async def _on_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    first = error.errors()[0] if error.errors() else {}
    # loc is ("query" | "path" | "body", name, ...): the field is what follows the source.
    field = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
    return error_response(
        400, "INVALID_ARGUMENT", str(first.get("msg", "invalid request")), _request_id(request), field
    )


async def _on_invalid_input(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, InvalidInput)
    return error_response(400, "INVALID_ARGUMENT", error.message, _request_id(request), error.field)


async def _on_http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    response = error_response(
        error.status_code, HTTPStatus(error.status_code).name, str(error.detail), _request_id(request)
    )
    if error.headers:
        response.headers.update(error.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(grpc.aio.AioRpcError, _on_rpc_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(InvalidInput, _on_invalid_input)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
