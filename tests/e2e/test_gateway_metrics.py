"""The gateway's HTTP metrics (gateway/metrics.py) under a real uvicorn server: requests counted
by route template (the contract's, never the path with its ids), method and status; unmatched
paths share one label; latency observed per route; nothing left in flight."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY

from gateway.metrics import UNMATCHED


def requests(route: str, method: str, status: str) -> float:
    return REGISTRY.get_sample_value(
        "zenthor_http_requests_total", {"route": route, "method": method, "status": status}
    ) or 0.0


async def test_requests_are_counted_by_route_template_method_and_status(gateway: httpx.AsyncClient) -> None:
    # A templated route the identity server (the one peer running here) answers.
    user_route = "/v1/contacts/{id}"
    before = {
        "healthz": requests("/healthz", "GET", "200"),
        "user": requests(user_route, "PATCH", "401"),
        "unmatched": requests(UNMATCHED, "GET", "404"),
    }
    latency_before = REGISTRY.get_sample_value(
        "zenthor_http_request_duration_seconds_count", {"route": "/healthz", "method": "GET"}
    ) or 0.0

    for _ in range(2):
        assert (await gateway.get("/healthz")).status_code == 200
    anonymous = await gateway.patch("/v1/contacts/ct_0190a0a0a0a07a0a8a0a0a0a0a0a0a0a", json={})
    assert anonymous.status_code == 401, anonymous.text
    assert (await gateway.get("/no/such/path")).status_code == 404

    assert requests("/healthz", "GET", "200") - before["healthz"] == 2
    assert requests(user_route, "PATCH", "401") - before["user"] == 1
    assert requests(UNMATCHED, "GET", "404") - before["unmatched"] == 1
    latency_after = REGISTRY.get_sample_value(
        "zenthor_http_request_duration_seconds_count", {"route": "/healthz", "method": "GET"}
    )
    assert latency_after == latency_before + 2
    assert REGISTRY.get_sample_value("zenthor_http_requests_in_flight") == 0
