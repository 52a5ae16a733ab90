"""Message use cases: sends (with the agent job through the outbox, and the double-texting
strategies), assistant and system messages, the streaming placeholder lifecycle, delivery
outcomes, owner reads."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.messages.domain import messages as rules
from services.messages.domain.conversations import Conversation, DoubleTexting, busy_refusal, owned
from services.messages.domain.messages import Message, MessageRole, MessageStatus, ToolCall
from services.messages.domain.titles import auto_title
from services.messages.store import conversations as conversation_store
from services.messages.store import messages as store
from services.messages.store.tables import outbox
from services.messages.usecases.conversations import announce, lock_conversation, owned_locked
from services.messages.usecases.deps import (
    CANCEL_JOBS_TOPIC,
    CONVERSATION_CHANNEL,
    CONVERSATION_LIST_CHANNEL,
    ENQUEUE_JOB_TOPIC,
    Deps,
)
from zenthor import ids
from zenthor.auth.principal import ResolvedUser
from zenthor.db import UnitOfWork
from zenthor.errors import FailedPrecondition, NotFound
from zenthor.logs import get_logger
from zenthor.outbox import add_event, add_events
from zenthor.pagination import Page, PageRequest, next_token
from zenthor.webhooks import WebhookEventType, webhook_event

MESSAGE_NOT_FOUND = "Message not found"
# agent_queue's CancelConversationJobs takes at most this many `message_ids`.
CANCEL_AWAITING_MAX = 100

log = get_logger("messages.messages")


async def _enqueue_job(conn: AsyncConnection, conversation: Conversation, message: Message, now: datetime) -> None:
    """The agent job for `message`, delivered to agent_queue by the relay after commit."""
    message_id = ids.MESSAGE.format(message.id)
    payload = {
        "message_id": message_id,
        "conversation_id": ids.CONVERSATION.format(conversation.id),
        "conversation_user_id": ids.USER.format(conversation.user_id) if conversation.user_id else None,
        "conversation_contact_id": ids.CONTACT.format(conversation.contact_id) if conversation.contact_id else None,
    }
    await add_event(conn, outbox, ENQUEUE_JOB_TOPIC, message_id, payload, now)


async def _message_created(conn: AsyncConnection, conversation: Conversation, message: Message, now: datetime) -> None:
    """The `message.created` webhook event (docs/webhooks.md), in the caller's transaction: for a
    user message when it is sent and an assistant reply once it is final (created whole, or a
    placeholder finalized), never for streaming updates, failed placeholders or system messages."""
    message_ref = ids.MESSAGE.format(message.id)
    data = {
        "message_id": message_ref,
        "conversation_id": ids.CONVERSATION.format(conversation.id),
        "role": message.role.value,
        "channel": message.channel.value,
        "content": message.content,
        "status": message.status.value,
        "create_time": message.created_at.isoformat(),
        "job_id": ids.JOB.format(message.job_id) if message.job_id else None,
    }
    event = webhook_event(
        WebhookEventType.MESSAGE_CREATED, message_ref, occurred_at=message.updated_at,
        owner_user_id=conversation.user_id, owner_contact_id=conversation.contact_id, data=data,
    )
    await add_events(conn, outbox, [event], now)


async def _send(uow: UnitOfWork, deps: Deps, conversation: Conversation, content: str) -> Message:
    """The user message on the conversation's channel, the auto-title, and the agent job
    (outbox), all in the caller's transaction."""
    now = deps.clock()
    message = await store.insert_message(
        uow.conn,
        message_id=ids.MESSAGE.new(),
        conversation=conversation,
        role=MessageRole.USER,
        content=content,
        status=MessageStatus.SENT,
        now=now,
    )
    title = auto_title(conversation.title, content)
    if title is not None:
        conversation = await conversation_store.set_conversation_meta(uow.conn, conversation.id, conversation.revision, now, title=title)
    await _enqueue_job(uow.conn, conversation, message, now)
    await _message_created(uow.conn, conversation, message, now)
    await announce(uow.conn, conversation)
    return message


