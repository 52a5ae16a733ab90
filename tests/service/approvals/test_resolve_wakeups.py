"""The runtime's hot pair, ResolveApproval → WaitForApproval: a resolve is one statement that
carries its own wake-ups (docs/architecture.md §6), so a waiter and a watch learn of it from the
change feed alone, and racing resolutions of every kind still have exactly one winner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.approvals.app import build_server
from tests.service.approvals.test_approvals import (
    APPROVED,
    PENDING,
    REJECTED,
    create,
    resolve,
    stored_status,
    token,
)
from tests.service.conftest import Running, start, stop
from tests.support.builders import alice, bob
from tests.support.database import TestDatabase
from tests.support.fake_clock import FakeClock
from tests.support.grpc_client import service
from tests.support.jwks import FakeClerkIssuer
from tests.support.streams import next_message, read_until, stream_end
from zenthor import ids
from zenthor.config import ServiceName
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2 as pb
from zenthor.gen.zenthor.approvals.v1 import approvals_pb2_grpc

# Far beyond any read's timeout: a stream that is not woken by a notification does not re-read.
NO_RESYNC_S = 3600.0


@pytest.fixture
async def quiet_approvals(
    settings_for: Any, db: TestDatabase, clerk_issuer: FakeClerkIssuer, identity: Running, clock: FakeClock
) -> AsyncIterator[Running]:
    """The approvals server with its safety-net re-read switched off: only wake-ups move a stream."""
    settings = settings_for(ServiceName.APPROVALS, identity_addr=f"127.0.0.1:{identity.server.port}")
    server = await build_server(settings, clock=clock, watch_resync_s=NO_RESYNC_S)
    running = await start(server, approvals_pb2_grpc.ApprovalsServiceStub, settings, db, clerk_issuer)
    yield running
    await stop(running)


async def test_a_resolution_wakes_the_waiter_and_the_conversation_watch(quiet_approvals: Running) -> None:
    approvals = quiet_approvals
    alice_id, conversation, job = alice(approvals.db), ids.CONVERSATION.new(), ids.JOB.new()
    approval = await create(approvals, conversation, job, user_id=alice_id)
    wait = approvals.stub.WaitForApproval(pb.WaitForApprovalRequest(approval_id=approval.id), metadata=service())
    watch = approvals.stub.WatchApprovals(
        pb.WatchApprovalsRequest(conversation_id=ids.CONVERSATION.format(conversation)),
        metadata=token(approvals, "user_alice"),
    )
    assert (await next_message(wait)).approval.status == PENDING
    assert [a.id for a in (await next_message(watch)).pending_approvals] == [approval.id]

    assert (await resolve(approvals, "user_alice", approval.id, APPROVED)).approval.status == APPROVED

    # The approval's key reaches the waiter, the conversation's key the watch.
    final = await read_until(wait, lambda r: r.approval.status != PENDING)
    assert final.approval.status == APPROVED
    await stream_end(wait)
    assert await wait.code() == grpc.StatusCode.OK
    await read_until(watch, lambda r: list(r.pending_approvals) == [])
    watch.cancel()


async def test_owner_service_and_stranger_racing_to_resolve_leave_exactly_one_winner(approvals: Running) -> None:
    alice_id, conversation, job = alice(approvals.db), ids.CONVERSATION.new(), ids.JOB.new()
    bob(approvals.db)
    approval = await create(approvals, conversation, job, user_id=alice_id)
    wait = approvals.stub.WaitForApproval(pb.WaitForApprovalRequest(approval_id=approval.id), metadata=service())
    assert (await next_message(wait)).approval.status == PENDING

    async def by_owner(status: int) -> pb.Approval | None:
        reply = await resolve(approvals, "user_alice", approval.id, status)
        return reply.approval if reply.HasField("approval") else None

    async def by_stranger(status: int) -> pb.Approval | None:
        reply = await resolve(approvals, "user_bob", approval.id, status)
        return reply.approval if reply.HasField("approval") else None

    async def as_service(status: int) -> pb.Approval | None:
        reply = await approvals.stub.ResolveApprovalAsService(
            pb.ResolveApprovalAsServiceRequest(approval_id=approval.id, status=status), metadata=service()
        )
        return reply.approval if reply.HasField("approval") else None

    callers = [by_owner, as_service, by_stranger]
    results = await asyncio.gather(*(callers[i % 3](APPROVED if i % 2 else REJECTED) for i in range(12)))
    owners_or_service = [r for i, r in enumerate(results) if i % 3 != 2]
    assert all(r is None for i, r in enumerate(results) if i % 3 == 2)  # a stranger never wins
    winners = [r for r in owners_or_service if r is not None]
    assert len(winners) == 1
    (winner,) = winners
    stored, resolved_at = stored_status(approvals, approval.id)
    assert stored == {APPROVED: "approved", REJECTED: "rejected"}[winner.status]
    assert resolved_at is not None
    # The waiter ends on the winner's decision, not on a loser's.
    final = await read_until(wait, lambda r: r.approval.status != PENDING)
    assert final.approval == winner
    await stream_end(wait)
