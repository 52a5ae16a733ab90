"""Transactional outbox: a service stores an event in the same transaction as its own rows;
after commit the relay delivers it to the owning peer's idempotent RPC, and re-drives whatever
is still undelivered (peer down, crash) with capped, jittered backoff (docs/architecture.md §7).

Delivery is at-least-once; handlers call idempotent RPCs keyed by the event's natural key, so
the effect is exactly-once. One relay round, per topic:

    tx 1 (short): lease due rows — next_attempt_at = now + LEASE, attempts + 1 — and commit
    no tx:        call the handlers, several at once (a peer down costs its deadline once):
                  a plain `Handler` once per event; a `Batched` one once per chunk of up to
                  `max_size` events, answering per event
    tx 2 (short): delivered_at for successes (one statement); backoff or dead letter for failures

Batch handlers exist for high-volume topics (one delivery outcome per outbound message, thousands
a second): one peer call per event would make the round trips, not the peer's work, the limit,
so such a topic's handler takes a chunk of payloads and makes one peer call for all of them. Its
answer names each event's outcome, and an event counts as delivered only if that answer says so.

A batch of acknowledgements writes its events as one row, a bundle (`add_bundle`, or SQL
building `{"_bundle": [...]}`): one insert, one lease and one mark for the whole batch instead of
per event. The relay hands the handler the bundle's events, never the bundle, and marks the row
delivered once every event of it is; an event that fails retries (or parks) the whole row, so the
others go out again with it. Bundles are therefore for topics whose peer is idempotent per event
and that keep no write order (`ordered_by`).

No transaction stays open while a peer is called, each topic has its own loop (a peer that
is down never delays another peer's events), and a relay that dies mid-round loses nothing:
its leases run out and the events are delivered again. After MAX_ATTEMPTS an event becomes a
dead letter an operator sees (`python -m zenthor.outbox list`) and re-drives (`… redrive`).

With tracing on (zenthor/tracing.py) an event stored inside a span keeps that span's context in
its payload (`_trace`, taken off before the handler sees the payload), and its delivery runs in a
span that is the writer's child, so a request's trace goes on into the peer the event reaches.
A batch has many writers and a span only one parent: its delivery span links to each of them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import grpc
import sqlalchemy as sa
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from zenthor.backoff import backoff_delay_s
from zenthor.errors import is_permanent
from zenthor.ids import OUTBOX_EVENT
from zenthor.logs import get_logger
from zenthor.shutdown import cancel_and_wait
from zenthor.tracing import split_trace, with_trace

log = get_logger("zenthor.outbox")
_tracer = trace.get_tracer("zenthor.outbox")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 300.0
DEFAULT_BATCH = 100
# How long a leased event stays invisible to other relays: longer than any handler may take
# (peer deadlines are seconds), short enough that a crashed relay's events go out again soon.
LEASE = timedelta(seconds=60)
# With the 300 s cap this is a few hours of trying before an operator is asked to look.
MAX_ATTEMPTS = 40
# Handler calls of one topic in flight at once.
CONCURRENCY = 16
# Delivered events are kept this long (to look back at what went out, and so a use case repeated
# within it stores no second event), then the relay deletes them: one row per job, message and
# outbound send would otherwise pile up for ever. Dead letters and undelivered events stay.
RETENTION = timedelta(days=7)
# How often a relay deletes delivered events past RETENTION, at most PRUNE_BATCH × PRUNE_BATCHES
# per run (a year of backlog on first start goes over a few runs, none holding a lock long).
PRUNE_EVERY_S = 600.0
PRUNE_BATCH = 1_000
PRUNE_BATCHES = 100

# The payload field of a bundle row: the list of its events' payloads (module docstring).
BUNDLE_KEY = "_bundle"
# A bundle has no natural key: each row gets a fresh one, in SQL as in add_bundle.
BUNDLE_KEY_SQL = "'bundle:' || gen_random_uuid()"


def bundle_sql(event: str, order_by: str) -> str:
    """The payload of a bundle row built by SQL over a row set, for writers whose events come from
    the statement itself: `event` is a jsonb expression per row, kept in `order_by` order."""
    return f"jsonb_build_object('{BUNDLE_KEY}', jsonb_agg({event} ORDER BY {order_by}))"


Handler = Callable[[Mapping[str, Any]], Awaitable[None]]
# A batch handler's call: the payloads of a chunk, in lease order → one entry per payload, in
# the same order: None = delivered, an exception = that event failed (classified as a plain
# handler's exception is). Raising fails every event of the chunk.
BatchCall = Callable[[Sequence[Mapping[str, Any]]], Awaitable[Sequence[Exception | None]]]


@dataclass(frozen=True)
class Batched:
    """A topic's handler that takes up to `max_size` events per call: for high-volume topics
    whose peer has a batch RPC (module docstring)."""

    call: BatchCall
    max_size: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"Batched.max_size must be at least 1, got {self.max_size}")


# What `OutboxRelay` takes per topic.
TopicHandler = Handler | Batched


class Kick(Protocol):
    """`OutboxRelay.kick` as a use case holds it: the topics it just wrote, or none for all."""

    def __call__(self, *topics: str) -> None: ...


class PermanentDeliveryError(Exception):
    """The peer rejected the event for good; retrying cannot help."""


class BatchResultError(Exception):
    """A batch handler's answer that does not name one outcome per event: a bug in the handler.
    No event of that chunk counts as delivered; they are retried like any other failure (a
    fixed handler then delivers them, where a dead letter would need an operator)."""


def _is_permanent(error: Exception) -> bool:
    """A handler's own verdict, or a peer's answer that no retry can change (the kit's one
    table, zenthor.errors.is_permanent). Everything else is retried with capped backoff."""
    if isinstance(error, PermanentDeliveryError):
        return True
    return isinstance(error, grpc.aio.AioRpcError) and is_permanent(error.code())


# Dead letters without reading the table: the metrics gauge counts them at every refresh and
# `outbox list` pages them. Only parked rows have an entry, so no hot path ever writes to it.
DEAD_LETTER_INDEX = "outbox_dead_idx"


def outbox_table(metadata: sa.MetaData, schema: str, *, dead_letter_index: bool = True) -> sa.Table:
    """The outbox as it is now; `dead_letter_index=False` gives shape v1, which the services'
    first migrations create (`create_outbox_table`) before a later one adds the index."""
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        # Natural idempotency key (e.g. the message id for EnqueueJob): one event per key.
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True)),
        sa.Column("dead_at", sa.DateTime(timezone=True)),
        sa.Column("last_error", sa.Text),
        sa.UniqueConstraint("topic", "key", name="outbox_topic_key_uq"),
        sa.Index(
            "outbox_due_idx",
            "next_attempt_at",
            postgresql_where=sa.text("delivered_at IS NULL AND dead_at IS NULL"),
        ),
        *([sa.Index(DEAD_LETTER_INDEX, "dead_at", postgresql_where=sa.text("dead_at IS NOT NULL"))] if dead_letter_index else []),
        schema=schema,
    )


def _live(t: sa.FromClause) -> sa.ColumnElement[bool]:
    """Still to deliver: neither delivered nor parked as a dead letter (the due index's predicate)."""
    return sa.and_(t.c.delivered_at.is_(None), t.c.dead_at.is_(None))


def _due(t: sa.FromClause) -> sa.ColumnElement[bool]:
    """Live and due at the statement's `now` parameter."""
    return sa.and_(_live(t), t.c.next_attempt_at <= sa.bindparam("now"))


def create_outbox_table(bind: sa.engine.Connection, schema: str) -> None:
    """The outbox as every service's first migration creates it (table, unique key, due
    index), from the one definition above. Shape v1: change it only through a new migration."""
    outbox_table(sa.MetaData(), schema, dead_letter_index=False).create(bind)


def create_dead_letter_index(bind: sa.engine.Connection, schema: str) -> None:
    """Shape v2: the dead-letter index, added by one migration per service."""
    table = outbox_table(sa.MetaData(), schema)
    next(i for i in table.indexes if i.name == DEAD_LETTER_INDEX).create(bind)


def backoff_s(attempts: int, rng: random.Random | None = None) -> float:
    """The redelivery delay after `attempts` failures: the kit's one backoff rule
    (zenthor.backoff) between BACKOFF_BASE_S and BACKOFF_CAP_S."""
    return backoff_delay_s(attempts, rng, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S)


async def add_event(
    conn: AsyncConnection, table: sa.Table, topic: str, key: str, payload: Mapping[str, Any], now: datetime
) -> None:
    """Stores an event inside the caller's transaction; a second event with the same
    (topic, key) is ignored, so retried use cases do not duplicate effects."""
    await add_events(conn, table, [(topic, key, payload)], now)


async def add_events(
    conn: AsyncConnection, table: sa.Table, events: Sequence[tuple[str, str, Mapping[str, Any]]], now: datetime
) -> None:
    """Many (topic, key, payload) events in one statement, each as `add_event` stores it: a batch
    use case (many rows acknowledged at once) pays one round trip, not one per event. With
    tracing on, the writer's trace context travels with each event (zenthor/tracing.py)."""
    if not events:
        return
    rows = [
        {"id": str(OUTBOX_EVENT.new()), "topic": topic, "key": key, "payload": with_trace(payload)}
        for topic, key, payload in events
    ]
    await conn.execute(_insert_events_statement(table), {"events": json.dumps(rows), "now": now})


async def add_bundle(
    conn: AsyncConnection, table: sa.Table, topic: str, payloads: Sequence[Mapping[str, Any]], now: datetime
) -> None:
    """Many events of one unordered topic as one row, inside the caller's transaction (module
    docstring): for a batch use case whose events need no key of their own (each comes from a
    guarded transition that happens once)."""
    if payloads:
        await add_events(conn, table, [(topic, f"bundle:{uuid.uuid4()}", {BUNDLE_KEY: list(payloads)})], now)


@functools.cache
def _insert_events_statement(table: sa.Table) -> sa.TextClause:
    """One fixed statement per outbox table taking the whole batch as one JSON document: a
    multi-row VALUES would be compiled anew on every call, which cost delivery's outcome writer
    more than its database work."""
    return sa.text(
        f"""
        INSERT INTO {table.schema}.{table.name} (id, topic, key, payload, created_at, next_attempt_at)
        SELECT v.id, v.topic, v.key, v.payload, :now, :now
          FROM json_to_recordset(CAST(:events AS json)) AS v(id uuid, topic text, key text, payload jsonb)
        ON CONFLICT ON CONSTRAINT outbox_topic_key_uq DO NOTHING
        """
    )


@dataclass(frozen=True)
class _Leased:
    id: uuid.UUID
    topic: str
    payload: Mapping[str, Any]
    attempts: int  # including this one
    trace_carrier: Mapping[str, str] | None = None  # the writer's trace context, when traced


@dataclass(frozen=True)
class _Outcome:
    event: _Leased
    error: Exception | None


class OutboxRelay:
    """Delivers due events. `kick(topic)` after a commit delivers at once; a poll every `poll_s`
    (one query for the topics with events due) wakes the topics whose retries came due or whose
    events another replica wrote. Several relays (replicas) can run: rows are leased with
    SKIP LOCKED and a lease time."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: sa.Table,
        handlers: Mapping[str, TopicHandler],
        *,
        poll_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = MAX_ATTEMPTS,
        concurrency: int = CONCURRENCY,
        ordered_by: Mapping[str, str] | None = None,
        retention: timedelta = RETENTION,
        prune_every_s: float = PRUNE_EVERY_S,
    ) -> None:
        self._engine = engine
        self._table = table
        self._handlers = dict(handlers)
        self._poll_s = poll_s
        self._clock = clock
        self._max_attempts = max_attempts
        self._concurrency = concurrency
        self._retention = retention
        self._prune_every_s = prune_every_s
        # Topics whose events must reach their peer in the order they were written, per
        # partition (topic → the payload field naming it): an event is leased only once every
        # earlier one of its partition was delivered or parked as a dead letter. EnqueueJob is
        # one: two messages sent 10 ms apart must queue their jobs in that order, or the
        # second could head the conversation and be answered first.
        self._ordered_by = dict(ordered_by or {})
        # Built once: every kick of a hot path runs its topic's lease (None: topics nobody handles).
        self._lease_statements = {topic: self._lease_statement(topic) for topic in [*self._handlers, None]}
        self._wakes = {topic: asyncio.Event() for topic in self._handlers}
        self._tasks: list[asyncio.Task[None]] = []
        # The lease and record statements run without BEGIN/COMMIT round trips: each is one
        # statement, atomic by itself, and they run on every kick of a hot path.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # The poll's one statement: which handled topics have events due.
        topics = sa.func.unnest(sa.cast(list(self._handlers), pg.ARRAY(sa.Text))).table_valued("topic").render_derived()
        self._due_topics = sa.select(topics.c.topic).where(sa.exists().where(table.c.topic == topics.c.topic, _due(table)))
        # The prune's one statement: a batch of delivered events older than the cutoff. No index
        # finds them (one more index would cost every event of every hot path another index
        # write), so the inner select reads the table, stopping at the batch's size; a run is
        # every 10 minutes.
        old = sa.select(table.c.id).where(table.c.delivered_at < sa.bindparam("cutoff")).limit(sa.bindparam("batch"))
        self._prune_statement = sa.delete(table).where(table.c.id.in_(old.scalar_subquery()))

    def kick(self, *topics: str) -> None:
        """Delivers the named topics' due events now (every topic's when none is named). A use
        case on a hot path names what it wrote: waking every topic would cost each of the
        others an empty lease."""
        for topic in topics or self._wakes:
            wake = self._wakes.get(topic)
            if wake is not None:
                wake.set()

    def start(self) -> None:
        if not self._tasks:
            for wake in self._wakes.values():
                wake.set()  # a first round for whatever is due already
            self._tasks = [
                *(asyncio.create_task(self._run(topic), name=f"outbox-relay-{topic}") for topic in self._handlers),
                asyncio.create_task(self._poll(), name="outbox-relay-poll"),
                asyncio.create_task(self._prune_periodically(), name="outbox-relay-prune"),
            ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks, what="outbox relay")
        self._tasks = []

    async def _run(self, topic: str) -> None:
        """The topic's rounds, one after another while they find events, then asleep until a
        kick (a use case's commit, or the poll finding the topic due)."""
        wake = self._wakes[topic]
        while True:
            await wake.wait()
            wake.clear()
            try:
                while await self.drain_topic(topic) > 0:
                    pass
            except Exception:  # a DB hiccup must not kill the relay; the poll wakes it again
                log.exception("outbox.relay_error", topic=topic)

    async def _poll(self) -> None:
        """Every `poll_s`, one query for the topics with events due (a retry whose backoff ran
        out, an event another replica committed, a round a DB hiccup broke) wakes just those:
        an idle service pays one small statement a tick, not one lease per topic."""
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                async with self._autocommit.connect() as conn:
                    due = (await conn.execute(self._due_topics, {"now": self._clock()})).scalars().all()
            except Exception:
                log.exception("outbox.poll_error")
                continue
            if due:
                self.kick(*due)

    async def _prune_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._prune_every_s)
            try:
                await self.prune()
            except Exception:
                log.exception("outbox.prune_error")

    async def prune(self, batch: int = PRUNE_BATCH, max_batches: int = PRUNE_BATCHES) -> int:
        """Deletes events delivered more than `retention` ago, a batch per statement (each its
        own short transaction: replicas pruning at once wait at most for one another's batch);
        returns how many. Dead letters and events still to deliver are never touched."""
        cutoff = self._clock() - self._retention
        pruned = 0
        for _ in range(max_batches):
            async with self._autocommit.connect() as conn:
                deleted = (await conn.execute(self._prune_statement, {"cutoff": cutoff, "batch": batch})).rowcount
            pruned += deleted
            if deleted < batch:
                break
        if pruned:
            log.info("outbox.pruned", events=pruned, delivered_before=cutoff.isoformat())
        return pruned

    async def drain_once(self, batch: int = DEFAULT_BATCH) -> int:
        """One round for every topic (events of topics without a handler included, so they
        become dead letters); returns how many events were attempted."""
        topics = [*self._handlers, None]
        counts = await asyncio.gather(*(self.drain_topic(topic, batch) for topic in topics))
        return sum(counts)

    async def drain_topic(self, topic: str | None, batch: int = DEFAULT_BATCH) -> int:
        """Leases up to `batch` due events of `topic` (None: of topics nobody handles),
        delivers them, records the outcomes; returns how many were attempted."""
        leased = await self._lease(topic, batch)
        if not leased:
            return 0
        handler = self._handlers.get(topic) if topic is not None else None
        limit = asyncio.Semaphore(self._concurrency)
        outcomes: list[_Outcome] = []
        if isinstance(handler, Batched):

            async def deliver_chunk(chunk: list[_Leased]) -> list[_Outcome]:
                async with limit:
                    return await self._call_batch(handler, chunk)

            chunks = [leased[i : i + handler.max_size] for i in range(0, len(leased), handler.max_size)]
            for chunk_outcomes in await asyncio.gather(*(deliver_chunk(chunk) for chunk in chunks)):
                outcomes.extend(chunk_outcomes)
        else:

            async def deliver(event: _Leased) -> _Outcome:
                async with limit:
                    return _Outcome(event, await self._call(handler, event))

            outcomes.extend(await asyncio.gather(*(deliver(event) for event in leased)))
        await self._record(_per_row(outcomes))
        return len(leased)

    async def _lease(self, topic: str | None, batch: int) -> list[_Leased]:
        now = self._clock()
        async with self._autocommit.connect() as conn:
            rows = (await conn.execute(self._lease_statements[topic], {"now": now, "leased_until": now + LEASE, "batch": batch})).all()
        leased = []
        # RETURNING keeps no order; the lease order (due first, then write order: ids are
        # UUIDv7) is what a batch handler's chunks follow.
        for r in sorted(rows, key=lambda r: (r.due_at, r.id)):
            payload, carrier = split_trace(r.payload)
            bundle = payload.get(BUNDLE_KEY)
            for event in bundle if isinstance(bundle, list) else [payload]:
                leased.append(_Leased(r.id, r.topic, event, r.attempts, carrier))
        return leased

    def _lease_statement(self, topic: str | None) -> sa.Update:
        """Due rows of `topic` (None: of topics nobody handles) leased, in one statement."""
        t = self._table
        due = (
            sa.select(t.c.id, t.c.next_attempt_at.label("due_at"))
            .where(_due(t))
            .where(t.c.topic == topic if topic is not None else t.c.topic.not_in(list(self._handlers) or [""]))
            .where(*self._in_order(topic))
            .order_by(t.c.next_attempt_at)
            .limit(sa.bindparam("batch"))
            .with_for_update(skip_locked=True)
            .subquery("due")
        )
        return (
            sa.update(t)
            .where(t.c.id == due.c.id)
            .values(next_attempt_at=sa.bindparam("leased_until"), attempts=t.c.attempts + 1)
            .returning(t.c.id, t.c.topic, t.c.payload, t.c.attempts, due.c.due_at)
        )

    def _in_order(self, topic: str | None) -> list[sa.ColumnElement[bool]]:
        """For an ordered topic: no earlier undelivered, live event of the same partition. Ids are
        UUIDv7, drawn inside the writer's transaction after it took its own locks, so id order is
        write order within a partition."""
        field = self._ordered_by.get(topic) if topic is not None else None
        if field is None:
            return []
        t, earlier = self._table, self._table.alias("earlier")
        return [
            ~sa.exists().where(
                earlier.c.topic == t.c.topic,
                _live(earlier),
                earlier.c.payload[field].astext == t.c.payload[field].astext,
                earlier.c.id < t.c.id,
            )
        ]

    async def _call(self, handler: Handler | None, event: _Leased) -> Exception | None:
        if event.trace_carrier is None:  # written outside a trace (always so with tracing off)
            return await self._deliver(handler, event)
        # The delivery span is a child of the span that wrote the event, so one request's trace
        # goes on into the peer the outbox calls for it, however much later that happens.
        with _tracer.start_as_current_span(
            f"outbox deliver {event.topic}",
            context=propagate.extract(event.trace_carrier),
            kind=trace.SpanKind.CONSUMER,
            attributes={"zenthor.outbox.topic": event.topic, "zenthor.outbox.attempt": event.attempts},
        ) as span:
            error = await self._deliver(handler, event)
            if error is not None:
                span.set_status(_error_status(error))
            return error

    async def _deliver(self, handler: Handler | None, event: _Leased) -> Exception | None:
        try:
            if handler is None:
                raise PermanentDeliveryError(f"no handler for topic {event.topic!r}")
            await handler(event.payload)
        except Exception as e:
            return e
        return None

    async def _call_batch(self, handler: Batched, chunk: list[_Leased]) -> list[_Outcome]:
        topic = chunk[0].topic
        links = [link for event in chunk if (link := _writer_link(event)) is not None]
        # One span per peer call, when any event was written inside a trace (never with tracing
        # off); it cannot be the child of every writer, so it starts its own trace and links to
        # each writer's span instead.
        scope: AbstractContextManager[trace.Span | None] = (
            _tracer.start_as_current_span(
                f"outbox deliver {topic}",
                context=Context(),
                kind=trace.SpanKind.CONSUMER,
                links=links,
                attributes={"zenthor.outbox.topic": topic, "zenthor.outbox.batch_size": len(chunk)},
            )
            if links
            else nullcontext()
        )
        with scope as span:
            outcomes, failed_whole = _batch_outcomes(topic, chunk, await self._deliver_batch(handler, chunk))
            if span is not None:
                if failed_whole is not None:
                    span.set_status(_error_status(failed_whole))
                span.set_attribute("zenthor.outbox.failed", sum(o.error is not None for o in outcomes))
        return outcomes

    async def _deliver_batch(self, handler: Batched, chunk: list[_Leased]) -> Sequence[Exception | None] | Exception:
        """The handler's per-event answer, or the one exception that fails the whole chunk."""
        try:
            return await handler.call([event.payload for event in chunk])
        except Exception as e:
            return e

    async def _record(self, outcomes: list[_Outcome]) -> None:
        t = self._table
        now = self._clock()
        delivered = [o.event.id for o in outcomes if o.error is None]
        if delivered:
            async with self._autocommit.connect() as conn:
                await conn.execute(sa.update(t).where(t.c.id.in_(delivered)).values(delivered_at=now))
        if len(delivered) == len(outcomes):
            return
        async with self._engine.begin() as conn:
            for outcome in outcomes:
                event, error = outcome.event, outcome.error
                if error is None:
                    continue
                reason = str(error)[:500] or type(error).__name__
                if _is_permanent(error) or event.attempts >= self._max_attempts:
                    if not _is_permanent(error):
                        reason = f"gave up after {event.attempts} attempts: {reason}"[:500]
                    log.error("outbox.dead", topic=event.topic, event_id=str(event.id), error=reason)
                    values: dict[str, Any] = {"dead_at": now, "last_error": reason}
                else:
                    delay = backoff_s(event.attempts)
                    log.warning(
                        "outbox.retry", topic=event.topic, event_id=str(event.id), attempts=event.attempts,
                        in_s=round(delay, 2), error=reason[:200],
                    )
                    values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": reason}
                await conn.execute(sa.update(t).where(t.c.id == event.id).values(**values))


