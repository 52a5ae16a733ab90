"""The reference agent runtime (examples/runtime) on one stack started as `make dev` starts it
(the runtime included): the README's session gets a streamed reply, a `/approve` message waits
for the user's approval and then goes on, a runtime killed mid-reply leaves a failed placeholder
and the job is answered on its next attempt, and two runtimes answer every job exactly once while
only the WhatsApp lease holder sends."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import psycopg
import pytest

from tests.support import readme
from tests.support.devstack import ROOT, DevStack
from zenthor.config import ServiceName
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2, delivery_pb2_grpc
from zenthor.gen.zenthor.messages.v1 import messages_pb2, messages_pb2_grpc

pytestmark = pytest.mark.timeout(900)

# Slow enough to catch a reply mid-stream, a short job lease so a killed runtime's job is requeued
# soon, the shortest WhatsApp lease the backend takes.
RUNTIME_ENV = {"ZENTHOR_RUNTIME_CHUNK_DELAY_S": "0.3", "ZENTHOR_RUNTIME_LEASE_S": "6", "WHATSAPP_LEASE_TTL_S": "10"}
HTTP_TIMEOUT_S = 30.0
# A killed runtime's job waits for its lease to lapse, the stale-lease sweep (every minute) and
# the retry's backoff.
RECOVERY_S = 240.0
WAIT_S = 90.0


@dataclass
class RuntimeStack(DevStack):
    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **RUNTIME_ENV}

    def grpc_channel(self, service: ServiceName) -> grpc.Channel:
        return grpc.insecure_channel(self.grpc_address(service))

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-service-key", self.service_key),)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeStack]:
    stack = RuntimeStack(tmp_path_factory.mktemp("runtime") / "data")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    data = ""
    for line in response.iter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and data:
            yield json.loads(data)
            data = ""


def watch_until(http: httpx.Client, path: str, done: Callable[[dict[str, Any]], bool], timeout_s: float) -> None:
    """Reads the SSE stream at `path` until `done` accepts an event (each event is passed once)."""
    deadline = time.monotonic() + timeout_s
    with http.stream("GET", path) as response:
        assert response.status_code == 200
        for event in sse_events(response):
            if done(event):
                return
            assert time.monotonic() < deadline, f"{path}: no expected event within {timeout_s} s"
    raise AssertionError(f"{path}: the stream ended")


class Messages:
    """The latest state of every message seen on a conversation's watch."""

    def __init__(self) -> None:
        self.by_id: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []

    def see(self, event: dict[str, Any]) -> None:
        for m in event.get("messages", []):
            self.by_id[m["id"]] = m
            self.history.append(m)

    def assistant(self) -> list[dict[str, Any]]:
        return [m for m in self.by_id.values() if m["role"] == "MESSAGE_ROLE_ASSISTANT"]

    def sent(self) -> list[dict[str, Any]]:
        return [m for m in self.assistant() if m["status"] == "MESSAGE_STATUS_SENT" and not m.get("streaming")]


@contextmanager
def user(stack: RuntimeStack, email: str) -> Iterator[httpx.Client]:
    """A signed-up user's client."""
    with httpx.Client(base_url=stack.gateway_url, timeout=HTTP_TIMEOUT_S,
                      headers={"authorization": f"Bearer {stack.token(email)}"}) as http:
        assert http.post("/v1/users:bootstrap", json={"name": email.split("@")[0]}).status_code == 200
        yield http


def new_conversation(http: httpx.Client, title: str) -> str:
    return str(http.post("/v1/conversations", json={"title": title}).json()["conversation"]["id"])


def send(http: httpx.Client, cid: str, content: str) -> str:
    reply = http.post(f"/v1/conversations/{cid}/messages", json={"content": content})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["message"]["id"])


def job_of(stack: RuntimeStack, message_id: str) -> dict[str, Any]:
    """The agent job of a message, read from agent_queue's table."""
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{stack.ports['pg']}/zenthor") as conn:
        row = conn.execute(
            "SELECT status, attempt_count, processor_id, model_used FROM agent_queue.jobs WHERE message_id = %s",
            (uuid.UUID(hex=message_id.split("_", 1)[1]),),
        ).fetchone()
    assert row is not None, f"no job for {message_id}"
    return dict(zip(("status", "attempt_count", "processor_id", "model_used"), row, strict=True))


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
        time.sleep(0.2)


def wait_for_completed_job(stack: RuntimeStack, message_id: str) -> dict[str, Any]:
    wait_for(lambda: job_of(stack, message_id)["status"] == "completed", WAIT_S, f"the job of {message_id} completed")
    return job_of(stack, message_id)


def echo_of(content: str, nth: int) -> str:
    return f'You said: "{content}" ({len(content.split())} words; message {nth} of this conversation).'


