"""Opaque, typed, time-ordered ids: a short table prefix and a UUIDv7 (`usr_0190…`).

Stored as `uuid` in Postgres; the prefix lives only at the edge, so a wrong-table id is caught
before any query runs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import uuid_utils

from zenthor.errors import InvalidArgument

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class IdKind:
    """One table's id scheme."""

    prefix: str

    def new(self) -> uuid.UUID:
        return uuid.UUID(bytes=uuid_utils.uuid7().bytes)

    def format(self, value: uuid.UUID) -> str:
        return f"{self.prefix}_{value.hex}"

    def sql(self, column: str) -> str:
        """`format` as a SQL expression over a uuid column, for statements that build ids
        themselves (event payloads, wake-up keys written in the same statement)."""
        return f"'{self.prefix}_' || replace({column}::text, '-', '')"

    def parse(self, text: str, field: str) -> uuid.UUID:
        """The UUID inside `text`, or InvalidArgument naming `field`."""
        prefix, sep, body = text.partition("_")
        if not text:
            raise InvalidArgument(field, "is required")
        if not sep or not _HEX32.match(body):
            raise InvalidArgument(field, f"must be an id like {self.prefix}_<32 hex digits>")
        if prefix != self.prefix:
            raise InvalidArgument(field, f"must be a {self.prefix}_ id, got a {prefix}_ id")
        return uuid.UUID(hex=body)

    def parse_optional(self, text: str | None, field: str) -> uuid.UUID | None:
        return None if not text else self.parse(text, field)


USER = IdKind("usr")
CONTACT = IdKind("ctc")
PHONE_VERIFICATION = IdKind("pv")
CONVERSATION = IdKind("conv")
MESSAGE = IdKind("msg")
MEMORY = IdKind("mem")
JOB = IdKind("job")
AGENT = IdKind("agt")
SKILL = IdKind("skl")
SCHEDULED_TASK = IdKind("task")
OUTBOUND = IdKind("out")
APPROVAL = IdKind("apv")
PLUGIN_DEFINITION = IdKind("pld")
PLUGIN_INSTALL = IdKind("pli")
PLUGIN_POLICY = IdKind("plp")
TODOIST_CONNECTION = IdKind("tdc")
OUTBOX_EVENT = IdKind("evt")
WEBHOOK_ENDPOINT = IdKind("whe")
WEBHOOK_DELIVERY = IdKind("whd")
