"""SQL of agents (names unique: docs/hardening.md #24)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.agents import Agent, AgentFields
from services.agent_queue.domain.policy import ToolPolicy
from services.agent_queue.store.tables import agents
from zenthor.errors import AlreadyExists
from zenthor.pagination import PageRequest


def _agent(row: sa.Row[Any]) -> Agent:
    return Agent(
        id=row.id,
        name=row.name,
        description=row.description,
        system_prompt=row.system_prompt,
        model=row.model,
        fallback_model=row.fallback_model,
        enabled=row.enabled,
        tool_policy=ToolPolicy.from_json(row.tool_policy),
        created_at=row.created_at,
    )


def _values(fields: AgentFields) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": fields.name,
        "description": fields.description,
        "system_prompt": fields.system_prompt,
        "model": fields.model,
        "fallback_model": fields.fallback_model,
        "enabled": fields.enabled,
        "tool_policy": fields.tool_policy.to_json() if fields.tool_policy is not None else None,
    }
    return {k: v for k, v in values.items() if v is not None}


async def _write(conn: AsyncConnection, stmt: Any, name: str | None) -> sa.Row[Any] | None:
    try:
        return (await conn.execute(stmt)).first()
    except IntegrityError as e:
        raise AlreadyExists(f"An agent named {name!r} already exists") from e


async def insert_agent(conn: AsyncConnection, agent_id: uuid.UUID, fields: AgentFields, now: datetime) -> Agent:
    row = await _write(
        conn, sa.insert(agents).values(id=agent_id, created_at=now, **_values(fields)).returning(agents), fields.name
    )
    assert row is not None
    return _agent(row)


async def update_agent(conn: AsyncConnection, agent_id: uuid.UUID, fields: AgentFields) -> Agent | None:
    values = _values(fields)
    if not values:
        return await get_agent(conn, agent_id)
    row = await _write(
        conn, sa.update(agents).where(agents.c.id == agent_id).values(**values).returning(agents), fields.name
    )
    return _agent(row) if row else None


async def delete_agent(conn: AsyncConnection, agent_id: uuid.UUID) -> bool:
    return bool((await conn.execute(sa.delete(agents).where(agents.c.id == agent_id))).rowcount)


async def get_agent(conn: AsyncConnection, agent_id: uuid.UUID) -> Agent | None:
    row = (await conn.execute(sa.select(agents).where(agents.c.id == agent_id))).first()
    return _agent(row) if row else None


async def get_agent_by_name(conn: AsyncConnection, name: str) -> Agent | None:
    row = (await conn.execute(sa.select(agents).where(agents.c.name == name))).first()
    return _agent(row) if row else None


async def oldest_enabled_agent(conn: AsyncConnection) -> Agent | None:
    query = sa.select(agents).where(agents.c.enabled.is_(True)).order_by(agents.c.created_at, agents.c.id).limit(1)
    row = (await conn.execute(query)).first()
    return _agent(row) if row else None


async def list_agents(conn: AsyncConnection, page: PageRequest) -> list[Agent]:
    query = sa.select(agents).order_by(agents.c.id).limit(page.size)
    if page.after is not None:
        query = query.where(agents.c.id > page.after)
    return [_agent(r) for r in (await conn.execute(query)).all()]