def _per_row(outcomes: list[_Outcome]) -> list[_Outcome]:
    """One outcome per row: a bundle's row is delivered only if every event of it was. Of its
    failures, a retryable one wins over a permanent one (the row stays live until its retries
    are used up)."""
    rows: dict[uuid.UUID, _Outcome] = {}
    for outcome in outcomes:
        kept = rows.get(outcome.event.id)
        if kept is None or _worse(outcome.error, kept.error):
            rows[outcome.event.id] = outcome
    return list(rows.values())


def _worse(error: Exception | None, than: Exception | None) -> bool:
    if error is None:
        return False
    return than is None or (_is_permanent(than) and not _is_permanent(error))


def _batch_outcomes(
    topic: str, chunk: list[_Leased], answer: Sequence[Exception | None] | Exception
) -> tuple[list[_Outcome], Exception | None]:
    """Each event's outcome from a batch handler's answer, and the exception that failed the
    whole chunk, if one did (the call raised, or answered wrongly)."""
    if isinstance(answer, Exception):
        return [_Outcome(event, answer) for event in chunk], answer
    # Checked at run time: a handler that miscounts must not get events it never confirmed
    # marked delivered.
    flaw = _batch_answer_flaw(answer, len(chunk))
    if flaw is not None:
        log.error("outbox.bad_batch_answer", topic=topic, events=len(chunk), flaw=flaw)
        error = BatchResultError(f"batch handler of topic {topic!r} answered {flaw} for {len(chunk)} events")
        return [_Outcome(event, error) for event in chunk], error
    return [_Outcome(event, error) for event, error in zip(chunk, answer, strict=True)], None


