"""Statement shapes the registry tables share: the upsert on a table's unique key, the page by
id, and the scope layer columns of installs and policies."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.plugins.domain.scopes import Channel, Scope, layers
from zenthor.pagination import PageRequest

# A row of any width (attribute access by column name).
Row: TypeAlias = sa.Row[*tuple[Any, ...]]

# True only on a row this statement inserted: the xmax of a row it updated is the updating
# transaction's id, that of a fresh row 0.
_CREATED: sa.Label[Any] = sa.literal_column("xmax = 0").label("created")


def _unique_key(table: sa.Table) -> sa.UniqueConstraint:
    [key] = [c for c in table.constraints if isinstance(c, sa.UniqueConstraint)]
    return key


async def upsert(
    conn: AsyncConnection,
    table: sa.Table,
    values: Mapping[str, Any],
    *,
    row_id: uuid.UUID,
    now: datetime,
) -> tuple[Row, bool]:
    """Inserts `values` as row `row_id` created at `now`, or sets the other columns of `values`
    and updated_at on the row holding the same unique key (its id and created_at kept). One
    INSERT … ON CONFLICT DO UPDATE, so concurrent upserts of one key converge on one row.
    Returns the row as stored and whether this call created it."""
    key = _unique_key(table)
    insert = pg.insert(table).values(id=row_id, created_at=now, updated_at=now, **values)
    replaced = [c for c in values if c not in key.columns] + ["updated_at"]
    statement = insert.on_conflict_do_update(
        constraint=key, set_={c: insert.excluded[c] for c in replaced}
    ).returning(*table.c, _CREATED)
    row = (await conn.execute(statement)).one()
    return row, bool(row.created)


async def page_by_id(conn: AsyncConnection, table: sa.Table, page: PageRequest) -> Sequence[Row]:
    """One page of `table`, oldest first (ids are time-ordered)."""
    query = sa.select(table)
    if page.after is not None:
        query = query.where(table.c.id > page.after)
    return (await conn.execute(query.order_by(table.c.id).limit(page.size))).all()


def scope_values(scope: Scope) -> dict[str, Any]:
    return {
        "workspace_scope": scope.workspace_scope,
        "agent_id": scope.agent_id,
        "channel": scope.channel.value if scope.channel else None,
    }


def scope_of(row: Row) -> Scope:
    return Scope(row.workspace_scope, row.agent_id, Channel(row.channel) if row.channel else None)


async def rows_by_layer(
    conn: AsyncConnection, table: sa.Table, scope: Scope
) -> list[Sequence[Row]]:
    """The rows set on each layer `scope` resolves over (least specific first), oldest first
    within a layer. Exact match: an absent agent / channel matches only absent."""
    found = []
    for layer in layers(scope):
        values = scope_values(layer)
        query = sa.select(table).where(
            table.c.workspace_scope == values["workspace_scope"],
            table.c.agent_id.is_not_distinct_from(values["agent_id"]),
            table.c.channel.is_not_distinct_from(values["channel"]),
        )
        found.append((await conn.execute(query.order_by(table.c.id))).all())
    return found
