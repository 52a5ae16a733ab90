"""Skill use cases: owner-scoped for every signed-in user (docs/hardening.md #31); unowned
(legacy) skills are a shared fallback that admins may adopt or delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.agent_queue.domain import skills as rules
from services.agent_queue.domain.recommended_skills import RECOMMENDED_SKILLS
from services.agent_queue.domain.skills import Skill, SkillFields
from services.agent_queue.store import skills as store
from services.agent_queue.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import ResolvedUser, Role
from zenthor.errors import PermissionDenied
from zenthor.pagination import Page, PageRequest, next_token


def _is_admin(user: ResolvedUser) -> bool:
    return user.role is Role.ADMIN


async def list_skills(deps: Deps, user: ResolvedUser, page: PageRequest, all_owners: bool) -> Page[Skill]:
    """The caller's skills if they own any, else the unowned ones (never both, as in the
    original); admins may ask for every skill."""
    if all_owners and not _is_admin(user):
        raise PermissionDenied("Only admins may list every owner's skills")
    async with deps.uow() as uow:
        if all_owners:
            found = await store.list_skills(uow.conn, page, owner=None, every_owner=True)
        else:
            owns = await store.has_owned_skills(uow.conn, user.user_id)
            found = await store.list_skills(uow.conn, page, owner=user.user_id if owns else None)
    return Page(found, next_token([s.id for s in found], page.size))


async def get_skill_by_name(deps: Deps, user: ResolvedUser, name: str) -> Skill | None:
    """The caller's skill with exactly that name, else the oldest unowned one."""
    rules.check_skill_name(name)
    async with deps.uow() as uow:
        candidates = await store.skills_named(uow.conn, name, user.user_id)
    owned = [s for s in candidates if s.owner_user_id == user.user_id]
    unowned = [s for s in candidates if s.owner_user_id is None]
    chosen = owned or unowned
    return chosen[0] if chosen else None


async def create_skill(deps: Deps, user: ResolvedUser, fields: SkillFields) -> Skill:
    fields.checked()
    async with deps.uow() as uow:
        skill = await store.insert_skill(uow.conn, ids.SKILL.new(), user.user_id, fields, deps.clock())
        await uow.commit()
    return skill


async def toggle_skill(deps: Deps, user: ResolvedUser, skill_id: uuid.UUID) -> Skill | None:
    """Flips `enabled`; None (a no-op) when missing or not the caller's to change."""
    async with deps.uow() as uow:
        skill = await store.lock_skill(uow.conn, skill_id)
        if skill is None or not rules.may_change(skill, user.user_id, _is_admin(user)):
            return None
        changed = await store.update_skill(
            uow.conn, skill_id, rules.adopted_owner(skill, user.user_id), SkillFields(enabled=not skill.enabled)
        )
        await uow.commit()
    return changed


async def update_skill(deps: Deps, user: ResolvedUser, skill_id: uuid.UUID, fields: SkillFields) -> Skill | None:
    """Patches the given fields (a given config replaces the whole config); None (a no-op)
    when missing or not the caller's to change."""
    fields.checked()
    async with deps.uow() as uow:
        skill = await store.lock_skill(uow.conn, skill_id)
        if skill is None or not rules.may_change(skill, user.user_id, _is_admin(user)):
            return None
        changed = await store.update_skill(uow.conn, skill_id, rules.adopted_owner(skill, user.user_id), fields)
        await uow.commit()
    return changed


async def delete_skill(deps: Deps, user: ResolvedUser, skill_id: uuid.UUID) -> bool:
    async with deps.uow() as uow:
        skill = await store.lock_skill(uow.conn, skill_id)
        if skill is None or not rules.may_delete(skill, user.user_id, _is_admin(user)):
            return False
        await store.delete_skill(uow.conn, skill_id)
        await uow.commit()
    return True


@dataclass(frozen=True)
class SeedCounts:
    created: int
    existing: int
    total: int


async def seed_recommended_skills(deps: Deps, user: ResolvedUser) -> SeedCounts:
    """Adds each recommended skill whose name (case-insensitively) the caller does not own
    yet. Idempotent per user, also when two seeds race."""
    rows = [(ids.SKILL.new(), fields) for fields in RECOMMENDED_SKILLS]
    async with deps.uow() as uow:
        created = await store.insert_skills_if_absent(uow.conn, user.user_id, rows, deps.clock())
        await uow.commit()
    total = len(RECOMMENDED_SKILLS)
    return SeedCounts(created=created, existing=total - created, total=total)


async def claim_legacy_skills(deps: Deps, user: ResolvedUser) -> int:
    """Adopts every unowned skill (but one per name the caller does not have already)."""
    async with deps.uow() as uow:
        adopted = await store.adopt_unowned(uow.conn, user.user_id)
        await uow.commit()
    return adopted


@dataclass(frozen=True)
class BackfillCounts:
    updated: int
    total: int


async def backfill_skill_owners(deps: Deps, owner: uuid.UUID) -> BackfillCounts:
    """Operator migration: every unowned skill to `owner` (its existence is not checked)."""
    async with deps.uow() as uow:
        updated = await store.adopt_unowned(uow.conn, owner)
        total = await store.count_skills(uow.conn)
        await uow.commit()
    return BackfillCounts(updated=updated, total=total)
