"""`make dev` connects a fake Todoist end to end, as a newcomer would: sign in with the dev
issuer, start the OAuth flow over REST, follow the authorization link (the local fake Todoist
approves and sends the browser to the gateway's callback), and the connection is there; the
agent's task tools then reach the fake account."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest

from tests.support.devstack import DevStack
from zenthor.config import ServiceName
from zenthor.gen.zenthor.todoist.v1 import todoist_pb2, todoist_pb2_grpc

pytestmark = pytest.mark.timeout(600)
HTTP_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    stack = DevStack(tmp_path_factory.mktemp("devstack") / "data")
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


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
