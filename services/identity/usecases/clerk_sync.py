"""Keeping users in step with Clerk: the webhook's upserts and deletions, and the bulk sync."""

from __future__ import annotations

from dataclasses import dataclass

from services.identity.domain import users as rules
from services.identity.store import users as user_store
from services.identity.usecases.deps import Deps
from services.identity.usecases.users import UpsertResult
from zenthor import ids
from zenthor.clerk import ClerkProfile


async def upsert_clerk_user(deps: Deps, profile: ClerkProfile) -> UpsertResult:
    """A Clerk `user.created`/`user.updated`: update an existing row (keeping its stored role
    and its status) or insert an active one. Replays are idempotent."""
    rules.check_external_id(profile.external_id)
    rules.check_profile(profile.name, profile.email, profile.image)
    email = profile.email.lower()
    now = deps.clock()
    async with deps.uow() as uow:
        existing = await user_store.get_user_by_external_id(uow.conn, profile.external_id, for_update=True)
        if existing is None:
            created = await user_store.insert_user_if_absent(
                uow.conn,
                user_id=ids.USER.new(),
                external_id=profile.external_id,
                name=profile.name,
                email=email,
                role=rules.role_for_email(email, deps.allowlist),
                email_verified=True,
                image=profile.image,
                now=now,
            )
            if created is not None:
                await uow.commit()
                return UpsertResult(created.id, created=True)
            existing = await user_store.get_user_by_external_id(uow.conn, profile.external_id, for_update=True)
            assert existing is not None
        role = existing.role or rules.role_for_email(email, deps.allowlist)
        await user_store.update_clerk_profile(
            uow.conn, existing.id, name=profile.name, email=email, role=role, image=profile.image, now=now
        )
        await uow.commit()
    return UpsertResult(existing.id, created=False)


async def deactivate_clerk_user(deps: Deps, external_id: str) -> bool:
    """A Clerk `user.deleted`: the user stays, inactive (refused by the auth chain,
    docs/hardening.md #22). False when no users row has the subject."""
    rules.check_external_id(external_id)
    async with deps.uow() as uow:
        found = await user_store.deactivate_user(uow.conn, external_id, deps.clock())
        await uow.commit()
    return found


@dataclass(frozen=True)
class SyncCounts:
    synced: int
    created: int
    updated: int


async def sync_clerk_users(deps: Deps) -> SyncCounts:
    """Upserts every Clerk user; each user is its own transaction, so the work done before a
    failure stays."""
    created = updated = 0
    async for profile in deps.clerk.users():
        result = await upsert_clerk_user(deps, profile)
        if result.created:
            created += 1
        else:
            updated += 1
    return SyncCounts(synced=created + updated, created=created, updated=updated)
