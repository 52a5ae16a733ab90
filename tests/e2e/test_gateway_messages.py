"""REST and SSE for the messages service at the edge, over HTTP against the real identity and
messages servers: routes map 1:1 onto the user-mode RPCs with the caller's bearer token; inputs
are checked field by field; SSE streams resume, send heartbeats and are bounded."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
import pytest
import uvicorn

from gateway import app as gateway_app
from gateway.rest import SseConfig
from services.messages.app import build_server as build_messages
from tests.e2e.conftest import gateway_settings
from tests.service.conftest import Running, start, stop
from tests.support.builders import add_contact, alice, bob
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from tests.support.ports import free_port
from zenthor.config import ServiceName
from zenthor.gen.zenthor.messages.v1 import messages_pb2_grpc

READ_TIMEOUT_S = 20.0


@pytest.fixture
async def messages(identity: Running, settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer) -> AsyncIterator[Running]:
    settings = settings_for(
        ServiceName.MESSAGES,
        identity_addr=f"127.0.0.1:{identity.server.port}",
        agent_queue_addr=f"127.0.0.1:{free_port()}",  # nothing there: jobs wait in the outbox
    )
    running = await start(await build_messages(settings), messages_pb2_grpc.MessagesServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


@asynccontextmanager
async def serve(settings: Any, sse: SseConfig | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway app under uvicorn on a socket bound here."""
    app = gateway_app.create_app(settings, sse=sse)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=READ_TIMEOUT_S) as client:
            yield client
    finally:
        server.should_exit = True
        await task
        sock.close()


def settings_for_peers(identity: Running, messages: Running, **overrides: object) -> Any:
    return gateway_settings(
        f"127.0.0.1:{identity.server.port}", messages_addr=f"127.0.0.1:{messages.server.port}", **overrides
    )


@pytest.fixture
async def gateway(identity: Running, messages: Running) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings_for_peers(identity, messages)) as client:
        yield client


