"""All SQL of the plugins service (schema `plugins`). Every upsert is one
INSERT ... ON CONFLICT DO UPDATE on the finding-24 unique keys, so concurrent upserts of one
key converge on one row; `xmax = 0` on the returned row tells an insert from an update."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from services.plugins.domain import (
    Channel,
    Definition,
    DefinitionStatus,
    Diagnostic,
    DiagnosticStatus,
    Install,
    Policy,
    Scope,
)
from zenthor.pagination import PageRequest

SCHEMA = "plugins"
metadata = sa.MetaData(schema=SCHEMA)

definitions = sa.Table(
    "plugin_definitions",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("version", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("manifest", pg.JSONB, nullable=False),
    sa.Column("checksum", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
diagnostics = sa.Table(
    "plugin_diagnostics",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("messages", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("last_diagnostic_at", sa.DateTime(timezone=True), nullable=False),
)
installs = sa.Table(
    "plugin_installs",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("workspace_scope", sa.Text, nullable=False),
    sa.Column("agent_id", pg.UUID(as_uuid=True)),
    sa.Column("channel", sa.Text),
    sa.Column("plugin_name", sa.Text, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("config", pg.JSONB),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
policies = sa.Table(
    "plugin_policies",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("workspace_scope", sa.Text, nullable=False),
    sa.Column("agent_id", pg.UUID(as_uuid=True)),
    sa.Column("channel", sa.Text),
    sa.Column("allow", pg.ARRAY(sa.Text)),
    sa.Column("deny", pg.ARRAY(sa.Text)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
d, g, i, p = definitions, diagnostics, installs, policies

_CREATED: sa.Label[Any] = sa.literal_column("xmax = 0").label("created")
# Definitions joined with their diagnostics (absent until the runtime posts some).
_DEFINITION_COLUMNS = [*d.c, g.c.status.label("diag_status"), g.c.messages, g.c.last_diagnostic_at]
_DEFINITIONS_WITH_DIAGNOSTICS = d.outerjoin(g, g.c.name == d.c.name)


def _definition(row: sa.Row) -> Definition:
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
        diagnostic_status=DiagnosticStatus(row.diag_status) if row.diag_status else None,
        diagnostic_messages=tuple(row.messages or ()),
        last_diagnostic_at=row.last_diagnostic_at,
    )


def _scope(row: sa.Row) -> Scope:
    return Scope(row.workspace_scope, row.agent_id, Channel(row.channel) if row.channel else None)


def _install(row: sa.Row) -> Install:
    return Install(
        id=row.id,
        scope=_scope(row),
        plugin_name=row.plugin_name,
        enabled=row.enabled,
        config=row.config,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _policy(row: sa.Row) -> Policy:
    return Policy(
        id=row.id,
        scope=_scope(row),
        allow=tuple(row.allow) if row.allow is not None else None,
        deny=tuple(row.deny) if row.deny is not None else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _scope_values(scope: Scope) -> dict[str, Any]:
    return {
        "workspace_scope": scope.workspace_scope,
        "agent_id": scope.agent_id,
        "channel": scope.channel.value if scope.channel else None,
    }


def _at(table: sa.Table, scope: Scope) -> list[sa.ColumnElement[bool]]:
    """Exact match on one layer: an absent agent / channel matches only absent."""
    return [
        table.c.workspace_scope == scope.workspace_scope,
        table.c.agent_id.is_not_distinct_from(scope.agent_id),
        table.c.channel.is_not_distinct_from(scope.channel.value if scope.channel else None),
    ]


async def upsert_definition(
    conn: AsyncConnection, definition: Definition
) -> tuple[Definition, bool]:
    """Insert, or patch everything but id/created_at of the row with that name (diagnostics
    live apart and are untouched)."""
    stmt = pg.insert(d).values(
        id=definition.id,
        name=definition.name,
        version=definition.version,
        source=definition.source,
        status=definition.status.value,
        manifest=definition.manifest,
        checksum=definition.checksum,
        created_at=definition.created_at,
        updated_at=definition.updated_at,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[d.c.name],
        set_={
            c: stmt.excluded[c]
            for c in ("version", "source", "status", "manifest", "checksum", "updated_at")
        },
    ).returning(d.c.id, _CREATED)
    row = (await conn.execute(upsert)).one()
    stored = await get_definition(conn, definition.name)
    assert stored is not None
    return stored, bool(row.created)


async def get_definition(conn: AsyncConnection, name: str) -> Definition | None:
    row = (
        await conn.execute(
            sa.select(*_DEFINITION_COLUMNS)
            .select_from(_DEFINITIONS_WITH_DIAGNOSTICS)
            .where(d.c.name == name)
        )
    ).first()
    return _definition(row) if row else None


def _after_name(table: sa.Table, key: sa.Column[Any], page: PageRequest) -> sa.ColumnElement[bool]:
    """Keyset on name: the cursor is the id of the last row seen; rows with a later name."""
    return key > sa.select(key).where(table.c.id == page.after).scalar_subquery()


async def list_definitions(conn: AsyncConnection, page: PageRequest) -> list[Definition]:
    query = sa.select(*_DEFINITION_COLUMNS).select_from(_DEFINITIONS_WITH_DIAGNOSTICS)
    if page.after is not None:
        query = query.where(_after_name(d, d.c.name, page))
    rows = (await conn.execute(query.order_by(d.c.name).limit(page.size))).all()
    return [_definition(r) for r in rows]


async def upsert_install(conn: AsyncConnection, install: Install) -> tuple[Install, bool]:
    stmt = pg.insert(i).values(
        id=install.id,
        **_scope_values(install.scope),
        plugin_name=install.plugin_name,
        enabled=install.enabled,
        config=install.config,
        created_at=install.created_at,
        updated_at=install.updated_at,
    )
    upsert = stmt.on_conflict_do_update(
        constraint="plugin_installs_key",
        set_={c: stmt.excluded[c] for c in ("enabled", "config", "updated_at")},
    ).returning(*i.c, _CREATED)
    row = (await conn.execute(upsert)).one()
    return _install(row), bool(row.created)


async def upsert_policy(conn: AsyncConnection, policy: Policy) -> tuple[Policy, bool]:
    stmt = pg.insert(p).values(
        id=policy.id,
        **_scope_values(policy.scope),
        allow=list(policy.allow) if policy.allow is not None else None,
        deny=list(policy.deny) if policy.deny is not None else None,
        created_at=policy.created_at,
        updated_at=policy.updated_at,
    )
    upsert = stmt.on_conflict_do_update(
        constraint="plugin_policies_key",
        set_={c: stmt.excluded[c] for c in ("allow", "deny", "updated_at")},
    ).returning(*p.c, _CREATED)
    row = (await conn.execute(upsert)).one()
    return _policy(row), bool(row.created)


async def list_installs(conn: AsyncConnection, page: PageRequest) -> list[Install]:
    query = sa.select(i)
    if page.after is not None:
        query = query.where(i.c.id > page.after)
    rows = (await conn.execute(query.order_by(i.c.id).limit(page.size))).all()
    return [_install(r) for r in rows]


async def list_policies(conn: AsyncConnection, page: PageRequest) -> list[Policy]:
    query = sa.select(p)
    if page.after is not None:
        query = query.where(p.c.id > page.after)
    rows = (await conn.execute(query.order_by(p.c.id).limit(page.size))).all()
    return [_policy(r) for r in rows]


async def installs_at(conn: AsyncConnection, scope: Scope) -> list[Install]:
    """One layer's installs, oldest first (the index order of the original)."""
    rows = (await conn.execute(sa.select(i).where(*_at(i, scope)).order_by(i.c.id))).all()
    return [_install(r) for r in rows]


