"""MarkMessagesDelivery: the delivery outbox's batched reports of what became of outbound
messages (docs/hardening.md #27), each item judged as MarkMessageDelivery judges it, one
statement for the batch, watchers woken, and two batches racing over the same conversations
never both marking a message or deadlocking."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.service.messages.test_watch import next_response, watch
from tests.support.grpc_client import rpc_error, service
from tests.support.messages_builders import web_conversation
from tests.support.streams import read_until
from zenthor import ids
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

DELIVERED, FAILED = pb.MESSAGE_STATUS_DELIVERED, pb.MESSAGE_STATUS_FAILED
READ_TIMEOUT_S = 20.0


async def reply(messages: Running, conversation_id: str, content: str = "hi") -> pb.Message:
    created = await messages.stub.CreateAssistantMessage(
        pb.CreateAssistantMessageRequest(conversation_id=conversation_id, content=content), metadata=service()
    )
    return created.message


async def mark(messages: Running, *items: tuple[str, int]) -> list[tuple[str, int, str]]:
    request = pb.MarkMessagesDeliveryRequest(
        items=[pb.MarkMessageDeliveryRequest(message_id=m, status=s) for m, s in items]
    )
    answer = await messages.stub.MarkMessagesDelivery(request, metadata=service())
    return [(r.message_id, r.outcome, r.reason) for r in answer.results]


def stored(messages: Running, message_id: str) -> tuple[str, int]:
    (row,) = messages.db.sql(
        "SELECT status, revision FROM messages.messages WHERE id = %s", (ids.MESSAGE.parse(message_id, "id"),)
    )
    return row


def revision_of(messages: Running, conversation_id: str) -> int:
    (row,) = messages.db.sql(
        "SELECT revision FROM messages.conversations WHERE id = %s", (ids.CONVERSATION.parse(conversation_id, "id"),)
    )
    return int(row[0])


async def test_each_item_gets_its_verdict_in_order_and_only_the_markable_change(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    w2 = await web_conversation(messages.stub, people.alice)
    a, b, c = await reply(messages, w1.id), await reply(messages, w1.id), await reply(messages, w2.id)
    already = await reply(messages, w2.id)
    await mark(messages, (already.id, DELIVERED))
    streaming = (
        await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())
    ).message
    unknown = ids.MESSAGE.format(ids.MESSAGE.new())
    before = {w: revision_of(messages, w) for w in (w1.id, w2.id)}

    verdicts = await mark(
        messages,
        (a.id, DELIVERED),
        (unknown, DELIVERED),
        (b.id, FAILED),
        (already.id, DELIVERED),  # a repeated report
        (streaming.id, DELIVERED),
        (c.id, DELIVERED),
        (a.id, FAILED),  # the same message again, judged after the first report
        (already.id, FAILED),
    )

    assert verdicts == [
        (a.id, pb.DELIVERY_MARK_OUTCOME_MARKED, ""),
        (unknown, pb.DELIVERY_MARK_OUTCOME_NOT_FOUND, ""),
        (b.id, pb.DELIVERY_MARK_OUTCOME_MARKED, ""),
        (already.id, pb.DELIVERY_MARK_OUTCOME_ALREADY, ""),
        (streaming.id, pb.DELIVERY_MARK_OUTCOME_REFUSED, "message is still streaming"),
        (c.id, pb.DELIVERY_MARK_OUTCOME_MARKED, ""),
        (a.id, pb.DELIVERY_MARK_OUTCOME_REFUSED, "message is already delivered; cannot mark it failed"),
        (already.id, pb.DELIVERY_MARK_OUTCOME_REFUSED, "message is already delivered; cannot mark it failed"),
    ]
    assert [stored(messages, m.id)[0] for m in (a, b, c, already, streaming)] == [
        "delivered", "failed", "delivered", "delivered", "pending"
    ]
    # Each marked message has a revision of its own in its conversation (a watcher's page never
    # splits one), above what the conversation showed before and within what it shows now.
    for conversation, marked in ((w1.id, (a, b)), (w2.id, (c,))):
        revisions = [stored(messages, m.id)[1] for m in marked]
        assert len(set(revisions)) == len(revisions)
        assert all(before[conversation] < r <= revision_of(messages, conversation) for r in revisions)
    # The single-message RPC keeps its answers on the same rules.
    error = await rpc_error(
        messages.stub.MarkMessageDelivery(pb.MarkMessageDeliveryRequest(message_id=unknown, status=FAILED), metadata=service())
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    again = await messages.stub.MarkMessageDelivery(
        pb.MarkMessageDeliveryRequest(message_id=c.id, status=DELIVERED), metadata=service()
    )
    assert again.message.status == DELIVERED


async def test_a_watcher_sees_every_mark_of_a_batch(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    replies = [await reply(messages, w1.id, f"r{i}") for i in range(3)]
    call = watch(messages, people, w1.id)
    try:
        assert (await next_response(call)).caught_up
        await mark(messages, *((r.id, DELIVERED) for r in replies))
        seen: dict[str, int] = {}

        def all_delivered(response: pb.WatchConversationResponse) -> bool:
            seen.update({m.id: m.status for m in response.messages})
            return all(seen.get(r.id) == DELIVERED for r in replies)

        await read_until(call, all_delivered, READ_TIMEOUT_S)
    finally:
        call.cancel()


async def test_bad_batches_are_refused_naming_the_field(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    good = await reply(messages, w1.id)
    item = pb.MarkMessageDeliveryRequest
    cases = [
        ("items", []),
        ("items", [item(message_id=good.id, status=DELIVERED)] * 101),
        ("items[1].message_id", [item(message_id=good.id, status=DELIVERED), item(message_id="msg_nope", status=DELIVERED)]),
        ("items[0].status", [item(message_id=good.id, status=pb.MESSAGE_STATUS_SENT)]),
    ]
    for field, items in cases:
        error = await rpc_error(
            messages.stub.MarkMessagesDelivery(pb.MarkMessagesDeliveryRequest(items=items), metadata=service())
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error.details().startswith(f"{field}:"), error.details()
    assert stored(messages, good.id)[0] == "sent"  # nothing half-applied
    error = await rpc_error(
        messages.stub.MarkMessagesDelivery(pb.MarkMessagesDeliveryRequest(items=[item(message_id=good.id, status=DELIVERED)]), metadata=people.alice)
    )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED  # a SERVICE RPC: a person's token is not the key


@pytest.mark.timeout(120)
async def test_racing_batches_over_shared_conversations_mark_each_message_once(messages: Running, people: People) -> None:
    # Eight batches at once, each over the same 40 messages of 4 conversations in its own order
    # and with its own outcome per message: every message ends with exactly one MARKED verdict,
    # its stored outcome is that batch's, and no batch dies of a deadlock.
    conversations = [await web_conversation(messages.stub, people.alice) for _ in range(4)]
    targets = [await reply(messages, conversations[i % 4].id, f"m{i}") for i in range(40)]
    rng = random.Random(7)
    batches = []
    for _ in range(8):
        order = list(targets)
        rng.shuffle(order)
        batches.append([(m.id, rng.choice((DELIVERED, FAILED))) for m in order])

    results = await asyncio.gather(*(mark(messages, *batch) for batch in batches))

    winners: dict[str, list[int]] = {}
    for batch, verdicts in zip(batches, results, strict=True):
        asked = dict(batch)
        for message_id, outcome, _ in verdicts:
            if outcome == pb.DELIVERY_MARK_OUTCOME_MARKED:
                winners.setdefault(message_id, []).append(asked[message_id])
            else:
                assert outcome in (pb.DELIVERY_MARK_OUTCOME_ALREADY, pb.DELIVERY_MARK_OUTCOME_REFUSED)
    assert sorted(winners) == sorted(m.id for m in targets)
    for message_id, outcomes in winners.items():
        assert len(outcomes) == 1, message_id
        expected = "delivered" if outcomes[0] == DELIVERED else "failed"
        assert stored(messages, message_id)[0] == expected
