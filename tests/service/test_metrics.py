"""gRPC server metrics (zenthor/metrics.py) on a real server: every answer is counted by service,
method and status code, refused ones included; unary calls land in the latency histogram; the
in-flight gauge goes back down; health checks are not counted; the /metrics endpoint serves the
series in the Prometheus text format. Counts are read as differences: the registry is the
process's, shared by every test in it."""

from __future__ import annotations

import asyncio

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import Running
from tests.support.grpc_client import rpc_error, service
from zenthor.config import Settings
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.metrics import serve_metrics

SERVICE = "zenthor.identity.v1.IdentityService"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def handled(method: str, code: str) -> float:
    return value(
        "zenthor_grpc_server_handled_total",
        grpc_service=SERVICE, grpc_method=method, grpc_type="unary", grpc_code=code,
    )


async def test_calls_are_counted_by_method_and_code_refused_ones_included(identity: Running) -> None:
    before = {
        ("GetContactByPhone", "OK"): handled("GetContactByPhone", "OK"),
        ("GetContactByPhone", "UNAUTHENTICATED"): handled("GetContactByPhone", "UNAUTHENTICATED"),
        ("BatchGetContacts", "INVALID_ARGUMENT"): handled("BatchGetContacts", "INVALID_ARGUMENT"),
    }
    latency_before = value(
        "zenthor_grpc_server_handling_seconds_count", grpc_service=SERVICE, grpc_method="GetContactByPhone"
    )

    for _ in range(3):
        await identity.stub.GetContactByPhone(pb.GetContactByPhoneRequest(phone="123"), metadata=service())
    refused = await rpc_error(identity.stub.GetContactByPhone(pb.GetContactByPhoneRequest(phone="123")))
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    invalid = await rpc_error(
        identity.stub.BatchGetContacts(pb.BatchGetContactsRequest(ids=["not-an-id"]), metadata=service())
    )
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert handled("GetContactByPhone", "OK") - before[("GetContactByPhone", "OK")] == 3
    assert handled("GetContactByPhone", "UNAUTHENTICATED") - before[("GetContactByPhone", "UNAUTHENTICATED")] == 1
    assert handled("BatchGetContacts", "INVALID_ARGUMENT") - before[("BatchGetContacts", "INVALID_ARGUMENT")] == 1
    latency_after = value(
        "zenthor_grpc_server_handling_seconds_count", grpc_service=SERVICE, grpc_method="GetContactByPhone"
    )
    assert latency_after - latency_before == 4
    in_flight = value("zenthor_grpc_server_in_flight", grpc_service=SERVICE, grpc_method="GetContactByPhone", grpc_type="unary")
    assert in_flight == 0


async def test_health_checks_are_not_counted(identity: Running) -> None:
    def health_series() -> list[str]:
        return [
            s.labels["grpc_service"]
            for family in REGISTRY.collect()
            if family.name == "zenthor_grpc_server_handled"
            for s in family.samples
            if s.labels.get("grpc_service", "").startswith("grpc.health")
        ]

    await health_pb2_grpc.HealthStub(identity.channel).Check(health_pb2.HealthCheckRequest())
    assert health_series() == []


async def test_the_endpoint_serves_the_series_in_the_text_format(identity: Running) -> None:
    await identity.stub.GetContactByPhone(pb.GetContactByPhoneRequest(phone="123"), metadata=service())
    endpoint = serve_metrics(Settings(metrics_port=0), process="test")
    assert endpoint is not None
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"http://127.0.0.1:{endpoint.port}/metrics")
    finally:
        await asyncio.to_thread(endpoint.close)
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    ok = [
        s for s in families["zenthor_grpc_server_handled"].samples
        if s.labels.get("grpc_method") == "GetContactByPhone" and s.labels["grpc_code"] == "OK"
    ]
    assert ok and ok[0].value >= 1
    assert "process_cpu_seconds" in families  # process metrics come with the registry


def test_metrics_are_off_unless_a_port_is_set() -> None:
    assert serve_metrics(Settings(), process="test") is None
