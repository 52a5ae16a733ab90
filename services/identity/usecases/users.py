"""Users: principal resolution, bootstrap before the Clerk webhook, reads and lists."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from services.identity.domain import users as rules
from services.identity.domain.users import User
from services.identity.store import contacts as contact_store
from services.identity.store import users as user_store
from services.identity.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import Identity, Principal, ResolvedUser
from zenthor.errors import NotFound
from zenthor.pagination import Page, PageRequest, next_token


@dataclass(frozen=True)
class UpsertResult:
    user_id: uuid.UUID
    created: bool


async def find_principal(deps: Deps, external_id: str) -> ResolvedUser | None:
    """The principal of a JWT subject, None when no users row has it. The auth chain's own
    resolver calls this with a verified subject."""
    async with deps.uow() as uow:
        user = await user_store.get_user_by_external_id(uow.conn, external_id)
        if user is None:
            return None
        contact_id = await contact_store.linked_contact_id(uow.conn, user.id)
    return ResolvedUser(
        user_id=user.id,
        role=rules.effective_role(user, deps.allowlist),
        status=user.status,
        contact_id=contact_id,
    )


async def resolve_principal(deps: Deps, external_id: str) -> ResolvedUser:
    """ResolvePrincipal for the other services: NotFound when no users row has the subject."""
    principal = await find_principal(deps, rules.check_external_id(external_id))
    if principal is None:
        raise NotFound("User not found")
    return principal


async def get_user_by_external_id(deps: Deps, principal: Principal, external_id: str) -> User | None:
    # Only the caller's own row is ever revealed; anyone else's looks missing.
    if external_id != principal.require_identity().subject:
        return None
    return await get_current_user(deps, principal)


async def get_current_user(deps: Deps, principal: Principal) -> User:
    user_id = principal.require_user().user_id
    async with deps.uow() as uow:
        user = await user_store.get_user(uow.conn, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


async def get_or_create_from_clerk(
    deps: Deps, identity: Identity, name: str, email: str | None, image: str | None
) -> UpsertResult:
    """Bootstrap before the webhook. The role comes only from the JWT's email claim
    (docs/hardening.md #2); without it the role stays unset and the webhook decides later."""
    rules.check_profile(name, email, image)
    stored_email, verified = rules.bootstrap_email(identity, email)
    role = rules.role_for_email(stored_email, deps.allowlist) if verified else None
    now = deps.clock()
    async with deps.uow() as uow:
        existing = await user_store.get_user_by_external_id(uow.conn, identity.subject)
        if existing is None:
            created = await user_store.insert_user_if_absent(
                uow.conn,
                user_id=ids.USER.new(),
                external_id=identity.subject,
                name=name,
                email=stored_email,
                role=role,
                email_verified=verified,
                image=image,
                now=now,
            )
            if created is not None:
                await uow.commit()
                return UpsertResult(created.id, created=True)
            existing = await user_store.get_user_by_external_id(uow.conn, identity.subject)
            assert existing is not None  # the insert lost to a concurrent one
        if existing.role is None and role is not None:
            await user_store.set_role_if_absent(uow.conn, existing.id, role, now)
        await uow.commit()
    return UpsertResult(existing.id, created=False)


async def list_users(deps: Deps, page: PageRequest) -> Page[User]:
    async with deps.uow() as uow:
        users = await user_store.list_users(uow.conn, page)
    return Page(users, next_token([u.id for u in users], page.size))


async def batch_get_users(deps: Deps, user_ids: Sequence[uuid.UUID]) -> list[User]:
    """The users found, in the order asked; unknown ids are left out."""
    async with deps.uow() as uow:
        found = {u.id: u for u in await user_store.get_users(uow.conn, user_ids)}
    return [found[i] for i in user_ids if i in found]


@dataclass(frozen=True)
class BackfillCounts:
    updated: int
    total: int


async def backfill_user_roles(deps: Deps) -> BackfillCounts:
    """Stores the effective role of every user without one; a second run changes nothing."""
    now = deps.clock()
    async with deps.uow() as uow:
        total = await user_store.count_users(uow.conn)
        updated = 0
        for user in await user_store.users_without_role(uow.conn):
            role = rules.effective_role(user, deps.allowlist)
            updated += await user_store.set_role_if_absent(uow.conn, user.id, role, now)
        await uow.commit()
    return BackfillCounts(updated=updated, total=total)
