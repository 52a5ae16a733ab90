"""SQL of skills: owned (unique name per owner, case-insensitively: docs/hardening.md #24) or
unowned."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.agent_queue.domain.skills import Skill, SkillConfig, SkillFields
from services.agent_queue.store.tables import skills
from zenthor.errors import AlreadyExists
from zenthor.pagination import PageRequest


def _skill(row: sa.Row[Any]) -> Skill:
    return Skill(
        id=row.id,
        owner_user_id=row.owner_user_id,
        name=row.name,
        description=row.description,
        enabled=row.enabled,
        config=SkillConfig.from_json(row.config),
        created_at=row.created_at,
    )


def _values(fields: SkillFields) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": fields.name,
        "description": fields.description,
        "enabled": fields.enabled,
        "config": fields.config.to_json() if fields.config is not None else None,
    }
    return {k: v for k, v in values.items() if v is not None}


async def _write(conn: AsyncConnection, stmt: Any, name: str | None) -> sa.Row[Any] | None:
    try:
        return (await conn.execute(stmt)).first()
    except IntegrityError as e:
        raise AlreadyExists(f"You already have a skill named {name!r}") from e


async def insert_skill(
    conn: AsyncConnection, skill_id: uuid.UUID, owner: uuid.UUID, fields: SkillFields, now: datetime
) -> Skill:
    stmt = sa.insert(skills).values(id=skill_id, owner_user_id=owner, created_at=now, **_values(fields)).returning(skills)
    row = await _write(conn, stmt, fields.name)
    assert row is not None
    return _skill(row)


# One skill for an owner unless the owner has that name already (case-insensitively); the
# partial unique index decides, so a concurrent seed cannot duplicate.
INSERT_SKILL_IF_ABSENT = sa.text(
    """
    INSERT INTO agent_queue.skills (id, owner_user_id, name, description, enabled, config, created_at)
    VALUES (:id, :owner, :name, :description, :enabled, CAST(:config AS jsonb), :now)
    ON CONFLICT (owner_user_id, lower(name)) WHERE owner_user_id IS NOT NULL DO NOTHING
    """
)


async def insert_skills_if_absent(
    conn: AsyncConnection, owner: uuid.UUID, rows: Sequence[tuple[uuid.UUID, SkillFields]], now: datetime
) -> int:
    """Inserts the owner's skills whose names the owner does not have yet; returns how many."""
    created = 0
    for skill_id, fields in rows:
        params = {
            "id": skill_id,
            "owner": owner,
            "name": fields.name,
            "description": fields.description,
            "enabled": fields.enabled,
            "config": json.dumps(fields.config.to_json()) if fields.config is not None else None,
            "now": now,
        }
        created += (await conn.execute(INSERT_SKILL_IF_ABSENT, params)).rowcount
    return created


async def lock_skill(conn: AsyncConnection, skill_id: uuid.UUID) -> Skill | None:
    row = (await conn.execute(sa.select(skills).where(skills.c.id == skill_id).with_for_update())).first()
    return _skill(row) if row else None


async def update_skill(conn: AsyncConnection, skill_id: uuid.UUID, owner: uuid.UUID, fields: SkillFields) -> Skill:
    """Patches the given fields and sets the owner (adoption of an unowned skill)."""
    stmt = (
        sa.update(skills)
        .where(skills.c.id == skill_id)
        .values(owner_user_id=owner, **_values(fields))
        .returning(skills)
    )
    row = await _write(conn, stmt, fields.name or "that name")
    assert row is not None
    return _skill(row)


async def delete_skill(conn: AsyncConnection, skill_id: uuid.UUID) -> bool:
    return bool((await conn.execute(sa.delete(skills).where(skills.c.id == skill_id))).rowcount)


async def has_owned_skills(conn: AsyncConnection, owner: uuid.UUID) -> bool:
    query = sa.select(sa.exists().where(skills.c.owner_user_id == owner))
    return bool((await conn.execute(query)).scalar_one())


async def list_skills(
    conn: AsyncConnection, page: PageRequest, *, owner: uuid.UUID | None, every_owner: bool = False
) -> list[Skill]:
    """The owner's skills, the unowned ones (owner None), or all (every_owner); oldest first."""
    query = sa.select(skills).order_by(skills.c.id).limit(page.size)
    if not every_owner:
        query = query.where(skills.c.owner_user_id == owner if owner else skills.c.owner_user_id.is_(None))
    if page.after is not None:
        query = query.where(skills.c.id > page.after)
    return [_skill(r) for r in (await conn.execute(query)).all()]


async def skills_named(conn: AsyncConnection, name: str, owner: uuid.UUID) -> list[Skill]:
    """Skills with exactly this name owned by `owner` or unowned, oldest first."""
    query = (
        sa.select(skills)
        .where(skills.c.name == name, sa.or_(skills.c.owner_user_id == owner, skills.c.owner_user_id.is_(None)))
        .order_by(skills.c.id)
    )
    return [_skill(r) for r in (await conn.execute(query)).all()]


async def enabled_skills(conn: AsyncConnection, owner: uuid.UUID | None) -> list[Skill]:
    """The owner's enabled skills (owner None: the enabled unowned ones), oldest first."""
    owner_is = skills.c.owner_user_id == owner if owner else skills.c.owner_user_id.is_(None)
    query = sa.select(skills).where(owner_is, skills.c.enabled.is_(True)).order_by(skills.c.id)
    return [_skill(r) for r in (await conn.execute(query)).all()]


# Gives unowned skills to :owner, except where the owner already has (or would get twice)
# that name: those stay unowned (names stay unique per owner: docs/hardening.md #24).
ADOPT_UNOWNED = sa.text(
    """
    UPDATE agent_queue.skills AS s
    SET owner_user_id = :owner
    WHERE s.owner_user_id IS NULL
      -- the owner has no skill of that name
      AND NOT EXISTS (
          SELECT 1 FROM agent_queue.skills AS o
          WHERE o.owner_user_id = :owner AND lower(o.name) = lower(s.name)
      )
      -- of unowned skills sharing a name, only the oldest is adopted
      AND NOT EXISTS (
          SELECT 1 FROM agent_queue.skills AS d
          WHERE d.owner_user_id IS NULL AND lower(d.name) = lower(s.name) AND d.id < s.id
      )
    """
)


async def adopt_unowned(conn: AsyncConnection, owner: uuid.UUID) -> int:
    # Serializes adoptions: two concurrent ones could otherwise both pass the NOT EXISTS.
    await conn.execute(sa.text("LOCK TABLE agent_queue.skills IN SHARE ROW EXCLUSIVE MODE"))
    return int((await conn.execute(ADOPT_UNOWNED, {"owner": owner})).rowcount)


async def count_skills(conn: AsyncConnection) -> int:
    return int((await conn.execute(sa.select(sa.func.count()).select_from(skills))).scalar_one())