async def send_message(
    deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID, content: str, strategy: DoubleTexting | None = None
) -> Message | None:
    """None (nothing written) when the conversation is not the caller's. `strategy` (else the
    conversation's setting) says what the message does while the agent is still busy with the
    conversation (docs/double-texting.md). The conversation's lock serializes its sends, so a
    second message sent 10 ms after the first sees the first's job, queued or not yet."""
    content = rules.check_content(content)
    async with deps.uow() as uow:
        conversation = await owned_locked(uow, user, conversation_id)
        if conversation is None:
            return None
        strategy = strategy or conversation.double_texting
        awaiting: list[uuid.UUID] = []
        if strategy is not DoubleTexting.ENQUEUE:
            awaiting = await store.messages_awaiting_jobs(
                uow.conn, ENQUEUE_JOB_TOPIC, ids.CONVERSATION.format(conversation.id)
            )
        # Busy: a job whose EnqueueJob is still in our outbox, or one agent_queue holds. A job
        # leaves the outbox only once agent_queue stored it, so one of the two sees every job.
        if strategy is DoubleTexting.REJECT and (awaiting or await deps.active_jobs.any_active(conversation.id)):
            raise FailedPrecondition(busy_refusal())
        message = await _send(uow, deps, conversation, content)
        if strategy.cancels:
            await _interrupt(uow, deps, conversation, message, awaiting, rollback=strategy is DoubleTexting.ROLLBACK)
        await uow.commit()
    deps.kick_outbox()
    return message


async def _interrupt(
    uow: UnitOfWork, deps: Deps, conversation: Conversation, message: Message, awaiting: list[uuid.UUID], *, rollback: bool
) -> None:
    """In the send's transaction: the event that cancels every job of the conversation older than
    `message` (those agent_queue holds, and those still in our outbox, `awaiting`), and for a
    rollback the partial reply of the run in progress deleted at once. A reply the cancelled run
    creates or finishes later is deleted when its job ends (FailJobPlaceholders with `discard`)."""
    now = deps.clock()
    payload = {
        "conversation_id": ids.CONVERSATION.format(conversation.id),
        "before_message_id": ids.MESSAGE.format(message.id),
        # agent_queue takes at most this many per call; older ones are a backlog of a peer down for
        # long, and still cancelled by `before_message_id` if they arrive before this event.
        "message_ids": [ids.MESSAGE.format(m) for m in awaiting[-CANCEL_AWAITING_MAX:]],
        "conversation_user_id": ids.USER.format(conversation.user_id) if conversation.user_id else None,
        "conversation_contact_id": ids.CONTACT.format(conversation.contact_id) if conversation.contact_id else None,
        "discard_reply": rollback,
    }
    await add_event(uow.conn, outbox, CANCEL_JOBS_TOPIC, ids.MESSAGE.format(message.id), payload, now)
    if rollback:
        removed = await store.remove_messages(
            uow.conn, store.open_placeholders(), conversation.id, conversation.revision, now
        )
        if removed:
            log.info(
                "messages.partial_reply_rolled_back",
                conversation_id=ids.CONVERSATION.format(conversation.id),
                message_ids=[ids.MESSAGE.format(m) for m in removed],
            )


async def send_message_as_service(deps: Deps, conversation_id: uuid.UUID, content: str) -> Message:
    content = rules.check_content(content)
    async with deps.uow() as uow:
        conversation = await lock_conversation(uow, conversation_id)
        message = await _send(uow, deps, conversation, content)
        await uow.commit()
    deps.kick_outbox()
    return message


