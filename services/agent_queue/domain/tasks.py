"""Scheduled tasks: interval-based (cron expressions are not supported). A task is
due when enabled with a next run at or before now; firing sets the last run to now and the
next to now + interval (none for a zero interval: one-shot)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

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


@dataclass(frozen=True)
class ScheduledTask:
    id: uuid.UUID
    name: str
    description: str | None
    interval: timedelta
    payload: str
    enabled: bool
    last_run_at: datetime | None
    next_run_at: datetime | None
    conversation_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class TaskFields:
    """The fields a create sets or an update patches (None: not given)."""

    name: str | None = None
    description: str | None = None
    interval: timedelta | None = None
    payload: str | None = None
    enabled: bool | None = None
    conversation_id: uuid.UUID | None = None

    def checked_new(self) -> TaskFields:
        """A create: name, payload and interval are required, then the checks of any change."""
        required_text(self.name or "", "name", max_chars=MAX_TASK_NAME)
        required_text(self.payload or "", "payload", max_chars=MAX_PAYLOAD)
        if self.interval is None:
            raise InvalidArgument("interval", "is required")
        return self.checked()

    def checked(self) -> TaskFields:
        if self.name is not None:
            required_text(self.name, "name", max_chars=MAX_TASK_NAME)
        optional_text(self.description, "description", max_chars=MAX_DESCRIPTION)
        if self.payload is not None:
            required_text(self.payload, "payload", max_chars=MAX_PAYLOAD)
        if self.interval is not None:
            check_interval(self.interval)
        return self


def check_interval(interval: timedelta, field: str = "interval") -> timedelta:
    """0 (one-shot) or 1 min..366 days (the original accepted anything, even negatives)."""
    if interval == timedelta(0):
        return interval
    if interval < MIN_INTERVAL or interval > MAX_INTERVAL:
        raise InvalidArgument(field, "must be 0 (one-shot) or between 1 min and 366 days")
    return interval


def first_run(now: datetime, interval: timedelta) -> datetime:
    return now + interval


def next_run_after_firing(now: datetime, interval: timedelta) -> datetime | None:
    """now + interval, as the original did (drift accumulates, missed runs collapse); none
    when zero (one-shot)."""
    return now + interval if interval else None


def trigger_content(task: ScheduledTask) -> str:
    """The system message that wakes the agent, worded as the original did."""
    return f"[Scheduled Task: {task.name}] {task.payload}"


def trigger_key(task_ref: str, run_at: datetime) -> str:
    """One trigger message per task run, whatever the outbox replays."""
    return f"{task_ref}:{run_at.isoformat()}"
