"""WhatsApp accounts, account leases and the session store over gRPC: the runtime's lease
contention and takeover, TTLs, release and ownership listing, the session key/value store, with
docs/hardening.md #24 and #34 fixed, the lease takeover race and bad input."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

import grpc
import pytest
from google.protobuf import duration_pb2, struct_pb2

from tests.service.conftest import Running
from tests.support.delivery_builders import count_rows
from tests.support.fake_clock import T0, FakeClock
from tests.support.grpc_client import rpc_error, service
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

MIB = 1024 * 1024


def at(ts: object) -> object:
    return ts.ToDatetime(tzinfo=UTC)  # type: ignore[attr-defined]


def seconds(value: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromTimedelta(timedelta(seconds=value))
    return d


async def upsert(delivery: Running, account_id: str = "default", *, enabled: bool = True, meta: dict | None = None) -> pb.UpsertWhatsAppAccountResponse:
    struct = None
    if meta is not None:
        struct = struct_pb2.Struct()
        struct.update(meta)
    return await delivery.stub.UpsertWhatsAppAccount(
        pb.UpsertWhatsAppAccountRequest(account_id=account_id, phone="5511900000000", enabled=enabled, meta=struct),
        metadata=service(),
    )


async def acquire(delivery: Running, owner: str, account_id: str = "default", ttl: float | None = None) -> pb.AcquireLeaseResponse:
    return await delivery.stub.AcquireLease(
        pb.AcquireLeaseRequest(account_id=account_id, owner_id=owner, ttl=seconds(ttl) if ttl is not None else None),
        metadata=service(),
    )


async def heartbeat(delivery: Running, owner: str, account_id: str = "default", ttl: float | None = None) -> pb.HeartbeatLeaseResponse:
    return await delivery.stub.HeartbeatLease(
        pb.HeartbeatLeaseRequest(account_id=account_id, owner_id=owner, ttl=seconds(ttl) if ttl is not None else None),
        metadata=service(),
    )


# --- accounts ---


async def test_upsert_account_creates_then_updates_one_row_and_absent_meta_clears(delivery: Running, clock: FakeClock) -> None:
    created = await upsert(delivery, meta={"pod": "a"})
    assert created.created and created.account.meta["pod"] == "a"
    clock.advance(seconds=5)
    updated = await upsert(delivery, enabled=False)
    assert not updated.created and not updated.account.enabled and not updated.account.HasField("meta")
    assert at(updated.account.create_time) == T0 and at(updated.account.update_time) == T0 + timedelta(seconds=5)
    assert count_rows(delivery, "whatsapp_accounts") == 1


async def test_concurrent_upserts_of_one_account_make_one_row(delivery: Running) -> None:
    # docs/hardening.md #24: account ids are unique.
    replies = await asyncio.gather(*(upsert(delivery, "acc-x") for _ in range(10)))
    assert sum(r.created for r in replies) == 1
    assert count_rows(delivery, "whatsapp_accounts") == 1


async def test_listing_accounts_shows_enabled_ones_unless_asked_for_all(delivery: Running) -> None:
    await upsert(delivery, "b")
    await upsert(delivery, "a")
    await upsert(delivery, "c", enabled=False)
    enabled = await delivery.stub.ListWhatsAppAccounts(pb.ListWhatsAppAccountsRequest(), metadata=service())
    assert [a.account_id for a in enabled.accounts] == ["a", "b"]
    first = await delivery.stub.ListWhatsAppAccounts(
        pb.ListWhatsAppAccountsRequest(include_disabled=True, page_size=2), metadata=service()
    )
    rest = await delivery.stub.ListWhatsAppAccounts(
        pb.ListWhatsAppAccountsRequest(include_disabled=True, page_size=2, page_token=first.next_page_token),
        metadata=service(),
    )
    assert [a.account_id for a in [*first.accounts, *rest.accounts]] == ["a", "b", "c"]
    assert rest.next_page_token == ""


# --- leases ---


async def test_lease_acquisition_contention_and_takeover_after_expiry(delivery: Running, clock: FakeClock) -> None:
    # One holder at a time; another takes over only once the lease has expired.
    await upsert(delivery)
    first = await acquire(delivery, "pod-a")
    assert first.acquired and first.lease.owner_id == "pod-a"
    assert at(first.lease.expire_time) == T0 + timedelta(seconds=45)
    clock.advance(seconds=10)
    refused = await acquire(delivery, "pod-b")
    assert not refused.acquired and refused.lease.owner_id == "pod-a"
    assert at(refused.lease.expire_time) == T0 + timedelta(seconds=45)
    clock.set(T0 + timedelta(milliseconds=45_001))
    taken = await acquire(delivery, "pod-b")
    assert taken.acquired and taken.lease.owner_id == "pod-b"
    got = await delivery.stub.GetLease(pb.GetLeaseRequest(account_id="default"), metadata=service())
    assert got.lease.owner_id == "pod-b"


async def test_the_holder_reacquires_its_unexpired_lease(delivery: Running, clock: FakeClock) -> None:
    await upsert(delivery)
    await acquire(delivery, "pod-a")
    clock.advance(seconds=20)
    again = await acquire(delivery, "pod-a")
    assert again.acquired and at(again.lease.expire_time) == T0 + timedelta(seconds=65)


async def test_lease_ttl_is_raised_to_ten_seconds_and_heartbeat_extends_only_a_held_lease(
    delivery: Running, clock: FakeClock
) -> None:
    # A TTL under 10 s is raised to 10 s; a heartbeat extends only a lease still held.
    await upsert(delivery)
    acquired = await acquire(delivery, "pod-a", ttl=2)
    assert at(acquired.lease.expire_time) == T0 + timedelta(seconds=10)
    clock.advance(seconds=5)
    beat = await heartbeat(delivery, "pod-a", ttl=30)
    assert beat.renewed and at(beat.lease.expire_time) == T0 + timedelta(seconds=35)
    assert at(beat.lease.heartbeat_time) == T0 + timedelta(seconds=5)
    assert not (await heartbeat(delivery, "pod-b")).renewed
    clock.set(T0 + timedelta(seconds=35))
    lapsed = await heartbeat(delivery, "pod-a")
    assert not lapsed.renewed and not lapsed.HasField("lease")


async def test_release_and_ownership_listing(delivery: Running, clock: FakeClock) -> None:
    # An owner lists the accounts it holds unexpired; only the holder can release a lease.
    await upsert(delivery)
    await upsert(delivery, "acc2")
    await acquire(delivery, "pod-a", "acc2", ttl=10)
    clock.advance(seconds=11)
    await acquire(delivery, "pod-a")
    owned = await delivery.stub.ListOwnedAccounts(pb.ListOwnedAccountsRequest(owner_id="pod-a"), metadata=service())
    assert list(owned.account_ids) == ["default"]
    released = await delivery.stub.ReleaseLease(
        pb.ReleaseLeaseRequest(account_id="default", owner_id="pod-b"), metadata=service()
    )
    assert not released.released
    released = await delivery.stub.ReleaseLease(
        pb.ReleaseLeaseRequest(account_id="default", owner_id="pod-a"), metadata=service()
    )
    assert released.released
    got = await delivery.stub.GetLease(pb.GetLeaseRequest(account_id="default"), metadata=service())
    assert not got.HasField("lease")
    expired = await delivery.stub.GetLease(pb.GetLeaseRequest(account_id="acc2"), metadata=service())
    assert expired.lease.owner_id == "pod-a"  # an expired lease stays until taken over or released


async def test_ten_runtimes_racing_for_an_expired_lease_leave_exactly_one_owner(
    delivery: Running, clock: FakeClock
) -> None:
    await upsert(delivery)
    await acquire(delivery, "pod-dead")
    clock.advance(minutes=1)
    replies = await asyncio.gather(*(acquire(delivery, f"pod-{i}") for i in range(10)))
    winners = [r.lease.owner_id for r in replies if r.acquired]
    assert len(winners) == 1
    # Every loser was told who won; the stored lease is the winner's.
    assert {r.lease.owner_id for r in replies if not r.acquired} == set(winners)
    assert delivery.db.sql("SELECT owner_id FROM delivery.whatsapp_leases") == [(winners[0],)]


async def test_disabled_or_unknown_accounts_cannot_be_leased(delivery: Running) -> None:
    # docs/hardening.md #34: unknown accounts are NOT_FOUND, disabled ones FAILED_PRECONDITION.
    error = await rpc_error(acquire(delivery, "pod-a", "nobody"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    await upsert(delivery)
    await acquire(delivery, "pod-a")
    await upsert(delivery, enabled=False)
    error = await rpc_error(acquire(delivery, "pod-a"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "disabled" in (error.details() or "")
    assert not (await heartbeat(delivery, "pod-a")).renewed


@pytest.mark.parametrize("ttl", [-1, 601])
async def test_lease_ttl_outside_bounds_is_invalid_and_writes_nothing(delivery: Running, ttl: float) -> None:
    await upsert(delivery)
    error = await rpc_error(acquire(delivery, "pod-a", ttl=ttl))
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["ttl"])
    assert count_rows(delivery, "whatsapp_leases") == 0
    error = await rpc_error(heartbeat(delivery, "pod-a", ttl=ttl))
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["ttl"])


async def test_lease_and_account_ids_are_checked(delivery: Running) -> None:
    for call, field in [
        (acquire(delivery, "", "default"), "owner_id"),
        (acquire(delivery, "pod-a", "x" * 129), "account_id"),
        (upsert(delivery, ""), "account_id"),
    ]:
        error = await rpc_error(call)
        assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert count_rows(delivery, "whatsapp_accounts") == 0


# --- session store ---


async def session_get(delivery: Running, key: str) -> str | None:
    reply = await delivery.stub.GetSessionValue(pb.GetSessionValueRequest(key=key), metadata=service())
    return reply.data if reply.HasField("data") else None


async def session_set(delivery: Running, key: str, data: str) -> None:
    await delivery.stub.SetSessionValue(pb.SetSessionValueRequest(key=key, data=data), metadata=service())


async def test_session_store_set_get_remove_clear(delivery: Running) -> None:
    # Set, get, remove and clear the runtime's auth state.
    await session_set(delivery, "creds", "{...1}")
    await session_set(delivery, "creds", "{...2}")
    assert await session_get(delivery, "creds") == "{...2}"
    assert count_rows(delivery, "whatsapp_session") == 1
    removed = await delivery.stub.DeleteSessionValue(pb.DeleteSessionValueRequest(key="creds"), metadata=service())
    assert removed.deleted and await session_get(delivery, "creds") is None
    again = await delivery.stub.DeleteSessionValue(pb.DeleteSessionValueRequest(key="creds"), metadata=service())
    assert not again.deleted
    for key in ("pre-key-1", "session-2", "creds"):
        await session_set(delivery, key, key)
    cleared = await delivery.stub.ClearSessionValues(pb.ClearSessionValuesRequest(), metadata=service())
    assert cleared.deleted == 3 and count_rows(delivery, "whatsapp_session") == 0


async def test_session_values_list_by_key_in_pages(delivery: Running) -> None:
    for key in ("b", "a", "c"):
        await session_set(delivery, key, f"v-{key}")
    first = await delivery.stub.ListSessionValues(pb.ListSessionValuesRequest(page_size=2), metadata=service())
    rest = await delivery.stub.ListSessionValues(
        pb.ListSessionValuesRequest(page_size=2, page_token=first.next_page_token), metadata=service()
    )
    assert [(e.key, e.data) for e in [*first.entries, *rest.entries]] == [("a", "v-a"), ("b", "v-b"), ("c", "v-c")]


async def test_concurrent_sets_of_one_key_keep_one_row(delivery: Running) -> None:
    # docs/hardening.md #24: keys are unique; the runtime writes Signal keys in parallel.
    await asyncio.gather(*(session_set(delivery, "creds", f"v{i}") for i in range(10)))
    assert count_rows(delivery, "whatsapp_session") == 1


async def test_a_one_mib_value_is_stored_and_a_larger_one_is_refused(delivery: Running) -> None:
    await session_set(delivery, "big", "x" * MIB)
    assert await session_get(delivery, "big") == "x" * MIB
    error = await rpc_error(session_set(delivery, "bigger", "x" * (MIB + 1)))
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["data"])
    # Multi-byte characters count as their UTF-8 bytes.
    error = await rpc_error(session_set(delivery, "wide", "é" * (MIB // 2 + 1)))
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["data"])
    assert await session_get(delivery, "bigger") is None and await session_get(delivery, "wide") is None
    assert count_rows(delivery, "whatsapp_session") == 1


@pytest.mark.parametrize(("key", "data", "field"), [("", "v", "key"), ("k" * 513, "v", "key"), ("k", "a\x00b", "data")])
async def test_bad_session_keys_and_values_are_invalid(delivery: Running, key: str, data: str, field: str) -> None:
    error = await rpc_error(session_set(delivery, key, data))
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, [field])
    assert count_rows(delivery, "whatsapp_session") == 0