async def create_assistant_message(
    deps: Deps, conversation_id: uuid.UUID, content: str, tool_calls: Sequence[ToolCall]
) -> Message:
    """A finished assistant message: no job, no outbound row."""
    content = rules.check_content(content)
    calls = rules.check_tool_calls(tool_calls)
    async with deps.uow() as uow:
        conversation = await lock_conversation(uow, conversation_id)
        message = await store.insert_message(
            uow.conn,
            message_id=ids.MESSAGE.new(),
            conversation=conversation,
            role=MessageRole.ASSISTANT,
            content=content,
            status=MessageStatus.SENT,
            tool_calls=calls,
            now=deps.clock(),
        )
        await _message_created(uow.conn, conversation, message, message.created_at)
        await announce(uow.conn, conversation)
        await uow.commit()
    deps.kick_outbox()
    return message


@dataclass(frozen=True)
class SystemMessage:
    message: Message
    created: bool


async def create_system_message(
    deps: Deps, conversation_id: uuid.UUID, content: str, idempotency_key: str, enqueue_job: bool
) -> SystemMessage:
    """A system message (compaction summaries), plus the idempotent form peers' outboxes
    deliver (scheduled-task triggers with a job, phone-verification texts)."""
    content = rules.check_content(content)
    key = rules.check_idempotency_key(idempotency_key)
    async with deps.uow() as uow:
        conversation = await lock_conversation(uow, conversation_id)
        if key is not None:
            # The conversation lock serializes repeats of one key; the unique index backs it.
            earlier = await store.get_message_by_idempotency_key(uow.conn, conversation.id, key)
            if earlier is not None:
                return SystemMessage(earlier, created=False)
        now = deps.clock()
        message = await store.insert_message(
            uow.conn,
            message_id=ids.MESSAGE.new(),
            conversation=conversation,
            role=MessageRole.SYSTEM,
            content=content,
            status=MessageStatus.SENT,
            idempotency_key=key,
            now=now,
        )
        if enqueue_job:
            await _enqueue_job(uow.conn, conversation, message, now)
        await announce(uow.conn, conversation)
        await uow.commit()
    if enqueue_job:
        deps.kick_outbox()
    return SystemMessage(message, created=True)


async def create_placeholder(deps: Deps, conversation_id: uuid.UUID, job_id: uuid.UUID | None = None) -> Message:
    """An empty streaming assistant message, linked to the job it answers when the runtime
    names one (FailJobPlaceholders fails it if the job ends its attempt first)."""
    async with deps.uow() as uow:
        conversation = await lock_conversation(uow, conversation_id)
        message = await store.insert_message(
            uow.conn,
            message_id=ids.MESSAGE.new(),
            conversation=conversation,
            role=MessageRole.ASSISTANT,
            content="",
            status=MessageStatus.PENDING,
            streaming=True,
            job_id=job_id,
            now=deps.clock(),
        )
        await announce(uow.conn, conversation)
        await uow.commit()
    return message


async def _lock_message(uow: UnitOfWork, message_id: uuid.UUID) -> tuple[Conversation, Message]:
    """The message and its conversation, the conversation locked with a new revision. Every
    message writer takes that lock first, so the message cannot change until commit."""
    message = await store.get_message(uow.conn, message_id)
    if message is None:
        raise NotFound(MESSAGE_NOT_FOUND)  # a clean NOT_FOUND, not a crash (docs/hardening.md #30)
    conversation = await lock_conversation(uow, message.conversation_id)
    current = await store.get_message(uow.conn, message_id)
    if current is None:
        raise NotFound(MESSAGE_NOT_FOUND)  # deleted meanwhile by a rollback (docs/double-texting.md)
    return conversation, current


async def update_streaming_content(deps: Deps, message_id: uuid.UUID, content: str, sequence: int) -> bool:
    """Replaces a placeholder's content: only while streaming, only assistant placeholders
    (docs/hardening.md #28). False when `sequence` shows the update arrived out of order."""
    content = rules.check_optional_content(content)
    sequence = rules.check_sequence(sequence)
    if await store.stream_content(
        deps.db, message_id, content, sequence, deps.clock(),
        conversation_channel=CONVERSATION_CHANNEL, list_channel=CONVERSATION_LIST_CHANNEL,
    ):
        return True
    # Refused: say why from the message as it is now (rare: the runtime streams in order).
    async with deps.uow() as uow:
        current = await store.get_message(uow.conn, message_id)
    if current is None:
        raise NotFound(MESSAGE_NOT_FOUND)
    if not rules.is_open_placeholder(current):
        raise rules.refuse_streaming_change(current, "UpdateStreamingContent")
    return False  # an older sequence than the last applied one: dropped


