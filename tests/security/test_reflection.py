"""Server reflection answers through the interceptor chain, v1 and v1alpha, as grpcurl asks:
every service listed, every method's descriptor resolvable. Health stays open to probes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from tests.support.reflection import V1, V1ALPHA, ReflectionClient
from zenthor.config import ServiceName
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.process import peer_resolver
from zenthor.server import GrpcServer, ServiceRegistration


@pytest.fixture
async def port(settings_for: Any) -> AsyncIterator[int]:
    settings = settings_for(ServiceName.APPROVALS)
    resolver, peers = peer_resolver(settings)
    registration = ServiceRegistration(
        descriptor=pb.DESCRIPTOR.services_by_name["ApprovalsService"],
        base=approvals_pb2_grpc.ApprovalsServiceServicer,
        servicer=approvals_pb2_grpc.ApprovalsServiceServicer(),
        add_to_server=approvals_pb2_grpc.add_ApprovalsServiceServicer_to_server,
    )
    server = GrpcServer(settings, [registration], resolver, on_stop=[peers.close])
    yield await server.start(0)
    await server.stop(0)


def reflect(port: int, method: str) -> tuple[list[str], list[str]]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = ReflectionClient(channel, method=method)
        services = client.list_services()
        return services, client.resolve_service("zenthor.approvals.v1.ApprovalsService")


@pytest.mark.parametrize("method", [V1, V1ALPHA], ids=["v1", "v1alpha"])
async def test_reflection_lists_the_services_and_resolves_every_method(port: int, method: str) -> None:
    services, methods = await asyncio.to_thread(reflect, port, method)
    assert {
        "zenthor.approvals.v1.ApprovalsService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(services)
    assert len(methods) == len(pb.DESCRIPTOR.services_by_name["ApprovalsService"].methods)
    assert "zenthor.approvals.v1.ApprovalsService.CreateApproval" in methods
