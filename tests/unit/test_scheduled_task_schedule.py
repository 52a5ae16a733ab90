"""When a scheduled task runs next (services/agent_queue/domain/tasks.py: next_run), across
both 2027 DST changes in Europe/Berlin (28 March: 02:00 CET → 03:00 CEST; 31 October: 03:00 CEST
→ 02:00 CET), and which schedules are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.agent_queue.domain.tasks import TaskFields, TaskSchedule, first_run, next_run
from zenthor.errors import InvalidArgument

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def runs(schedule: TaskSchedule, after: datetime, count: int) -> list[datetime]:
    """The next `count` runs, each computed after the one before, as firing does."""
    found: list[datetime] = []
    for _ in range(count):
        run = next_run(schedule, after)
        assert run is not None
        found.append(run)
        after = run
    return found


def test_weekdays_at_nine_in_berlin_move_an_hour_earlier_in_utc_after_the_march_change() -> None:
    schedule = TaskSchedule(cron="0 9 * * MON-FRI", time_zone=BERLIN)
    assert runs(schedule, utc(2027, 3, 24, 9, 0), 6) == [
        utc(2027, 3, 25, 8),  # Thu, CET (+01:00)
        utc(2027, 3, 26, 8),  # Fri; Sat 27 and Sun 28 (the change) are skipped
        utc(2027, 3, 29, 7),  # Mon, CEST (+02:00)
        utc(2027, 3, 30, 7),
        utc(2027, 3, 31, 7),
        utc(2027, 4, 1, 7),
    ]


def test_weekdays_at_nine_in_berlin_move_an_hour_later_in_utc_after_the_october_change() -> None:
    schedule = TaskSchedule(cron="0 9 * * MON-FRI", time_zone=BERLIN)
    assert runs(schedule, utc(2027, 10, 28, 12), 3) == [
        utc(2027, 10, 29, 7),  # Fri, CEST
        utc(2027, 11, 1, 8),  # Mon, CET
        utc(2027, 11, 2, 8),
    ]


def test_a_time_skipped_in_spring_runs_once_at_the_end_of_the_gap() -> None:
    # 02:30 does not exist on 28 March 2027 in Berlin: it runs at 03:00 CEST (01:00Z), once.
    schedule = TaskSchedule(cron="30 2 * * *", time_zone=BERLIN)
    assert runs(schedule, utc(2027, 3, 26, 12), 4) == [
        utc(2027, 3, 27, 1, 30),  # 02:30 CET
        utc(2027, 3, 28, 1, 0),  # the gap's end, 03:00 CEST
        utc(2027, 3, 29, 0, 30),  # 02:30 CEST
        utc(2027, 3, 30, 0, 30),
    ]


def test_every_time_inside_the_gap_collapses_into_one_run() -> None:
    schedule = TaskSchedule(cron="*/15 2 * * *", time_zone=BERLIN)
    assert runs(schedule, utc(2027, 3, 27, 12), 2) == [utc(2027, 3, 28, 1, 0), utc(2027, 3, 29, 0, 0)]


def test_a_time_repeated_in_autumn_runs_once_at_its_first_occurrence() -> None:
    # 02:30 happens twice on 31 October 2027 in Berlin: at 00:30Z (CEST) and 01:30Z (CET).
    schedule = TaskSchedule(cron="30 2 * * *", time_zone=BERLIN)
    assert runs(schedule, utc(2027, 10, 29, 12), 3) == [
        utc(2027, 10, 30, 0, 30),  # 02:30 CEST
        utc(2027, 10, 31, 0, 30),  # the first 02:30; the second (01:30Z) is not a run
        utc(2027, 11, 1, 1, 30),  # 02:30 CET
    ]


def test_after_the_first_occurrence_of_a_repeated_time_the_second_is_not_a_run() -> None:
    schedule = TaskSchedule(cron="30 2 * * *", time_zone=BERLIN)
    # Asked from inside the repeated hour, after the first 02:30 and before the second.
    assert next_run(schedule, utc(2027, 10, 31, 1, 0)) == utc(2027, 11, 1, 1, 30)


def test_a_task_every_twenty_minutes_pauses_for_the_repeated_hour() -> None:
    schedule = TaskSchedule(cron="*/20 * * * *", time_zone=BERLIN)
    assert runs(schedule, utc(2027, 10, 30, 23, 50), 6) == [
        utc(2027, 10, 31, 0, 0),  # 02:00 CEST
        utc(2027, 10, 31, 0, 20),
        utc(2027, 10, 31, 0, 40),
        utc(2027, 10, 31, 2, 0),  # 03:00 CET: 02:00..02:40 CET were runs already
        utc(2027, 10, 31, 2, 20),
        utc(2027, 10, 31, 2, 40),
    ]


def test_utc_is_the_default_zone_and_has_no_changes() -> None:
    schedule = TaskSchedule(cron="0 9 * * MON-FRI")
    assert runs(schedule, utc(2027, 3, 26, 10), 2) == [utc(2027, 3, 29, 9), utc(2027, 3, 30, 9)]


def test_a_run_is_strictly_after_the_instant_given() -> None:
    schedule = TaskSchedule(cron="0 9 * * *", time_zone=BERLIN)
    assert next_run(schedule, utc(2027, 1, 5, 8, 0)) == utc(2027, 1, 6, 8, 0)
    assert next_run(schedule, utc(2027, 1, 5, 7, 59, 59)) == utc(2027, 1, 5, 8, 0)


def test_intervals_keep_their_rules() -> None:
    now = utc(2027, 3, 27, 23, 0)
    hourly = TaskSchedule(interval=timedelta(hours=1), time_zone=BERLIN)
    assert first_run(hourly, now) == now + timedelta(hours=1)
    # An interval is the same in every zone: 24 h across the change, not "same wall time".
    assert next_run(TaskSchedule(interval=timedelta(days=1), time_zone=BERLIN), now) == utc(2027, 3, 28, 23, 0)
    one_shot = TaskSchedule(interval=timedelta(0))
    assert first_run(one_shot, now) == now and next_run(one_shot, now) is None


def test_a_cron_tasks_first_run_is_the_first_match_after_now() -> None:
    schedule = TaskSchedule(cron="0 9 * * MON-FRI", time_zone=BERLIN)
    assert first_run(schedule, utc(2027, 3, 26, 8, 0)) == utc(2027, 3, 29, 7, 0)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (TaskFields(name="t", payload="p"), "interval"),
        (TaskFields(name="t", payload="p", interval=timedelta(hours=1), cron="0 9 * * *"), "cron"),
        (TaskFields(name="t", payload="p", cron="0 9 * *"), "cron"),  # four fields
        (TaskFields(name="t", payload="p", cron="0 0 9 * * *"), "cron"),  # seconds field
        (TaskFields(name="t", payload="p", cron="@daily"), "cron"),
        (TaskFields(name="t", payload="p", cron="61 * * * *"), "cron"),
        (TaskFields(name="t", payload="p", cron="0 9 * * MON-FUN"), "cron"),
        (TaskFields(name="t", payload="p", cron="H * * * *"), "cron"),
        (TaskFields(name="t", payload="p", cron=""), "cron"),
        (TaskFields(name="t", payload="p", cron="0 9 * * *" + " " * 300), "cron"),
        (TaskFields(name="t", payload="p", cron="0 9 * * *", time_zone="Mars/Olympus_Mons"), "time_zone"),
        (TaskFields(name="t", payload="p", cron="0 9 * * *", time_zone="europe/berlin"), "time_zone"),
        (TaskFields(name="t", payload="p", cron="0 9 * * *", time_zone="../../etc/passwd"), "time_zone"),
        (TaskFields(name="t", payload="p", cron="0 9 * * *", time_zone="localtime"), "time_zone"),
        (TaskFields(name="t", payload="p", cron="0 9 * * *", time_zone=""), "time_zone"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(fields: TaskFields, field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        fields.checked_new()
    assert refused.value.field == field


def test_an_expression_that_never_matches_is_refused_when_its_first_run_is_computed() -> None:
    schedule = TaskSchedule(cron="0 0 30 2 *", time_zone=BERLIN)
    with pytest.raises(InvalidArgument) as refused:
        first_run(schedule, utc(2027, 1, 1))
    assert refused.value.field == "cron"


def test_good_schedules_pass() -> None:
    for fields in (
        TaskFields(name="t", payload="p", cron="0 9 * * MON-FRI", time_zone=BERLIN),
        TaskFields(name="t", payload="p", cron="*/5 * * * *"),
        TaskFields(name="t", payload="p", cron="0 0 29 2 *", time_zone="America/New_York"),
        TaskFields(name="t", payload="p", interval=timedelta(hours=1), time_zone="UTC"),
    ):
        assert fields.checked_new() is fields


def test_an_update_switches_the_kind_and_keeps_the_zone_unless_given() -> None:
    cron = TaskSchedule(cron="0 9 * * *", time_zone=BERLIN)
    assert TaskFields(interval=timedelta(hours=1)).schedule_over(cron) == TaskSchedule(
        interval=timedelta(hours=1), time_zone=BERLIN
    )
    interval = TaskSchedule(interval=timedelta(hours=1))
    assert TaskFields(cron="0 9 * * *").schedule_over(interval) == TaskSchedule(cron="0 9 * * *", time_zone="UTC")
    assert TaskFields(time_zone="Asia/Tokyo").schedule_over(cron) == TaskSchedule(cron="0 9 * * *", time_zone="Asia/Tokyo")
