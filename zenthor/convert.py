"""Proto ⇄ Python conversions every service's wire module needs: times, durations, optional
fields."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from zenthor.errors import InvalidArgument
from zenthor.ids import IdKind

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    """What Timestamp.FromDatetime gives, at a third of its cost (it is pure Python, and every
    job a claim answers carries several times)."""
    if value.tzinfo is None:
        value = value.astimezone(UTC)  # a naive time is local, as FromDatetime after astimezone reads it
    since = value - _EPOCH
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1_000)


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- optional fields and durations of requests ---

# The longest duration any request may carry (retention windows, timeouts): ten years. Longer
# ones would overflow datetime arithmetic further down instead of being refused here.
MAX_DURATION = timedelta(days=3650)


def optional_str(message: Message, field: str) -> str | None:
    """A proto3 `optional string` field: its value when set, None when absent."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    assert isinstance(value, str)
    return value


def optional_bool(message: Message, field: str) -> bool | None:
    """A proto3 `optional bool` field: its value when set, None when absent."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    assert isinstance(value, bool)
    return value


def optional_id(kind: IdKind, message: Message, field: str) -> uuid.UUID | None:
    """A proto3 `optional string` id field, parsed; None when absent."""
    return kind.parse_optional(optional_str(message, field), field)


def optional_duration(message: Message, field: str, *, maximum: timedelta = MAX_DURATION) -> timedelta | None:
    """A google.protobuf.Duration field as a timedelta (None when absent); negative or longer
    than `maximum` is INVALID_ARGUMENT naming the field."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    assert isinstance(value, Duration)
    # Compared in seconds first: ToTimedelta itself overflows on absurd values.
    if value.seconds < 0 or value.nanos < 0:
        raise InvalidArgument(field, "must not be negative")
    if value.seconds > maximum.total_seconds():
        raise InvalidArgument(field, f"must be at most {maximum.days} days")
    return value.ToTimedelta()


# What google.protobuf.Timestamp allows (0001-01-01 .. 9999-12-31T23:59:59), in epoch seconds.
MIN_TIMESTAMP_S = -62_135_596_800
MAX_TIMESTAMP_S = 253_402_300_799


def optional_timestamp(message: Message, field: str) -> datetime | None:
    """An optional instant (None when absent); one a datetime cannot hold is INVALID_ARGUMENT
    naming the field, not a crash in ToDatetime."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    if not (MIN_TIMESTAMP_S <= value.seconds <= MAX_TIMESTAMP_S) or not (0 <= value.nanos < 1_000_000_000):
        raise InvalidArgument(field, "must be a valid timestamp between years 1 and 9999")
    result: datetime = value.ToDatetime(tzinfo=UTC)
    return result


def duration_pb(value: timedelta) -> Duration:
    duration = Duration()
    duration.FromTimedelta(value)
    return duration