def test_the_readme_session_gets_a_streamed_reply_and_an_approval_as_written(stack: RuntimeStack) -> None:
    # The README tells its reader to have these; a machine without them fails here, loudly.
    missing = [tool for tool in ("bash", "curl", "jq", "grep") if shutil.which(tool) is None]
    assert not missing, f"the README's session needs {', '.join(missing)} on PATH"
    script = readme.session_block().replace(readme.SESSION_GATEWAY_LINE, f"GW={stack.gateway_url}", 1)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**stack.env, "ZENTHOR_DEV_DATA_DIR": str(stack.data_dir)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    compact = re.sub(r"\s+", "", out)  # jq pretty-prints
    assert '"created":true' in compact, out  # signed up
    assert '"email":"ana@example.com"' in compact and '"email_verified":true' in compact, out  # /users/me at once
    assert "event: change" in out and "Invite Bob to dinner on Friday" in out, out  # watched
    assert echo_of("Invite Bob to dinner on Friday", 1).replace('"', '\\"') in out, out  # the runtime's reply
    assert '"streaming":true' in compact, out  # seen streaming
    skills = re.search(r'\[("[^"]+",?)+\]', compact)  # the names jq listed
    assert skills and len(json.loads(skills.group(0))) > 0, out
    assert '"status":"APPROVAL_STATUS_APPROVED"' in compact, out  # approved
    assert "demo_tool: approved." in out, out  # and the reply went on
    with httpx.Client(base_url=stack.gateway_url, timeout=HTTP_TIMEOUT_S,
                      headers={"authorization": f"Bearer {stack.token('ana@example.com')}"}) as http:
        [conversation] = http.get("/v1/conversations").json()["conversations"]
        assert conversation["title"] == "Dinner"
        assert http.get(f"/v1/conversations/{conversation['id']}/pendingApprovals").json()["approvals"] == []


def test_a_message_gets_a_streamed_reply_and_its_job_completes_with_a_memory(stack: RuntimeStack) -> None:
    with user(stack, "rita@example.com") as http:
        cid = new_conversation(http, "Dinner")
        content = "Invite Bob to dinner on Friday"
        message_id = send(http, cid, content)
        seen = Messages()

        def replied(event: dict[str, Any]) -> bool:
            seen.see(event)
            return bool(seen.sent())

        watch_until(http, f"/v1/conversations/{cid}:watch", replied, WAIT_S)
        [reply] = seen.sent()
        assert reply["content"] == echo_of(content, 1)
        partial = [m for m in seen.history if m["id"] == reply["id"] and m.get("streaming") and m["content"]]
        assert partial and all(reply["content"].startswith(m["content"]) for m in partial)
        assert len({m["content"] for m in partial}) > 1  # streamed in pieces, not written at once
        watch_until(http, f"/v1/conversations/{cid}/processing:watch", lambda e: e.get("processing") is False, WAIT_S)
        job = wait_for_completed_job(stack, message_id)
        assert (job["attempt_count"], job["model_used"]) == (0, "echo")
    with stack.grpc_channel(ServiceName.MESSAGES) as channel:
        memories = messages_pb2_grpc.MessagesServiceStub(channel).ListMemories(
            messages_pb2.ListMemoriesRequest(conversation_id=cid), metadata=stack.metadata, timeout=10).memories
    assert [m.content for m in memories] == [f"User said: {content}\nAssistant answered: {reply['content']}"]


def test_an_approve_message_waits_for_the_users_approval_then_the_reply_goes_on(stack: RuntimeStack) -> None:
    with user(stack, "sam@example.com") as http:
        cid = new_conversation(http, "Tools")
        content = "/approve send the invitations"
        send(http, cid, content)
        pending: list[dict[str, Any]] = []

        def asked(event: dict[str, Any]) -> bool:
            pending[:] = event["pending_approvals"]
            return bool(pending)

        watch_until(http, f"/v1/conversations/{cid}/pendingApprovals:watch", asked, WAIT_S)
        [approval] = pending
        assert (approval["tool_name"], approval["status"]) == ("demo_tool", "APPROVAL_STATUS_PENDING")
        [waiting] = [m for m in http.get(f"/v1/conversations/{cid}/messages").json()["messages"]
                     if m["role"] == "MESSAGE_ROLE_ASSISTANT"]
        assert waiting["streaming"] and waiting["content"].startswith("Asking you to approve `demo_tool`")
        resolved = http.post(f"/v1/approvals/{approval['id']}:resolve", json={"status": "APPROVAL_STATUS_APPROVED"})
        assert resolved.json()["approval"]["status"] == "APPROVAL_STATUS_APPROVED"
        seen = Messages()

        def finished(event: dict[str, Any]) -> bool:
            seen.see(event)
            return bool(seen.sent())

        watch_until(http, f"/v1/conversations/{cid}:watch", finished, WAIT_S)
        [reply] = seen.sent()
        assert reply["id"] == waiting["id"]
        assert reply["content"] == f"Asking you to approve `demo_tool`… demo_tool: approved. {echo_of(content, 1)}"
        assert [(t["name"], t["output"]) for t in reply["tool_calls"]] == [("demo_tool", "approved")]


