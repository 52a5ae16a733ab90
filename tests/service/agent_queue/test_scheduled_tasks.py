"""Scheduled tasks over gRPC with the real messages server: the trigger message goes through
the outbox to messages on the conversation's own channel (docs/hardening.md #19), and messages
enqueues its job back here."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc

from tests.service.agent_queue.conftest import WithMessages
from tests.service.conftest import Running
from tests.support.agent_queue_builders import T0, ManualClock, conv, conv_id
from tests.support.builders import add_contact, alice, boss
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.messages_builders import web_conversation, whatsapp_conversation
from tests.support.waiting import eventually
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as mpb

HOUR = timedelta(hours=1)
# The outbox rows of trigger messages (beside them: the tasks' workflow starts and signals).
TRIGGERS = "topic = 'messages.create_system_message'"


def interval(value: timedelta) -> Any:
    from services.agent_queue.wire import duration_pb

    return duration_pb(value)


async def create(aq: Running, name: str, every: timedelta, payload: str, conversation: str | None = None, enabled: bool = True) -> pb.ScheduledTask:
    reply = await aq.stub.CreateScheduledTask(
        pb.CreateScheduledTaskRequest(
            name=name, interval=interval(every), payload=payload, enabled=enabled, conversation_id=conversation
        ),
        metadata=service(),
    )
    return reply.task


async def process(aq: Running) -> pb.ProcessDueScheduledTasksResponse:
    return await aq.stub.ProcessDueScheduledTasks(pb.ProcessDueScheduledTasksRequest(), metadata=service())


async def get(aq: Running, task: pb.ScheduledTask) -> pb.ScheduledTask:
    admin = bearer(aq.issuer.token("user_boss"))
    return (await aq.stub.GetScheduledTask(pb.GetScheduledTaskRequest(id=task.id), metadata=admin)).task


def ts(value: Any) -> float:
    return float(value.ToDatetime().timestamp())


async def history(both: WithMessages, conversation_id: str) -> list[mpb.Message]:
    reply = await both.messages.stub.GetConversationHistory(
        mpb.GetConversationHistoryRequest(conversation_id=conversation_id), metadata=service()
    )
    return list(reply.messages)


async def test_interval_task_fires_a_trigger_message_and_a_job(with_messages: WithMessages, clock: ManualClock) -> None:
    alice(with_messages.messages.db)
    w1 = await web_conversation(with_messages.messages.stub, bearer(with_messages.messages.issuer.token("user_alice")))
    aq = with_messages.agent_queue
    task = await create(aq, "standup", HOUR, "Ask about blockers", w1.id)
    assert ts(task.create_time) == T0.timestamp() and ts(task.next_run_time) == (T0 + HOUR).timestamp()

    clock.set(T0 + HOUR + timedelta(minutes=2))
    swept = await process(aq)
    assert (swept.fired, swept.advanced, swept.more) == (1, 0, False)
    boss(aq.db)
    fired = await get(aq, task)
    assert ts(fired.last_run_time) == clock.now.timestamp()
    assert ts(fired.next_run_time) == (T0 + 2 * HOUR + timedelta(minutes=2)).timestamp()

    await eventually(lambda: bool(aq.db.sql("SELECT 1 FROM agent_queue.jobs")))
    (message,) = await history(with_messages, w1.id)
    assert message.content == "[Scheduled Task: standup] Ask about blockers"
    assert message.role == mpb.MESSAGE_ROLE_SYSTEM and message.status == mpb.MESSAGE_STATUS_SENT
    assert message.channel == common.CHANNEL_WEB
    ((message_id, status),) = aq.db.sql("SELECT message_id, status FROM agent_queue.jobs")
    assert f"msg_{message_id.hex}" == message.id and status == "pending"


async def test_trigger_message_is_written_on_the_conversations_own_channel(
    with_messages: WithMessages, clock: ManualClock
) -> None:
    # docs/hardening.md #19: the original always wrote channel "web", even for WhatsApp conversations.
    db = with_messages.messages.db
    contact = add_contact(db, "5511999990000", user_id=alice(db))
    wa1 = await whatsapp_conversation(with_messages.messages.stub, contact)
    aq = with_messages.agent_queue
    await create(aq, "check-in", HOUR, "How are you?", wa1.id)
    clock.advance(HOUR)
    await process(aq)
    await eventually(lambda: bool(aq.db.sql("SELECT 1 FROM agent_queue.jobs")))
    (message,) = await history(with_messages, wa1.id)
    assert message.channel == common.CHANNEL_WHATSAPP
    # The job carries the owner for IsConversationProcessing.
    assert aq.db.sql("SELECT conversation_contact_id FROM agent_queue.jobs") == [(contact,)]


async def test_a_replayed_trigger_makes_one_message(with_messages: WithMessages, clock: ManualClock) -> None:
    alice(with_messages.messages.db)
    w1 = await web_conversation(with_messages.messages.stub, bearer(with_messages.messages.issuer.token("user_alice")))
    aq = with_messages.agent_queue
    await create(aq, "standup", HOUR, "Ask", w1.id)
    clock.advance(HOUR)
    await process(aq)
    await eventually(lambda: bool(aq.db.sql("SELECT 1 FROM agent_queue.jobs")))
    # The relay delivers at least once: force a second delivery of the same event (due again:
    # the relay leaves a delivered row's next attempt at the end of its lease). Only the trigger
    # events: the task's workflow events wait for a Temporal this test does not start.
    aq.db.sql(f"UPDATE agent_queue.outbox SET delivered_at = NULL, next_attempt_at = created_at WHERE {TRIGGERS}")
    await eventually(lambda: aq.db.sql(f"SELECT count(*) FROM agent_queue.outbox WHERE delivered_at IS NULL AND {TRIGGERS}") == [(0,)])
    assert len(await history(with_messages, w1.id)) == 1
    assert aq.db.sql("SELECT count(*) FROM agent_queue.jobs") == [(1,)]


async def test_tasks_not_due_disabled_or_without_conversation(agent_queue: Running, clock: ManualClock) -> None:
    c = conv_id(conv())
    clock.set(T0 - 2 * HOUR)
    a = await create(agent_queue, "A", 2 * HOUR + timedelta(minutes=1), "a", c)  # next run T0+1m
    clock.set(T0 - timedelta(minutes=2))
    b = await create(agent_queue, "B", timedelta(minutes=1), "b", c, enabled=False)  # next run T0-1m
    c_task = await create(agent_queue, "C", timedelta(minutes=1), "c")  # next run T0-1m
    agent_queue.db.sql("UPDATE agent_queue.scheduled_tasks SET interval_ms = 600000 WHERE name = 'C'")
    boss(agent_queue.db)
    before_a, before_b = await get(agent_queue, a), await get(agent_queue, b)
    clock.set(T0)
    swept = await process(agent_queue)
    assert (swept.fired, swept.advanced) == (0, 1)
    assert await get(agent_queue, a) == before_a and await get(agent_queue, b) == before_b
    c_after = await get(agent_queue, c_task)
    assert ts(c_after.last_run_time) == T0.timestamp()
    assert ts(c_after.next_run_time) == (T0 + timedelta(minutes=10)).timestamp()
    assert agent_queue.db.sql(f"SELECT count(*) FROM agent_queue.outbox WHERE {TRIGGERS}") == [(0,)]


async def test_zero_interval_fires_once(agent_queue: Running, clock: ManualClock) -> None:
    boss(agent_queue.db)
    task = await create(agent_queue, "once", timedelta(0), "now", conv_id(conv()))
    assert ts(task.next_run_time) == T0.timestamp()
    clock.advance(timedelta(minutes=3))
    assert (await process(agent_queue)).fired == 1
    fired = await get(agent_queue, task)
    assert not fired.HasField("next_run_time") and ts(fired.last_run_time) == clock.now.timestamp()
    clock.advance(HOUR)
    assert (await process(agent_queue)).fired == 0


async def test_admin_update_recomputes_the_next_run_only_for_a_new_interval(agent_queue: Running, clock: ManualClock) -> None:
    boss(agent_queue.db)
    admin = bearer(agent_queue.issuer.token("user_boss"))
    clock.set(T0 - HOUR)
    task = await create(agent_queue, "t", 2 * HOUR, "p")  # next run T0+1h
    clock.set(T0)
    updated = await agent_queue.stub.UpdateScheduledTask(
        pb.UpdateScheduledTaskRequest(id=task.id, interval=interval(timedelta(minutes=10))), metadata=admin
    )
    assert ts(updated.task.next_run_time) == (T0 + timedelta(minutes=10)).timestamp()
    clock.advance(timedelta(minutes=1))
    payload_only = await agent_queue.stub.UpdateScheduledTask(
        pb.UpdateScheduledTaskRequest(id=task.id, payload="new"), metadata=admin
    )
    assert payload_only.task.payload == "new"
    assert ts(payload_only.task.next_run_time) == (T0 + timedelta(minutes=10)).timestamp()
    missing = await agent_queue.stub.UpdateScheduledTask(
        pb.UpdateScheduledTaskRequest(id="task_" + "0" * 32, payload="x"), metadata=admin
    )
    assert not missing.HasField("task")


async def test_admin_lists_and_deletes_tasks(agent_queue: Running) -> None:
    boss(agent_queue.db)
    admin = bearer(agent_queue.issuer.token("user_boss"))
    made = [await create(agent_queue, f"t{i}", HOUR, "p") for i in range(3)]
    listed = await agent_queue.stub.ListScheduledTasks(pb.ListScheduledTasksRequest(), metadata=admin)
    assert [t.id for t in listed.tasks] == [t.id for t in made]
    await agent_queue.stub.DeleteScheduledTask(pb.DeleteScheduledTaskRequest(id=made[0].id), metadata=admin)
    again = await rpc_error(agent_queue.stub.DeleteScheduledTask(pb.DeleteScheduledTaskRequest(id=made[0].id), metadata=admin))
    assert again.code() == grpc.StatusCode.NOT_FOUND


async def test_members_cannot_manage_tasks(agent_queue: Running) -> None:
    alice(agent_queue.db)
    error = await rpc_error(
        agent_queue.stub.ListScheduledTasks(pb.ListScheduledTasksRequest(), metadata=bearer(agent_queue.issuer.token("user_alice")))
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_create_rejects_bad_intervals_and_empty_payloads(agent_queue: Running) -> None:
    for kwargs, field in (
        ({"name": "t", "payload": "p", "interval": interval(timedelta(seconds=30))}, "interval"),
        ({"name": "t", "payload": "p", "interval": interval(timedelta(seconds=-60))}, "interval"),
        ({"name": "t", "payload": "p", "interval": interval(timedelta(days=400))}, "interval"),
        ({"name": "t", "payload": "p"}, "interval"),
        ({"name": "t", "payload": "", "interval": interval(HOUR)}, "payload"),
        ({"name": "", "payload": "p", "interval": interval(HOUR)}, "name"),
    ):
        error = await rpc_error(agent_queue.stub.CreateScheduledTask(pb.CreateScheduledTaskRequest(**kwargs), metadata=service()))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and violated_fields(error) == [field], kwargs
