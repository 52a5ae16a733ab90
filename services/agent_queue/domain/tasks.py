"""Scheduled tasks: each runs on an interval or on a 5-field cron expression read in an IANA
time zone (UTC by default). A task is due when enabled with a next run at or before now; firing
sets the last run and computes the next one (`next_run`): for an interval, now + interval (none
for a zero interval: one-shot); for a cron expression, its first wall-clock match after that
instant, DST-safe (docs/architecture.md §8, "Scheduled tasks")."""

from __future__ import annotations

import functools
import uuid
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterBadDateError, croniter

from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.validate import optional_text, required_text

MAX_TASK_NAME = 200
MAX_DESCRIPTION = 2_000
MAX_PAYLOAD = 10_000
MIN_INTERVAL = timedelta(minutes=1)
MAX_INTERVAL = timedelta(days=366)
# One batch of the due-task sweep (0 asks for the default).
DUE_SWEEP = PageLimits(default=500, maximum=5_000)
# A 5-field expression is at most five short lists; longer input is not a cron expression.
MAX_CRON = 200
CRON_FIELDS = 5
DEFAULT_TIME_ZONE = "UTC"
# The longest gap a valid expression can have (29 February: 8 years across a skipped leap year);
# an expression with no match within it never fires ("0 0 30 2 *").
MAX_YEARS_BETWEEN_RUNS = 10
# Names zoneinfo finds on some hosts that are not a place: the host's own zone and tzdata's
# "Factory" placeholder.
NOT_PLACES = frozenset({"localtime", "Factory"})


@dataclass(frozen=True)
class TaskSchedule:
    """When a task runs: exactly one of `interval` and `cron`; `time_zone` is where the cron
    expression's wall-clock times are read (an interval is the same everywhere)."""

    interval: timedelta | None = None
    cron: str | None = None
    time_zone: str = DEFAULT_TIME_ZONE


@dataclass(frozen=True)
class ScheduledTask:
    id: uuid.UUID
    name: str
    description: str | None
    schedule: TaskSchedule
    payload: str
    enabled: bool
    last_run_at: datetime | None
    next_run_at: datetime | None
    conversation_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class TaskFields:
    """The fields a create sets or an update patches (None: not given). Giving `interval`
    makes a task an interval task, giving `cron` a cron task; never both at once."""

    name: str | None = None
    description: str | None = None
    interval: timedelta | None = None
    cron: str | None = None
    time_zone: str | None = None
    payload: str | None = None
    enabled: bool | None = None
    conversation_id: uuid.UUID | None = None

    def checked_new(self) -> TaskFields:
        """A create: name, payload and a schedule (interval or cron) are required, then the
        checks of any change."""
        required_text(self.name or "", "name", max_chars=MAX_TASK_NAME)
        required_text(self.payload or "", "payload", max_chars=MAX_PAYLOAD)
        if self.interval is None and self.cron is None:
            raise InvalidArgument("interval", "an interval or a cron expression is required")
        return self.checked()

    def checked(self) -> TaskFields:
        if self.name is not None:
            required_text(self.name, "name", max_chars=MAX_TASK_NAME)
        optional_text(self.description, "description", max_chars=MAX_DESCRIPTION)
        if self.payload is not None:
            required_text(self.payload, "payload", max_chars=MAX_PAYLOAD)
        if self.interval is not None and self.cron is not None:
            raise InvalidArgument("cron", "a task has an interval or a cron expression, not both")
        if self.interval is not None:
            check_interval(self.interval)
        if self.cron is not None:
            check_cron(self.cron)
        if self.time_zone is not None:
            check_time_zone(self.time_zone)
        return self

    @property
    def changes_schedule(self) -> bool:
        return self.interval is not None or self.cron is not None or self.time_zone is not None

    def schedule_over(self, current: TaskSchedule | None) -> TaskSchedule:
        """The schedule after this create (current None) or update: a new interval or cron
        replaces the other kind; the time zone stays unless given."""
        time_zone = self.time_zone or (current.time_zone if current else DEFAULT_TIME_ZONE)
        if self.interval is not None:
            return TaskSchedule(interval=self.interval, time_zone=time_zone)
        if self.cron is not None:
            return TaskSchedule(cron=self.cron, time_zone=time_zone)
        assert current is not None, "checked_new requires an interval or a cron expression"
        return TaskSchedule(interval=current.interval, cron=current.cron, time_zone=time_zone)


