"""Figure (i): what one claim costs as the pending backlog grows.

For each backlog size and spread (one conversation per job; `backlog_conversations`
conversations) the queue is filled server-side, vacuumed and analysed, then the service's own
claim statement (`services.agent_queue.store.jobs.CLAIM_JOBS`, read at run time so a rewrite is
measured as it lands) runs under EXPLAIN (ANALYZE, BUFFERS) a few times, each in a transaction
that is rolled back, so the backlog stays as it was. The raw-SQL floor's claim runs beside it.

The outbound queue gets the same series: one WhatsApp account's pending messages, one per
recipient or spread over `backlog_conversations` recipients, claimed by delivery's own statement
(`services.delivery.store.outbound.CLAIM`: the lease holder's oldest recipient heads) beside a raw
SKIP LOCKED claim of the same rows without the per-recipient rule.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg

from bench.core import Bench
from bench.jobs import RAW_CLAIM, load_jobs

# Values for every parameter the claim statement is known to take. A rewrite that adds one
# fails loudly here; add its value and the figure runs again.
CLAIM_PARAMS: dict[str, Any] = {
    "processor_id": "bench-explain",
    "max_jobs": 10,
    "any_job": True,
    "job_ids": [],
}


def claim_statement() -> tuple[str, str]:
    """(the claim SQL in psycopg's %(name)s style, where it came from)."""
    from services.agent_queue.store import jobs as store

    statement = store.CLAIM_JOBS
    if isinstance(statement, str):
        return statement, "services.agent_queue.store.jobs.CLAIM_JOBS"
    from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

    compiled = statement.compile(dialect=pg_psycopg.dialect())  # type: ignore[no-untyped-call]
    return str(compiled), "services.agent_queue.store.jobs.CLAIM_JOBS"


def _params(sql: str, known: dict[str, Any], name: str) -> dict[str, Any]:
    """Values for the parameters `sql` takes, from `known` (the dict called `name` here) with the
    current time filled in."""
    now = datetime.now(UTC)
    values = {**known, "now": now, "locked_until": now + timedelta(seconds=60)}
    names = set(re.findall(r"%\((\w+)\)s", sql))
    unknown = names - values.keys()
    if unknown:
        raise RuntimeError(f"the claim statement takes {sorted(unknown)}: add values to {name} in bench/backlog.py")
    return {k: values[k] for k in names}


def explain(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any], fmt: str = "JSON") -> Any:
    """EXPLAIN (ANALYZE, BUFFERS) of one execution, rolled back."""
    with conn.transaction(force_rollback=True):
        rows = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT {fmt}) {sql}", params).fetchall()
    return rows[0][0] if fmt == "JSON" else "\n".join(r[0] for r in rows)


def _costs(conn: psycopg.Connection[Any], sql: str, params: dict[str, Any], repeats: int) -> dict[str, float]:
    times: list[float] = []
    buffers: list[float] = []
    rows_claimed: list[float] = []
    for _ in range(repeats):
        plan = explain(conn, sql, params)
        root = plan[0] if isinstance(plan, list) else json.loads(plan)[0]
        times.append(float(root["Execution Time"]))
        node = root["Plan"]
        buffers.append(float(node.get("Shared Hit Blocks", 0) + node.get("Shared Read Blocks", 0)))
        rows_claimed.append(float(node.get("Actual Rows", 0)))
    return {
        "min_ms": min(times),
        "median_ms": statistics.median(times),
        "max_ms": max(times),
        "buffers": statistics.median(buffers),
        "rows": statistics.median(rows_claimed),
    }


Series = dict[str, dict[str, dict[str, dict[str, float]]]]


def _series(
    bench: Bench, label: str, load: Callable[[int], None], claim: tuple[str, dict[str, Any]],
    raw: tuple[str, dict[str, Any]], series: Series, plans: dict[str, str],
) -> None:
    """One spread's costs at every backlog size: `load(size)` fills the queue, then our claim and
    the raw one run under EXPLAIN; the plans of the smallest and largest size are kept."""
    opts, dsn = bench.options, bench.stack.admin_dsn()
    series[label] = {}
    for size in opts.backlog_sizes:
        bench.say(f"(i) backlog {size:,} pending, {label}: loading, then EXPLAIN ×{opts.explain_repeats}")
        load(size)
        with psycopg.connect(dsn, autocommit=True) as conn:
            ours = _costs(conn, *claim, opts.explain_repeats)
            floor = _costs(conn, *raw, opts.explain_repeats)
            if size in (opts.backlog_sizes[0], opts.backlog_sizes[-1]):
                plans[f"{label}, {size:,} pending"] = explain(conn, *claim, "TEXT")
        series[label][str(size)] = {"ours": ours, "raw": floor}
        bench.say(
            f"(i) backlog {size:,}, {label}: claim {ours['median_ms']:.2f} ms, {ours['buffers']:.0f} buffers"
            f" (raw SQL {floor['median_ms']:.2f} ms, {floor['buffers']:.0f} buffers)"
        )


