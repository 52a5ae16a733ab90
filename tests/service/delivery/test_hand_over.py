"""A recipient's head handed over by the statement that finishes it (migration 0006): however
many recipients one acknowledgement frees, each one's next message becomes its head and is
claimable at once, and each account's WatchOutbound streams are woken once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from services.delivery.store.tables import OUTBOUND_CHANGES
from tests.service.conftest import Running
from tests.support.database import TestDatabase
from tests.support.delivery_builders import claim, enqueue, hold_lease, row
from tests.support.grpc_client import service
from tests.support.migrations import alembic
from tests.support.notifications import notes_until_sentinel
from zenthor.config import ServiceName
from zenthor.gen.zenthor.delivery.v1 import delivery_pb2 as pb

PHONE_A, PHONE_B, PHONE_C, PHONE_D = "5511999990001", "5511999990002", "5511999990003", "5511999990004"


def heads(db: TestDatabase, account_id: str) -> list[tuple[str, uuid.UUID]]:
    return [
        (r[0], r[1])
        for r in db.sql(
            "SELECT recipient_key, id FROM delivery.outbound_messages WHERE account_id = %s AND is_head"
            " ORDER BY recipient_key",
            (account_id,),
        )
    ]


async def test_one_acknowledgement_hands_every_recipient_it_frees_over_and_wakes_each_account_once(
    delivery: Running,
) -> None:
    a1, a2 = await enqueue(delivery, to=PHONE_A), await enqueue(delivery, to=PHONE_A)
    b1, b2 = await enqueue(delivery, to=PHONE_B), await enqueue(delivery, to=PHONE_B)
    c1 = await enqueue(delivery, to=PHONE_C)  # nothing after it: its recipient falls idle
    d1, d2 = await enqueue(delivery, to=PHONE_D, account_id="second"), await enqueue(delivery, to=PHONE_D, account_id="second")
    await hold_lease(delivery, "wa1")
    await hold_lease(delivery, "wa1", account_id="second")
    assert {m.id for m in await claim(delivery, "wa1", max_messages=10)} == {a1.id, b1.id, c1.id}
    assert [m.id for m in await claim(delivery, "wa1", account_id="second", max_messages=10)] == [d1.id]

    with psycopg.connect(delivery.db.admin_dsn(), autocommit=True) as listener:
        listener.execute(f"LISTEN {OUTBOUND_CHANGES}")
        reply = await delivery.stub.CompleteOutboundMessages(
            pb.CompleteOutboundMessagesRequest(processor_id="wa1", ids=[a1.id, b1.id, c1.id, d1.id]), metadata=service()
        )
        notes = await asyncio.to_thread(notes_until_sentinel, listener, delivery.db, OUTBOUND_CHANGES)

    assert list(reply.refused_ids) == []
    assert sorted(notes) == [(OUTBOUND_CHANGES, "default"), (OUTBOUND_CHANGES, "second")]
    assert [row(delivery, m.id)["is_head"] for m in (a1, b1, c1, d1)] == [False] * 4
    assert [row(delivery, m.id)["is_head"] for m in (a2, b2, d2)] == [True] * 3
    assert {m.id for m in await claim(delivery, "wa1", max_messages=10)} == {a2.id, b2.id}
    assert [m.id for m in await claim(delivery, "wa1", account_id="second", max_messages=10)] == [d2.id]


Row = tuple[uuid.UUID, str, bool, str, datetime]  # id, recipient, is_head, status, created_at

START = datetime(2026, 1, 1, tzinfo=UTC)


def insert(db: TestDatabase, rows: list[Row]) -> None:
    """Outbound rows of the default account written as they stand (a processing row is wa1's)."""
    with psycopg.connect(db.admin_dsn(), autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO delivery.outbound_messages (id, channel, account_id, conversation_id, message_id,"
            " recipient, recipient_key, is_head, content, status, processor_id, locked_until, created_at, updated_at)"
            " VALUES (%s, 'whatsapp', 'default', gen_random_uuid(), gen_random_uuid(), %s, %s, %s, 'hi', %s, %s, %s, %s, %s)",
            [
                (i, to, to, head, status, "wa1" if status == "processing" else None,
                 START + timedelta(hours=1) if status == "processing" else None, at, at)
                for i, to, head, status, at in rows
            ],
        )


def finish_processing_heads(db: TestDatabase) -> list[tuple[str, str]]:
    """Every processing row sent in one statement; the wake-ups it sent."""
    with psycopg.connect(db.admin_dsn(), autocommit=True) as listener:
        listener.execute(f"LISTEN {OUTBOUND_CHANGES}")
        db.sql(
            "UPDATE delivery.outbound_messages SET status = 'sent', is_head = false, processor_id = NULL,"
            " locked_until = NULL WHERE status = 'processing'"
        )
        return notes_until_sentinel(listener, db, OUTBOUND_CHANGES)


def test_a_statement_finishing_hundreds_of_heads_hands_each_recipient_to_its_oldest_unfinished_row(
    db: TestDatabase,
) -> None:
    # Per recipient: its head, then a row waiting for a retry, then a pending one (the retry one
    # is older, so it is the next head); every tenth recipient has nothing after its head.
    rows: list[Row] = []
    for n in range(300):
        to = f"55119{n:08d}"
        statuses = ["processing"] if n % 10 == 0 else ["processing", "waiting_retry", "pending"]
        rows += [(uuid.uuid4(), to, k == 0, status, START + timedelta(seconds=k)) for k, status in enumerate(statuses)]
    insert(db, rows)

    assert finish_processing_heads(db) == [(OUTBOUND_CHANGES, "default")]
    expected = sorted((to, i) for i, to, _, status, _ in rows if status == "waiting_retry")
    assert heads(db, "default") == expected
    assert len(expected) == 270


def trigger_names(db: TestDatabase) -> list[str]:
    return [
        r[0]
        for r in db.sql(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'delivery.outbound_messages'::regclass AND NOT tgisinternal"
        )
    ]


def test_migration_0006_goes_back_to_the_row_trigger_and_forward_again_handing_heads_over_each_way(
    db: TestDatabase,
) -> None:
    alembic(db, ServiceName.DELIVERY, "downgrade", "0005")
    assert trigger_names(db) == ["outbound_hand_over_head"]
    first, second = uuid.uuid4(), uuid.uuid4()
    insert(db, [(first, PHONE_A, True, "processing", START), (second, PHONE_A, False, "pending", START + timedelta(seconds=1))])
    assert finish_processing_heads(db) == [(OUTBOUND_CHANGES, "default")]
    assert heads(db, "default") == [(PHONE_A, second)]

    alembic(db, ServiceName.DELIVERY, "upgrade", "head")
    assert trigger_names(db) == ["outbound_hand_over_heads"]
    third = uuid.uuid4()
    db.sql("UPDATE delivery.outbound_messages SET status = 'processing', processor_id = 'wa1',"
           " locked_until = now() + interval '1 hour' WHERE id = %s", (second,))
    insert(db, [(third, PHONE_A, False, "pending", START + timedelta(seconds=2))])
    assert finish_processing_heads(db) == [(OUTBOUND_CHANGES, "default")]
    assert heads(db, "default") == [(PHONE_A, third)]


def test_the_hand_over_plans_its_statement_once_per_connection_not_per_call(db: TestDatabase) -> None:
    # Re-planning it per call cost more than running it (agent_queue's migration 0008).
    config = db.sql("SELECT proconfig FROM pg_proc WHERE oid = 'delivery.outbound_hand_over_heads'::regproc")
    assert config == [(["plan_cache_mode=force_generic_plan"],)]
