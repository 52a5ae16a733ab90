"""Batch handlers of the outbox relay (zenthor/outbox.py): a high-volume topic's events reach
their peer in chunks of at most `max_size`, one call per chunk, and each event's outcome is the
one the handler's answer gives it; a call that raises or answers wrongly delivers nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.reliability.test_outbox_relay import OUTBOX, WAIT_S, delivered, store
from tests.support.database import TestDatabase
from tests.support.tracing import exporter_fixture, spans_fixture  # noqa: F401  (fixtures)
from tests.support.waiting import eventually
from zenthor.config import ServiceName
from zenthor.db import UnitOfWork, create_engine
from zenthor.outbox import Batched, OutboxRelay, PermanentDeliveryError, add_bundle, add_event
from zenthor.tracing import OUTBOX_TRACE_KEY

Payloads = Sequence[Mapping[str, Any]]


@pytest.fixture
async def engine(db: TestDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db.dsn_for(ServiceName.IDENTITY))
    yield engine
    await engine.dispose()


def outbox_rows(db: TestDatabase, topic: str) -> dict[str, tuple[Any, ...]]:
    """key → (attempts, delivered, dead, last_error)."""
    rows = db.sql(
        "SELECT key, attempts, delivered_at IS NOT NULL, dead_at IS NOT NULL, last_error"
        " FROM identity.outbox WHERE topic = %s",
        (topic,),
    )
    return {row[0]: tuple(row[1:]) for row in rows}


async def store_due_in_order(engine: AsyncEngine, topic: str, keys: list[str], now: datetime) -> None:
    """One event per key, each due a microsecond after the one before: the lease order is `keys`."""
    async with UnitOfWork(engine) as uow:
        for i, key in enumerate(keys):
            await add_event(uow.conn, OUTBOX, topic, key, {"key": key}, now + timedelta(microseconds=i))
        await uow.commit()


async def test_a_batched_topic_is_delivered_in_chunks_of_at_most_max_size_in_lease_order(
    engine: AsyncEngine, db: TestDatabase
) -> None:
    now = datetime.now(UTC) - timedelta(seconds=1)
    keys = [f"k{i:03}" for i in range(250)]
    await store_due_in_order(engine, "marks", keys, now)
    calls: list[list[str]] = []

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        calls.append([p["key"] for p in payloads])
        return [None] * len(payloads)

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all, max_size=100)})
    assert await relay.drain_topic("marks", batch=250) == 250
    assert sorted(calls) == [keys[0:100], keys[100:200], keys[200:250]]  # chunks run at once: any finishing order
    assert delivered(db, "marks") == 250
    assert await relay.drain_once() == 0


async def test_the_chunks_of_one_round_are_delivered_concurrently(engine: AsyncEngine, db: TestDatabase) -> None:
    # Three calls that each wait for all three: only concurrent chunks can finish.
    barrier = asyncio.Barrier(3)

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        await asyncio.wait_for(barrier.wait(), WAIT_S)
        return [None] * len(payloads)

    await store(engine, "marks", [f"k{i}" for i in range(30)])
    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all, max_size=10)})
    assert await relay.drain_once() == 30
    assert delivered(db, "marks") == 30


async def test_each_event_of_a_batch_gets_the_outcome_the_handler_answers_for_it(
    engine: AsyncEngine, db: TestDatabase
) -> None:
    now = datetime.now(UTC) - timedelta(seconds=1)
    await store_due_in_order(engine, "marks", ["ok", "gone", "busy", "ok2"], now)

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        answers: dict[str, Exception | None] = {
            "ok": None,
            "gone": PermanentDeliveryError("message is gone"),
            "busy": RuntimeError("peer busy"),
            "ok2": None,
        }
        return [answers[p["key"]] for p in payloads]

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all)})
    assert await relay.drain_once() == 4
    assert outbox_rows(db, "marks") == {
        "ok": (1, True, False, None),
        "gone": (1, False, True, "message is gone"),  # a dead letter at once
        "busy": (1, False, False, "peer busy"),  # rescheduled with backoff
        "ok2": (1, True, False, None),
    }
    [(due_later,)] = db.sql("SELECT next_attempt_at > now() FROM identity.outbox WHERE key = 'busy'")
    assert due_later


async def test_a_batch_call_that_raises_fails_every_event_of_its_chunk(engine: AsyncEngine, db: TestDatabase) -> None:
    clock = [datetime.now(UTC)]
    await store(engine, "marks", ["a", "b", "c"], clock[0])
    down = [True]

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        if down[0]:
            raise ConnectionError("peer down")
        return [None] * len(payloads)

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all)}, clock=lambda: clock[0])
    assert await relay.drain_once() == 3
    assert outbox_rows(db, "marks") == {key: (1, False, False, "peer down") for key in "abc"}
    assert await relay.drain_once() == 0  # backing off

    down[0] = False
    clock[0] += timedelta(minutes=10)
    assert await relay.drain_once() == 3
    assert delivered(db, "marks") == 3


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda n: [None] * (n - 1), id="too-few"),
        pytest.param(lambda n: [None] * (n + 1), id="too-many"),
        pytest.param(lambda n: [True] * n, id="not-exceptions"),
        pytest.param(lambda n: None, id="not-a-sequence"),
    ],
)
async def test_a_batch_answer_that_is_not_one_outcome_per_event_delivers_nothing(
    engine: AsyncEngine, db: TestDatabase, answer: Any
) -> None:
    await store(engine, "marks", ["a", "b", "c"])

    async def miscounting(payloads: Payloads) -> Any:
        return answer(len(payloads))

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(miscounting)})
    assert await relay.drain_once() == 3
    rows = outbox_rows(db, "marks")
    assert {key: row[:3] for key, row in rows.items()} == {key: (1, False, False) for key in "abc"}  # retried, not dead
    errors = {row[3] for row in rows.values()}
    assert len(errors) == 1 and "batch handler of topic 'marks' answered" in errors.pop()


async def test_a_plain_topic_and_a_batched_topic_are_delivered_side_by_side(engine: AsyncEngine, db: TestDatabase) -> None:
    singles: list[str] = []
    batches: list[list[str]] = []

    async def send_one(payload: Mapping[str, Any]) -> None:
        singles.append(payload["key"])

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        batches.append([p["key"] for p in payloads])
        return [None] * len(payloads)

    relay = OutboxRelay(engine, OUTBOX, {"sends": send_one, "marks": Batched(mark_all, max_size=2)}, poll_s=0.05)
    relay.start()
    try:
        await store(engine, "sends", ["s1", "s2", "s3"])
        await store(engine, "marks", ["m1", "m2", "m3"])
        relay.kick()
        await eventually(lambda: delivered(db, "sends") == 3 and delivered(db, "marks") == 3, WAIT_S, "both topics delivered")
    finally:
        await relay.stop()
    assert sorted(singles) == ["s1", "s2", "s3"]
    assert sorted(key for batch in batches for key in batch) == ["m1", "m2", "m3"]
    assert all(len(batch) <= 2 for batch in batches)


async def store_bundle(engine: AsyncEngine, topic: str, keys: list[str], now: datetime | None = None) -> None:
    async with UnitOfWork(engine) as uow:
        await add_bundle(uow.conn, OUTBOX, topic, [{"key": key} for key in keys], now or datetime.now(UTC))
        await uow.commit()


async def test_a_bundle_is_one_row_whose_events_reach_the_handler_one_by_one(engine: AsyncEngine, db: TestDatabase) -> None:
    await store_bundle(engine, "marks", [f"b{i}" for i in range(5)])
    await store_bundle(engine, "sends", ["s1", "s2"])
    assert len(db.sql("SELECT 1 FROM identity.outbox")) == 2
    batches: list[list[str]] = []
    singles: list[str] = []

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        batches.append([p["key"] for p in payloads])
        return [None] * len(payloads)

    async def send_one(payload: Mapping[str, Any]) -> None:
        singles.append(payload["key"])

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all, max_size=2), "sends": send_one})
    assert await relay.drain_once() == 7  # events attempted, not rows
    assert sorted(key for batch in batches for key in batch) == [f"b{i}" for i in range(5)]
    assert all(len(batch) <= 2 for batch in batches)  # max_size counts events
    assert sorted(singles) == ["s1", "s2"]
    assert (delivered(db, "marks"), delivered(db, "sends")) == (1, 1)
    assert await relay.drain_once() == 0


async def test_a_bundle_with_a_failed_event_is_retried_whole_until_every_event_went_through(
    engine: AsyncEngine, db: TestDatabase
) -> None:
    clock = [datetime.now(UTC)]
    await store_bundle(engine, "marks", ["ok", "gone", "busy"], clock[0])
    busy = [True]
    seen: list[str] = []

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        seen.extend(p["key"] for p in payloads)
        answers: dict[str, Exception | None] = {
            "ok": None,
            "gone": PermanentDeliveryError("message is gone"),
            "busy": RuntimeError("peer busy") if busy[0] else None,
        }
        return [answers[p["key"]] for p in payloads]

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all)}, clock=lambda: clock[0])
    assert await relay.drain_once() == 3
    # Not delivered, and not parked either: a retryable failure keeps the row live.
    [(attempts, is_delivered, dead, error)] = outbox_rows(db, "marks").values()
    assert (attempts, is_delivered, dead, error) == (1, False, False, "peer busy")

    busy[0] = False
    clock[0] += timedelta(minutes=10)
    assert await relay.drain_once() == 3  # every event again: the peer is idempotent per event
    assert sorted(seen) == sorted(["ok", "gone", "busy"] * 2)
    # Only the permanent refusal is left: the row is a dead letter, for an operator to look at.
    [(attempts, is_delivered, dead, error)] = outbox_rows(db, "marks").values()
    assert (attempts, is_delivered, dead, error) == (2, False, True, "message is gone")


async def test_an_ordered_batched_topic_sends_only_each_partitions_head(engine: AsyncEngine, db: TestDatabase) -> None:
    now = datetime.now(UTC) - timedelta(seconds=1)
    async with UnitOfWork(engine) as uow:
        for i, (key, conversation) in enumerate((("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B"))):
            payload = {"key": key, "conversation": conversation}
            await add_event(uow.conn, OUTBOX, "marks", key, payload, now + timedelta(microseconds=i))
        await uow.commit()
    calls: list[list[str]] = []

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        calls.append([p["key"] for p in payloads])
        return [None] * len(payloads)

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all)}, ordered_by={"marks": "conversation"})
    while await relay.drain_once():
        pass
    assert calls == [["a1", "b1"], ["a2", "b2"]]


async def test_a_batch_delivery_span_links_to_every_writers_span(
    engine: AsyncEngine, db: TestDatabase, spans: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("tests")
    writers = []
    for key in ("a", "b", "c"):
        with tracer.start_as_current_span(f"write {key}") as writer:
            await store(engine, "marks", [key])
        writers.append(writer.get_span_context())
    await store(engine, "marks", ["untraced"])  # written outside any span: nothing to link
    failing = [False]
    seen: list[Mapping[str, Any]] = []

    async def mark_all(payloads: Payloads) -> list[Exception | None]:
        if failing[0]:
            raise ConnectionError("peer down")
        seen.extend(payloads)
        return [None] * len(payloads)

    relay = OutboxRelay(engine, OUTBOX, {"marks": Batched(mark_all)})
    assert await relay.drain_once() == 4
    assert sorted(p["key"] for p in seen) == ["a", "b", "c", "untraced"]
    assert not any(OUTBOX_TRACE_KEY in p for p in seen)  # the handler never sees the carrier
    [span] = [s for s in spans.get_finished_spans() if s.name == "outbox deliver marks"]
    assert span.kind == trace.SpanKind.CONSUMER
    assert span.parent is None  # many writers, no one parent: links instead
    assert {(link.context.trace_id, link.context.span_id) for link in span.links} == {
        (w.trace_id, w.span_id) for w in writers
    }
    assert span.attributes is not None
    assert span.attributes["zenthor.outbox.topic"] == "marks"
    assert span.attributes["zenthor.outbox.batch_size"] == 4
    assert span.status.status_code != trace.StatusCode.ERROR

    # A call that raises marks its span as failed.
    spans.clear()
    failing[0] = True
    with tracer.start_as_current_span("write d"):
        await store(engine, "marks", ["d"])
    assert await relay.drain_once() == 1
    [span] = [s for s in spans.get_finished_spans() if s.name == "outbox deliver marks"]
    assert span.status.status_code == trace.StatusCode.ERROR

