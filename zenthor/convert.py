"""Proto ⇄ Python conversions every servicer needs (times)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def utc_now() -> datetime:
    return datetime.now(UTC)
