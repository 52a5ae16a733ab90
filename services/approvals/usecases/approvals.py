"""Approval use cases: one async function per operation, each in one unit of work, except the
runtime's hot pair (docs/architecture.md §6): a resolve's common case is one statement on the
direct pool, and WaitForApproval re-reads with one; the two watches re-read from the table on
every change-feed wake-up."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.approvals.domain import approvals as domain
from services.approvals.domain.approvals import Approval, ApprovalStatus, Channel, Owner
from services.approvals.store import approvals as store
from services.approvals.store.tables import CHANGES, outbox
from services.approvals.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import ResolvedUser
from zenthor.errors import NotFound
from zenthor.outbox import add_events
from zenthor.pagination import Page, PageRequest, next_token
from zenthor.webhooks import OutboxEvent, WebhookEventType, webhook_event


def _change_keys(approval_id: uuid.UUID, conversation_id: uuid.UUID) -> list[str]:
    return [ids.APPROVAL.format(approval_id), ids.CONVERSATION.format(conversation_id)]


async def create_approval(
    deps: Deps,
    *,
    conversation_id: uuid.UUID,
    job_id: uuid.UUID,
    owner: Owner,
    tool_name: str,
    tool_input: Any,
    channel: Channel,
) -> Approval:
    domain.check_owner(owner)
    domain.check_tool(tool_name, tool_input)
    now = deps.clock()
    approval = Approval(
        id=ids.APPROVAL.new(),
        conversation_id=conversation_id,
        job_id=job_id,
        owner=owner,
        tool_name=tool_name,
        tool_input=tool_input,
        status=ApprovalStatus.PENDING,
        channel=channel,
        created_at=now,
        expires_at=domain.expiry_for(now),
        resolved_at=None,
    )
    async with deps.uow() as uow:
        stored = await store.insert_approval(uow.conn, approval)
        await store.notify_changed(uow.conn, _change_keys(stored.id, stored.conversation_id))
        await add_events(uow.conn, outbox, [_approval_requested(stored)], now)
        await uow.commit()
    deps.kick_outbox()
    return stored


def _approval_requested(approval: Approval) -> OutboxEvent:
    """The `approval.requested` webhook event (docs/webhooks.md), stored with the approval."""
    approval_ref = ids.APPROVAL.format(approval.id)
    data = {
        "approval_id": approval_ref,
        "conversation_id": ids.CONVERSATION.format(approval.conversation_id),
        "job_id": ids.JOB.format(approval.job_id),
        "tool_name": approval.tool_name,
        "tool_input": approval.tool_input,
        "channel": approval.channel.value,
        "expire_time": approval.expires_at.isoformat(),
    }
    return webhook_event(
        WebhookEventType.APPROVAL_REQUESTED, approval_ref, occurred_at=approval.created_at,
        owner_user_id=approval.owner.user_id, owner_contact_id=approval.owner.contact_id, data=data,
    )


async def resolve_approval(
    deps: Deps, approval_id: uuid.UUID, status: ApprovalStatus | None, user: ResolvedUser | None
) -> Approval | None:
    """The RESOLVED record (docs/hardening.md #17), or None when unknown, not the user's, or
    already resolved, as the original answered. Past its TTL: FailedPrecondition
    (docs/hardening.md #18), the expiry recorded first.
    `user` None is the service variant (no ownership check)."""
    resolution = domain.check_resolution(status)
    now = deps.clock()
    # The common case, a pending approval resolved in time by its owner or the service, is one
    # statement with its wake-ups: the runtime's waiter is blocked on it.
    resolved = await store.resolve_pending(deps.db, approval_id, resolution, now, user)
    if resolved is not None:
        return resolved
    # The guard refused: say why, from the row as it is now.
    async with deps.uow() as uow:
        current = await store.get_approval(uow.conn, approval_id)
        if current is None or (
            user is not None and not user.owns(user_id=current.owner.user_id, contact_id=current.owner.contact_id)
        ):
            return None
        if current.as_of(now).status is not ApprovalStatus.EXPIRED:
            return None  # already approved/rejected: final rows never change
        if await store.expire_one(uow.conn, approval_id, now) is not None:
            await store.notify_changed(uow.conn, _change_keys(current.id, current.conversation_id))
            await uow.commit()
    raise domain.expired_error(current)


async def list_pending(
    deps: Deps, conversation_id: uuid.UUID, page: PageRequest, user: ResolvedUser | None
) -> Page[Approval]:
    """Oldest first; for a user only the approvals of conversations they own (empty otherwise)."""
    now = deps.clock()
    async with deps.uow() as uow:
        approvals = await store.list_pending_in_conversation(uow.conn, conversation_id, now, page, user)
    return Page(approvals, next_token([a.id for a in approvals], page.size))


async def list_job_approvals(
    deps: Deps, job_id: uuid.UUID, status: ApprovalStatus | None, page: PageRequest
) -> Page[Approval]:
    now = deps.clock()
    async with deps.uow() as uow:
        approvals = await store.list_job_approvals(uow.conn, job_id, status, now, page)
    return Page([a.as_of(now) for a in approvals], next_token([a.id for a in approvals], page.size))


@dataclass(frozen=True)
class SweepResult:
    expired: int
    more: bool


async def expire_stale_approvals(deps: Deps, batch_size: int) -> SweepResult:
    batch = domain.check_batch_size(batch_size)
    now = deps.clock()
    async with deps.uow() as uow:
        expired = await store.expire_due(uow.conn, now, batch)
        await store.notify_changed(uow.conn, [k for a, c in expired for k in _change_keys(a, c)])
        await uow.commit()
    # A full batch means more may be due; the schedule calls again.
    return SweepResult(expired=len(expired), more=len(expired) == batch)


# --- watches ---

WATCH_PAGE = PageRequest(size=500, after=None)


def _seconds_until(moment: datetime | None, now: datetime, cap_s: float) -> float:
    if moment is None:
        return cap_s
    return max(0.0, min(cap_s, (moment - now).total_seconds()))


async def watch_pending(deps: Deps, conversation_id: uuid.UUID, user: ResolvedUser) -> AsyncIterator[list[Approval]]:
    """The caller's pending set of one conversation: at once, then whenever it changes
    (resolve, create, sweep, or an approval passing its TTL with nobody writing)."""
    key = ids.CONVERSATION.format(conversation_id)
    async with deps.feed.subscribe(CHANGES, key) as changes:
        async with deps.uow() as uow:
            owned, foreign = await store.count_by_ownership(uow.conn, conversation_id, user)
        if not domain.conversation_visible_to(owned, foreign):
            raise NotFound("Conversation not found")
        last: list[tuple[uuid.UUID, ApprovalStatus]] | None = None
        while True:
            now = deps.clock()
            async with deps.uow() as uow:
                pending = await store.list_pending_in_conversation(uow.conn, conversation_id, now, WATCH_PAGE, user)
            seen = [(a.id, a.status) for a in pending]
            if seen != last:
                yield pending
                last = seen
            next_expiry = min((a.expires_at for a in pending), default=None)
            await changes.wait(_seconds_until(next_expiry, now, deps.feed.resync_s))


async def wait_for_approval(deps: Deps, approval_id: uuid.UUID, wait_at_most: timedelta | None) -> AsyncIterator[Approval]:
    """One approval until it is final: its state at once and on every change. At its expiry
    the service expires it itself, so the wait ends EXPIRED even if no sweep ran
    (docs/hardening.md #18); a shorter `wait_at_most` (the request's timeout) ends the stream
    after the last PENDING state."""
    domain.check_wait_timeout(wait_at_most)
    key = ids.APPROVAL.format(approval_id)
    started = deps.clock()
    async with deps.feed.subscribe(CHANGES, key) as changes:
        last: Approval | None = None
        while True:
            now = deps.clock()
            # One statement per wake-up; only an approval found past its TTL takes a transaction.
            approval = await store.read_approval(deps.db, approval_id)
            if approval is None:
                raise NotFound("Approval not found")
            if not approval.is_final and domain.has_expired(approval, now):
                async with deps.uow() as uow:
                    expired = await store.expire_one(uow.conn, approval_id, now)
                    if expired is not None:
                        await store.notify_changed(uow.conn, _change_keys(expired.id, expired.conversation_id))
                        await uow.commit()
                        approval = expired
                    else:  # a resolve committed just before its expiry won the row
                        approval = await store.get_approval(uow.conn, approval_id) or approval
            approval = approval.as_of(now)
            if approval != last:
                yield approval
                last = approval
            deadline = domain.wait_deadline(approval, started, wait_at_most)
            if approval.is_final or now >= deadline:
                return
            await changes.wait(_seconds_until(deadline, now, deps.feed.resync_s))
