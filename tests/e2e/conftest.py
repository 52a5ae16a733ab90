"""The edge over real sockets: the identity gRPC server on the test's own database, and the
gateway app under a real uvicorn server in the same event loop, called with httpx."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from services.identity.app import build_server as build_identity
from tests.service.conftest import Running, start, stop
from tests.support.database import TestDatabase
from tests.support.grpc_client import SERVICE_KEY
from tests.support.jwks import FakeClerkIssuer
from zenthor.config import ServiceName, Settings
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc

# Where no peer listens: port 1 is privileged, so no test server can be bound there, and a
# connection is refused at once. Peers a test does not start point here, never at the default
# ports where a `make dev` stack may be running.
NOWHERE = "127.0.0.1:1"
# the allowlist every scenario starts from
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3").decode()


def gateway_settings(identity_addr: str, **overrides: object) -> Settings:
    values: dict[str, object] = {f"{s.value}_addr": NOWHERE for s in ServiceName}
    values |= {
        "identity_addr": identity_addr,
        "service_key": SERVICE_KEY,
        "clerk_webhook_secret": WEBHOOK_SECRET,
        "log_format": "console",
    }
    values.update(overrides)
    return Settings.model_validate(values)


@contextmanager
def unreachable_addr() -> Iterator[str]:
    """A local port held bound but not listening, so connections are refused at once (a port
    merely freed could be handed to the next server bound to port 0)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"


@asynccontextmanager
async def serve_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Runs create_app(settings) under uvicorn on a socket bound here (no port race) and
    yields a client for it; stops the server (lifespan shutdown included) on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), lifespan="on", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        # uvicorn exposes readiness only as this flag.
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.005)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def identity(settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer) -> AsyncIterator[Running]:
    settings = settings_for(ServiceName.IDENTITY)
    running = await start(
        await build_identity(settings), identity_pb2_grpc.IdentityServiceStub, settings, db, clerk_issuer
    )
    yield running
    await stop(running)


@pytest.fixture
async def gateway(identity: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_gateway(gateway_settings(f"127.0.0.1:{identity.server.port}")) as client:
        yield client


@pytest.fixture
async def gateway_without_identity() -> AsyncIterator[httpx.AsyncClient]:
    # Peers wait for a reconnecting peer up to the deadline: keep it short here.
    with unreachable_addr() as addr:
        async with serve_gateway(gateway_settings(addr, rpc_deadline_s=0.3)) as client:
            yield client
