"""Inbound dedupe: first sighting vs repeat, the key (channel, account, provider id —
docs/hardening.md #35), concurrency, and the retention sweep."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from tests.service.conftest import Running
from tests.support.grpc_client import rpc_error, service
from tests.support.messages_builders import T0, TestClock, count
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb


async def check(messages: Running, message_id: str, account: str = "default", channel: Any = common.CHANNEL_WHATSAPP) -> bool:
    reply = await messages.stub.CheckAndRegisterInbound(
        pb.CheckAndRegisterInboundRequest(channel=channel, channel_message_id=message_id, account_id=account),
        metadata=service(),
    )
    return reply.is_duplicate


async def test_first_sighting_registers_and_the_repeat_is_a_duplicate(messages: Running) -> None:
    # A provider message id seen for the first time is registered; the repeat is a duplicate.
    assert await check(messages, "3EB0ABC") is False
    assert count(messages.db, "inbound_dedupe") == 1
    assert await check(messages, "3EB0ABC") is True
    assert messages.db.sql("SELECT channel, account_id, channel_message_id FROM messages.inbound_dedupe") == [
        ("whatsapp", "default", "3EB0ABC")
    ]


async def test_key_is_channel_account_and_provider_id(messages: Running) -> None:
    # Another account receiving the same provider id is new (docs/hardening.md #35).
    assert await check(messages, "3EB0ABC") is False
    assert await check(messages, "3EB0ABC", channel=common.CHANNEL_WEB) is False
    assert await check(messages, "3EB0ABC", account="other") is False  # original: duplicate
    assert await check(messages, "3EB0ABC", account="other") is True
    # No account is one key value of its own.
    assert await check(messages, "3EB0ABC", account="") is False
    assert await check(messages, "3EB0ABC", account="") is True
    assert count(messages.db, "inbound_dedupe") == 4


async def test_twenty_concurrent_registrations_of_one_id_make_exactly_one_new(messages: Running) -> None:
    # 20 concurrent registrations of one id, with and without an account: exactly one is new.
    for account in ("default", ""):
        results = await asyncio.gather(*(check(messages, "3EB0XYZ", account=account) for _ in range(20)))
        assert results.count(False) == 1 and results.count(True) == 19
    assert count(messages.db, "inbound_dedupe") == 2


async def test_cleanup_deletes_rows_older_than_the_retention_in_batches(messages: Running, clock: TestClock) -> None:
    # Rows older than the retention (24 h by default) are deleted; younger ones stay.
    clock.set(T0 - timedelta(hours=25))
    assert await check(messages, "old") is False
    clock.set(T0 - timedelta(hours=1))
    assert await check(messages, "recent") is False
    clock.set(T0)
    reply = await messages.stub.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(), metadata=service())
    assert (reply.deleted, reply.more) == (1, False)
    assert messages.db.sql("SELECT channel_message_id FROM messages.inbound_dedupe") == [("recent",)]
    assert await check(messages, "old") is False  # accepted again after cleanup
    half_hour = Duration(seconds=1_800)
    reply = await messages.stub.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(older_than=half_hour), metadata=service())
    assert reply.deleted == 1
    assert messages.db.sql("SELECT channel_message_id FROM messages.inbound_dedupe") == [("old",)]


async def test_cleanup_works_through_a_backlog_batch_by_batch(messages: Running, clock: TestClock) -> None:
    clock.set(T0 - timedelta(days=2))
    await asyncio.gather(*(check(messages, f"id{i}") for i in range(25)))
    clock.set(T0)
    rounds = []
    while True:
        reply = await messages.stub.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(batch_size=10), metadata=service())
        rounds.append(reply.deleted)
        if not reply.more:
            break
    assert rounds == [10, 10, 5]
    assert count(messages.db, "inbound_dedupe") == 0


async def test_cleanup_refuses_a_retention_of_ten_thousand_years_naming_the_field(messages: Running) -> None:
    # It used to overflow the date arithmetic and answer INTERNAL; a year is the longest retention.
    await check(messages, "3EB0OLD")
    for older_than in (Duration(seconds=10_000 * 365 * 86_400), Duration(seconds=366 * 86_400)):
        error = await rpc_error(
            messages.stub.CleanupInboundDedupe(pb.CleanupInboundDedupeRequest(older_than=older_than), metadata=service())
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(error) == ["older_than"]
    assert count(messages.db, "inbound_dedupe") == 1
    year = await messages.stub.CleanupInboundDedupe(
        pb.CleanupInboundDedupeRequest(older_than=Duration(seconds=365 * 86_400)), metadata=service()
    )
    assert year.deleted == 0
