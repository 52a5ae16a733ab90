"""SQL of tool policies: upsert per scope layer, list, rows per layer."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from services.plugins.domain.policies import Policy, PolicyFields
from services.plugins.domain.scopes import Scope
from services.plugins.store import registry
from services.plugins.store.registry import Row
from services.plugins.store.tables import policies
from zenthor.pagination import PageRequest


def _policy(row: Row) -> Policy:
    return Policy(
        id=row.id,
        scope=registry.scope_of(row),
        allow=tuple(row.allow) if row.allow is not None else None,
        deny=tuple(row.deny) if row.deny is not None else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def upsert_policy(
    conn: AsyncConnection, fields: PolicyFields, policy_id: uuid.UUID, now: datetime
) -> tuple[Policy, bool]:
    values = {
        **registry.scope_values(fields.scope),
        "allow": list(fields.allow) if fields.allow is not None else None,
        "deny": list(fields.deny) if fields.deny is not None else None,
    }
    row, created = await registry.upsert(conn, policies, values, row_id=policy_id, now=now)
    return _policy(row), created


async def list_policies(conn: AsyncConnection, page: PageRequest) -> list[Policy]:
    return [_policy(r) for r in await registry.page_by_id(conn, policies, page)]


async def policies_by_layer(conn: AsyncConnection, scope: Scope) -> list[list[Policy]]:
    return [
        [_policy(r) for r in rows] for rows in await registry.rows_by_layer(conn, policies, scope)
    ]
