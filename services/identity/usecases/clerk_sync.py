"""Keeping users in step with Clerk: the webhook's upserts and deletions (idempotent on the svix
delivery id), the bulk sync, and the sweep of old delivery ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.identity.domain import users as rules
from services.identity.domain import webhooks as webhook_rules
from services.identity.store import users as user_store
from services.identity.store import webhooks as webhook_store
from services.identity.usecases.deps import Deps
from zenthor import ids
from zenthor.clerk import ClerkProfile
from zenthor.db import UnitOfWork
from zenthor.errors import FailedPrecondition
from zenthor.pagination import Swept, check_size


@dataclass(frozen=True)
class ClerkUpsert:
    user_id: uuid.UUID
    created: bool
    # The delivery was processed before: nothing changed.
    duplicate: bool = False


@dataclass(frozen=True)
class ClerkDeactivation:
    found: bool
    duplicate: bool = False


async def _is_replay(uow: UnitOfWork, delivery_id: str | None, now: datetime) -> bool:
    """Records the delivery in the unit of work's transaction: it counts as processed only if the
    change it carries commits with it (docs/hardening.md #38)."""
    if delivery_id is None:
        return False
    return not await webhook_store.record_delivery(uow.conn, delivery_id, now)


async def upsert_clerk_user(deps: Deps, profile: ClerkProfile, delivery_id: str = "") -> ClerkUpsert:
    """A Clerk `user.created`/`user.updated`: update an existing row (keeping its stored role
    and its status) or insert an active one. The role comes from the allowlist only for an
    email Clerk verified (docs/hardening.md #2)."""
    rules.check_external_id(profile.external_id)
    rules.check_profile(profile.name, profile.email, profile.image)
    delivery = webhook_rules.check_delivery_id(delivery_id)
    email = profile.email.lower()
    role = rules.clerk_role(email, profile.email_verified, deps.allowlist)
    now = deps.clock()
    async with deps.uow() as uow:
        if await _is_replay(uow, delivery, now):
            existing = await user_store.get_user_by_external_id(uow.conn, profile.external_id)
            if existing is None:
                raise FailedPrecondition("delivery_id was already processed for another event")
            return ClerkUpsert(existing.id, created=False, duplicate=True)
        existing = await user_store.get_user_by_external_id(uow.conn, profile.external_id, for_update=True)
        if existing is None:
            created = await user_store.insert_user_if_absent(
                uow.conn,
                user_id=ids.USER.new(),
                external_id=profile.external_id,
                name=profile.name,
                email=email,
                role=role,
                email_verified=profile.email_verified,
                image=profile.image,
                now=now,
            )
            if created is not None:
                await uow.commit()
                return ClerkUpsert(created.id, created=True)
            existing = await user_store.get_user_by_external_id(uow.conn, profile.external_id, for_update=True)
            assert existing is not None
        await user_store.update_clerk_profile(
            uow.conn,
            existing.id,
            name=profile.name,
            email=email,
            role=existing.role or role,
            email_verified=profile.email_verified,
            image=profile.image,
            now=now,
        )
        await uow.commit()
    return ClerkUpsert(existing.id, created=False)


async def deactivate_clerk_user(deps: Deps, external_id: str, delivery_id: str = "") -> ClerkDeactivation:
    """A Clerk `user.deleted`: the user stays, inactive, and every service refuses them from
    their next call (docs/hardening.md #22). `found` is false when no users row has the subject."""
    rules.check_external_id(external_id)
    delivery = webhook_rules.check_delivery_id(delivery_id)
    now = deps.clock()
    async with deps.uow() as uow:
        if await _is_replay(uow, delivery, now):
            existing = await user_store.get_user_by_external_id(uow.conn, external_id)
            return ClerkDeactivation(found=existing is not None, duplicate=True)
        found = await user_store.deactivate_user(uow.conn, external_id, now)
        await uow.commit()
    return ClerkDeactivation(found=found)


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


async def cleanup_webhook_deliveries(deps: Deps, batch_size: int) -> Swept:
    """Forgets up to one batch of delivery ids older than the replay window; `more` when the
    batch was full."""
    limit = check_size(batch_size, webhook_rules.CLEANUP_BATCH, "batch_size")
    async with deps.uow() as uow:
        deleted = await webhook_store.delete_old_deliveries(
            uow.conn, deps.clock() - webhook_rules.DELIVERY_RETENTION, limit
        )
        await uow.commit()
    return Swept.of(deleted, limit)
