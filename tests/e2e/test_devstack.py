"""`make dev` end to end, on one stack started as `make dev` starts it (without the agent
runtime, which these tests play): every process answers its health check, `/readyz` sees all
seven services, reflection lists every service, the stack is never open, a newcomer signs in with
the dev issuer and goes through the steps of the README's session (sign up, chat, watch, skills,
approve a tool call) and connects the fake Todoist, a crashed process is restarted, and Ctrl-C
stops everything with no stray process. The README's session as written runs in
tests/e2e/test_runtime_demo.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client.metrics_core import Metric

from tests.support.devstack import DevStack, port_open
from tests.support.metrics import scrape, total
from tests.support.reflection import ReflectionClient
from zenthor.clients import HEALTH_CHECK_METHOD
from zenthor.config import ServiceName
from zenthor.devstack.state import StackState
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2, agent_queue_pb2_grpc
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2, approvals_pb2_grpc
from zenthor.gen.zenthor.common.v1 import types_pb2
from zenthor.gen.zenthor.identity.v1 import identity_pb2, identity_pb2_grpc
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2, todoist_pb2_grpc

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    stack = DevStack(tmp_path_factory.mktemp("devstack") / "data")
    try:
        # Without the agent runtime: these tests play it (tests/e2e/test_runtime_demo.py runs
        # the stack with it, and the README's session).
        stack.start("--no-runtime")
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


def test_readyz_sees_all_seven_services_serving(stack: DevStack) -> None:
    response = httpx.get(f"{stack.gateway_url}/readyz", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "peers": {s.value: "SERVING" for s in ServiceName}}


# --- sign-in and the README's session ---

# Every read of the stack's HTTP answers is bounded by this (httpx read timeout).
HTTP_TIMEOUT_S = 30.0


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(event, id, data) of each event of an SSE response's lines."""
    event, event_id, data = "", "", ""
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
        elif line == "" and data:
            yield event, event_id, json.loads(data)
            event, event_id, data = "", "", ""


def user_client(stack: DevStack, email: str, *, admin: bool = False) -> httpx.Client:
    headers = {"authorization": f"Bearer {stack.token(email, admin=admin)}"}
    return httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=HTTP_TIMEOUT_S)


def pending_job_of(stack: DevStack, conversation_id: str) -> str:
    """The conversation's agent job, once messages' outbox has delivered it (bounded wait)."""
    metadata = (("x-service-key", stack.service_key),)
    deadline = time.monotonic() + 60
    with grpc.insecure_channel(stack.grpc_address(ServiceName.AGENT_QUEUE)) as channel:
        jobs = agent_queue_pb2_grpc.AgentQueueServiceStub(channel)
        while True:
            reply = jobs.ListPendingJobs(agent_queue_pb2.ListPendingJobsRequest(page_size=1000), metadata=metadata, timeout=5)
            found = [j.id for j in reply.jobs if j.conversation_id == conversation_id]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no job for {conversation_id}"
            time.sleep(0.1)


def test_dev_tokens_carry_the_role_the_stack_gives_their_email(stack: DevStack) -> None:
    with user_client(stack, "admin@example.com", admin=True) as admin, user_client(stack, "cy@example.com") as member:
        assert admin.post("/v1/users:bootstrap", json={"name": "Boss"}).status_code == 200
        assert member.post("/v1/users:bootstrap", json={"name": "Cy"}).status_code == 200
        listed = admin.get("/v1/users")
        assert listed.status_code == 200
        roles = {u["email"]: u["role"] for u in listed.json()["users"]}
        assert (roles["admin@example.com"], roles["cy@example.com"]) == ("ROLE_ADMIN", "ROLE_MEMBER")
        assert member.get("/v1/users").status_code == 403
    refused = stack.command("token", "--email", "cy@example.com", "--admin")
    assert refused.returncode == 2 and "not an admin" in refused.stderr and refused.stdout == ""