def check_interval(interval: timedelta, field: str = "interval") -> timedelta:
    """0 (one-shot) or 1 min..366 days (the original accepted anything, even negatives)."""
    if interval == timedelta(0):
        return interval
    if interval < MIN_INTERVAL or interval > MAX_INTERVAL:
        raise InvalidArgument(field, "must be 0 (one-shot) or between 1 min and 366 days")
    return interval


def check_cron(expression: str, field: str = "cron") -> str:
    """Five fields (minute hour day-of-month month day-of-week, names such as MON-FRI allowed),
    each as croniter reads it; no seconds or year field, no `@daily` shorthands, no hashed `H`."""
    optional_text(expression, field, max_chars=MAX_CRON)
    if len(expression.split()) != CRON_FIELDS or not croniter.is_valid(expression):
        raise InvalidArgument(field, "must be a 5-field cron expression (minute hour day-of-month month day-of-week)")
    return expression


def check_time_zone(name: str, field: str = "time_zone") -> str:
    """An IANA zone name as tzdata spells it (`Europe/Berlin`, `UTC`)."""
    if name not in _zone_names():
        raise InvalidArgument(field, "must be an IANA time zone name such as Europe/Berlin or UTC")
    return name


@functools.cache
def _zone_names() -> frozenset[str]:
    # Checked against the list rather than by loading the name, so a path ("../x") never
    # reaches the file system.
    return frozenset(zoneinfo.available_timezones()) - NOT_PLACES


def first_run(schedule: TaskSchedule, now: datetime) -> datetime | None:
    """A new or rescheduled task's first run: now + interval (now for a one-shot), or the cron
    expression's first match after now."""
    if schedule.interval is not None:
        return now + schedule.interval
    return next_run(schedule, now)


def next_run(schedule: TaskSchedule, after: datetime) -> datetime | None:
    """The run after `after` (an aware instant), in UTC; None when the task runs no more.

    An interval runs at after + interval (none for zero). A cron expression is matched against
    wall-clock times in the task's zone, and the earliest match whose instant is later than
    `after` wins:
    - a wall time that does not exist (the hour skipped in spring) runs once, at the first
      valid instant after the gap (02:30 daily in Europe/Berlin runs at 03:00 CEST that day);
    - a wall time that occurs twice (the hour repeated in autumn) runs once, at its first
      occurrence; a task matching every few minutes therefore pauses for the repeated hour.
    """
    if schedule.interval is not None:
        return after + schedule.interval if schedule.interval else None
    assert schedule.cron is not None, "a schedule has an interval or a cron expression"
    zone = zoneinfo.ZoneInfo(schedule.time_zone)
    # Wall times only go up along the instants they resolve to (see _instant), so every match
    # at or before the wall time of `after` resolves at or before `after` itself.
    start = after.astimezone(zone).replace(tzinfo=None)
    matches = croniter(schedule.cron, start, max_years_between_matches=MAX_YEARS_BETWEEN_RUNS)
    while True:
        try:
            wall = matches.get_next(datetime)
        except CroniterBadDateError:
            raise InvalidArgument("cron", "never matches a date (such as 30 February)") from None
        instant = _instant(wall, zone)
        # Only the repeated hour's second occurrence, or a gap already fired, resolve to or
        # before `after`: skip them.
        if instant > after:
            return instant


def _instant(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant of a naive wall time in `zone`: its first occurrence when it occurs
    twice (fold=0), the end of the gap when it does not occur at all."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    # In a gap, fold=0 reads the wall time with the offset before the change (a later
    # instant) and fold=1 with the one after (an earlier instant); the change lies between.
    return _offset_change(wall.replace(tzinfo=zone, fold=1).astimezone(UTC), instant, zone)


def _offset_change(before: datetime, after: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The first instant in (before, after] whose UTC offset differs from before's: where a
    gap ends. Bisection to the second (zone changes fall on whole seconds)."""
    offset = before.astimezone(zone).utcoffset()
    step = timedelta(seconds=1)
    while after - before > step:
        middle = before + ((after - before) // 2 // step) * step
        if middle.astimezone(zone).utcoffset() == offset:
            before = middle
        else:
            after = middle
    return after


def trigger_content(task: ScheduledTask) -> str:
    """The system message that wakes the agent, worded as the original did."""
    return f"[Scheduled Task: {task.name}] {task.payload}"


def trigger_key(task_ref: str, run_at: datetime) -> str:
    """One trigger message per task run, whatever the outbox replays."""
    return f"{task_ref}:{run_at.isoformat()}"