async def finalize_message(deps: Deps, message_id: uuid.UUID, content: str, tool_calls: Sequence[ToolCall]) -> Message:
    """streaming=false, status=SENT. A finalized or failed message cannot change again."""
    content = rules.check_optional_content(content)
    calls = rules.check_tool_calls(tool_calls)
    async with deps.uow() as uow:
        conversation, current = await _lock_message(uow, message_id)
        finalized = await store.close_placeholder(
            uow.conn, message_id, conversation.revision, deps.clock(),
            status=MessageStatus.SENT, content=content, tool_calls=calls,
        )
        if finalized is None:
            raise rules.refuse_streaming_change(current, "FinalizeMessage")
        await _message_created(uow.conn, conversation, finalized, finalized.updated_at)
        await announce(uow.conn, conversation)
        await uow.commit()
    deps.kick_outbox()
    return finalized


async def fail_placeholder(deps: Deps, message_id: uuid.UUID) -> Message:
    """streaming=false, status=FAILED, partial content kept (docs/hardening.md #11). Repeating
    it is a no-op; a finalized message is FAILED_PRECONDITION."""
    async with deps.uow() as uow:
        conversation, current = await _lock_message(uow, message_id)
        if current.role is MessageRole.ASSISTANT and current.status is MessageStatus.FAILED and not current.streaming:
            return current
        failed = await store.close_placeholder(
            uow.conn, message_id, conversation.revision, deps.clock(), status=MessageStatus.FAILED
        )
        if failed is None:
            raise rules.refuse_streaming_change(current, "FailPlaceholder")
        await announce(uow.conn, conversation)
        await uow.commit()
    return failed


@dataclass(frozen=True)
class JobReplies:
    failed: list[Message]
    removed: list[uuid.UUID]


async def fail_job_placeholders(
    deps: Deps, job_id: uuid.UUID, reason: str, created_before: datetime | None, discard: bool = False
) -> JobReplies:
    """agent_queue ended the job's attempt (its outbox calls this): its open placeholders fail, or
    with `discard` (a rolled-back cancelled job) all its replies are deleted."""
    if discard:
        rules.check_job_failure_reason(reason)
        return JobReplies([], await _remove_job_replies(deps, job_id))
    return JobReplies(await _fail_job_placeholders(deps, job_id, reason, created_before), [])


async def _remove_job_replies(deps: Deps, job_id: uuid.UUID) -> list[uuid.UUID]:
    """Every assistant message of the job deleted, conversation by conversation in id order (the
    lock order). A repeat finds none and changes nothing."""
    removed: list[uuid.UUID] = []
    async with deps.uow() as uow:
        now = deps.clock()
        for conversation_id in await store.conversations_with_replies_of_job(uow.conn, job_id):
            conversation = await lock_conversation(uow, conversation_id)
            gone = await store.remove_messages(
                uow.conn, store.replies_of_job(job_id), conversation_id, conversation.revision, now
            )
            if gone:
                await announce(uow.conn, conversation)
            removed.extend(gone)
        if not removed:
            return []
        await uow.commit()
    log.info(
        "messages.job_replies_removed",
        job_id=ids.JOB.format(job_id),
        message_ids=[ids.MESSAGE.format(m) for m in removed],
    )
    return removed


