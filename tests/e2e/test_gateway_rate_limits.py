"""Rate limits at the edge: over HTTP through the real gateway, a flood of sends and of watch
streams is answered 429 with `Retry-After` (whole seconds, rounded up) and the JSON error body;
the services' token buckets run on a clock the test moves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from services.messages.app import build_server as build_messages
from tests.e2e.conftest import gateway_settings, serve_gateway
from tests.service.conftest import Running, start, stop
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from tests.support.rate_limits import BucketClock
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc


@pytest.fixture
def bucket_clock() -> BucketClock:
    return BucketClock()


@pytest.fixture
async def messages(
    identity: Running, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, bucket_clock: BucketClock
) -> AsyncIterator[Running]:
    settings = settings_for(
        ServiceName.MESSAGES,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=f"127.0.0.1:{free_port()}",  # nothing there: jobs wait in the outbox
        # a token every 24 s (the wait 24 s exactly, then 2.5 s: Retry-After rounds up)
        rate_limit_sends_per_minute=2.5,
        rate_limit_sends_burst=2,
        rate_limit_watch_streams_per_minute=2.5,
        rate_limit_watch_streams_burst=2,
    )
    server = await build_messages(settings)
    server.rate_limits.use_clock(bucket_clock)
    running = await start(server, messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


@pytest.fixture
async def gateway(identity: Running, messages: Running) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(f"127.0.0.1:{identity.server.port}", messages_addr=f"127.0.0.1:{messages.server.port}")
    async with serve_gateway(settings) as client:
        yield client


@pytest.fixture
def ana(db: TestDatabase, identity: Running) -> dict[str, str]:
    alice(db)
    return {"authorization": f"Bearer {identity.issuer.token('user_alice')}"}


def assert_rate_limited(response: httpx.Response, retry_after: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == retry_after
    error = response.json()["error"]
    assert error["code"] == "RESOURCE_EXHAUSTED" and error["request_id"]
    assert "Rate limit" in error["message"]


async def test_a_flood_of_sends_over_http_gets_429_with_retry_after(
    gateway: httpx.AsyncClient, ana: dict[str, str], bucket_clock: BucketClock
) -> None:
    conversation = (await gateway.post("/v1/conversations", json={"title": "Flood"}, headers=ana)).json()["conversation"]
    path = f"/v1/conversations/{conversation['id']}/messages"
    for i in range(2):
        assert (await gateway.post(path, json={"content": f"m{i}"}, headers=ana)).status_code == 200
    assert_rate_limited(await gateway.post(path, json={"content": "too many"}, headers=ana), "24")
    bucket_clock.advance(21.5)  # 2.5 s to go: rounded up
    assert_rate_limited(await gateway.post(path, json={"content": "still too many"}, headers=ana), "3")
    bucket_clock.advance(2.5)
    assert (await gateway.post(path, json={"content": "after the wait"}, headers=ana)).status_code == 200
    listed = (await gateway.get(path, headers=ana)).json()["messages"]
    assert [m["content"] for m in listed] == ["m0", "m1", "after the wait"]


async def test_a_flood_of_watch_streams_over_sse_gets_429_with_retry_after(
    gateway: httpx.AsyncClient, ana: dict[str, str], bucket_clock: BucketClock
) -> None:
    conversation = (await gateway.post("/v1/conversations", json={"title": "Watched"}, headers=ana)).json()["conversation"]
    watch = f"/v1/conversations/{conversation['id']}:watch"

    async def open_stream(path: str) -> httpx.Response:
        async with gateway.stream("GET", path, headers=ana) as response:
            if response.status_code == 200:
                # The current state arrived: the stream was opened; leave it.
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        break
            else:
                await response.aread()
            return response

    assert (await open_stream(watch)).status_code == 200
    assert (await open_stream("/v1/conversations:watch")).status_code == 200
    assert_rate_limited(await open_stream(watch), "24")
    assert_rate_limited(await open_stream("/v1/conversations:watch"), "24")
    bucket_clock.advance(24)
    assert (await open_stream(watch)).status_code == 200