def test_a_new_user_signs_up_chats_watches_lists_skills_and_approves_a_tool_call(stack: DevStack) -> None:
    """The README's session over httpx, with the pending approval created over gRPC with the
    service key, as the agent runtime creates it."""
    with user_client(stack, "bea@example.com") as http:
        assert http.post("/v1/users:bootstrap", json={"name": "Bea"}).json()["created"] is True
        me = http.get("/v1/users/me").json()["user"]
        assert (me["email"], me["email_verified"], me["role"]) == ("bea@example.com", True, "ROLE_MEMBER")
        cid = http.post("/v1/conversations", json={"title": "Trip"}).json()["conversation"]["id"]
        assert http.post(f"/v1/conversations/{cid}/messages", json={"content": "Plan a trip"}).status_code == 200
        with http.stream("GET", f"/v1/conversations/{cid}:watch") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response.iter_lines())
            _, position, current = next(events)
            assert [m["content"] for m in current["messages"]] == ["Plan a trip"] and current["caught_up"]
            http.post(f"/v1/conversations/{cid}/messages", json={"content": "In May"})
            _, _, change = next(events)
            assert [m["content"] for m in change["messages"]] == ["In May"]
        with http.stream("GET", f"/v1/conversations/{cid}:watch", headers={"last-event-id": position}) as response:
            _, _, resumed = next(sse_events(response.iter_lines()))
            assert [m["content"] for m in resumed["messages"]] == ["In May"]

        assert http.post("/v1/skills:seedRecommended").json()["created"] > 0
        skills = http.get("/v1/skills").json()["skills"]
        assert skills and all(s["name"] for s in skills)

        job_id = pending_job_of(stack, cid)
        with http.stream("GET", f"/v1/conversations/{cid}/pendingApprovals:watch") as response:
            events = sse_events(response.iter_lines())
            assert next(events)[2] == {"pending_approvals": []}
            with grpc.insecure_channel(stack.grpc_address(ServiceName.APPROVALS)) as channel:
                created = approvals_pb2_grpc.ApprovalsServiceStub(channel).CreateApproval(
                    approvals_pb2.CreateApprovalRequest(
                        conversation_id=cid, job_id=job_id, tool_name="book_flight",
                        channel=types_pb2.CHANNEL_WEB, conversation_user_id=me["id"],
                    ),
                    metadata=(("x-service-key", stack.service_key),), timeout=5,
                ).approval
            [pending] = next(events)[2]["pending_approvals"]
            assert (pending["id"], pending["status"]) == (created.id, "APPROVAL_STATUS_PENDING")
            listed = http.get(f"/v1/conversations/{cid}/pendingApprovals").json()["approvals"]
            assert [a["id"] for a in listed] == [created.id]
            resolved = http.post(f"/v1/approvals/{created.id}:resolve", json={"status": "APPROVAL_STATUS_APPROVED"})
            assert resolved.json()["approval"]["status"] == "APPROVAL_STATUS_APPROVED"
            assert next(events)[2] == {"pending_approvals": []}
        processing = http.get(f"/v1/conversations/{cid}/processing").json()
        # The unfinished job is named, so the owner can cancel it (POST /v1/jobs/{id}:cancel).
        assert processing["processing"] is True and processing["active_job_ids"]


# --- metrics (zenthor/metrics.py): each process's own /metrics port, scraped as Prometheus does ---

# One cheap read per service, with the service key; an empty request may be refused, and is
# counted under its code all the same.
METRICS_CALLS = {
    ServiceName.IDENTITY: "BatchGetContacts",
    ServiceName.MESSAGES: "BatchGetConversations",
    ServiceName.AGENT_QUEUE: "ListPendingJobs",
    ServiceName.DELIVERY: "ListWhatsAppAccounts",
    ServiceName.APPROVALS: "ListPendingApprovalsAsService",
    ServiceName.PLUGINS: "ListPluginDiagnostics",
    ServiceName.TODOIST: "ListTodoistTasks",
}
# Domain gauges are refreshed every ZENTHOR_METRICS_REFRESH_S (15 s): wait up to a few rounds.
GAUGE_WAIT_S = 90.0


def metrics_urls(stack: DevStack) -> dict[str, str]:
    return StackState.read(stack.data_dir).metrics


