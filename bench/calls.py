"""Calls per second of one RPC, with `workers` workers, each on its own channel and one call in
flight (the drain's shape): (f) the bare Health.Check floor, (l) the auth chain by mode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.core import Bench, Case, Metrics
from bench.stack import read_cpu, service_metadata
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc

Call = Callable[[Any], Awaitable[object]]  # one call on a stub
WARM_S = 0.3


async def calls_per_second(bench: Bench, server: str, make_stub: Callable[[grpc.aio.Channel], Any], call: Call) -> Metrics:
    seconds = bench.options.call_seconds
    channels = [grpc.aio.insecure_channel(bench.stack.address(server)) for _ in range(bench.options.workers)]
    try:
        stubs = [make_stub(c) for c in channels]
        done = 0
        stop_at = 0.0

        async def worker(stub: Any) -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await call(stub)
                done += 1

        # Warm: channels connected, the server's pool holding a connection per worker.
        stop_at = time.perf_counter() + WARM_S
        await asyncio.wait_for(asyncio.gather(*(worker(s) for s in stubs)), WARM_S + 30)
        done = 0
        before = read_cpu(bench.stack)
        stop_at = time.perf_counter() + seconds
        await asyncio.wait_for(asyncio.gather(*(worker(s) for s in stubs)), seconds + 30)
        after = read_cpu(bench.stack)
    finally:
        for channel in channels:
            await channel.close()
    elapsed = after.wall_s - before.wall_s
    server_ms = (after.services_s[server] - before.services_s[server]) * 1000
    return {"rate": done / elapsed, "server_cpu_ms_per_call": server_ms / max(done, 1)}


def _health(bench: Bench) -> Awaitable[Metrics]:
    request = health_pb2.HealthCheckRequest()
    return calls_per_second(bench, "agent_queue", health_pb2_grpc.HealthStub, lambda s: s.Check(request))


AUTH_SLICE_S = 0.25


async def auth_modes(bench: Bench) -> dict[str, Metrics]:
    """(l) on the identity server's equal-work handlers (bench/auth_server.py): PUBLIC
    GetHealthCheck, USER GetCurrentUser with an RS256 JWT (principal cached as shipped),
    SERVICE GetContactByPhone with the service key. Same body, only the auth differs. The
    three modes take turns in 250 ms slices (rotating which goes first) for `call_seconds`
    each, so a burst of load on the shared machine hits all three alike."""
    user, key = bench.stack.user_metadata(), service_metadata()
    calls: dict[str, Call] = {
        "public": lambda s: s.GetHealthCheck(pb.GetHealthCheckRequest()),
        "user": lambda s: s.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=user),
        "service": lambda s: s.GetContactByPhone(pb.GetContactByPhoneRequest(phone="5511999990000"), metadata=key),
    }
    server = bench.stack.services["identity"]
    channels = [grpc.aio.insecure_channel(server.address) for _ in range(bench.options.workers)]
    done = dict.fromkeys(calls, 0)
    wall = dict.fromkeys(calls, 0.0)
    cpu = dict.fromkeys(calls, 0.0)
    try:
        stubs = [identity_pb2_grpc.IdentityServiceStub(c) for c in channels]

        async def window(mode: str, seconds: float) -> tuple[int, float, float]:
            count = 0
            stop_at = time.perf_counter() + seconds

            async def worker(stub: Any) -> None:
                nonlocal count
                while time.perf_counter() < stop_at:
                    await calls[mode](stub)
                    count += 1

            started, cpu_before = time.perf_counter(), server.cpu_s()
            await asyncio.wait_for(asyncio.gather(*(worker(s) for s in stubs)), seconds + 30)
            return count, time.perf_counter() - started, server.cpu_s() - cpu_before

        for mode in calls:
            await window(mode, WARM_S)
        modes = list(calls)
        for i in range(max(1, round(bench.options.call_seconds / AUTH_SLICE_S))):
            for mode in modes[i % 3:] + modes[: i % 3]:
                count, elapsed, used = await window(mode, AUTH_SLICE_S)
                done[mode] += count
                wall[mode] += elapsed
                cpu[mode] += used
    finally:
        for channel in channels:
            await channel.close()
    return {
        f"same work, {mode}": {"rate": done[mode] / wall[mode], "server_cpu_ms_per_call": cpu[mode] * 1000 / max(done[mode], 1)}
        for mode in calls
    }


def call_cases(bench: Bench) -> list[Case]:
    return [
        Case("f", "Health.Check (agent_queue)", _health),
        Case("l", "auth chain, same work", auth_modes, multi=True),
    ]