def test_a_runtime_killed_mid_reply_fails_its_placeholder_and_the_next_attempt_answers(stack: RuntimeStack) -> None:
    with user(stack, "kim@example.com") as http:
        cid = new_conversation(http, "Crash")
        content = "Tell me a long story about a crash in the middle of a reply"
        message_id = send(http, cid, content)
        seen = Messages()

        def mid_reply(event: dict[str, Any]) -> bool:
            seen.see(event)
            return any(m["streaming"] and m["content"] for m in seen.assistant())

        watch_until(http, f"/v1/conversations/{cid}:watch", mid_reply, WAIT_S)
        [interrupted] = seen.assistant()
        runtime = stack.child_running("examples.runtime")
        runtime.send_signal(signal.SIGKILL)
        psutil.wait_procs([runtime], timeout=10)
        stack.wait_for_output("runtime restarted", 60)

        def answered(event: dict[str, Any]) -> bool:
            seen.see(event)
            return bool(seen.sent()) and seen.by_id[interrupted["id"]]["status"] == "MESSAGE_STATUS_FAILED"

        watch_until(http, f"/v1/conversations/{cid}:watch", answered, RECOVERY_S)
        failed = seen.by_id[interrupted["id"]]
        assert not failed["streaming"] and failed["content"] and failed["content"] != echo_of(content, 1)
        [reply] = seen.sent()
        assert reply["id"] != interrupted["id"] and reply["content"] == echo_of(content, 1)
        assert wait_for_completed_job(stack, message_id)["attempt_count"] == 1


def second_runtime(stack: RuntimeStack, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**stack.env, "SERVICE_KEY": stack.service_key, "WORKER_ID": "second-runtime",
           "ZENTHOR_RUNTIME_DATA_DIR": str(stack.data_dir), "PYTHONUNBUFFERED": "1"}
    for service in ServiceName:
        env[f"ZENTHOR_{service.name}_ADDR"] = stack.grpc_address(service)
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "examples.runtime"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def sink_lines(stack: RuntimeStack) -> list[dict[str, Any]]:
    path = stack.data_dir / "whatsapp-sent.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_runtimes_answer_every_job_once_and_only_the_lease_holder_sends(stack: RuntimeStack, tmp_path: Path) -> None:
    log_path = tmp_path / "second-runtime.log"
    second = second_runtime(stack, log_path)
    try:
        with user(stack, "lea@example.com") as http:
            sent = {new_conversation(http, f"Pair {i}"): f"Question number {i}" for i in range(6)}
            message_ids = {cid: send(http, cid, content) for cid, content in sent.items()}
            for cid, content in sent.items():
                seen = Messages()

                def replied(event: dict[str, Any], seen: Messages = seen) -> bool:
                    seen.see(event)
                    return bool(seen.sent())

                watch_until(http, f"/v1/conversations/{cid}:watch", replied, WAIT_S)
                job = wait_for_completed_job(stack, message_ids[cid])
                messages = http.get(f"/v1/conversations/{cid}/messages").json()["messages"]
                replies = [m for m in messages if m["role"] == "MESSAGE_ROLE_ASSISTANT"]
                assert [(m["status"], m["content"]) for m in replies] == [("MESSAGE_STATUS_SENT", echo_of(content, 1))]
                assert job["attempt_count"] == 0

        with stack.grpc_channel(ServiceName.DELIVERY) as channel:
            delivery = delivery_pb2_grpc.DeliveryServiceStub(channel)
            ids = []
            for i, (cid, message_id) in enumerate(message_ids.items()):
                ids.append(delivery.EnqueueOutbound(delivery_pb2.EnqueueOutboundRequest(
                    channel=types_pb2.CHANNEL_WHATSAPP, account_id="default", conversation_id=cid,
                    message_id=message_id, to=f"5511900000{i:03d}", content=f"hello {i}",
                ), metadata=stack.metadata, timeout=10).outbound.id)
            wait_for(lambda: set(ids) <= {line["id"] for line in sink_lines(stack)}, WAIT_S, "every row sent")
            holder = delivery.GetLease(delivery_pb2.GetLeaseRequest(account_id="default"),
                                       metadata=stack.metadata, timeout=10).lease.owner_id
        lines = [line for line in sink_lines(stack) if line["id"] in ids]
        assert sorted(line["id"] for line in lines) == sorted(ids)  # each once
        assert {line["sender"] for line in lines} == {holder}
        assert second.poll() is None
    finally:
        second.send_signal(signal.SIGTERM)
        code = second.wait(timeout=30)
    output = log_path.read_text()
    assert code == 0 and "runtime second-runtime stopped" in output, output