async def _fail_job_placeholders(
    deps: Deps, job_id: uuid.UUID, reason: str, created_before: datetime | None
) -> list[Message]:
    """agent_queue requeued the job or failed it for good (its outbox calls this): every
    placeholder linked to the job that still streams (created before `created_before`, when
    given) fails as in fail_placeholder (docs/hardening.md #40). Finalized and already failed
    ones are left alone, so a repeated delivery changes nothing."""
    why = rules.check_job_failure_reason(reason)
    failed: list[Message] = []
    async with deps.uow() as uow:
        now = deps.clock()
        conversation_ids = await store.conversations_with_open_placeholders(uow.conn, job_id, created_before)
        for conversation_id in conversation_ids:  # id order: two calls never wait on each other in a cycle
            conversation = await lock_conversation(uow, conversation_id)
            closed = await store.fail_open_placeholders_of_job(
                uow.conn, job_id, conversation_id, created_before, conversation.revision, now
            )
            if closed:
                await announce(uow.conn, conversation)
            failed.extend(closed)
        if not failed:
            return []  # nothing was open (a repeat): no revision spent
        await uow.commit()
    log.info(
        "messages.job_placeholders_failed",
        job_id=ids.JOB.format(job_id),
        reason=why,
        message_ids=[ids.MESSAGE.format(m.id) for m in failed],
    )
    return failed


async def mark_message_delivery(deps: Deps, message_id: uuid.UUID, outcome: MessageStatus) -> Message:
    """The delivery service reports DELIVERED or FAILED for a stored message
    (docs/hardening.md #27); repeating the same outcome changes nothing."""
    (mark,) = await mark_messages_delivery(deps, [(message_id, outcome)])
    if mark.outcome is rules.MarkOutcome.NOT_FOUND:
        raise NotFound(MESSAGE_NOT_FOUND)  # a clean NOT_FOUND, not a crash (docs/hardening.md #30)
    if mark.outcome is rules.MarkOutcome.REFUSED:
        raise FailedPrecondition(mark.reason)
    async with deps.uow() as uow:
        message = await store.get_message(uow.conn, message_id)
    if message is None:
        raise NotFound(MESSAGE_NOT_FOUND)  # deleted right after (docs/double-texting.md)
    return message


async def mark_messages_delivery(
    deps: Deps, reports: Sequence[tuple[uuid.UUID, MessageStatus]]
) -> list[rules.DeliveryMark]:
    """Many delivery outcomes in one statement, each judged as MarkMessageDelivery judges it; one
    verdict per report, in order. A message reported twice takes the first outcome, and the
    second is judged against it."""
    rules.check_delivery_mark_count(len(reports))
    first: dict[uuid.UUID, MessageStatus] = {}
    for message_id, outcome in reports:
        first.setdefault(message_id, outcome)
    marked = await store.mark_deliveries(
        deps.db, first, deps.clock(), conversation_channel=CONVERSATION_CHANNEL, list_channel=CONVERSATION_LIST_CHANNEL
    )
    verdicts: list[rules.DeliveryMark] = []
    current: dict[uuid.UUID, Message] | None = None
    for message_id, outcome in reports:
        if message_id in marked:
            marked.discard(message_id)  # a later report of the same message is judged below
            verdicts.append(rules.DeliveryMark(message_id, rules.MarkOutcome.MARKED))
            continue
        if current is None:  # rare: a repeated report, a refusal or an unknown id
            async with deps.uow() as uow:
                current = await store.get_messages(uow.conn, list(first))
        verdicts.append(rules.judge_delivery_mark(current.get(message_id), message_id, outcome))
    return verdicts


async def list_messages(deps: Deps, user: ResolvedUser, conversation_id: uuid.UUID, page: PageRequest) -> Page[Message]:
    """Empty when not owned or missing."""
    async with deps.uow() as uow:
        if owned(await conversation_store.get_conversation(uow.conn, conversation_id), user) is None:
            return Page([], "")
        found = await store.list_messages(uow.conn, conversation_id, page)
    return Page(found, next_token([m.id for m in found], page.size))


async def get_message(deps: Deps, user: ResolvedUser, message_id: uuid.UUID) -> Message | None:
    async with deps.uow() as uow:
        message = await store.get_message(uow.conn, message_id)
        if message is None:
            return None
        if owned(await conversation_store.get_conversation(uow.conn, message.conversation_id), user) is None:
            return None
    return message
