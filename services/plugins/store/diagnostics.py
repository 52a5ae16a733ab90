"""SQL of diagnostics: upsert by plugin name, and the list of every defined or diagnosed name."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.plugins.domain.diagnostics import (
    Diagnostic,
    DiagnosticFields,
    DiagnosticResult,
    DiagnosticStatus,
)
from services.plugins.store.registry import Row
from services.plugins.store.tables import definitions as d
from services.plugins.store.tables import diagnostics as g
from zenthor.pagination import KeyPageRequest

# The result columns as every query joining plugin_diagnostics selects them.
RESULT_COLUMNS = (g.c.status.label("diagnostic_status"), g.c.messages, g.c.last_diagnostic_at)


def result_of(row: Row) -> DiagnosticResult | None:
    """The RESULT_COLUMNS of a row; None when the outer join found no result."""
    if row.diagnostic_status is None:
        return None
    return DiagnosticResult(
        status=DiagnosticStatus(row.diagnostic_status),
        messages=tuple(row.messages),
        last_diagnostic_at=row.last_diagnostic_at,
    )


async def upsert_diagnostic(
    conn: AsyncConnection, fields: DiagnosticFields, now: datetime
) -> Diagnostic:
    """Stores the result by name and, when the definition exists, bumps its updated_at."""
    insert = pg.insert(g).values(
        name=fields.name,
        status=fields.status.value,
        messages=list(fields.messages),
        last_diagnostic_at=now,
    )
    await conn.execute(
        insert.on_conflict_do_update(
            index_elements=[g.c.name],
            set_={c: insert.excluded[c] for c in ("status", "messages", "last_diagnostic_at")},
        )
    )
    touched = await conn.execute(sa.update(d).where(d.c.name == fields.name).values(updated_at=now))
    return Diagnostic(
        name=fields.name,
        definition_exists=touched.rowcount > 0,
        result=DiagnosticResult(fields.status, fields.messages, now),
    )


# Every definition name and every diagnosed name, with the result if any.
_NAMES = (
    sa.select(
        sa.func.coalesce(d.c.name, g.c.name).label("name"),
        d.c.id.label("definition_id"),
        *RESULT_COLUMNS,
    )
    .select_from(d.join(g, g.c.name == d.c.name, full=True))
    .subquery()
)


async def list_diagnostics(conn: AsyncConnection, page: KeyPageRequest) -> list[Diagnostic]:
    """One page by name."""
    query = sa.select(_NAMES)
    if page.after is not None:
        query = query.where(_NAMES.c.name > page.after)
    rows = (await conn.execute(query.order_by(_NAMES.c.name).limit(page.size))).all()
    return [
        Diagnostic(name=r.name, definition_exists=r.definition_id is not None, result=result_of(r))
        for r in rows
    ]
