"""`approval.requested` webhook events (docs/webhooks.md): written to the approvals outbox in the
transaction that creates the approval, and relayed to the real delivery server, which fans them
out to the conversation owner's subscribed endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.approvals.app import build_server as build_approvals
from services.delivery.app import build_server as build_delivery
from tests.service.approvals.test_approvals import create
from tests.service.conftest import Running, start, stop
from tests.support.builders import alice
from tests.support.database import TestDatabase
from tests.support.jwks import FakeClerkIssuer
from tests.support.waiting import eventually
from tests.support.webhook_builders import APPROVAL_REQUESTED, create_endpoint, deliveries
from zenthor import ids
from zenthor.config import ServiceName
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2_grpc

TOPIC = "delivery.publish_webhook_event"


async def test_creating_an_approval_stores_its_event_in_the_same_transaction(approvals: Running) -> None:
    alice_id = alice(approvals.db)
    conversation, job = ids.CONVERSATION.new(), ids.JOB.new()
    approval = await create(approvals, conversation, job, user_id=alice_id)
    rows = approvals.db.sql("SELECT key, payload FROM approvals.outbox WHERE topic = %s", (TOPIC,))
    ((key, payload),) = rows
    assert key == f"approval.requested:{approval.id}"
    assert (payload["type"], payload["owner_user_id"], payload["owner_contact_id"]) == (
        "approval.requested", ids.USER.format(alice_id), None
    )
    assert payload["data"] | {"expire_time": None} == {
        "approval_id": approval.id, "conversation_id": ids.CONVERSATION.format(conversation), "job_id": ids.JOB.format(job),
        "tool_name": "todoist_capture_task", "tool_input": {"content": "Buy milk"}, "channel": "web", "expire_time": None,
    }


@pytest.fixture
async def relayed(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running
) -> AsyncIterator[tuple[Running, Running]]:
    identity_addr = f"127.0.0.1:{identity.server.port}"
    d_settings = settings_for(ServiceName.DELIVERY, identity_addr=identity_addr, temporal_address="127.0.0.1:1")
    delivery = await start(
        await build_delivery(d_settings), delivery_pb2_grpc.DeliveryServiceStub, d_settings, db, clerk_issuer
    )
    a_settings = settings_for(
        ServiceName.APPROVALS, identity_addr=identity_addr, delivery_addr=f"127.0.0.1:{delivery.server.port}"
    )
    approvals = await start(
        await build_approvals(a_settings), approvals_pb2_grpc.ApprovalsServiceStub, a_settings, db, clerk_issuer
    )
    yield approvals, delivery
    await stop(approvals)
    await stop(delivery)


async def test_the_relay_hands_the_event_to_delivery(relayed: tuple[Running, Running]) -> None:
    approvals, delivery = relayed
    alice_id = alice(delivery.db)
    endpoint = (await create_endpoint(delivery, "user_alice", event_types=(APPROVAL_REQUESTED,))).endpoint
    approval = await create(approvals, ids.CONVERSATION.new(), ids.JOB.new(), user_id=alice_id)
    await eventually(lambda: len(deliveries(delivery)) == 1)
    (row,) = deliveries(delivery)
    assert (row["event_id"], ids.WEBHOOK_ENDPOINT.format(row["endpoint_id"])) == (
        f"approval.requested:{approval.id}", endpoint.id
    )
