"""WhatsApp accounts, account leases and session store use cases."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.delivery.domain import whatsapp as domain
from services.delivery.domain.outbound import check_free_id
from services.delivery.domain.whatsapp import Account, Lease, SessionEntry
from services.delivery.store import whatsapp as store
from services.delivery.usecases.deps import Deps
from zenthor.errors import FailedPrecondition, NotFound
from zenthor.pagination import KeyPageRequest, Page, next_key_token

# --- accounts ---


async def upsert_account(
    deps: Deps, account_id: str, phone: str, enabled: bool, meta: dict[str, Any] | None
) -> tuple[Account, bool]:
    domain.check_account(account_id, phone, meta)
    async with deps.uow() as uow:
        result = await store.upsert_account(uow.conn, account_id, phone, enabled, meta, deps.clock())
        await uow.commit()
    return result


async def list_accounts(deps: Deps, include_disabled: bool, page: KeyPageRequest) -> Page[Account]:
    async with deps.uow() as uow:
        rows = await store.list_accounts(uow.conn, include_disabled, page)
    return Page(rows, next_key_token([a.account_id for a in rows], page.size))


# --- leases ---


@dataclass(frozen=True)
class Acquired:
    acquired: bool
    lease: Lease


async def acquire_lease(deps: Deps, account_id: str, owner_id: str, ttl: timedelta | None) -> Acquired:
    """Free, expired or own lease → the caller's, atomically (exactly one of many racers wins an
    expired lease); held by another → `acquired = False` with the holder's lease, no write.
    Unknown account NOT_FOUND, disabled account FAILED_PRECONDITION (docs/hardening.md #34)."""
    check_free_id(account_id, "account_id")
    check_free_id(owner_id, "owner_id")
    lease_for = domain.lease_ttl(ttl)
    now = deps.clock()
    async with deps.uow() as uow:
        # Shared lock: the account cannot be disabled between this check and the acquire.
        account = await store.get_account(uow.conn, account_id, for_share=True)
        if account is None:
            raise NotFound(f"WhatsApp account {account_id!r} not found (UpsertWhatsAppAccount first)")
        if not account.enabled:
            raise FailedPrecondition(f"WhatsApp account {account_id!r} is disabled and cannot be leased")
        lease = await store.acquire_lease(uow.conn, account_id, owner_id, now, now + lease_for)
        if lease is None:
            holder = await store.get_lease(uow.conn, account_id)
            assert holder is not None  # the guard failed, so a foreign unexpired lease exists
            return Acquired(acquired=False, lease=holder)
        await uow.commit()
    return Acquired(acquired=True, lease=lease)


async def heartbeat_lease(deps: Deps, account_id: str, owner_id: str, ttl: timedelta | None) -> Lease | None:
    check_free_id(account_id, "account_id")
    check_free_id(owner_id, "owner_id")
    lease_for = domain.lease_ttl(ttl)
    now = deps.clock()
    async with deps.uow() as uow:
        lease = await store.heartbeat_lease(uow.conn, account_id, owner_id, now, now + lease_for)
        await uow.commit()
    return lease


async def release_lease(deps: Deps, account_id: str, owner_id: str) -> bool:
    check_free_id(account_id, "account_id")
    check_free_id(owner_id, "owner_id")
    async with deps.uow() as uow:
        released = await store.release_lease(uow.conn, account_id, owner_id)
        await uow.commit()
    return released


async def list_owned_accounts(deps: Deps, owner_id: str, page: KeyPageRequest) -> Page[str]:
    check_free_id(owner_id, "owner_id")
    async with deps.uow() as uow:
        account_ids = await store.owned_account_ids(uow.conn, owner_id, deps.clock(), page)
    return Page(account_ids, next_key_token(account_ids, page.size))


async def get_lease(deps: Deps, account_id: str) -> Lease | None:
    check_free_id(account_id, "account_id")
    async with deps.uow() as uow:
        return await store.get_lease(uow.conn, account_id)


# --- session store ---


async def get_session_value(deps: Deps, key: str) -> str | None:
    domain.check_session_key(key)
    async with deps.uow() as uow:
        return await store.get_session_value(uow.conn, key)


async def set_session_value(deps: Deps, key: str, data: str) -> None:
    domain.check_session_key(key)
    domain.check_session_value(data)
    async with deps.uow() as uow:
        await store.set_session_value(uow.conn, key, data, deps.clock())
        await uow.commit()


async def delete_session_value(deps: Deps, key: str) -> bool:
    domain.check_session_key(key)
    async with deps.uow() as uow:
        deleted = await store.delete_session_value(uow.conn, key)
        await uow.commit()
    return deleted


async def list_session_values(deps: Deps, page: KeyPageRequest) -> Page[SessionEntry]:
    async with deps.uow() as uow:
        entries = await store.list_session_values(uow.conn, page)
    return Page(entries, next_key_token([e.key for e in entries], page.size))


async def clear_session_values(deps: Deps) -> int:
    """Every entry in one transaction, unbatched: the runtime clears its whole auth state at logout."""
    async with deps.uow() as uow:
        deleted = await store.clear_session_values(uow.conn)
        await uow.commit()
    return deleted
