"""Clerk webhook deliveries at identity: one change per svix-id, recorded in the change's own
transaction (docs/hardening.md #38); the sweep that forgets old ids; and the principal-change
notification every status or role change sends (docs/hardening.md #22)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest

from tests.service.conftest import Running
from tests.support.builders import add_user, bob
from tests.support.grpc_client import rpc_error, service
from zenthor.auth.resolver import PRINCIPAL_CHANGES
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb


def upsert(name: str, delivery_id: str, *, email: str = "rita@example.com", verified: bool = True) -> pb.UpsertClerkUserRequest:
    return pb.UpsertClerkUserRequest(
        external_id="user_r", name=name, email=email, email_verified=verified, delivery_id=delivery_id
    )


def deliveries(identity: Running) -> list[str]:
    return [row[0] for row in identity.db.sql("SELECT svix_id FROM identity.webhook_deliveries ORDER BY svix_id")]


async def test_a_delivery_changes_the_user_once_and_its_replay_changes_nothing(identity: Running) -> None:
    first = await identity.stub.UpsertClerkUser(upsert("Rita", "msg_1"), metadata=service())
    await identity.stub.UpsertClerkUser(upsert("Ria", "msg_2"), metadata=service())
    replay = await identity.stub.UpsertClerkUser(upsert("Rita", "msg_1"), metadata=service())
    assert first.created and not first.duplicate
    assert replay.duplicate and not replay.created and replay.user_id == first.user_id
    assert identity.db.sql("SELECT name FROM identity.users WHERE external_id = 'user_r'") == [("Ria",)]
    assert deliveries(identity) == ["msg_1", "msg_2"]


async def test_a_replayed_deactivation_changes_nothing(identity: Running) -> None:
    bob(identity.db)
    request = pb.DeactivateClerkUserRequest(external_id="user_bob", delivery_id="msg_d")
    first = await identity.stub.DeactivateClerkUser(request, metadata=service())
    identity.db.sql("UPDATE identity.users SET status = 'active' WHERE external_id = 'user_bob'")
    replay = await identity.stub.DeactivateClerkUser(request, metadata=service())
    assert (first.found, first.duplicate) == (True, False)
    assert (replay.found, replay.duplicate) == (True, True)
    assert identity.db.sql("SELECT status FROM identity.users WHERE external_id = 'user_bob'") == [("active",)]


async def test_calls_without_a_delivery_id_are_not_deduplicated(identity: Running) -> None:
    # The bulk sync and direct calls carry no svix-id: every call applies.
    await identity.stub.UpsertClerkUser(upsert("Rita", ""), metadata=service())
    again = await identity.stub.UpsertClerkUser(upsert("Ria", ""), metadata=service())
    assert not again.duplicate
    assert identity.db.sql("SELECT name FROM identity.users WHERE external_id = 'user_r'") == [("Ria",)]
    assert deliveries(identity) == []


async def test_concurrent_copies_of_one_delivery_apply_exactly_once(identity: Running) -> None:
    names = [f"Name {i}" for i in range(10)]
    replies = await asyncio.gather(
        *(identity.stub.UpsertClerkUser(upsert(name, "msg_same"), metadata=service()) for name in names)
    )
    applied = [name for name, reply in zip(names, replies, strict=True) if not reply.duplicate]
    assert len(applied) == 1
    assert identity.db.sql("SELECT name FROM identity.users WHERE external_id = 'user_r'") == [(applied[0],)]
    assert deliveries(identity) == ["msg_same"]


async def test_a_rejected_delivery_is_not_recorded_so_its_fixed_redelivery_applies(identity: Running) -> None:
    error = await rpc_error(identity.stub.UpsertClerkUser(upsert("N" * 201, "msg_1"), metadata=service()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["name"]
    assert deliveries(identity) == []


@pytest.mark.parametrize("delivery_id", ["m" * 256, "msg\x00"])
async def test_a_malformed_delivery_id_is_invalid_argument(identity: Running, delivery_id: str) -> None:
    for call in (
        identity.stub.UpsertClerkUser(upsert("Rita", delivery_id), metadata=service()),
        identity.stub.DeactivateClerkUser(
            pb.DeactivateClerkUserRequest(external_id="user_r", delivery_id=delivery_id), metadata=service()
        ),
    ):
        error = await rpc_error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["delivery_id"]
    assert identity.db.sql("SELECT count(*) FROM identity.users") == [(0,)]


async def test_the_sweep_forgets_delivery_ids_past_the_replay_window_in_batches(identity: Running) -> None:
    now = datetime.now(UTC)
    for i, age in enumerate([timedelta(days=8), timedelta(days=7, minutes=1), timedelta(days=6)]):
        identity.db.sql(
            "INSERT INTO identity.webhook_deliveries (svix_id, received_at) VALUES (%s, %s)", (f"msg_{i}", now - age)
        )
    first = await identity.stub.CleanupWebhookDeliveries(pb.CleanupWebhookDeliveriesRequest(batch_size=1), metadata=service())
    second = await identity.stub.CleanupWebhookDeliveries(pb.CleanupWebhookDeliveriesRequest(batch_size=1), metadata=service())
    last = await identity.stub.CleanupWebhookDeliveries(pb.CleanupWebhookDeliveriesRequest(), metadata=service())
    assert [(r.deleted, r.more) for r in (first, second, last)] == [(1, True), (1, True), (0, False)]
    assert deliveries(identity) == ["msg_2"]
    error = await rpc_error(
        identity.stub.CleanupWebhookDeliveries(pb.CleanupWebhookDeliveriesRequest(batch_size=-1), metadata=service())
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == ["batch_size"]


# --- every change of what a user resolves to is announced at commit (zenthor.auth.resolver) ---


@pytest.fixture
async def principal_changes(identity: Running) -> AsyncIterator[psycopg.AsyncConnection]:
    async with await psycopg.AsyncConnection.connect(identity.db.admin_dsn(), autocommit=True) as conn:
        await conn.execute(f"LISTEN {PRINCIPAL_CHANGES}")
        yield conn


async def next_change(conn: psycopg.AsyncConnection) -> str:
    async for note in conn.notifies(timeout=30, stop_after=1):
        return note.payload
    raise AssertionError("no principal change was announced")


async def test_deactivation_role_grants_and_profile_updates_are_announced(
    identity: Running, principal_changes: psycopg.AsyncConnection
) -> None:
    bob(identity.db)
    await identity.stub.DeactivateClerkUser(pb.DeactivateClerkUserRequest(external_id="user_bob"), metadata=service())
    assert await next_change(principal_changes) == "user_bob"
    await identity.stub.UpsertClerkUser(upsert("Rita", "msg_1", email="ops@example.com", verified=False), metadata=service())
    # A new user is not announced (nobody can have cached them); the verified update that makes
    # the admin is.
    await identity.stub.UpsertClerkUser(upsert("Rita", "msg_2", email="ops@example.com"), metadata=service())
    assert await next_change(principal_changes) == "user_r"
    add_user(identity.db, "user_n", email="boss@example.com", role=None)
    await identity.stub.BackfillUserRoles(pb.BackfillUserRolesRequest(), metadata=service())
    assert await next_change(principal_changes) == "user_n"


async def test_nothing_is_announced_for_a_replay_or_an_unknown_user(
    identity: Running, principal_changes: psycopg.AsyncConnection
) -> None:
    bob(identity.db)
    request = pb.DeactivateClerkUserRequest(external_id="user_bob", delivery_id="msg_d")
    await identity.stub.DeactivateClerkUser(request, metadata=service())
    assert await next_change(principal_changes) == "user_bob"
    await identity.stub.DeactivateClerkUser(request, metadata=service())
    await identity.stub.DeactivateClerkUser(pb.DeactivateClerkUserRequest(external_id="user_zzz"), metadata=service())
    # A marker sent after both calls arrives first: they announced nothing.
    identity.db.sql(f"SELECT pg_notify('{PRINCIPAL_CHANGES}', 'marker')")
    assert await next_change(principal_changes) == "marker"
