"""Proto ⇄ Python conversions every servicer needs (times, durations)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def from_timestamp(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


def duration(value: timedelta) -> Duration:
    d = Duration()
    d.FromTimedelta(value)
    return d


def from_duration(value: Duration) -> timedelta:
    return value.ToTimedelta()


def utc_now() -> datetime:
    return datetime.now(UTC)
