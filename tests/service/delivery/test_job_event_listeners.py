"""Delivery tells the real agent_queue server who listens for job events (docs/webhooks.md):
an endpoint for them registers its owner before it is saved, and is not saved when agent_queue
cannot be told; at start, delivery registers the owners of the endpoints already there and then
says all are (services/delivery/usecases/job_event_owners.py), retrying until agent_queue answers."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from typing import Any

import grpc
import structlog.testing

from services.agent_queue.app import build_server as build_agent_queue
from services.agent_queue.store.job_events import EVERYONE
from services.delivery.peers import job_event_listener_registry
from services.delivery.usecases.job_event_owners import register_job_event_owners
from tests.service.conftest import NOBODY, Running, job_event_listeners, lone_agent_queue_settings
from tests.service.delivery.conftest import DeliveryFactory
from tests.support.builders import add_user, alice, bob, boss
from tests.support.database import TestDatabase
from tests.support.grpc_client import rpc_error
from tests.support.ports import free_port
from tests.support.waiting import eventually
from tests.support.webhook_builders import (
    JOB_COMPLETED,
    JOB_FAILED,
    MESSAGE_CREATED,
    as_user,
    create_endpoint,
)
from zenthor import ids
from zenthor.clients import Peers
from zenthor.config import ServiceName
from zenthor.db import UnitOfWork, create_engine
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb


def user(db: TestDatabase, name: str) -> uuid.UUID:
    return add_user(db, f"user_{name}", email=f"{name}@example.com", name=name, role="member")


def everyone_gone(db: TestDatabase) -> bool:
    return "everyone" not in job_event_listeners(db)


async def test_an_enabled_endpoint_for_job_events_registers_its_owner(delivery_factory: DeliveryFactory, identity: Running) -> None:
    delivery = await delivery_factory(identity_addr=f"127.0.0.1:{identity.server.port}")
    alice_id, bob_id, carol_id = alice(delivery.db), bob(delivery.db), user(delivery.db, "carol")
    boss(delivery.db)
    await eventually(lambda: everyone_gone(delivery.db), what="delivery's start-up registration")
    await create_endpoint(delivery, "user_alice", event_types=(MESSAGE_CREATED,))
    off = (await create_endpoint(delivery, "user_bob", event_types=(JOB_FAILED,), enabled=False)).endpoint
    assert job_event_listeners(delivery.db) == set()
    await create_endpoint(delivery, "user_alice", event_types=(MESSAGE_CREATED, JOB_FAILED))
    assert job_event_listeners(delivery.db) == {ids.USER.format(alice_id)}
    # Enabling an endpoint for job events registers its owner; so does an admin's for someone else.
    await delivery.stub.UpdateWebhookEndpoint(
        pb.UpdateWebhookEndpointRequest(id=off.id, enabled=True), metadata=as_user(delivery, "user_bob")
    )
    await create_endpoint(delivery, "user_boss", user_id=ids.USER.format(carol_id), event_types=(JOB_COMPLETED,))
    assert job_event_listeners(delivery.db) == {ids.USER.format(u) for u in (alice_id, bob_id, carol_id)}


async def test_an_endpoint_for_job_events_is_not_saved_when_agent_queue_cannot_be_told(
    delivery_factory: DeliveryFactory, identity: Running
) -> None:
    # Peer calls wait for a connection until their deadline: a short one keeps the test short.
    delivery = await delivery_factory(
        identity_addr=f"127.0.0.1:{identity.server.port}", agent_queue_addr=NOBODY, rpc_deadline_s=1.0
    )
    alice(delivery.db)
    refused = await rpc_error(create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,)))
    assert refused.code() is grpc.StatusCode.UNAVAILABLE and "agent_queue" in (refused.details() or "")
    assert delivery.db.sql("SELECT count(*) FROM delivery.webhook_endpoints") == [(0,)]
    # Other types need no registration; a disabled endpoint neither.
    kept = (await create_endpoint(delivery, "user_alice", event_types=(MESSAGE_CREATED,))).endpoint
    off = (await create_endpoint(delivery, "user_alice", event_types=(JOB_COMPLETED,), enabled=False)).endpoint
    for change in (
        pb.UpdateWebhookEndpointRequest(id=kept.id, event_types=[MESSAGE_CREATED, JOB_FAILED]),
        pb.UpdateWebhookEndpointRequest(id=off.id, enabled=True),
    ):
        refused = await rpc_error(delivery.stub.UpdateWebhookEndpoint(change, metadata=as_user(delivery, "user_alice")))
        assert refused.code() is grpc.StatusCode.UNAVAILABLE
    rows = delivery.db.sql("SELECT id, event_types, enabled FROM delivery.webhook_endpoints ORDER BY id")
    assert [(ids.WEBHOOK_ENDPOINT.format(i), t, e) for i, t, e in rows] == [
        (kept.id, ["message.created"], True), (off.id, ["job.completed"], False)
    ]


async def test_at_start_delivery_registers_the_owners_of_existing_endpoints_then_says_all_are(
    delivery_factory: DeliveryFactory, identity: Running
) -> None:
    first = await delivery_factory(identity_addr=f"127.0.0.1:{identity.server.port}")
    alice_id, _, _ = alice(first.db), bob(first.db), user(first.db, "carol")
    await create_endpoint(first, "user_alice", event_types=(JOB_COMPLETED,))
    await create_endpoint(first, "user_bob", event_types=(JOB_FAILED,), enabled=False)
    await create_endpoint(first, "user_carol", event_types=(MESSAGE_CREATED,))
    await eventually(lambda: everyone_gone(first.db), what="the first start's registration")
    # As a database upgraded from a release without the filter: agent_queue knows nobody yet.
    first.db.sql("DELETE FROM agent_queue.job_event_listeners")
    first.db.sql("INSERT INTO agent_queue.job_event_listeners VALUES (%s, now())", (EVERYONE,))
    await delivery_factory(identity_addr=f"127.0.0.1:{identity.server.port}")
    await eventually(lambda: everyone_gone(first.db), what="the second start's registration")
    assert job_event_listeners(first.db) == {ids.USER.format(alice_id)}


def add_unregistered_endpoint(db: TestDatabase, owner: uuid.UUID) -> None:
    """An enabled endpoint for job events written without registering its owner, as a delivery
    pod of the release before does during a rolling upgrade."""
    db.sql(
        "INSERT INTO delivery.webhook_endpoints (id, user_id, url, event_types, secret, enabled, created_at, updated_at)"
        " VALUES (%s, %s, 'https://93.184.216.34/h', ARRAY['job.failed'], 'whsec_x', true, now(), now())",
        (ids.WEBHOOK_ENDPOINT.new(), owner),
    )


async def test_the_registration_runs_again_and_picks_up_an_owner_nobody_registered(
    delivery_factory: DeliveryFactory, db: TestDatabase
) -> None:
    await delivery_factory(build={"job_event_owners_every_s": 0.2})
    await eventually(lambda: everyone_gone(db), what="the first pass")
    owner = ids.USER.new()
    add_unregistered_endpoint(db, owner)
    await eventually(lambda: job_event_listeners(db) == {ids.USER.format(owner)}, what="a later pass")


async def test_the_start_up_registration_pages_and_flags_only_its_last_call(
    settings_for: Any, db: TestDatabase, job_event_registry: Running
) -> None:
    owners = sorted(ids.USER.new() for _ in range(2))
    for owner in owners:
        add_unregistered_endpoint(db, owner)
    settings = settings_for(ServiceName.DELIVERY, agent_queue_addr=f"127.0.0.1:{job_event_registry.server.port}")
    peers, engine = Peers(settings), create_engine(db.dsn_for(ServiceName.DELIVERY), 2)
    registry = job_event_listener_registry(peers)
    calls: list[tuple[list[uuid.UUID], bool]] = []

    async def register(users: Collection[uuid.UUID], all_registered: bool) -> None:
        calls.append((list(users), all_registered))
        await registry(users, all_registered)

    try:
        assert await register_job_event_owners(lambda: UnitOfWork(engine), register, page=1) == 2
    finally:
        await peers.close()
        await engine.dispose()
    # A full last page is followed by an empty one carrying the flag.
    assert calls == [([owners[0]], False), ([owners[1]], False), ([], True)]
    assert job_event_listeners(db) == {ids.USER.format(o) for o in owners}


async def test_the_start_up_registration_waits_for_agent_queue(
    delivery_factory: DeliveryFactory, settings_for: Any, db: TestDatabase
) -> None:
    port = free_port()
    with structlog.testing.capture_logs() as logs:
        await delivery_factory(agent_queue_addr=f"127.0.0.1:{port}")
        # Nothing listens yet: the registration fails and is tried again later.
        await eventually(
            lambda: any(e["event"] == "webhooks.job_event_owners_unregistered" for e in logs), what="a failed attempt"
        )
        assert not everyone_gone(db)
        server = await build_agent_queue(lone_agent_queue_settings(settings_for))
        await server.start(port)
        try:
            await eventually(
                lambda: any(e["event"] == "webhooks.job_event_owners_registered" for e in logs),
                what="the registration once agent_queue answers",
            )
            assert everyone_gone(db)
        finally:
            await server.stop(0)
