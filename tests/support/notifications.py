"""Reading what Postgres NOTIFY sent, without counting on timing."""

from __future__ import annotations

from typing import Any

import psycopg

from tests.support.database import TestDatabase

SENTINEL = "sentinel"


def notes_until_sentinel(listener: psycopg.Connection[Any], db: TestDatabase, channel: str) -> list[tuple[str, str]]:
    """Every notification `listener` hears before a sentinel sent now on `channel` (which it
    listens to): Postgres delivers them in commit order, so these are all the ones committed
    before this call."""
    db.sql("SELECT pg_notify(%s, %s)", (channel, SENTINEL))
    notes: list[tuple[str, str]] = []
    for note in listener.notifies(timeout=30):
        if note.channel == channel and note.payload == SENTINEL:
            return notes
        notes.append((note.channel, note.payload))
    raise AssertionError(f"no sentinel within 30 s; heard {notes}")