def measure_backlog(bench: Bench) -> dict[str, Any]:
    """{"source", "series": {spread: {size: {"ours": costs, "raw": costs}}}, "plans": {…}}."""
    opts, dsn = bench.options, bench.stack.admin_dsn()
    claim_sql, source = claim_statement()
    claim = (claim_sql, _params(claim_sql, CLAIM_PARAMS, "CLAIM_PARAMS"))
    raw = (RAW_CLAIM, {"n": CLAIM_PARAMS["max_jobs"], "p": "bench-explain"})
    series: Series = {}
    plans: dict[str, str] = {}
    for label, conversations in {
        "1 conversation/job": 0, f"{opts.backlog_conversations:,} conversations": opts.backlog_conversations,
    }.items():
        _series(bench, label, partial(load_jobs, dsn, conversations=conversations), claim, raw, series, plans)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE agent_queue.jobs")
    measure_outbound_backlog(bench, series, plans)
    return {"source": source, "statement": claim_sql.strip(), "series": series, "plans": plans}


# --- the outbound queue ---

EXPLAIN_ACCOUNT = "bench-explain-account"
OUTBOUND_CLAIM_PARAMS: dict[str, Any] = {
    "account_id": EXPLAIN_ACCOUNT,
    "channel": "whatsapp",
    "processor_id": "bench-explain",
    "max_messages": 10,
}
# `n` pending messages of one account, FIFO by created_at; recipients=0: each message its own
# recipient, else message g goes to recipient g mod `recipients`. A recipient's first message is
# its head, as EnqueueOutbound leaves it (the others wait behind it).
LOAD_OUTBOUND = """
INSERT INTO delivery.outbound_messages (id, channel, account_id, conversation_id, message_id, recipient, recipient_key,
                                        is_head, content, status, created_at, updated_at)
SELECT uuidv7(), 'whatsapp', %(account)s, uuidv7(), uuidv7(), k.key, k.key,
       %(recipients)s = 0 OR g <= %(recipients)s, 'bench', 'pending',
       now() + g * interval '1 microsecond', now()
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT 'r' || CASE WHEN %(recipients)s = 0 THEN g ELSE g %% %(recipients)s END AS key) AS k
"""
# The account's lease, held by the claimer (the claim checks it).
HOLD_LEASE = """
INSERT INTO delivery.whatsapp_leases (account_id, owner_id, expires_at, heartbeat_at)
VALUES (%(account)s, %(owner)s, now() + interval '1 day', now())
ON CONFLICT (account_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, expires_at = EXCLUDED.expires_at
"""
RAW_OUTBOUND_CLAIM = """
WITH picked AS (
    SELECT id FROM delivery.outbound_messages
     WHERE account_id = %(account_id)s AND channel = 'whatsapp' AND status = 'pending'
     ORDER BY created_at, id LIMIT %(max_messages)s FOR UPDATE SKIP LOCKED
)
UPDATE delivery.outbound_messages AS m
SET status = 'processing', processor_id = %(processor_id)s, locked_until = now() + interval '120 seconds'
FROM picked WHERE m.id = picked.id
RETURNING m.id
"""


def load_outbound(dsn: str, n: int, recipients: int) -> None:
    """An empty outbound queue, then `n` pending messages of one account, its lease held."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE delivery.outbound_messages")
        conn.execute(LOAD_OUTBOUND, {"n": n, "recipients": recipients, "account": EXPLAIN_ACCOUNT})
        conn.execute(HOLD_LEASE, {"account": EXPLAIN_ACCOUNT, "owner": OUTBOUND_CLAIM_PARAMS["processor_id"]})
        conn.execute("VACUUM ANALYZE delivery.outbound_messages")


def measure_outbound_backlog(bench: Bench, series: Series, plans: dict[str, str]) -> None:
    """Adds the outbound claim's series ("outbound, …") to `series` and its plans to `plans`."""
    from services.delivery.store.outbound import CLAIM

    opts, dsn = bench.options, bench.stack.admin_dsn()
    claim = (CLAIM, _params(CLAIM, OUTBOUND_CLAIM_PARAMS, "OUTBOUND_CLAIM_PARAMS"))
    raw = (RAW_OUTBOUND_CLAIM, {k: OUTBOUND_CLAIM_PARAMS[k] for k in ("account_id", "max_messages", "processor_id")})
    for label, recipients in {
        "outbound, 1 message/recipient": 0, f"outbound, {opts.backlog_conversations:,} recipients": opts.backlog_conversations,
    }.items():
        _series(bench, label, partial(load_outbound, dsn, recipients=recipients), claim, raw, series, plans)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE delivery.outbound_messages")
        conn.execute("DELETE FROM delivery.whatsapp_leases WHERE account_id = %s", (EXPLAIN_ACCOUNT,))


def flatness(series: dict[str, dict[str, dict[str, float]]], who: str, key: str = "min_ms") -> float:
    """Largest cost over the smallest backlog's cost (1.0 = flat). The fastest of the repeated
    runs by default: the statement is deterministic, the machine's noise only adds."""
    sizes = sorted(series, key=int)
    base = series[sizes[0]][who][key]
    worst = max(series[s][who][key] for s in sizes)
    return worst / base if base else float("inf")