def scrape_until(url: str, reached: Callable[[dict[str, Metric]], bool], timeout_s: float = GAUGE_WAIT_S) -> dict[str, Metric]:
    """Scrapes until the families show the awaited state (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        families = scrape(url)
        if reached(families):
            return families
        assert time.monotonic() < deadline, f"{url} never showed the awaited state"
        time.sleep(0.5)


def test_every_process_has_its_own_metrics_port_and_the_stack_prints_them(stack: DevStack) -> None:
    urls = metrics_urls(stack)
    assert set(urls) == {*(s.value for s in ServiceName), "gateway", "worker"}
    assert len(set(urls.values())) == len(urls)
    assert "Metrics" in stack.output
    for url in urls.values():
        assert url in stack.output
        assert "process_cpu_seconds" in scrape(url)


def test_each_service_counts_the_rpcs_it_answered(stack: DevStack) -> None:
    urls = metrics_urls(stack)
    metadata = (("x-service-key", stack.service_key),)
    for service, method in METRICS_CALLS.items():
        full = f"/zenthor.{service.value}.v1.{service.proto_service}/{method}"
        with grpc.insecure_channel(stack.grpc_address(service)) as channel:
            call = channel.unary_unary(full, request_serializer=bytes, response_deserializer=bytes)
            for _ in range(3):
                try:
                    call(b"", metadata=metadata, timeout=10)
                except grpc.RpcError as e:
                    assert e.code() not in {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}, (full, e)
        families = scrape(urls[service.value])
        labels = {"grpc_service": f"zenthor.{service.value}.v1.{service.proto_service}", "grpc_method": method}
        assert total(families, "zenthor_grpc_server_handled_total", **labels) >= 3, service
        assert total(families, "zenthor_grpc_server_handling_seconds_count", **labels) >= 3, service
        assert "zenthor_grpc_server_in_flight" in families, service


def test_the_gateway_counts_requests_by_route_and_the_queue_gauges_follow_a_sent_message(stack: DevStack) -> None:
    urls = metrics_urls(stack)
    with user_client(stack, "mo@example.com") as http:
        assert http.post("/v1/users:bootstrap", json={"name": "Mo"}).status_code == 200
        cid = http.post("/v1/conversations", json={"title": "Metrics"}).json()["conversation"]["id"]
        assert http.post(f"/v1/conversations/{cid}/messages", json={"content": "count me"}).status_code == 200
        assert http.get("/v1/conversations/conv_nope").status_code == 400
    gateway = scrape(urls["gateway"])
    assert total(gateway, "zenthor_http_requests_total", route="/v1/users:bootstrap", method="POST", status="200") >= 1
    assert total(gateway, "zenthor_http_requests_total", route="/v1/conversations/{conversation_id}/messages", status="200") >= 1
    assert total(gateway, "zenthor_http_requests_total", status="400") >= 1
    assert total(gateway, "zenthor_http_request_duration_seconds_count", route="/v1/conversations", method="POST") >= 1
    # The calls the gateway made on Mo's behalf, counted by the services that answered them.
    messages = scrape(urls["messages"])
    assert total(messages, "zenthor_grpc_server_handled_total", grpc_method="SendMessage", grpc_code="OK") >= 1

    # No runtime runs in this stack: the message's job stays pending, and the queue's gauges,
    # refreshed in the background, show it; every outbox reports its backlog and dead letters.
    scrape_until(urls["agent_queue"], lambda f: total(f, "zenthor_agent_queue_jobs", status="pending") >= 1)
    for service in ("identity", "messages", "agent_queue", "delivery", "todoist"):
        families = scrape_until(urls[service], lambda f: "zenthor_outbox_backlog" in f)
        assert "zenthor_outbox_dead_letters" in families, service
    scrape_until(urls["approvals"], lambda f: "zenthor_approvals_pending" in f)
    scrape_until(urls["delivery"], lambda f: "zenthor_delivery_outbound_messages" in f)


def test_the_worker_relays_the_temporal_sdk_metrics(stack: DevStack) -> None:
    url = metrics_urls(stack)["worker"]
    families = scrape_until(url, lambda f: total(f, "zenthor_worker_running") == 1)
    # The schedules upserted at start are requests to Temporal the SDK counted.
    assert any(
        name.startswith("temporal_") and any(s.value > 0 for s in family.samples)
        for name, family in families.items()
    ), sorted(families)


# --- Todoist (zenthor/devstack/fake_todoist.py): connected end to end as a newcomer would: sign in
# with the dev issuer, start the OAuth flow over REST, follow the authorization link (the local
# fake Todoist approves and sends the browser to the gateway's callback), and the agent's task
# tools then reach the fake account ---


def test_a_newcomer_connects_the_fake_todoist_and_the_agent_lists_its_tasks(stack: DevStack) -> None:
    headers = {"authorization": f"Bearer {stack.token('dan@example.com')}"}
    with httpx.Client(base_url=stack.gateway_url, headers=headers, timeout=HTTP_TIMEOUT_S) as http:
        assert http.post("/v1/users:bootstrap", json={"name": "Dan"}).status_code == 200
        assert http.get("/v1/todoist/connection").json()["status"]["connected"] is False
        started = http.post("/v1/todoist/connection:startOAuth", json={}).json()

        with httpx.Client(follow_redirects=True, timeout=HTTP_TIMEOUT_S) as browser:
            landed = browser.get(started["authorization_url"])

        assert landed.status_code == 200, landed.text
        assert landed.url.path == "/todoist/oauth/callback"
        assert landed.json()["connected"] is True
        status = http.get("/v1/todoist/connection").json()["status"]
        assert (status["connected"], status["account_email"]) == (True, "dev@todoist.local")
        conversation = http.post("/v1/conversations", json={"title": "Chores"}).json()["conversation"]["id"]

    # The agent runtime's tool call, with the service key, over gRPC.
    with grpc.insecure_channel(stack.grpc_address(ServiceName.TODOIST)) as channel:
        reply = todoist_pb2_grpc.TodoistServiceStub(channel).ListTodoistTasks(
            todoist_pb2.ListTodoistTasksRequest(conversation_id=conversation),
            metadata=(("x-service-key", stack.service_key),),
            timeout=30,
        )
    assert reply.connected and "Buy milk" in [t.content for t in reply.tasks]


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
