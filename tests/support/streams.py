"""Bounded reads of server-streaming calls: a read that never comes fails the test instead of
hanging it, and a watch test waits for the state it expects, not for a number of wake-ups
(a busy machine may coalesce or add them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

T = TypeVar("T")

# Generous: on a loaded 2-core machine a wake-up and the re-read behind it take seconds.
READ_TIMEOUT_S = 30.0


async def next_message(stream: Any, timeout_s: float = READ_TIMEOUT_S) -> Any:
    """The stream's next message; fails if none comes within `timeout_s` or the stream ended."""
    message = await asyncio.wait_for(stream.read(), timeout_s)
    assert message is not grpc.aio.EOF, "the stream ended"
    return message


async def read_until(stream: Any, done: Callable[[Any], bool], timeout_s: float = READ_TIMEOUT_S) -> Any:
    """Reads until a message satisfies `done` and returns it; fails if the stream ends or no such
    message comes within `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await stream.read()
            assert message is not grpc.aio.EOF, "the stream ended before the expected state"
            if done(message):
                return message


async def stream_end(stream: Any, timeout_s: float = READ_TIMEOUT_S) -> None:
    """The stream's end; fails if a message comes instead or nothing within `timeout_s`."""
    message = await asyncio.wait_for(stream.read(), timeout_s)
    assert message is grpc.aio.EOF, f"expected the stream to end, got {message}"


async def exchange(stream: Any, request: Any, timeout_s: float = READ_TIMEOUT_S) -> Any:
    """One request on a bidirectional stream and the answer to it (a worker stream answers each
    request in order)."""
    await stream.write(request)
    return await next_message(stream, timeout_s)


async def refusal(stream: Any, request: Any, timeout_s: float = READ_TIMEOUT_S) -> grpc.aio.AioRpcError:
    """The error a refused bidirectional stream ends with. A refusal decided before the handler
    reads (the auth chain's) may reach the client before its first request is written; the write
    then fails (with the refusal, or as "RPC already finished") and the read returns the refusal."""
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        await stream.write(request)
    try:
        message = await asyncio.wait_for(stream.read(), timeout_s)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError(f"expected the stream to be refused, got {message}")
