"""Identity use cases: one async function per operation, each in one unit of work."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.identity import domain, store
from services.identity.clerk import ClerkDirectory
from services.identity.domain import Contact, User, VerificationStatus
from services.identity.outbound import DELIVER_VERIFICATION_CODE, verification_payload
from zenthor import ids
from zenthor.auth.principal import Identity, Principal, ResolvedUser
from zenthor.clerk import ClerkProfile, clerk_profile
from zenthor.db import UnitOfWorkFactory
from zenthor.errors import AlreadyExists, InvalidArgument, NotFound
from zenthor.outbox import add_event
from zenthor.pagination import Page, PageRequest, next_token


@dataclass(frozen=True)
class Deps:
    uow: UnitOfWorkFactory
    clock: Callable[[], datetime]
    allowlist: frozenset[str]
    clerk: ClerkDirectory
    # The WhatsApp account whose egress sends verification codes (finding 10).
    verification_account_id: str = "default"
    randbelow: Callable[[int], int] = secrets.randbelow
    # Wakes the outbox relay once a unit of work that stored events has committed.
    kick_outbox: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class UpsertResult:
    user_id: uuid.UUID
    created: bool


async def resolve_principal(deps: Deps, external_id: str) -> ResolvedUser | None:
    async with deps.uow() as uow:
        user = await store.get_user_by_external_id(uow.conn, external_id)
        if user is None:
            return None
        contact_id = await store.linked_contact_id(uow.conn, user.id)
    return ResolvedUser(
        user_id=user.id,
        role=domain.effective_role(user, deps.allowlist),
        status=user.status,
        contact_id=contact_id,
    )


async def get_user_by_external_id(deps: Deps, principal: Principal, external_id: str) -> User | None:
    # spec: only the caller's own row is ever revealed.
    if external_id != principal.require_identity().subject:
        return None
    return await get_current_user(deps, principal)


async def get_current_user(deps: Deps, principal: Principal) -> User:
    user_id = principal.require_user().user_id
    async with deps.uow() as uow:
        user = await store.get_user(uow.conn, user_id)
    if user is None:
        raise NotFound("User not found")
    return user


async def get_or_create_from_clerk(
    deps: Deps, identity: Identity, name: str, email: str | None, image: str | None
) -> UpsertResult:
    """Bootstrap before the webhook. Finding 2: the role comes only from the JWT's email
    claim; without it the role stays unset and the webhook decides later."""
    domain.check_profile(name, email, image)
    stored_email, verified = domain.bootstrap_email(identity, email)
    role = domain.role_for_email(stored_email, deps.allowlist) if verified else None
    now = deps.clock()
    async with deps.uow() as uow:
        existing = await store.get_user_by_external_id(uow.conn, identity.subject)
        if existing is None:
            created = await store.insert_user_if_absent(
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
            existing = await store.get_user_by_external_id(uow.conn, identity.subject)
            assert existing is not None  # the insert lost to a concurrent one
        if existing.role is None and role is not None:
            await store.set_role_if_absent(uow.conn, existing.id, role, now)
        await uow.commit()
    return UpsertResult(existing.id, created=False)


async def list_users(deps: Deps, page: PageRequest) -> Page[User]:
    async with deps.uow() as uow:
        users = await store.list_users(uow.conn, page)
    return Page(users, next_token([u.id for u in users], page.size))


async def batch_get_users(deps: Deps, user_ids: Sequence[uuid.UUID]) -> list[User]:
    async with deps.uow() as uow:
        found = {u.id: u for u in await store.get_users(uow.conn, user_ids)}
    return [found[i] for i in user_ids if i in found]


# --- contacts ---


async def get_contact_by_phone(deps: Deps, phone: str) -> Contact | None:
    domain.check_phone_lookup(phone)
    async with deps.uow() as uow:
        return await store.get_contact_by_phone(uow.conn, phone)


@dataclass(frozen=True)
class CreatedContact:
    contact: Contact
    created: bool


async def create_contact(deps: Deps, phone: str, name: str, is_allowed: bool) -> CreatedContact:
    """Idempotent on phone: two simultaneous first messages from one number make one contact."""
    domain.check_phone(phone)
    domain.check_profile(name, None, None)
    async with deps.uow() as uow:
        contact = await store.insert_contact_if_absent(
            uow.conn, contact_id=ids.CONTACT.new(), phone=phone, name=name, is_allowed=is_allowed, now=deps.clock()
        )
        if contact is not None:
            await uow.commit()
            return CreatedContact(contact, created=True)
        existing = await store.get_contact_by_phone(uow.conn, phone)
    assert existing is not None
    return CreatedContact(existing, created=False)


async def update_contact(deps: Deps, contact_id: uuid.UUID, name: str | None, is_allowed: bool | None) -> Contact:
    if name is not None:
        domain.check_profile(name, None, None)
    async with deps.uow() as uow:
        contact = await store.update_contact(uow.conn, contact_id, name=name, is_allowed=is_allowed)
        if contact is None:
            raise NotFound("Contact not found")
        await uow.commit()
    return contact


async def list_contacts(deps: Deps, page: PageRequest) -> Page[Contact]:
    async with deps.uow() as uow:
        contacts = await store.list_contacts(uow.conn, page)
    return Page(contacts, next_token([c.id for c in contacts], page.size))


async def batch_get_contacts(deps: Deps, contact_ids: Sequence[uuid.UUID]) -> list[Contact]:
    async with deps.uow() as uow:
        found = {c.id: c for c in await store.get_contacts(uow.conn, contact_ids)}
    return [found[i] for i in contact_ids if i in found]


# --- Clerk ---


async def upsert_clerk_user(deps: Deps, profile: ClerkProfile) -> UpsertResult:
    """handleUserCreated/Updated: update an existing row (keeping its stored role and its
    status) or insert an active one. Replays are idempotent."""
    domain.check_external_id(profile.external_id)
    domain.check_profile(profile.name, profile.email, profile.image)
    email = profile.email.lower()
    now = deps.clock()
    async with deps.uow() as uow:
        existing = await store.get_user_by_external_id(uow.conn, profile.external_id, for_update=True)
        if existing is None:
            created = await store.insert_user_if_absent(
                uow.conn,
                user_id=ids.USER.new(),
                external_id=profile.external_id,
                name=profile.name,
                email=email,
                role=domain.role_for_email(email, deps.allowlist),
                email_verified=True,
                image=profile.image,
                now=now,
            )
            if created is not None:
                await uow.commit()
                return UpsertResult(created.id, created=True)
            existing = await store.get_user_by_external_id(uow.conn, profile.external_id, for_update=True)
            assert existing is not None
        role = existing.role or domain.role_for_email(email, deps.allowlist)
        await store.update_clerk_profile(
            uow.conn, existing.id, name=profile.name, email=email, role=role, image=profile.image, now=now
        )
        await uow.commit()
    return UpsertResult(existing.id, created=False)


async def deactivate_clerk_user(deps: Deps, external_id: str) -> bool:
    domain.check_external_id(external_id)
    async with deps.uow() as uow:
        found = await store.deactivate_user(uow.conn, external_id, deps.clock())
        await uow.commit()
    return found


@dataclass(frozen=True)
class SyncCounts:
    synced: int
    created: int
    updated: int


async def sync_clerk_users(deps: Deps) -> SyncCounts:
    """Pages through Clerk; each user is its own transaction, so work done before a failure
    stays (spec)."""
    created = updated = 0
    async for page in deps.clerk.pages():
        for data in page.users:
            result = await upsert_clerk_user(deps, clerk_profile(data))
            if result.created:
                created += 1
            else:
                updated += 1
    return SyncCounts(synced=created + updated, created=created, updated=updated)


@dataclass(frozen=True)
class BackfillCounts:
    updated: int
    total: int


async def backfill_user_roles(deps: Deps) -> BackfillCounts:
    now = deps.clock()
    async with deps.uow() as uow:
        total = await store.count_users(uow.conn)
        updated = 0
        for user in await store.users_without_role(uow.conn):
            role = domain.effective_role(user, deps.allowlist)
            updated += await store.set_role_if_absent(uow.conn, user.id, role, now)
        await uow.commit()
    return BackfillCounts(updated=updated, total=total)


# --- phone verification (spec identity.md §4; findings 4, 5, 10, 21) ---


@dataclass(frozen=True)
class VerificationOutcome:
    success: bool
    error: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class PendingVerification:
    phone: str
    created_at: datetime


async def request_phone_verification(deps: Deps, principal: Principal, phone: str) -> VerificationOutcome:
    """Stores a hashed code, ensures the contact, and hands the code's WhatsApp delivery to
    the outbox, all in one transaction."""
    user_id = principal.require_user().user_id
    domain.check_verification_phone(phone)
    now = deps.clock()
    code = domain.new_code(deps.randbelow)
    verification_id = ids.PHONE_VERIFICATION.new()
    async with deps.uow() as uow:
        owner = await store.user_with_phone(uow.conn, phone)
        if owner is not None and owner != user_id:
            return VerificationOutcome(False, domain.PHONE_TAKEN)
        await store.lock_user_row(uow.conn, user_id)
        by_user, by_phone = await store.recent_request_counts(uow.conn, user_id, phone, now - domain.RATE_WINDOW)
        if by_user >= domain.MAX_REQUESTS_PER_USER or by_phone >= domain.MAX_REQUESTS_PER_PHONE:
            return VerificationOutcome(False, domain.TOO_MANY_REQUESTS)
        await store.expire_pending(uow.conn, user_id)
        await store.insert_verification(
            uow.conn, verification_id, user_id, phone, domain.hash_code(code, secrets.token_hex(8)), now
        )
        await store.insert_contact_if_absent(
            uow.conn, contact_id=ids.CONTACT.new(), phone=phone, name=phone, is_allowed=True, now=now
        )
        contact = await store.get_contact_by_phone(uow.conn, phone)
        assert contact is not None
        payload = verification_payload(
            ids.PHONE_VERIFICATION.format(verification_id),
            ids.CONTACT.format(contact.id),
            phone,
            domain.verification_text(code),
            deps.verification_account_id,
        )
        await add_event(uow.conn, store.outbox, DELIVER_VERIFICATION_CODE, payload["verification_id"], payload, now)
        await uow.commit()
    deps.kick_outbox()
    return VerificationOutcome(True)


async def confirm_phone_verification(deps: Deps, principal: Principal, code: str) -> VerificationOutcome:
    user_id = principal.require_user().user_id
    domain.check_code(code)
    now = deps.clock()
    async with deps.uow() as uow:
        await store.lock_user_row(uow.conn, user_id)
        verification = await store.open_verification(uow.conn, user_id, for_update=True)
        if verification is None:
            return VerificationOutcome(False, domain.NO_PENDING)
        if verification.status is VerificationStatus.LOCKED:
            return VerificationOutcome(False, domain.CODE_LOCKED)
        if domain.is_expired(verification, now):
            await store.set_verification_status(uow.conn, verification.id, VerificationStatus.EXPIRED)
            await uow.commit()
            return VerificationOutcome(False, domain.CODE_EXPIRED)
        if not domain.code_matches(code, verification.code_hash):
            await store.count_wrong_code(uow.conn, verification.id, domain.MAX_CODE_ATTEMPTS)
            await uow.commit()
            return VerificationOutcome(False, domain.CODE_INVALID)
        # Finding 5: uniqueness is settled here, inside the transaction that takes the phone.
        owner = await store.user_with_phone(uow.conn, verification.phone)
        if owner is not None and owner != user_id:
            raise AlreadyExists(domain.PHONE_TAKEN)
        await store.set_verification_status(uow.conn, verification.id, VerificationStatus.VERIFIED, verified_at=now)
        await store.set_user_phone(uow.conn, user_id, verification.phone, now)
        await store.link_contact(uow.conn, verification.phone, user_id)
        await uow.commit()
    return VerificationOutcome(True, phone=verification.phone)


async def get_phone_verification_status(deps: Deps, principal: Principal) -> PendingVerification | None:
    user_id = principal.require_user().user_id
    async with deps.uow() as uow:
        verification = await store.open_verification(uow.conn, user_id)
    if (
        verification is None
        or verification.status is not VerificationStatus.PENDING
        or domain.is_expired(verification, deps.clock())
    ):
        return None
    return PendingVerification(verification.phone, verification.created_at)


async def unlink_phone(deps: Deps, principal: Principal) -> None:
    user_id = principal.require_user().user_id
    now = deps.clock()
    async with deps.uow() as uow:
        user = await store.get_user(uow.conn, user_id)
        if user is None or user.phone is None:
            return
        await store.set_user_phone(uow.conn, user_id, None, now)
        await store.link_contact(uow.conn, user.phone, None)
        await uow.commit()


@dataclass(frozen=True)
class CleanupCounts:
    deleted: int
    more: bool


DEFAULT_CLEANUP_BATCH = 1_000


async def cleanup_expired_phone_verifications(deps: Deps, batch_size: int) -> CleanupCounts:
    if batch_size < 0:
        raise InvalidArgument("batch_size", "must not be negative")
    limit = batch_size or DEFAULT_CLEANUP_BATCH
    async with deps.uow() as uow:
        deleted = await store.delete_stale_verifications(uow.conn, deps.clock() - domain.VERIFICATION_RETENTION, limit)
        await uow.commit()
    return CleanupCounts(deleted=deleted, more=deleted == limit)
