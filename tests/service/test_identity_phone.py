"""Phone verification over gRPC: request, confirm, status, unlink and cleanup, with the fixes
of docs/hardening.md #4, #5, #10 and #21."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, timedelta
from typing import Any

import grpc
import pytest

from services.identity.app import build_server
from tests.service.conftest import Running, start, stop
from tests.support.builders import add_user, alice, bob
from tests.support.database import TestDatabase
from tests.support.fake_clock import T0, FakeClock
from tests.support.grpc_client import bearer, rpc_error, service
from zenthor.clients import violated_fields
from zenthor.config import ServiceName
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc

PHONE = "5511977776666"


class Clock(FakeClock):
    def at(self, delta: timedelta) -> None:
        self.set(T0 + delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def identity(settings_for: Any, db: TestDatabase, clerk_issuer: Any, clock: Clock) -> AsyncIterator[Running]:
    settings = settings_for(ServiceName.IDENTITY, whatsapp_account_id="wa-main")
    running = await start(await build_server(settings, clock=clock), identity_pb2_grpc.IdentityServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


def as_user(identity: Running, external_id: str) -> tuple[tuple[str, str], ...]:
    return bearer(identity.issuer.token(external_id))


async def request(identity: Running, who: str, phone: str = PHONE) -> pb.RequestPhoneVerificationResponse:
    return await identity.stub.RequestPhoneVerification(pb.RequestPhoneVerificationRequest(phone=phone), metadata=as_user(identity, who))


async def confirm(identity: Running, who: str, code: str) -> pb.ConfirmPhoneVerificationResponse:
    return await identity.stub.ConfirmPhoneVerification(pb.ConfirmPhoneVerificationRequest(code=code), metadata=as_user(identity, who))


def sent_codes(db: TestDatabase) -> list[str]:
    """The codes handed to the outbox for WhatsApp delivery, oldest first."""
    rows = db.sql("SELECT payload->>'content' FROM identity.outbox ORDER BY created_at")
    return [re.search(r"code is: (\d{6})\n", text).group(1) for (text,) in rows]  # type: ignore[union-attr]


def verifications(db: TestDatabase) -> list[tuple[Any, ...]]:
    return db.sql("SELECT phone, status, attempts, verified_at FROM identity.phone_verifications ORDER BY created_at")


@pytest.mark.parametrize("phone", ["+55 11 99999", "123456789", "1234567890123456", "55119999900x0"])
async def test_invalid_phone_format_is_rejected_and_nothing_written(identity: Running, phone: str) -> None:
    # The original answered success=false; here it is INVALID_ARGUMENT naming the field.
    alice(identity.db)
    error = await rpc_error(request(identity, "user_alice", phone))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == ["phone"] and "Invalid phone number format" in error.details()
    assert identity.db.sql(
        "SELECT (SELECT count(*) FROM identity.phone_verifications), (SELECT count(*) FROM identity.contacts), (SELECT count(*) FROM identity.outbox)"
    ) == [(0, 0, 0)]


async def test_phone_owned_by_another_user_is_refused(identity: Running) -> None:
    alice(identity.db)
    add_user(identity.db, "user_bob", email="bob@example.com", phone="5511988887777")
    reply = await request(identity, "user_alice", "5511988887777")
    assert (reply.success, reply.error) == (False, "Phone number already linked to another account")


async def test_successful_request_stores_a_hashed_code_and_queues_its_delivery(identity: Running) -> None:
    # The delivery names the configured WhatsApp account (docs/hardening.md #10).
    user_id = alice(identity.db)
    reply = await request(identity, "user_alice")
    assert reply.success and not reply.HasField("error")
    [(row_user, phone, status, code_hash, created)] = identity.db.sql(
        "SELECT user_id, phone, status, code_hash, created_at FROM identity.phone_verifications"
    )
    (code,) = sent_codes(identity.db)
    assert (row_user, phone, status, created) == (user_id, PHONE, "pending", T0)
    assert 100_000 <= int(code) <= 999_999 and code not in code_hash
    assert identity.db.sql("SELECT phone, name, is_allowed, user_id FROM identity.contacts") == [(PHONE, PHONE, True, None)]
    [(payload,)] = identity.db.sql("SELECT payload FROM identity.outbox")
    assert payload["content"] == f"Your verification code is: {code}\n\nThis code expires in 5 minutes."
    assert (payload["phone"], payload["account_id"]) == (PHONE, "wa-main")


async def test_a_new_request_expires_the_previous_one(identity: Running, clock: Clock) -> None:
    alice(identity.db)
    await request(identity, "user_alice")
    clock.at(timedelta(minutes=1))
    await request(identity, "user_alice")
    assert [r[1] for r in verifications(identity.db)] == ["expired", "pending"]
    assert identity.db.sql("SELECT count(*) FROM identity.contacts") == [(1,)]
    assert len(sent_codes(identity.db)) == 2


async def test_wrong_code_keeps_the_request_pending(identity: Running, clock: Clock) -> None:
    alice(identity.db)
    await request(identity, "user_alice")
    clock.at(timedelta(minutes=1))
    (code,) = sent_codes(identity.db)
    wrong = "000000" if code != "000000" else "111111"
    reply = await confirm(identity, "user_alice", wrong)
    assert (reply.success, reply.error) == (False, "Invalid verification code")
    assert verifications(identity.db) == [(PHONE, "pending", 1, None)]


async def test_ten_wrong_codes_lock_the_request_and_the_right_code_then_fails(identity: Running) -> None:
    # An attempt cap per code (docs/hardening.md #4).
    alice(identity.db)
    await request(identity, "user_alice")
    (code,) = sent_codes(identity.db)
    wrong = [c for c in (f"{n:06d}" for n in range(100_000, 100_020)) if c != code][:10]
    for guess in wrong:
        assert (await confirm(identity, "user_alice", guess)).error == "Invalid verification code"
    assert verifications(identity.db) == [(PHONE, "locked", 10, None)]
    eleventh = await confirm(identity, "user_alice", code)
    assert (eleventh.success, eleventh.error) == (False, "Too many wrong codes; request a new code")
    assert identity.db.sql("SELECT phone FROM identity.users") == [(None,)]


async def test_code_expires_strictly_after_five_minutes(identity: Running, clock: Clock) -> None:
    # At exactly T0+5m the code is still good; 1 ms later it is expired.
    alice(identity.db)
    bob(identity.db)
    await request(identity, "user_alice")
    await request(identity, "user_bob", "5511966665555")
    alice_code, bob_code = sent_codes(identity.db)
    clock.at(timedelta(minutes=5, milliseconds=1))
    late = await confirm(identity, "user_alice", alice_code)
    assert (late.success, late.error) == (False, "Verification code expired")
    clock.at(timedelta(minutes=5))
    on_time = await confirm(identity, "user_bob", bob_code)
    assert on_time.success
    assert [r[1] for r in verifications(identity.db)] == ["expired", "verified"]


async def test_successful_confirmation_links_the_contact(identity: Running, clock: Clock) -> None:
    user_id = alice(identity.db)
    await request(identity, "user_alice")
    (code,) = sent_codes(identity.db)
    clock.at(timedelta(minutes=2))
    reply = await confirm(identity, "user_alice", code)
    assert (reply.success, reply.phone) == (True, PHONE)
    assert verifications(identity.db) == [(PHONE, "verified", 0, T0 + timedelta(minutes=2))]
    assert identity.db.sql("SELECT phone FROM identity.users") == [(PHONE,)]
    assert identity.db.sql("SELECT user_id FROM identity.contacts") == [(user_id,)]
    principal = await identity.stub.ResolvePrincipal(pb.ResolvePrincipalRequest(external_id="user_alice"), metadata=service())
    assert principal.HasField("contact_id")


async def test_confirm_without_pending_request(identity: Running) -> None:
    alice(identity.db)
    reply = await confirm(identity, "user_alice", "123456")
    assert (reply.success, reply.error) == (False, "No pending verification found")


async def test_status_hides_requests_past_the_ttl(identity: Running, clock: Clock) -> None:
    alice(identity.db)
    await request(identity, "user_alice")
    clock.at(timedelta(minutes=4))
    status = await identity.stub.GetPhoneVerificationStatus(pb.GetPhoneVerificationStatusRequest(), metadata=as_user(identity, "user_alice"))
    assert status.pending.phone == PHONE and status.pending.create_time.ToDatetime(tzinfo=UTC) == T0
    clock.at(timedelta(minutes=6))
    later = await identity.stub.GetPhoneVerificationStatus(pb.GetPhoneVerificationStatusRequest(), metadata=as_user(identity, "user_alice"))
    assert not later.HasField("pending")
    assert [r[1] for r in verifications(identity.db)] == ["pending"]


async def test_unlink_removes_the_phone_and_the_contact_link(identity: Running) -> None:
    user_id = add_user(identity.db, "user_alice", email="alice@example.com", phone="5511999990000")
    identity.db.sql("INSERT INTO identity.contacts (id, phone, name, is_allowed, user_id, created_at) VALUES (gen_random_uuid(), '5511999990000', 'K1', true, %s, now())", (user_id,))
    for _ in range(2):  # the second call is a no-op
        await identity.stub.UnlinkPhone(pb.UnlinkPhoneRequest(), metadata=as_user(identity, "user_alice"))
        assert identity.db.sql("SELECT phone FROM identity.users") == [(None,)]
        assert identity.db.sql("SELECT user_id FROM identity.contacts") == [(None,)]


async def test_cleanup_keeps_verified_rows_for_audit(identity: Running, clock: Clock) -> None:
    # Only old unverified rows go (docs/hardening.md #21).
    user_id = alice(identity.db)
    for age, status in [(timedelta(hours=25), "verified"), (timedelta(hours=25), "pending"), (timedelta(hours=1), "pending")]:
        identity.db.sql(
            "INSERT INTO identity.phone_verifications (id, user_id, phone, code_hash, status, attempts, created_at)"
            " VALUES (gen_random_uuid(), %s, %s, 'x$y', %s, 0, %s)",
            (user_id, PHONE, status, T0 - age),
        )
    reply = await identity.stub.CleanupExpiredPhoneVerifications(pb.CleanupExpiredPhoneVerificationsRequest(), metadata=service())
    assert (reply.deleted, reply.more) == (1, False)
    remaining = identity.db.sql("SELECT status, created_at FROM identity.phone_verifications ORDER BY created_at")
    assert remaining == [("verified", T0 - timedelta(hours=25)), ("pending", T0 - timedelta(hours=1))]


async def test_two_users_confirming_one_phone_one_wins(identity: Running) -> None:
    # Uniqueness is re-checked at confirmation, under a real race (docs/hardening.md #5).
    alice(identity.db)
    bob(identity.db)
    await request(identity, "user_alice")
    await request(identity, "user_bob")
    alice_code, bob_code = sent_codes(identity.db)
    results = await asyncio.gather(
        confirm(identity, "user_alice", alice_code), confirm(identity, "user_bob", bob_code), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, pb.ConfirmPhoneVerificationResponse) and r.success]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].code() == grpc.StatusCode.ALREADY_EXISTS
    assert identity.db.sql("SELECT count(*) FROM identity.users WHERE phone = %s", (PHONE,)) == [(1,)]
    assert [r[1] for r in verifications(identity.db)].count("verified") == 1


async def test_requests_are_rate_limited_per_user_and_per_phone(identity: Running, clock: Clock) -> None:
    # Each request sends a WhatsApp message (docs/hardening.md #4).
    alice(identity.db)
    for minute in range(5):
        clock.at(timedelta(minutes=minute))
        assert (await request(identity, "user_alice")).success
    sixth = await request(identity, "user_alice")
    assert (sixth.success, sixth.error) == (False, "Too many verification requests; try again later")
    bob(identity.db)
    other_user_same_phone = await request(identity, "user_bob")
    assert not other_user_same_phone.success
    clock.at(timedelta(hours=1, minutes=5))
    assert (await request(identity, "user_alice")).success
    assert len(sent_codes(identity.db)) == 6


async def test_verification_needs_a_signed_in_user(identity: Running) -> None:
    error = await rpc_error(identity.stub.RequestPhoneVerification(pb.RequestPhoneVerificationRequest(phone=PHONE)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