async def policies_at(conn: AsyncConnection, scope: Scope) -> list[Policy]:
    rows = (await conn.execute(sa.select(p).where(*_at(p, scope)).order_by(p.c.id))).all()
    return [_policy(r) for r in rows]


async def upsert_diagnostic(conn: AsyncConnection, diagnostic: Diagnostic) -> Diagnostic:
    """Stores the result by name and, when the definition exists, bumps its updated_at."""
    stmt = pg.insert(g).values(
        name=diagnostic.name,
        status=diagnostic.status.value,
        messages=list(diagnostic.messages),
        last_diagnostic_at=diagnostic.last_diagnostic_at,
    )
    upsert = stmt.on_conflict_do_update(
        index_elements=[g.c.name],
        set_={c: stmt.excluded[c] for c in ("status", "messages", "last_diagnostic_at")},
    )
    await conn.execute(upsert)
    touched = await conn.execute(
        sa.update(d)
        .where(d.c.name == diagnostic.name)
        .values(updated_at=diagnostic.last_diagnostic_at)
    )
    return Diagnostic(
        name=diagnostic.name,
        status=diagnostic.status,
        messages=diagnostic.messages,
        last_diagnostic_at=diagnostic.last_diagnostic_at,
        definition_exists=touched.rowcount > 0,
    )


# Every definition name and every diagnosed name, with the diagnostics if any.
_DIAGNOSTIC_ROWS = (
    sa.select(
        sa.func.coalesce(d.c.name, g.c.name).label("name"),
        d.c.id.label("definition_id"),
        g.c.status,
        g.c.messages,
        g.c.last_diagnostic_at,
    )
    .select_from(d.join(g, g.c.name == d.c.name, full=True))
    .subquery()
)


async def list_diagnostics(
    conn: AsyncConnection, after_name: str | None, size: int
) -> list[dict[str, Any]]:
    q = _DIAGNOSTIC_ROWS
    query = sa.select(q)
    if after_name is not None:
        query = query.where(q.c.name > after_name)
    rows = (await conn.execute(query.order_by(q.c.name).limit(size))).all()
    return [dict(r._mapping) for r in rows]
