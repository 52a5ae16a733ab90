"""The Todoist OAuth flow end to end over real sockets: the fake Todoist's authorize page
redirects the browser to the real gateway's GET /todoist/oauth/callback, the gateway hands it to
the real todoist service, which claims the state and signals TodoistOAuthWorkflow on the
Temporal dev server; the worker's activity exchanges the code at the fake. The access token
shows up in no log line of the run and is sealed in the database (docs/hardening.md #8, #36)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from temporalio.client import Client

from gateway.app import create_app
from tests.e2e.conftest import gateway_settings
from tests.service.conftest import Running
from tests.service.todoist.builders import connection_row, start_oauth, state_of, states, status
from tests.service.todoist.conftest import (
    TodoistFactory,
    TodoistStack,
    alice_user,
    clock,
    fake_todoist,
    messages,
    oauth_worker,
    todoist_factory,
)
from tests.support.builders import alice
from tests.support.waiting import eventually
from tests.workflows.conftest import client, task_queue, temporal_address, temporal_env
from zenthor.devstack.fake_todoist import FakeTodoist
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2 as pb
from zenthor.logs import configure_logging

# Fixtures of the todoist service tests and the Temporal dev server, used here too.
REUSED_FIXTURES = (clock, fake_todoist, messages, todoist_factory, client, task_queue, temporal_address, temporal_env)

TOKEN = "tdk-3c1e6f0b9a7d4e21-secret"  # what the fake Todoist hands out for Alice's account


@dataclass
class Edge:
    stack: TodoistStack
    gateway: httpx.AsyncClient  # talks to the gateway
    browser: httpx.AsyncClient  # follows redirects, as a browser does
    callback_url: str


@asynccontextmanager
async def serve(app: Any, sock: socket.socket) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:  # uvicorn exposes readiness only as this flag
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
        yield
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def edge_stack(
    todoist_factory: TodoistFactory,
    fake: FakeTodoist,
    identity: Running,
    client: Client,
    task_queue: str,
    temporal_address: str,
    **gateway: Any,
) -> AsyncIterator[Edge]:
    """todoist (Todoist's redirect URI: this gateway's callback), the worker, the gateway."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound first, so the redirect URI can name the port
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        callback_url = f"{base}/todoist/oauth/callback"
        stack = await todoist_factory(
            temporal_address=temporal_address,
            task_queue=task_queue,
            todoist_oauth_redirect_uri=callback_url,
            todoist_oauth_authorize_url=fake.authorize_url,
        )
        stack.extra["client"] = client
        settings = gateway_settings(
            f"127.0.0.1:{identity.server.port}", todoist_addr=f"127.0.0.1:{stack.todoist.server.port}", **gateway
        )
        async with (
            oauth_worker(client, task_queue, stack),
            serve(create_app(settings), sock),
            httpx.AsyncClient(base_url=base, timeout=60) as to_gateway,
            httpx.AsyncClient(follow_redirects=True, timeout=60) as browser,
        ):
            yield Edge(stack, to_gateway, browser, callback_url)


@pytest.fixture
async def edge(
    todoist_factory: TodoistFactory,
    fake_todoist: FakeTodoist,
    identity: Running,
    client: Client,
    task_queue: str,
    temporal_address: str,
) -> AsyncIterator[Edge]:
    async with edge_stack(todoist_factory, fake_todoist, identity, client, task_queue, temporal_address) as edge:
        yield edge


