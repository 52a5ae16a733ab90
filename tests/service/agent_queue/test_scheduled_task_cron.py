"""Scheduled tasks with cron expressions and time zones over gRPC, against the real service and
database: create and update with a cron expression (and the INVALID_ARGUMENT answers, which
write nothing), the next run shown in the task, the workflow's guarded FireScheduledTask beside
the 5-minute sweep (one run fires once, whoever comes first), and the outbox events that start
or wake each task's workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from tests.service.agent_queue.conftest import WithMessages
from tests.service.conftest import Running
from tests.support.agent_queue_builders import ManualClock, conv, conv_id
from tests.support.builders import alice, boss
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.messages_builders import web_conversation
from tests.support.waiting import eventually
from zenthor.clients import violated_fields
from zenthor.convert import timestamp
from zenthor.gen.zenthor.agent_queue.v1 import agent_queue_pb2 as pb
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as mpb

BERLIN = "Europe/Berlin"
WEEKDAYS_AT_NINE = "0 9 * * MON-FRI"
# Wednesday 24 March 2027, 10:00 in Berlin (CET): the week of the spring change (Sunday 28th).
WEDNESDAY = datetime(2027, 3, 24, 9, 0, tzinfo=UTC)
TRIGGERS = "topic = 'messages.create_system_message'"
WORKFLOW_EVENTS = "topic = 'temporal.scheduled_task'"


def at(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


async def create(aq: Running, **fields: Any) -> pb.ScheduledTask:
    request = pb.CreateScheduledTaskRequest(**{"name": "standup", "payload": "Ask about blockers", "enabled": True, **fields})
    reply: pb.CreateScheduledTaskResponse = await aq.stub.CreateScheduledTask(request, metadata=service())
    return reply.task


async def update(aq: Running, **fields: Any) -> pb.ScheduledTask:
    admin = bearer(aq.issuer.token("user_boss"))
    reply: pb.UpdateScheduledTaskResponse = await aq.stub.UpdateScheduledTask(pb.UpdateScheduledTaskRequest(**fields), metadata=admin)
    return reply.task


async def fire(aq: Running, task_id: str, run_time: datetime) -> pb.FireScheduledTaskResponse:
    request = pb.FireScheduledTaskRequest(id=task_id, run_time=timestamp(run_time))
    reply: pb.FireScheduledTaskResponse = await aq.stub.FireScheduledTask(request, metadata=service())
    return reply


def workflow_events(aq: Running) -> list[tuple[str, Any]]:
    return [
        (key.split(":")[0], payload)
        for key, payload in aq.db.sql(f"SELECT key, payload FROM agent_queue.outbox WHERE {WORKFLOW_EVENTS}")
    ]


async def test_a_cron_task_shows_its_expression_zone_and_next_run(agent_queue: Running, clock: ManualClock) -> None:
    clock.set(WEDNESDAY)
    task = await create(agent_queue, cron=WEEKDAYS_AT_NINE, time_zone=BERLIN)

    assert (task.cron, task.time_zone) == (WEEKDAYS_AT_NINE, BERLIN)
    assert not task.HasField("interval")
    assert at(task.next_run_time) == datetime(2027, 3, 25, 8, 0, tzinfo=UTC)  # Thursday 09:00 CET
    assert agent_queue.db.sql("SELECT interval_ms, cron, time_zone FROM agent_queue.scheduled_tasks") == [
        (None, WEEKDAYS_AT_NINE, BERLIN)
    ]
    boss(agent_queue.db)
    admin = bearer(agent_queue.issuer.token("user_boss"))
    shown = (await agent_queue.stub.GetScheduledTask(pb.GetScheduledTaskRequest(id=task.id), metadata=admin)).task
    assert shown == task
    listed = (await agent_queue.stub.ListScheduledTasks(pb.ListScheduledTasksRequest(), metadata=admin)).tasks
    assert list(listed) == [task]


async def test_an_interval_task_is_in_utc_unless_told(agent_queue: Running) -> None:
    task = await create(agent_queue, interval=Duration(seconds=3600))
    assert (task.time_zone, task.HasField("cron"), task.interval.seconds) == ("UTC", False, 3600)


async def test_bad_schedules_are_invalid_argument_naming_the_field_and_write_nothing(agent_queue: Running) -> None:
    hour = Duration(seconds=3600)
    for fields, field in (
        ({"cron": "0 9 * *"}, "cron"),
        ({"cron": "0 9 * * MON-FUN"}, "cron"),
        ({"cron": "0 0 9 * * *"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "cron"),  # never matches
        ({"cron": WEEKDAYS_AT_NINE, "time_zone": "Europe/Atlantis"}, "time_zone"),
        ({"cron": WEEKDAYS_AT_NINE, "time_zone": ""}, "time_zone"),
        ({"cron": WEEKDAYS_AT_NINE, "interval": hour}, "cron"),
        ({}, "interval"),
        ({"time_zone": BERLIN}, "interval"),
    ):
        error = await rpc_error(create(agent_queue, **fields))
        assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), fields
    assert agent_queue.db.sql("SELECT count(*) FROM agent_queue.scheduled_tasks") == [(0,)]
    assert agent_queue.db.sql("SELECT count(*) FROM agent_queue.outbox") == [(0,)]


async def test_an_update_switches_between_interval_and_cron_and_recomputes_the_next_run(
    agent_queue: Running, clock: ManualClock
) -> None:
    boss(agent_queue.db)
    clock.set(WEDNESDAY)
    task = await create(agent_queue, interval=Duration(seconds=3600))

    as_cron = await update(agent_queue, id=task.id, cron=WEEKDAYS_AT_NINE, time_zone=BERLIN)
    assert (as_cron.cron, as_cron.time_zone, as_cron.HasField("interval")) == (WEEKDAYS_AT_NINE, BERLIN, False)
    assert at(as_cron.next_run_time) == datetime(2027, 3, 25, 8, 0, tzinfo=UTC)

    # Only the zone: the same expression, read in Tokyo (09:00 JST = 00:00Z).
    in_tokyo = await update(agent_queue, id=task.id, time_zone="Asia/Tokyo")
    assert (in_tokyo.cron, in_tokyo.time_zone) == (WEEKDAYS_AT_NINE, "Asia/Tokyo")
    assert at(in_tokyo.next_run_time) == datetime(2027, 3, 25, 0, 0, tzinfo=UTC)

    # The payload alone leaves the schedule and its next run alone.
    renamed = await update(agent_queue, id=task.id, payload="new")
    assert renamed.next_run_time == in_tokyo.next_run_time and renamed.cron == WEEKDAYS_AT_NINE

    back = await update(agent_queue, id=task.id, interval=Duration(seconds=600))
    assert (back.HasField("cron"), back.interval.seconds, back.time_zone) == (False, 600, "Asia/Tokyo")
    assert at(back.next_run_time) == WEDNESDAY + timedelta(minutes=10)
    assert agent_queue.db.sql("SELECT interval_ms, cron FROM agent_queue.scheduled_tasks") == [(600_000, None)]


async def test_a_bad_update_is_invalid_argument_and_changes_nothing(agent_queue: Running, clock: ManualClock) -> None:
    boss(agent_queue.db)
    clock.set(WEDNESDAY)
    task = await create(agent_queue, cron=WEEKDAYS_AT_NINE, time_zone=BERLIN)
    before = agent_queue.db.sql("SELECT * FROM agent_queue.scheduled_tasks")
    events = agent_queue.db.sql("SELECT count(*) FROM agent_queue.outbox")
    for fields, field in (
        ({"cron": "every monday"}, "cron"),
        ({"time_zone": "CET+1"}, "time_zone"),
        ({"cron": WEEKDAYS_AT_NINE, "interval": Duration(seconds=3600)}, "cron"),
    ):
        error = await rpc_error(update(agent_queue, id=task.id, **fields))
        assert (error.code(), violated_fields(error)) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), fields
    assert agent_queue.db.sql("SELECT * FROM agent_queue.scheduled_tasks") == before
    assert agent_queue.db.sql("SELECT count(*) FROM agent_queue.outbox") == events


async def test_fire_fires_the_next_run_once_and_answers_the_one_after(
    with_messages: WithMessages, clock: ManualClock
) -> None:
    alice(with_messages.messages.db)
    w1 = await web_conversation(with_messages.messages.stub, bearer(with_messages.messages.issuer.token("user_alice")))
    aq = with_messages.agent_queue
    clock.set(WEDNESDAY)
    task = await create(aq, cron=WEEKDAYS_AT_NINE, time_zone=BERLIN, conversation_id=w1.id)
    friday = datetime(2027, 3, 26, 8, 0, tzinfo=UTC)

    early = await fire(aq, task.id, friday)  # not the next run (Thursday is)
    assert not early.fired and at(early.task.next_run_time) == datetime(2027, 3, 25, 8, 0, tzinfo=UTC)

    thursday = at(task.next_run_time)
    first = await fire(aq, task.id, thursday)
    assert first.fired
    assert at(first.task.last_run_time) == thursday and at(first.task.next_run_time) == friday
    again = await fire(aq, task.id, thursday)  # the activity retried after a lost answer
    assert not again.fired and again.task == first.task

    await eventually(lambda: aq.db.sql("SELECT count(*) FROM agent_queue.jobs") == [(1,)])
    history = await with_messages.messages.stub.GetConversationHistory(
        mpb.GetConversationHistoryRequest(conversation_id=w1.id), metadata=service()
    )
    assert [m.content for m in history.messages] == ["[Scheduled Task: standup] Ask about blockers"]
    assert aq.db.sql(f"SELECT key FROM agent_queue.outbox WHERE {TRIGGERS}") == [(f"{task.id}:2027-03-25T08:00:00+00:00",)]


async def test_the_sweep_and_the_workflow_fire_a_run_once_whoever_comes_first(agent_queue: Running, clock: ManualClock) -> None:
    clock.set(WEDNESDAY)
    c = conv_id(conv())
    a = await create(agent_queue, name="a", cron=WEEKDAYS_AT_NINE, time_zone=BERLIN, conversation_id=c)
    b = await create(agent_queue, name="b", cron=WEEKDAYS_AT_NINE, time_zone=BERLIN, conversation_id=c)
    thursday = at(a.next_run_time)

    assert (await fire(agent_queue, a.id, thursday)).fired  # a's workflow on time
    clock.set(thursday + timedelta(minutes=3))  # the sweep's tick
    swept = await agent_queue.stub.ProcessDueScheduledTasks(pb.ProcessDueScheduledTasksRequest(), metadata=service())
    assert swept.fired == 1  # only b, whose workflow is late
    late = await fire(agent_queue, b.id, thursday)  # b's workflow, after the sweep
    assert not late.fired
    # The sweep counts the next run from its tick; both tasks now wait for Friday 09:00.
    assert at(late.task.next_run_time) == datetime(2027, 3, 26, 8, 0, tzinfo=UTC)
    assert agent_queue.db.sql(f"SELECT count(*) FROM agent_queue.outbox WHERE {TRIGGERS}") == [(2,)]


async def test_a_disabled_or_moved_run_does_not_fire(agent_queue: Running, clock: ManualClock) -> None:
    boss(agent_queue.db)
    clock.set(WEDNESDAY)
    task = await create(agent_queue, cron=WEEKDAYS_AT_NINE, time_zone=BERLIN, conversation_id=conv_id(conv()))
    thursday = at(task.next_run_time)
    await update(agent_queue, id=task.id, enabled=False)
    disabled = await fire(agent_queue, task.id, thursday)
    assert not disabled.fired and not disabled.task.enabled

    await update(agent_queue, id=task.id, enabled=True, time_zone="Asia/Tokyo")
    moved = await fire(agent_queue, task.id, thursday)
    assert not moved.fired and at(moved.task.next_run_time) == datetime(2027, 3, 25, 0, 0, tzinfo=UTC)
    assert agent_queue.db.sql(f"SELECT count(*) FROM agent_queue.outbox WHERE {TRIGGERS}") == [(0,)]


async def test_the_workflow_rpcs_answer_not_found_and_invalid_argument(agent_queue: Running) -> None:
    missing = "task_" + "0" * 32
    for call in (
        agent_queue.stub.GetScheduledTaskNextRun(pb.GetScheduledTaskNextRunRequest(id=missing), metadata=service()),
        fire(agent_queue, missing, WEDNESDAY),
    ):
        assert (await rpc_error(call)).code() == grpc.StatusCode.NOT_FOUND
    task = await create(agent_queue, cron=WEEKDAYS_AT_NINE)
    no_run = await rpc_error(agent_queue.stub.FireScheduledTask(pb.FireScheduledTaskRequest(id=task.id), metadata=service()))
    assert (no_run.code(), violated_fields(no_run)) == (grpc.StatusCode.INVALID_ARGUMENT, ["run_time"])
    shown = await agent_queue.stub.GetScheduledTaskNextRun(pb.GetScheduledTaskNextRunRequest(id=task.id), metadata=service())
    assert shown.task == task


async def test_changes_to_when_a_task_runs_start_or_wake_its_workflow(agent_queue: Running, clock: ManualClock) -> None:
    boss(agent_queue.db)
    clock.set(WEDNESDAY)
    dormant = await create(agent_queue, name="dormant", cron=WEEKDAYS_AT_NINE, enabled=False)
    assert workflow_events(agent_queue) == []  # a disabled task has no workflow to start

    task = await create(agent_queue, cron=WEEKDAYS_AT_NINE, time_zone=BERLIN)
    await update(agent_queue, id=task.id, payload="only the words")  # not when it runs
    await update(agent_queue, id=task.id, cron="0 8 * * *")
    await update(agent_queue, id=task.id, enabled=False)
    await update(agent_queue, id=dormant.id, enabled=True)
    await agent_queue.stub.DeleteScheduledTask(
        pb.DeleteScheduledTaskRequest(id=task.id), metadata=bearer(agent_queue.issuer.token("user_boss"))
    )

    expected = [
        (task.id, {"task_id": task.id, "start": True}),  # created
        (task.id, {"task_id": task.id, "start": True}),  # new expression
        (task.id, {"task_id": task.id, "start": False}),  # disabled: woken to end
        (dormant.id, {"task_id": dormant.id, "start": True}),  # enabled
        (task.id, {"task_id": task.id, "start": False}),  # deleted
    ]
    # Each change is its own event (the workflow re-reads the task, so their order is free).
    assert sorted(workflow_events(agent_queue), key=str) == sorted(expected, key=str)
