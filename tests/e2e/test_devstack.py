"""`make dev` end to end, on one stack started as `make dev` starts it: every process answers
its health check, reflection lists every service, the stack is never open, a crashed process
is restarted, and Ctrl-C stops everything with no stray process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2

from tests.support.devstack import DevStack, port_open
from tests.support.reflection import ReflectionClient
from zenthor.clients import HEALTH_CHECK_METHOD
from zenthor.config import ServiceName
from zenthor.gen.zenthor.identity.v1 import identity_pb2, identity_pb2_grpc

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    stack = DevStack(tmp_path_factory.mktemp("devstack") / "data")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def serving(address: str, timeout_s: float = 5) -> bool:
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply = check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def test_every_process_is_up(stack: DevStack) -> None:
    assert len(stack.children()) >= 11  # postgres, temporal, 7 services, gateway, worker
    for service in ServiceName:
        assert serving(stack.grpc_address(service)), service
    assert httpx.get(f"{stack.gateway_url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{stack.ports['ui']}/", timeout=10).status_code == 200


def test_service_calls_need_the_generated_key(stack: DevStack) -> None:
    with grpc.insecure_channel(stack.grpc_address(ServiceName.IDENTITY)) as channel:
        stub = identity_pb2_grpc.IdentityServiceStub(channel)
        request = identity_pb2.GetContactByPhoneRequest(phone="5511999990000")
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetContactByPhone(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.GetContactByPhone(request, metadata=(("x-service-key", stack.service_key),), timeout=5)
        assert not reply.HasField("contact")


def test_reflection_lists_and_resolves_all_seven_services(stack: DevStack) -> None:
    for service in ServiceName:
        with grpc.insecure_channel(stack.grpc_address(service)) as channel:
            client = ReflectionClient(channel)
            name = f"zenthor.{service.value}.v1.{service.proto_service}"
            assert name in client.list_services()
            assert client.resolve_service(name), service


def test_a_crashed_service_is_restarted(stack: DevStack) -> None:
    victim = stack.child_running("services.messages")
    victim.kill()
    psutil.wait_procs([victim], timeout=10)
    stack.wait_for_output("messages exited with", 30)
    stack.wait_for_output("messages restarted", 60)
    deadline = time.monotonic() + 90
    while not serving(stack.grpc_address(ServiceName.MESSAGES), timeout_s=2):
        assert time.monotonic() < deadline, stack.output
        time.sleep(0.2)
    assert stack.proc is not None and stack.proc.poll() is None


def test_ctrl_c_stops_everything(stack: DevStack, tmp_path: Path) -> None:
    children = stack.children()
    assert stack.stop() == 0, stack.output
    assert "[dev] stopped" in stack.output
    psutil.wait_procs(children, timeout=10)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not any(port_open(p) for p in stack.ports.values())
