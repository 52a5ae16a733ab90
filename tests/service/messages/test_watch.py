"""Live watches: WatchConversation (current state, then changes in order, resumable from a
position) and WatchConversationList, fed by LISTEN/NOTIFY wake-ups over real Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from tests.service.conftest import Running
from tests.service.messages.conftest import People
from tests.support.grpc_client import service
from tests.support.messages_builders import web_conversation, whatsapp_conversation
from tests.support.streams import read_until
from zenthor import ids
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

READ_TIMEOUT_S = 20.0


async def next_response(call: Any) -> Any:
    response = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
    assert response is not grpc.aio.EOF, "the stream ended"
    return response


def watch(messages: Running, people: People, conversation_id: str, position: str = "") -> Any:
    return messages.stub.WatchConversation(
        pb.WatchConversationRequest(conversation_id=conversation_id, resume_position=position), metadata=people.alice
    )


async def send(messages: Running, people: People, conversation_id: str, content: str) -> pb.Message:
    reply = await messages.stub.SendMessage(pb.SendMessageRequest(conversation_id=conversation_id, content=content), metadata=people.alice)
    return reply.message


async def test_watch_sends_the_current_state_first_then_each_change(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    first = await send(messages, people, w1.id, "hello")
    call = watch(messages, people, w1.id)
    try:
        initial = await next_response(call)
        assert initial.caught_up
        assert initial.conversation.id == w1.id and initial.conversation.title == "hello"
        assert [m.id for m in initial.messages] == [first.id]
        placeholder = (
            await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())
        ).message
        created = await read_until(call, lambda r: any(m.id == placeholder.id for m in r.messages), READ_TIMEOUT_S)
        assert [(m.id, m.streaming) for m in created.messages] == [(placeholder.id, True)]
        assert not created.HasField("conversation")  # title and status did not change
        await messages.stub.UpdateStreamingContent(
            pb.UpdateStreamingContentRequest(message_id=placeholder.id, content="Hi"), metadata=service()
        )
        grown = await read_until(call, lambda r: any(m.content == "Hi" for m in r.messages), READ_TIMEOUT_S)
        assert [(m.id, m.content) for m in grown.messages] == [(placeholder.id, "Hi")]
        await messages.stub.UpdateConversationTitle(pb.UpdateConversationTitleRequest(id=w1.id, title="Renamed"), metadata=people.alice)
        renamed = await read_until(call, lambda r: r.conversation.title == "Renamed", READ_TIMEOUT_S)
        assert list(renamed.messages) == []
    finally:
        call.cancel()


async def test_two_hundred_streaming_updates_reach_a_watcher_in_order(messages: Running, people: People) -> None:
    # Acceptance: 200 UpdateStreamingContent calls 5 ms apart; intermediate states may be
    # coalesced, never reordered; the last state seen equals the finalized message.
    w1 = await web_conversation(messages.stub, people.alice)
    placeholder = (
        await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())
    ).message
    texts = [" ".join(f"w{j}" for j in range(i + 1)) for i in range(200)]
    final_text = texts[-1] + "."
    call = watch(messages, people, w1.id)
    try:
        assert (await next_response(call)).caught_up

        async def stream() -> None:
            for i, text in enumerate(texts, start=1):
                await messages.stub.UpdateStreamingContent(
                    pb.UpdateStreamingContentRequest(message_id=placeholder.id, content=text, sequence=i), metadata=service()
                )
                await asyncio.sleep(0.005)
            await messages.stub.FinalizeMessage(
                pb.FinalizeMessageRequest(message_id=placeholder.id, content=final_text), metadata=service()
            )

        producer = asyncio.create_task(stream())
        seen: list[pb.Message] = []
        while not seen or seen[-1].streaming:
            response = await next_response(call)
            seen += [m for m in response.messages if m.id == placeholder.id]
        await producer
    finally:
        call.cancel()
    order = [texts.index(m.content) if m.streaming else len(texts) for m in seen]
    assert order == sorted(order), "a watcher saw streaming content go backwards"
    assert len(set(order)) == len(order), "a state was sent twice"
    assert seen[-1].content == final_text and seen[-1].status == pb.MESSAGE_STATUS_SENT
    stored = await messages.stub.GetMessage(pb.GetMessageRequest(id=placeholder.id), metadata=people.alice)
    assert seen[-1] == stored.message
    print(f"\n200 updates at 5 ms: the watcher received {len(seen)} states of the placeholder")


async def test_a_reconnect_with_the_last_position_misses_nothing(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    await send(messages, people, w1.id, "before")
    call = watch(messages, people, w1.id)
    initial = await next_response(call)
    call.cancel()
    latest = {m.id: m for m in initial.messages}
    # While disconnected: new messages, a placeholder that streams and finalizes, a rename.
    missed = [await send(messages, people, w1.id, f"missed {i}") for i in range(3)]
    placeholder = (
        await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())
    ).message
    await messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=placeholder.id, content="answer"), metadata=service())
    await messages.stub.UpdateConversationTitle(pb.UpdateConversationTitleRequest(id=w1.id, title="Later"), metadata=people.alice)
    resumed = watch(messages, people, w1.id, initial.position)
    try:
        backlog = await next_response(resumed)
    finally:
        resumed.cancel()
    assert backlog.caught_up
    assert [m.id for m in backlog.messages] == [m.id for m in missed] + [placeholder.id]
    assert backlog.messages[-1].content == "answer" and not backlog.messages[-1].streaming
    assert backlog.conversation.title == "Later"
    latest.update({m.id: m for m in backlog.messages})
    listed = await messages.stub.ListMessages(pb.ListMessagesRequest(conversation_id=w1.id), metadata=people.alice)
    assert latest == {m.id: m for m in listed.messages}


async def test_a_watcher_that_keeps_reconnecting_during_writes_ends_with_every_change(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)

    async def write() -> None:
        for i in range(60):
            if i % 3 == 0:
                await send(messages, people, w1.id, f"user {i}")
            else:
                m = (await messages.stub.CreatePlaceholder(pb.CreatePlaceholderRequest(conversation_id=w1.id), metadata=service())).message
                await messages.stub.UpdateStreamingContent(
                    pb.UpdateStreamingContentRequest(message_id=m.id, content=f"part {i}"), metadata=service()
                )
                await messages.stub.FinalizeMessage(pb.FinalizeMessageRequest(message_id=m.id, content=f"reply {i}"), metadata=service())

    writer = asyncio.create_task(write())
    latest: dict[str, pb.Message] = {}
    position = ""
    reconnects = 0
    while True:
        done = writer.done()
        call = watch(messages, people, w1.id, position)
        try:
            for _ in range(2 if not done else 10_000):  # read a little, then drop the connection
                try:
                    response = await (next_response(call) if done else asyncio.wait_for(call.read(), 1.0))
                except TimeoutError:
                    break  # the writer finished meanwhile: reconnect and catch up
                latest.update({m.id: m for m in response.messages})
                position = response.position
                if done and response.caught_up:
                    break
        finally:
            call.cancel()
        reconnects += 1
        if done:
            break
    await writer
    listed = await messages.stub.ListMessages(pb.ListMessagesRequest(conversation_id=w1.id), metadata=people.alice)
    assert len(listed.messages) == 60
    assert latest == {m.id: m for m in listed.messages}
    assert reconnects > 1


async def test_a_large_conversation_arrives_in_chunks_before_caught_up(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    sent = [(await send(messages, people, w1.id, f"m{i}")).id for i in range(230)]
    call = watch(messages, people, w1.id)
    try:
        first = await next_response(call)
        second = await next_response(call)
    finally:
        call.cancel()
    assert (len(first.messages), first.caught_up) == (200, False)
    assert (len(second.messages), second.caught_up) == (30, True)
    assert [m.id for m in [*first.messages, *second.messages]] == sent


async def test_watching_someone_elses_or_a_missing_conversation_gets_one_empty_answer(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice)
    await send(messages, people, w1.id, "secret")
    for conversation_id in (w1.id, ids.CONVERSATION.format(ids.CONVERSATION.new())):
        call = messages.stub.WatchConversation(pb.WatchConversationRequest(conversation_id=conversation_id), metadata=people.bob)
        async with asyncio.timeout(READ_TIMEOUT_S):
            responses = [r async for r in call]
        assert len(responses) == 1
        assert responses[0].caught_up and list(responses[0].messages) == []
        assert not responses[0].HasField("conversation")


async def test_conversation_list_watch_sends_a_snapshot_then_one_after_each_change(messages: Running, people: People) -> None:
    w1 = await web_conversation(messages.stub, people.alice, title="Web")
    wa1 = await whatsapp_conversation(messages.stub, people.k1_id)
    call = messages.stub.WatchConversationList(pb.WatchConversationListRequest(), metadata=people.alice)
    bobs = messages.stub.WatchConversationList(pb.WatchConversationListRequest(), metadata=people.bob)
    try:
        first = await next_response(call)
        assert [r.conversation.id for r in first.conversations] == [wa1.id, w1.id]
        assert list((await next_response(bobs)).conversations) == []
        # A WhatsApp message reaches Alice's list through her linked contact.
        await messages.stub.SendMessageAsService(
            pb.SendMessageAsServiceRequest(conversation_id=wa1.id, content="oi"), metadata=service()
        )
        after_send = await read_until(call, lambda r: r.conversations[0].last_message.content == "oi", READ_TIMEOUT_S)
        assert after_send.conversations[0].conversation.id == wa1.id
        await send(messages, people, w1.id, "web again")
        await read_until(call, lambda r: [c.conversation.id for c in r.conversations] == [w1.id, wa1.id], READ_TIMEOUT_S)
        await messages.stub.ArchiveConversation(pb.ArchiveConversationRequest(id=w1.id), metadata=people.alice)
        await read_until(call, lambda r: [c.conversation.id for c in r.conversations] == [wa1.id], READ_TIMEOUT_S)
        # Bob's watch stayed silent: nothing of Alice's changed anything he can see.
        try:
            extra = await asyncio.wait_for(bobs.read(), 0.5)
        except TimeoutError:
            extra = None
        assert extra is None
    finally:
        call.cancel()
        bobs.cancel()
