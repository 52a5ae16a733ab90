"""SQL of plugin installs: upsert per (scope layer, plugin name), list, rows per layer."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.plugins.domain.installs import Install, InstallFields
from services.plugins.domain.scopes import Scope
from services.plugins.store import registry
from services.plugins.store.registry import Row
from services.plugins.store.tables import installs
from zenthor.pagination import PageRequest


def _install(row: Row) -> Install:
    return Install(
        id=row.id,
        scope=registry.scope_of(row),
        plugin_name=row.plugin_name,
        enabled=row.enabled,
        config=row.config,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def upsert_install(
    conn: AsyncConnection, fields: InstallFields, install_id: uuid.UUID, now: datetime
) -> tuple[Install, bool]:
    values = {
        **registry.scope_values(fields.scope),
        "plugin_name": fields.plugin_name,
        "enabled": fields.enabled,
        "config": fields.config,
    }
    row, created = await registry.upsert(conn, installs, values, row_id=install_id, now=now)
    return _install(row), created


async def list_installs(conn: AsyncConnection, page: PageRequest) -> list[Install]:
    return [_install(r) for r in await registry.page_by_id(conn, installs, page)]


async def installs_by_layer(conn: AsyncConnection, scope: Scope) -> list[list[Install]]:
    return [
        [_install(r) for r in rows] for rows in await registry.rows_by_layer(conn, installs, scope)
    ]
