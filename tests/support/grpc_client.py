"""Calling a real server the way clients do: bearer tokens and service keys as metadata."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import grpc

SERVICE_KEY = "s3cret"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def service(key: str = SERVICE_KEY) -> tuple[tuple[str, str], ...]:
    return (("x-service-key", key),)


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """Awaits a call that must fail and returns its error."""
    try:
        await call
    except grpc.aio.AioRpcError as e:
        return e
    raise AssertionError("the call succeeded but was expected to fail")

