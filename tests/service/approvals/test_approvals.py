"""Tool approvals over gRPC: create, resolve by the owner or as a service, expiry at the TTL,
the sweep, lists, the watches, with docs/hardening.md #17 and #18 fixed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, json_format, struct_pb2

from tests.service.conftest import Running
from tests.support.builders import add_contact, alice, bob
from tests.support.fake_clock import T0, FakeClock
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.streams import READ_TIMEOUT_S, next_message, read_until, stream_end
from zenthor import ids
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.common.v1 import types_pb2

PENDING, APPROVED, REJECTED, EXPIRED = (
    pb.APPROVAL_STATUS_PENDING,
    pb.APPROVAL_STATUS_APPROVED,
    pb.APPROVAL_STATUS_REJECTED,
    pb.APPROVAL_STATUS_EXPIRED,
)


def tool_input(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    return value


async def create(
    approvals: Running,
    conversation_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    user_id: uuid.UUID | None = None,
    contact_id: uuid.UUID | None = None,
    channel: int = types_pb2.CHANNEL_WEB,
    tool: str = "todoist_capture_task",
) -> pb.Approval:
    reply = await approvals.stub.CreateApproval(
        pb.CreateApprovalRequest(
            conversation_id=ids.CONVERSATION.format(conversation_id),
            job_id=ids.JOB.format(job_id),
            tool_name=tool,
            tool_input=tool_input({"content": "Buy milk"}),
            channel=channel,
            conversation_user_id=ids.USER.format(user_id) if user_id else None,
            conversation_contact_id=ids.CONTACT.format(contact_id) if contact_id else None,
        ),
        metadata=service(),
    )
    return reply.approval


def token(approvals: Running, subject: str) -> tuple[tuple[str, str], ...]:
    return bearer(approvals.issuer.token(subject))


async def resolve(approvals: Running, subject: str, approval_id: str, status: int) -> pb.ResolveApprovalResponse:
    return await approvals.stub.ResolveApproval(
        pb.ResolveApprovalRequest(approval_id=approval_id, status=status), metadata=token(approvals, subject)
    )


async def job_approvals(approvals: Running, job_id: uuid.UUID, status: int = 0) -> list[pb.Approval]:
    reply = await approvals.stub.ListJobApprovals(
        pb.ListJobApprovalsRequest(job_id=ids.JOB.format(job_id), status=status), metadata=service()
    )
    return list(reply.approvals)


def stored_status(approvals: Running, approval_id: str) -> tuple[str, Any]:
    rows = approvals.db.sql(
        "SELECT status, resolved_at FROM approvals.tool_approvals WHERE id = %s",
        (ids.APPROVAL.parse(approval_id, "id"),),
    )
    assert len(rows) == 1
    return rows[0][0], rows[0][1]


@pytest.fixture
def web(approvals: Running) -> dict[str, uuid.UUID]:
    """Alice, Bob, Alice's web conversation W1 and a job J processing in it."""
    return {
        "alice": alice(approvals.db),
        "bob": bob(approvals.db),
        "w1": ids.CONVERSATION.new(),
        "job": ids.JOB.new(),
    }


async def test_service_creates_a_pending_approval_that_expires_five_minutes_later(
    approvals: Running, web: dict[str, uuid.UUID]
) -> None:
    # Create at T0 → pending; expire_time = T0 + 5 min (docs/hardening.md #18).
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    assert approval.id.startswith("apv_")
    assert approval.status == PENDING
    assert approval.create_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0
    assert approval.expire_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(minutes=5)
    assert not approval.HasField("resolve_time")
    assert json_format.MessageToDict(approval.tool_input) == {"content": "Buy milk"}
    assert approval.tool_name == "todoist_capture_task" and approval.channel == types_pb2.CHANNEL_WEB


