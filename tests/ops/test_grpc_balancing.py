"""Client-side load balancing: a multi-address target (what `dns:///` resolves a headless Service
to in Kubernetes) spreads calls over every server; a bare host:port keeps one connection."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from zenthor.clients import lb_policy_for, open_channel

CALLS = 20


class CountCalls(grpc.aio.ServerInterceptor):
    def __init__(self, name: str, seen: Counter[str]) -> None:
        self.name, self.seen = name, seen

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        self.seen[self.name] += 1
        return await continuation(handler_call_details)


async def start(name: str, seen: Counter[str]) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=[CountCalls(name, seen)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def calls_per_server(target: str, seen: Counter[str]) -> Counter[str]:
    async with open_channel(target, None, deadline_s=5.0) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(CALLS):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5.0)
    return seen


async def test_calls_spread_over_every_address_of_a_balanced_target() -> None:
    seen: Counter[str] = Counter()
    a, port_a = await start("a", seen)
    b, port_b = await start("b", seen)
    try:
        await calls_per_server(f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}", seen)
        assert seen["a"] + seen["b"] == CALLS
        assert seen["a"] > 0 and seen["b"] > 0, f"all calls went to one server: {dict(seen)}"
    finally:
        await a.stop(None)
        await b.stop(None)


def test_k8s_addresses_balance_and_local_ones_do_not() -> None:
    assert lb_policy_for("dns:///agent-queue:50053") == "round_robin"
    assert lb_policy_for("127.0.0.1:50053") == "pick_first"
