"""Arrangements for the messages service's tests: a settable clock, conversations made through
the real RPCs, and row counts read as the superuser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.database import TestDatabase
from tests.support.grpc_client import service
from zenthor import ids
from zenthor.gen.zenthor.common.v1 import types_pb2 as common
from zenthor.gen.zenthor.messages.v1 import messages_pb2 as pb

T0 = datetime.fromtimestamp(1_700_000_000, UTC)  # the scenarios' start time


class TestClock:
    """Real time until a test sets it; then it stands still until moved."""

    __test__ = False

    def __init__(self) -> None:
        self.fixed: datetime | None = None

    def __call__(self) -> datetime:
        return self.fixed or datetime.now(UTC)

    def set(self, value: datetime) -> None:
        self.fixed = value

    def advance(self, delta: timedelta) -> None:
        self.fixed = self() + delta


async def web_conversation(stub: Any, user: Any, title: str | None = None) -> pb.Conversation:
    """A web conversation created by the user (W1 when untitled: "New chat")."""
    reply = await stub.CreateConversation(pb.CreateConversationRequest(title=title), metadata=user)
    return reply.conversation


async def whatsapp_conversation(stub: Any, contact_id: Any) -> pb.Conversation:
    reply = await stub.GetOrCreateConversation(
        pb.GetOrCreateConversationRequest(channel=common.CHANNEL_WHATSAPP, contact_id=ids.CONTACT.format(contact_id)),
        metadata=service(),
    )
    return reply.conversation


def count(db: TestDatabase, table: str) -> int:
    return int(db.sql(f"SELECT count(*) FROM messages.{table}")[0][0])


def counts(db: TestDatabase) -> dict[str, int]:
    return {t: count(db, t) for t in ("conversations", "messages", "inbound_dedupe", "memories", "outbox")}