async def test_owner_approval_returns_the_resolved_record(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    # docs/hardening.md #17: the call returns the approval AFTER resolution.
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.advance(seconds=20)
    reply = await resolve(approvals, "user_alice", approval.id, APPROVED)
    assert reply.HasField("approval")
    assert reply.approval.status == APPROVED
    assert reply.approval.resolve_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(seconds=20)
    assert await job_approvals(approvals, web["job"], PENDING) == []
    (only,) = await job_approvals(approvals, web["job"])
    assert only.id == approval.id and only.status == APPROVED
    assert stored_status(approvals, approval.id) == ("approved", T0 + timedelta(seconds=20))


async def test_non_owner_gets_nothing_and_the_approval_stays_pending(
    approvals: Running, web: dict[str, uuid.UUID]
) -> None:
    # Someone else's approval looks missing, and their call changes nothing.
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    reply = await resolve(approvals, "user_bob", approval.id, REJECTED)
    assert not reply.HasField("approval")
    assert stored_status(approvals, approval.id) == ("pending", None)


async def test_a_second_resolution_returns_nothing(approvals: Running, web: dict[str, uuid.UUID]) -> None:
    # Resolved rows are final.
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    assert (await resolve(approvals, "user_alice", approval.id, APPROVED)).HasField("approval")
    again = await resolve(approvals, "user_alice", approval.id, REJECTED)
    assert not again.HasField("approval")
    assert stored_status(approvals, approval.id)[0] == "approved"


async def test_the_user_linked_to_the_whatsapp_contact_owns_its_approvals(approvals: Running) -> None:
    # Ownership through the conversation's contact (K1 linked to Alice): ResolvedUser.owns.
    alice_id = alice(approvals.db)
    k1 = add_contact(approvals.db, "5511999990000", user_id=alice_id)
    bob(approvals.db)
    wa1, job = ids.CONVERSATION.new(), ids.JOB.new()
    approval = await create(approvals, wa1, job, contact_id=k1, channel=types_pb2.CHANNEL_WHATSAPP)
    assert not (await resolve(approvals, "user_bob", approval.id, APPROVED)).HasField("approval")
    reply = await resolve(approvals, "user_alice", approval.id, REJECTED)
    assert reply.approval.status == REJECTED


async def test_sweep_marks_overdue_approvals_expired_not_rejected(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    # docs/hardening.md #18: distinct EXPIRED status, dated at the expiry instant.
    a1 = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.set(T0 + timedelta(minutes=8))
    a2 = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.set(T0 + timedelta(minutes=10))
    reply = await approvals.stub.ExpireStaleApprovals(pb.ExpireStaleApprovalsRequest(), metadata=service())
    assert (reply.expired, reply.more) == (1, False)
    assert stored_status(approvals, a1.id) == ("expired", T0 + timedelta(minutes=5))
    assert stored_status(approvals, a2.id) == ("pending", None)


async def test_sweep_works_in_batches_and_says_when_more_are_due(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    for _ in range(5):
        await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.advance(minutes=6)
    first = await approvals.stub.ExpireStaleApprovals(pb.ExpireStaleApprovalsRequest(batch_size=3), metadata=service())
    second = await approvals.stub.ExpireStaleApprovals(pb.ExpireStaleApprovalsRequest(batch_size=3), metadata=service())
    assert (first.expired, first.more, second.expired, second.more) == (3, True, 2, False)
    assert approvals.db.sql("SELECT count(*) FROM approvals.tool_approvals WHERE status = 'expired'") == [(5,)]


async def test_an_approval_at_its_ttl_cannot_be_approved_even_before_the_sweep(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    # docs/hardening.md #18: the TTL is checked inside the resolving statement, at exactly 5 minutes.
    early = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    late = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.set(T0 + timedelta(minutes=5) - timedelta(milliseconds=1))
    assert (await resolve(approvals, "user_alice", early.id, APPROVED)).approval.status == APPROVED
    clock.set(T0 + timedelta(minutes=5))
    error = await rpc_error(resolve(approvals, "user_alice", late.id, APPROVED))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "expired" in (error.details() or "") and "can no longer be approved" in (error.details() or "")
    # The refusal records the expiry: the row is final, dated at the TTL.
    assert stored_status(approvals, late.id) == ("expired", T0 + timedelta(minutes=5))
    # After the expiry is stored, the service variant and the owner are refused the same way.
    error = await rpc_error(
        approvals.stub.ResolveApprovalAsService(
            pb.ResolveApprovalAsServiceRequest(approval_id=late.id, status=REJECTED), metadata=service()
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_an_expired_approval_of_someone_else_reveals_nothing(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.advance(minutes=6)
    assert not (await resolve(approvals, "user_bob", approval.id, APPROVED)).HasField("approval")


async def test_lists_hide_approvals_past_their_ttl_and_job_list_shows_them_expired(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.advance(minutes=5)
    pending = await approvals.stub.ListPendingApprovalsAsService(
        pb.ListPendingApprovalsAsServiceRequest(conversation_id=ids.CONVERSATION.format(web["w1"])), metadata=service()
    )
    assert list(pending.approvals) == []
    (seen,) = await job_approvals(approvals, web["job"])
    assert seen.id == approval.id and seen.status == EXPIRED
    assert seen.resolve_time == seen.expire_time
    assert [a.id for a in await job_approvals(approvals, web["job"], EXPIRED)] == [approval.id]


async def test_whatsapp_keyword_reply_resolves_the_oldest_pending_approval(approvals: Running, clock: FakeClock) -> None:
    # The WhatsApp ingress's calls: pending list oldest first, resolve the first as service.
    k1 = add_contact(approvals.db, "5511999990000")
    wa1, job = ids.CONVERSATION.new(), ids.JOB.new()
    p1 = await create(approvals, wa1, job, contact_id=k1, channel=types_pb2.CHANNEL_WHATSAPP)
    clock.advance(seconds=1)
    p2 = await create(approvals, wa1, job, contact_id=k1, channel=types_pb2.CHANNEL_WHATSAPP)

    async def pending() -> list[str]:
        reply = await approvals.stub.ListPendingApprovalsAsService(
            pb.ListPendingApprovalsAsServiceRequest(conversation_id=ids.CONVERSATION.format(wa1)), metadata=service()
        )
        return [a.id for a in reply.approvals]

    assert await pending() == [p1.id, p2.id]
    first = await approvals.stub.ResolveApprovalAsService(
        pb.ResolveApprovalAsServiceRequest(approval_id=(await pending())[0], status=APPROVED), metadata=service()
    )
    assert first.approval.id == p1.id and first.approval.status == APPROVED  # docs/hardening.md #17
    second = await approvals.stub.ResolveApprovalAsService(
        pb.ResolveApprovalAsServiceRequest(approval_id=(await pending())[0], status=REJECTED), metadata=service()
    )
    assert second.approval.id == p2.id and second.approval.status == REJECTED
    assert await pending() == []


async def test_owner_lists_pending_approvals_and_others_see_none(approvals: Running, web: dict[str, uuid.UUID]) -> None:
    a = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    b = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    request = pb.ListPendingApprovalsRequest(conversation_id=ids.CONVERSATION.format(web["w1"]), page_size=1)
    first = await approvals.stub.ListPendingApprovals(request, metadata=token(approvals, "user_alice"))
    request.page_token = first.next_page_token
    second = await approvals.stub.ListPendingApprovals(request, metadata=token(approvals, "user_alice"))
    assert [x.id for x in first.approvals] + [x.id for x in second.approvals] == [a.id, b.id]
    bobs = await approvals.stub.ListPendingApprovals(
        pb.ListPendingApprovalsRequest(conversation_id=ids.CONVERSATION.format(web["w1"])),
        metadata=token(approvals, "user_bob"),
    )
    assert list(bobs.approvals) == []


async def test_concurrent_resolutions_of_one_approval_have_exactly_one_winner(
    approvals: Running, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    replies = await asyncio.gather(
        *(
            approvals.stub.ResolveApprovalAsService(
                pb.ResolveApprovalAsServiceRequest(approval_id=approval.id, status=APPROVED if i % 2 else REJECTED),
                metadata=service(),
            )
            for i in range(10)
        )
    )
    winners = [r.approval for r in replies if r.HasField("approval")]
    assert len(winners) == 1
    assert stored_status(approvals, approval.id)[0] == {APPROVED: "approved", REJECTED: "rejected"}[winners[0].status]


# --- WaitForApproval (the runtime's wait, replacing 1 s polling) ---


async def test_runtime_wait_ends_with_the_users_decision(approvals: Running, web: dict[str, uuid.UUID]) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    stream = approvals.stub.WaitForApproval(pb.WaitForApprovalRequest(approval_id=approval.id), metadata=service())
    first = await next_message(stream)
    assert first.approval.status == PENDING
    await resolve(approvals, "user_alice", approval.id, APPROVED)
    final = await read_until(stream, lambda r: r.approval.status != PENDING)
    assert final.approval.status == APPROVED
    await stream_end(stream)
    assert await stream.code() == grpc.StatusCode.OK


async def test_runtime_wait_ends_expired_at_the_ttl_even_if_nobody_swept(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    # docs/hardening.md #18: the wait ends EXPIRED at 5 minutes; a late approval fails.
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    stream = approvals.stub.WaitForApproval(pb.WaitForApprovalRequest(approval_id=approval.id), metadata=service())
    assert (await next_message(stream)).approval.status == PENDING
    clock.advance(minutes=5)
    final = await read_until(stream, lambda r: r.approval.status != PENDING)
    assert final.approval.status == EXPIRED
    assert final.approval.resolve_time == final.approval.expire_time
    await stream_end(stream)
    assert stored_status(approvals, approval.id)[0] == "expired"
    error = await rpc_error(resolve(approvals, "user_alice", approval.id, APPROVED))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_runtime_wait_started_after_the_ttl_answers_expired_at_once(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    clock.advance(minutes=7)
    async with asyncio.timeout(READ_TIMEOUT_S):
        replies = [r async for r in approvals.stub.WaitForApproval(
            pb.WaitForApprovalRequest(approval_id=approval.id), metadata=service()
        )]
    assert [r.approval.status for r in replies] == [EXPIRED]


async def test_runtime_wait_with_a_shorter_timeout_ends_after_the_pending_state(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    stream = approvals.stub.WaitForApproval(
        pb.WaitForApprovalRequest(approval_id=approval.id, timeout=duration_pb2.Duration(seconds=30)),
        metadata=service(),
    )
    assert (await next_message(stream)).approval.status == PENDING
    clock.advance(seconds=30)
    await stream_end(stream)
    assert await stream.code() == grpc.StatusCode.OK
    assert stored_status(approvals, approval.id) == ("pending", None)


async def test_waiting_for_an_unknown_approval_is_not_found(approvals: Running) -> None:
    stream = approvals.stub.WaitForApproval(
        pb.WaitForApprovalRequest(approval_id=ids.APPROVAL.format(ids.APPROVAL.new())), metadata=service()
    )
    error = await rpc_error(next_message(stream))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# --- WatchApprovals (the web UI's live pending set) ---


async def test_owner_watch_streams_the_pending_set_on_every_change(
    approvals: Running, web: dict[str, uuid.UUID]
) -> None:
    stream = approvals.stub.WatchApprovals(
        pb.WatchApprovalsRequest(conversation_id=ids.CONVERSATION.format(web["w1"])),
        metadata=token(approvals, "user_alice"),
    )
    assert list((await next_message(stream)).pending_approvals) == []
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    await read_until(stream, lambda r: [a.id for a in r.pending_approvals] == [approval.id])
    await resolve(approvals, "user_alice", approval.id, REJECTED)
    await read_until(stream, lambda r: list(r.pending_approvals) == [])
    stream.cancel()


async def test_watch_drops_an_approval_when_its_ttl_passes(
    approvals: Running, clock: FakeClock, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    stream = approvals.stub.WatchApprovals(
        pb.WatchApprovalsRequest(conversation_id=ids.CONVERSATION.format(web["w1"])),
        metadata=token(approvals, "user_alice"),
    )
    assert [a.id for a in (await next_message(stream)).pending_approvals] == [approval.id]
    clock.advance(minutes=5)
    await read_until(stream, lambda r: list(r.pending_approvals) == [])
    stream.cancel()


async def test_watching_someone_elses_conversation_is_not_found(
    approvals: Running, web: dict[str, uuid.UUID]
) -> None:
    await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    stream = approvals.stub.WatchApprovals(
        pb.WatchApprovalsRequest(conversation_id=ids.CONVERSATION.format(web["w1"])),
        metadata=token(approvals, "user_bob"),
    )
    error = await rpc_error(next_message(stream))
    assert error.code() == grpc.StatusCode.NOT_FOUND


# --- bad input ---


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"conversation_id": "conv_nothex"}, "conversation_id"),
        ({"conversation_id": ids.JOB.format(uuid.uuid4())}, "conversation_id"),
        ({"job_id": ""}, "job_id"),
        ({"tool_name": ""}, "tool_name"),
        ({"channel": types_pb2.CHANNEL_UNSPECIFIED}, "channel"),
        ({"conversation_user_id": None}, "conversation_user_id"),
        ({"conversation_user_id": "usr_123"}, "conversation_user_id"),
    ],
)
async def test_bad_create_requests_name_the_field_and_write_nothing(
    approvals: Running, change: dict[str, Any], field: str
) -> None:
    values: dict[str, Any] = {
        "conversation_id": ids.CONVERSATION.format(ids.CONVERSATION.new()),
        "job_id": ids.JOB.format(ids.JOB.new()),
        "tool_name": "schedule_task",
        "channel": types_pb2.CHANNEL_WEB,
        "conversation_user_id": ids.USER.format(ids.USER.new()),
    }
    values.update(change)
    request = pb.CreateApprovalRequest(**{k: v for k, v in values.items() if v is not None})
    error = await rpc_error(approvals.stub.CreateApproval(request, metadata=service()))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error) == [field]
    assert approvals.db.sql("SELECT count(*) FROM approvals.tool_approvals") == [(0,)]


async def test_resolving_to_pending_or_with_a_malformed_id_is_invalid(
    approvals: Running, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    error = await rpc_error(resolve(approvals, "user_alice", approval.id, PENDING))
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["status"])
    error = await rpc_error(resolve(approvals, "user_alice", "apv_zz", APPROVED))
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["approval_id"])
    error = await rpc_error(
        next_message(approvals.stub.WaitForApproval(
            pb.WaitForApprovalRequest(approval_id=approval.id, timeout=duration_pb2.Duration(seconds=-1)),
            metadata=service(),
        ))
    )
    assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, ["timeout"])
    assert stored_status(approvals, approval.id) == ("pending", None)


async def test_user_calls_without_a_token_and_service_calls_without_the_key_are_refused(
    approvals: Running, web: dict[str, uuid.UUID]
) -> None:
    approval = await create(approvals, web["w1"], web["job"], user_id=web["alice"])
    error = await rpc_error(approvals.stub.ResolveApproval(pb.ResolveApprovalRequest(approval_id=approval.id, status=APPROVED)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await rpc_error(
        approvals.stub.ResolveApprovalAsService(
            pb.ResolveApprovalAsServiceRequest(approval_id=approval.id, status=APPROVED), metadata=service("wrong")
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stored_status(approvals, approval.id) == ("pending", None)
