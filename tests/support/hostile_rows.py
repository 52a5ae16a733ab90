"""Row fingerprints of every service schema, to prove a rejected call changed nothing.

One query sums a hash of every row of every table (the outbox only by its events' identity:
the relay updates attempt counters on its own), and counts the outbox events still to be
delivered to a peer — those are the only writes that happen in the background, so a
comparison is conclusive only when none is pending at its start (Temporal is unreachable in
this suite, so the events bound for it — `temporal.*`: retry-workflow starts, scheduled-task
workflow wake-ups — never land anywhere and are not waited for)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from tests.support.database import TestDatabase
from zenthor.config import ServiceName
from zenthor.retries import RETRY_TOPIC

# Outbox topics whose peer is Temporal (RETRY_TOPIC among them), as a LIKE pattern.
TEMPORAL_TOPICS = RETRY_TOPIC.split(".")[0] + ".%"

SETTLE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Fingerprint:
    rows: dict[str, tuple[int, int]]  # schema.table → (row count, sum of row hashes)
    pending_events: int  # outbox events that will still write into a peer

    def changed_tables(self, other: Fingerprint) -> list[str]:
        return sorted(t for t in self.rows.keys() | other.rows.keys() if self.rows.get(t) != other.rows.get(t))


class RowFingerprints:
    """Takes fingerprints over one superuser connection (autocommit, each a fresh snapshot)."""

    def __init__(self, db: TestDatabase) -> None:
        self._conn = psycopg.connect(db.admin_dsn(), autocommit=True)
        schemas = [s.value for s in ServiceName]
        tables = self._conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_schema = ANY(%s) AND table_type = 'BASE TABLE' AND table_name <> 'alembic_version'"
            " ORDER BY 1, 2",
            (schemas,),
        ).fetchall()
        parts: list[str] = []
        outboxes: list[str] = []
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            if table == "outbox":
                row_hash = "hashtext(t.id::text || t.topic || t.key || t.payload::text)"
                outboxes.append(
                    f"SELECT count(*) FROM {name} WHERE delivered_at IS NULL AND dead_at IS NULL AND topic NOT LIKE %(temporal)s"
                )
            else:
                row_hash = "hashtext(t::text)"
            parts.append(f"SELECT '{schema}.{table}', count(*), coalesce(sum({row_hash}::bigint), 0) FROM {name} t")
        self._rows_sql = " UNION ALL ".join(parts)
        self._pending_sql = "SELECT " + (" + ".join(f"({q})" for q in outboxes) or "0")

    def take(self) -> Fingerprint:
        rows = {name: (int(count), int(total)) for name, count, total in self._conn.execute(self._rows_sql).fetchall()}
        return Fingerprint(rows, self.pending_events())

    def pending_events(self) -> int:
        row = self._conn.execute(self._pending_sql, {"temporal": TEMPORAL_TOPICS}).fetchone()
        return int(row[0]) if row else 0

    def settle(self) -> bool:
        """Waits (bounded) until no outbox event is still on its way into a peer's tables;
        False when some stay pending (a peer keeps refusing them retryably)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while self.pending_events():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)  # polling the state waited for, bounded by the deadline
        return True

    def close(self) -> None:
        self._conn.close()