@contextmanager
def every_log_line(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """The run's structured logs at DEBUG, as JSON lines, into a buffer; the stdlib loggers
    (httpx, grpc, temporalio) at DEBUG into caplog."""
    previous = structlog.get_config()
    buffer = io.StringIO()
    configure_logging("DEBUG", "json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    caplog.set_level(logging.DEBUG)
    try:
        yield buffer
    finally:
        structlog.configure(**previous)


async def test_oauth_end_to_end_start_callback_connected_and_the_token_never_logged(
    edge: Edge, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    stack = edge.stack
    with every_log_line(caplog) as logs:
        alice_id = alice(stack.db)
        stack.fake.add_account(email="alice@todo.com", full_name="Alice T", token=TOKEN)
        started = await start_oauth(stack)
        assert started.authorization_url.startswith(stack.fake.authorize_url + "?client_id=tdcid&")

        # The browser visits Todoist, which sends it back to the gateway's callback.
        landed = await edge.browser.get(started.authorization_url)

        assert landed.status_code == 200, landed.text
        assert landed.url.path == "/todoist/oauth/callback"
        assert landed.json() == {
            "connected": True, "account_email": "alice@todo.com", "account_name": "Alice T", "scope": "data:read_write",
        }
        assert (await status(stack)).connected
        assert states(stack.db) == []

        # The same callback again (a reload, a replayed link): the state was single-use.
        again = await edge.gateway.get(str(landed.url))
        assert again.status_code == 404
        assert again.json()["error"]["message"] == "Invalid Todoist OAuth state."

        # Disconnect revokes the token at Todoist.
        await stack.stub.DisconnectTodoist(pb.DisconnectTodoistRequest(), metadata=alice_user(stack.issuer))
        await eventually(lambda: stack.fake.revoked == [TOKEN], timeout_s=15)
        assert connection_row(stack.db, alice_id) is None

        workflow = edge.stack.extra["client"].get_workflow_handle(f"todoist-oauth-{state_of(started)}")
        history = json.dumps((await workflow.fetch_history()).to_json_dict())
    structured = logs.getvalue()
    captured = capfd.readouterr()
    # The captures work: they hold this run's events and the HTTP client's own lines…
    assert '"event": "todoist.connected"' in structured and '"event": "todoist.token_revoked"' in structured
    assert any(r.name == "httpx" for r in caplog.records)
    # …and none of them, nor the workflow's history, holds the token.
    for text in (structured, caplog.text, captured.out, captured.err, history):
        assert TOKEN not in text
    assert all(TOKEN not in str(r.args) for r in caplog.records)


async def test_an_expired_state_fails_at_the_callback_and_is_gone(edge: Edge) -> None:
    stack = edge.stack
    alice(stack.db)
    started = await start_oauth(stack)
    stack.clock.advance(minutes=10, seconds=1)

    landed = await edge.browser.get(started.authorization_url)

    assert landed.status_code == 409
    assert landed.json()["error"]["message"] == "Todoist OAuth state expired. Please try connecting again."
    assert states(stack.db) == []
    assert stack.fake.requests_to("POST", "/oauth/access_token") == []
    again = await edge.gateway.get(str(landed.url))
    assert again.status_code == 404


async def test_a_failed_exchange_consumes_the_state(edge: Edge) -> None:
    stack = edge.stack
    alice_id = alice(stack.db)
    stack.fake.script("POST", "/oauth/access_token", 400, {"error": "invalid_grant"})
    started = await start_oauth(stack)

    landed = await edge.browser.get(started.authorization_url)

    assert landed.status_code == 409
    assert landed.json()["error"]["message"] == 'Failed to exchange Todoist OAuth code: {"error": "invalid_grant"}'
    assert states(stack.db) == [] and connection_row(stack.db, alice_id) is None
    again = await edge.gateway.get(str(landed.url))
    assert again.status_code == 404
    assert len(stack.fake.requests_to("POST", "/oauth/access_token")) == 1


async def test_a_denied_authorization_ends_the_flow(edge: Edge) -> None:
    alice(edge.stack.db)
    state = state_of(await start_oauth(edge.stack))
    answer = await edge.gateway.get("/todoist/oauth/callback", params={"state": state, "error": "access_denied"})
    assert answer.status_code == 200 and answer.json() == {"connected": False}
    assert states(edge.stack.db) == []


async def test_with_a_return_url_the_browser_goes_back_to_the_app(
    todoist_factory: TodoistFactory,
    fake_todoist: FakeTodoist,
    identity: Running,
    client: Client,
    task_queue: str,
    temporal_address: str,
) -> None:
    app_url = "https://app.example.com/settings?tab=integrations"
    async with edge_stack(
        todoist_factory, fake_todoist, identity, client, task_queue, temporal_address, todoist_oauth_return_url=app_url
    ) as edge:
        alice(edge.stack.db)
        started = await start_oauth(edge.stack)
        to_fake = await edge.gateway.get(started.authorization_url, follow_redirects=False)
        landed = await edge.gateway.get(to_fake.headers["location"], follow_redirects=False)
        assert landed.status_code == 303
        assert landed.headers["location"] == f"{app_url}&todoist=connected"
        replay = await edge.gateway.get(to_fake.headers["location"], follow_redirects=False)
        assert replay.headers["location"] == f"{app_url}&todoist=error&reason=NOT_FOUND"
        assert (await status(edge.stack)).connected

