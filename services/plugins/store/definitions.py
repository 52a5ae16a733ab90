"""SQL of plugin definitions: upsert by name, read and list by name, each joined with the
runtime's last diagnostic for that name."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.plugins.domain.definitions import Definition, DefinitionFields, DefinitionStatus
from services.plugins.store.diagnostics import RESULT_COLUMNS, result_of
from services.plugins.store.registry import Row, upsert
from services.plugins.store.tables import definitions as d
from services.plugins.store.tables import diagnostics as g
from zenthor.pagination import KeyPageRequest

# Definitions with their diagnostics (absent until the runtime posts some).
_WITH_DIAGNOSTICS = sa.select(*d.c, *RESULT_COLUMNS).select_from(
    d.outerjoin(g, g.c.name == d.c.name)
)


def _definition(row: Row) -> Definition:
    return Definition(
        id=row.id,
        name=row.name,
        version=row.version,
        source=row.source,
        status=DefinitionStatus(row.status),
        manifest=row.manifest,
        checksum=row.checksum,
        created_at=row.created_at,
        updated_at=row.updated_at,
        diagnostic=result_of(row),
    )


async def upsert_definition(
    conn: AsyncConnection, fields: DefinitionFields, definition_id: uuid.UUID, now: datetime
) -> tuple[Definition, bool]:
    """Inserts, or replaces everything but id / created_at of the definition with that name
    (its diagnostics live apart and are untouched)."""
    values = {
        "name": fields.name,
        "version": fields.version,
        "source": fields.source,
        "status": fields.status.value,
        "manifest": fields.manifest,
        "checksum": fields.checksum,
    }
    _, created = await upsert(conn, d, values, row_id=definition_id, now=now)
    stored = await get_definition(conn, fields.name)
    assert stored is not None
    return stored, created


async def get_definition(conn: AsyncConnection, name: str) -> Definition | None:
    row = (await conn.execute(_WITH_DIAGNOSTICS.where(d.c.name == name))).first()
    return _definition(row) if row else None


async def list_definitions(conn: AsyncConnection, page: KeyPageRequest) -> list[Definition]:
    """One page by name."""
    query = _WITH_DIAGNOSTICS
    if page.after is not None:
        query = query.where(d.c.name > page.after)
    rows = (await conn.execute(query.order_by(d.c.name).limit(page.size))).all()
    return [_definition(r) for r in rows]