def bearer(identity: Running, subject: str) -> dict[str, str]:
    return {"authorization": f"Bearer {identity.issuer.token(subject)}"}


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(id, data) of each `change` event of an open SSE response."""
    event_id, data = "", ""
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and data:
            yield event_id, json.loads(data)
            event_id, data = "", ""


async def test_a_user_creates_a_conversation_sends_and_reads_messages(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    created = await gateway.post("/v1/conversations", json={}, headers=headers)
    assert created.status_code == 200
    conversation = created.json()["conversation"]
    assert (conversation["title"], conversation["channel"], conversation["status"]) == ("New chat", "CHANNEL_WEB", "CONVERSATION_STATUS_ACTIVE")
    cid = conversation["id"]
    sent = await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": "hello there"}, headers=headers)
    message = sent.json()["message"]
    assert (message["content"], message["role"], message["status"]) == ("hello there", "MESSAGE_ROLE_USER", "MESSAGE_STATUS_SENT")
    listed = (await gateway.get(f"/v1/conversations/{cid}/messages", headers=headers)).json()
    assert [m["id"] for m in listed["messages"]] == [message["id"]]
    assert listed["next_page_token"] == ""
    got = (await gateway.get(f"/v1/messages/{message['id']}", headers=headers)).json()
    assert got["message"]["content"] == "hello there"
    assert (await gateway.get(f"/v1/conversations/{cid}", headers=headers)).json()["conversation"]["title"] == "hello there"
    renamed = await gateway.patch(f"/v1/conversations/{cid}", json={"title": "Renamed"}, headers=headers)
    assert renamed.json()["conversation"]["title"] == "Renamed"
    recent = (await gateway.get("/v1/conversations:recent", headers=headers)).json()
    assert [r["conversation"]["id"] for r in recent["conversations"]] == [cid]
    assert recent["conversations"][0]["last_message"]["content"] == "hello there"
    assert [c["id"] for c in (await gateway.get("/v1/conversations", headers=headers)).json()["conversations"]] == [cid]
    archived = await gateway.post(f"/v1/conversations/{cid}:archive", headers=headers)
    assert archived.json()["conversation"]["status"] == "CONVERSATION_STATUS_ARCHIVED"
    assert (await gateway.get("/v1/conversations:recent", headers=headers)).json()["conversations"] == []


async def test_bob_gets_nulls_and_empty_lists_for_alices_conversation(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    bob(identity.db)
    headers = bearer(identity, "user_alice")
    cid = (await gateway.post("/v1/conversations", json={"title": "Secret"}, headers=headers)).json()["conversation"]["id"]
    mid = (await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": "hi"}, headers=headers)).json()["message"]["id"]
    bobs = bearer(identity, "user_bob")
    assert (await gateway.get(f"/v1/conversations/{cid}", headers=bobs)).json() == {"conversation": None}
    assert (await gateway.get(f"/v1/messages/{mid}", headers=bobs)).json() == {"message": None}
    assert (await gateway.get(f"/v1/conversations/{cid}/messages", headers=bobs)).json()["messages"] == []
    assert (await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": "x"}, headers=bobs)).json() == {"message": None}
    assert (await gateway.patch(f"/v1/conversations/{cid}", json={"title": "x"}, headers=bobs)).json() == {"conversation": None}
    assert (await gateway.post(f"/v1/conversations/{cid}:archive", headers=bobs)).json() == {"conversation": None}
    assert (await gateway.get(f"/v1/conversations/{cid}", headers=headers)).json()["conversation"]["title"] == "Secret"


async def test_bad_input_is_400_naming_the_field_and_no_token_is_401(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    bad_id = await gateway.get("/v1/conversations/msg_0123", headers=headers)
    assert bad_id.status_code == 400
    assert bad_id.json()["error"]["field"] == "id"
    cid = (await gateway.post("/v1/conversations", json={}, headers=headers)).json()["conversation"]["id"]
    empty = await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": ""}, headers=headers)
    assert (empty.status_code, empty.json()["error"]["field"]) == (400, "content")
    negative = await gateway.get("/v1/conversations:recent", params={"page_size": -1}, headers=headers)
    assert (negative.status_code, negative.json()["error"]["field"]) == (400, "page_size")
    anonymous = await gateway.get("/v1/conversations")
    assert anonymous.status_code == 401
    watch_anonymous = await gateway.get(f"/v1/conversations/{cid}:watch")
    assert watch_anonymous.status_code == 401


async def test_watch_streams_changes_as_sse_and_resumes_from_last_event_id(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    cid = (await gateway.post("/v1/conversations", json={}, headers=headers)).json()["conversation"]["id"]
    await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": "first"}, headers=headers)
    async with gateway.stream("GET", f"/v1/conversations/{cid}:watch", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        position, initial = await asyncio.wait_for(anext(events), READ_TIMEOUT_S)
        assert initial["caught_up"] and [m["content"] for m in initial["messages"]] == ["first"]
        assert position == initial["position"]
        await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": "second"}, headers=headers)
        async with asyncio.timeout(READ_TIMEOUT_S):
            async for _, change in events:
                if change.get("messages"):
                    break
            else:
                raise AssertionError("the stream ended before the change")
        assert [m["content"] for m in change["messages"]] == ["second"]
    # Sent while nobody watched; the browser reconnects with Last-Event-ID.
    await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": "third"}, headers=headers)
    async with gateway.stream("GET", f"/v1/conversations/{cid}:watch", headers={**headers, "last-event-id": position}) as response:
        _, backlog = await asyncio.wait_for(anext(sse_events(response)), READ_TIMEOUT_S)
    assert [m["content"] for m in backlog["messages"]] == ["second", "third"]


async def test_conversation_list_watch_streams_snapshots(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice_id = alice(identity.db)
    add_contact(identity.db, "5511999990000", user_id=alice_id)
    headers = bearer(identity, "user_alice")
    async with gateway.stream("GET", "/v1/conversations:watch", headers=headers) as response:
        events = sse_events(response)
        _, empty = await asyncio.wait_for(anext(events), READ_TIMEOUT_S)
        assert empty.get("conversations", []) == []
        cid = (await gateway.post("/v1/conversations", json={"title": "New"}, headers=headers)).json()["conversation"]["id"]
        async with asyncio.timeout(READ_TIMEOUT_S):
            async for _, snapshot in events:
                if [r["conversation"]["id"] for r in snapshot.get("conversations", [])] == [cid]:
                    break
            else:
                raise AssertionError("the stream ended before the new conversation showed")


# --- inputs: every bad one is a 400 naming its field, never a 500 ---


async def test_a_number_out_of_its_fields_range_is_400_naming_it(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    for value in ("99999999999999", "-99999999999999", "1e3", "ten"):
        response = await gateway.get("/v1/conversations", params={"page_size": value}, headers=headers)
        assert response.status_code == 400, value
        assert (response.json()["error"]["code"], response.json()["error"]["field"]) == ("INVALID_ARGUMENT", "page_size")


async def test_unknown_or_repeated_query_parameters_are_400_naming_them(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    unknown = await gateway.get("/v1/conversations", params={"pagesize": "5"}, headers=headers)
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (400, "pagesize")
    twice = await gateway.get("/v1/conversations?page_size=1&page_size=2", headers=headers)
    assert (twice.status_code, twice.json()["error"]["field"]) == (400, "page_size")
    camel = await gateway.get("/v1/conversations", params={"pageSize": "1"}, headers=headers)
    assert camel.status_code == 200  # protobuf's JSON name is accepted as in a body


async def test_a_bad_body_is_400_naming_the_field(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    wrong_type = await gateway.post("/v1/conversations", json={"title": 5}, headers=headers)
    assert (wrong_type.status_code, wrong_type.json()["error"]["field"]) == (400, "title")
    unknown = await gateway.post("/v1/conversations", json={"title": "x", "owner": "usr_1"}, headers=headers)
    assert (unknown.status_code, unknown.json()["error"]["field"]) == (400, "owner")
    not_json = await gateway.post("/v1/conversations", content=b"{title", headers=headers)
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, "INVALID_ARGUMENT")
    not_object = await gateway.post("/v1/conversations", json=["x"], headers=headers)
    assert not_object.status_code == 400
    assert (await gateway.get("/v1/conversations", headers=headers)).json()["conversations"] == []


async def test_a_path_variable_wins_over_the_same_field_in_the_body(gateway: httpx.AsyncClient, identity: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    cid = (await gateway.post("/v1/conversations", json={}, headers=headers)).json()["conversation"]["id"]
    other = "conv_0190b1e0a0b07000800000000000dead"
    sent = await gateway.post(f"/v1/conversations/{cid}/messages", json={"content": "hi", "conversation_id": other}, headers=headers)
    assert sent.json()["message"]["conversation_id"] == cid


# --- SSE: heartbeats, a bounded life, errors as events, a bounded first read ---


async def test_an_idle_stream_sends_heartbeats(identity: Running, messages: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    async with serve(settings_for_peers(identity, messages), SseConfig(heartbeat_s=0.2)) as gateway:
        cid = (await gateway.post("/v1/conversations", json={}, headers=headers)).json()["conversation"]["id"]
        async with gateway.stream("GET", f"/v1/conversations/{cid}:watch", headers=headers) as response:
            lines = response.aiter_lines()
            async with asyncio.timeout(READ_TIMEOUT_S):
                while not (await anext(lines)).startswith(": ping"):
                    pass


async def test_a_stream_ends_after_its_lifetime_so_the_browser_reconnects(identity: Running, messages: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    async with serve(settings_for_peers(identity, messages), SseConfig(max_stream_s=1.0)) as gateway:
        cid = (await gateway.post("/v1/conversations", json={}, headers=headers)).json()["conversation"]["id"]
        async with gateway.stream("GET", f"/v1/conversations/{cid}:watch", headers=headers) as response:
            async with asyncio.timeout(READ_TIMEOUT_S):
                events = [event async for event in sse_events(response)]  # ends: the body completes
    assert len(events) == 1 and events[0][1]["caught_up"]


async def test_a_peer_failing_mid_stream_ends_it_with_an_error_event(identity: Running, messages: Running) -> None:
    alice(identity.db)
    headers = bearer(identity, "user_alice")
    async with serve(settings_for_peers(identity, messages)) as gateway:
        cid = (await gateway.post("/v1/conversations", json={}, headers=headers)).json()["conversation"]["id"]
        async with gateway.stream("GET", f"/v1/conversations/{cid}:watch", headers=headers) as response:
            lines = response.aiter_lines()
            async with asyncio.timeout(READ_TIMEOUT_S):
                while not (await anext(lines)).startswith("data:"):
                    pass
                await messages.server.stop(0)
                rest = [line async for line in lines]
    assert "event: error" in rest
    error = json.loads(next(line for line in rest if line.startswith("data:"))[5:])["error"]
    assert error["code"] in {"UNAVAILABLE", "INTERNAL"} and "127.0.0.1" not in error["message"]


async def test_a_watch_whose_peer_never_answers_is_503_within_the_deadline(identity: Running) -> None:
    alice(identity.db)
    never = asyncio.Event()

    async def silent_watch(_request: bytes, _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        await never.wait()  # a peer that accepted the stream and sends nothing
        yield b""

    silent = grpc.aio.server()
    handler = grpc.unary_stream_rpc_method_handler(silent_watch)
    silent.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "zenthor.messages.v1.MessagesService", {"WatchConversationList": handler}),))
    port = silent.add_insecure_port("127.0.0.1:0")
    await silent.start()
    try:
        settings = gateway_settings(f"127.0.0.1:{identity.server.port}", messages_addr=f"127.0.0.1:{port}", rpc_deadline_s=0.5)
        async with serve(settings) as gateway:
            response = await gateway.get("/v1/conversations:watch", headers=bearer(identity, "user_alice"))
    finally:
        never.set()
        await silent.stop(0)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "DEADLINE_EXCEEDED"