def _batch_answer_flaw(answer: object, events: int) -> str | None:
    """What is wrong with a batch handler's answer for `events` events, or None: it must be a
    sequence of one None or exception per event."""
    if not isinstance(answer, Sequence) or isinstance(answer, str | bytes):
        return f"a {type(answer).__name__}, not a sequence"
    if len(answer) != events:
        return f"{len(answer)} results"
    for entry in answer:
        if entry is not None and not isinstance(entry, Exception):
            return f"a {type(entry).__name__} among its results (only None or an exception)"
    return None


def _error_status(error: Exception) -> trace.Status:
    return trace.Status(trace.StatusCode.ERROR, str(error)[:200] or type(error).__name__)


def _writer_link(event: _Leased) -> trace.Link | None:
    """A link to the span that wrote `event`, when it was written inside one."""
    if event.trace_carrier is None:
        return None
    writer = trace.get_current_span(propagate.extract(event.trace_carrier)).get_span_context()
    return trace.Link(writer) if writer.is_valid else None


@dataclass(frozen=True)
class DeadLetter:
    id: uuid.UUID
    topic: str
    key: str
    attempts: int
    dead_at: datetime
    last_error: str | None


async def dead_letters(engine: AsyncEngine, table: sa.Table, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters, for an operator."""
    t = table
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(t.c.id, t.c.topic, t.c.key, t.c.attempts, t.c.dead_at, t.c.last_error)
                .where(t.c.dead_at.is_not(None))
                .order_by(t.c.dead_at.desc())
                .limit(limit)
            )
        ).all()
    return [DeadLetter(r.id, r.topic, r.key, r.attempts, r.dead_at, r.last_error) for r in rows]


@dataclass(frozen=True)
class OutboxStats:
    backlog: int
    dead_letters: int
    oldest_created_at: datetime | None  # of the backlog


async def outbox_stats(conn: AsyncConnection, table: sa.Table) -> OutboxStats:
    """What an operator watches (zenthor.metrics): the live backlog, read through the due index
    (its predicate is the backlog's), and the dead letters, through theirs: neither reads the
    delivered rows, however many a busy week leaves."""
    t = table
    live = _live(t)
    row = (
        await conn.execute(
            sa.select(
                sa.select(sa.func.count()).where(live).scalar_subquery(),
                sa.select(sa.func.min(t.c.created_at)).where(live).scalar_subquery(),
                sa.select(sa.func.count()).where(t.c.dead_at.is_not(None)).scalar_subquery(),
            )
        )
    ).one()
    return OutboxStats(backlog=int(row[0]), dead_letters=int(row[2]), oldest_created_at=row[1])


async def redrive(
    engine: AsyncEngine, table: sa.Table, *, topic: str | None = None, ids: list[uuid.UUID] | None = None,
    now: datetime | None = None,
) -> int:
    """Makes dead letters (all, one topic's, or the given ids) due again with a fresh attempt
    count; returns how many. Safe to run while relays run."""
    t = table
    where: list[sa.ColumnElement[bool]] = [t.c.dead_at.is_not(None), t.c.delivered_at.is_(None)]
    if topic is not None:
        where.append(t.c.topic == topic)
    if ids is not None:
        where.append(t.c.id.in_(ids))
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.update(t)
            .where(*where)
            .values(dead_at=None, attempts=0, next_attempt_at=now or datetime.now(UTC))
            .returning(t.c.id)
        )
        return len(result.all())
