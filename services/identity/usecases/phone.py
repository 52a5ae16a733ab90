"""Phone verification: request a code (delivered over WhatsApp through the outbox), confirm it,
show the live request, unlink, and the sweep of stale requests (docs/hardening.md #4, #5, #10,
#21)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.identity.domain import phone as rules
from services.identity.domain.phone import (
    PendingVerification,
    VerificationOutcome,
    VerificationStatus,
)
from services.identity.store import contacts as contact_store
from services.identity.store import phone as phone_store
from services.identity.store import users as user_store
from services.identity.store.tables import outbox
from services.identity.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import Principal
from zenthor.errors import AlreadyExists
from zenthor.outbox import add_event
from zenthor.pagination import Swept, check_size

# Outbox topic of a code's WhatsApp delivery (conversation → system message → outbound row);
# peers.py handles it.
DELIVER_VERIFICATION_CODE = "phone_verification.deliver"


@dataclass(frozen=True)
class CodeDelivery:
    """The payload of a DELIVER_VERIFICATION_CODE event. Its verification id keys the event
    and the system message, so a re-driven event writes nothing twice."""

    verification_id: str  # pv_…
    contact_id: str  # ctc_…
    phone: str
    content: str
    account_id: str

    def payload(self) -> dict[str, str]:
        return {
            "verification_id": self.verification_id,
            "contact_id": self.contact_id,
            "phone": self.phone,
            "content": self.content,
            "account_id": self.account_id,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> CodeDelivery:
        return cls(
            verification_id=str(payload["verification_id"]),
            contact_id=str(payload["contact_id"]),
            phone=str(payload["phone"]),
            content=str(payload["content"]),
            account_id=str(payload["account_id"]),
        )


async def request_phone_verification(deps: Deps, principal: Principal, phone: str) -> VerificationOutcome:
    """Stores a hashed code, ensures the contact, and hands the code's WhatsApp delivery to
    the outbox, all in one transaction."""
    user_id = principal.require_user().user_id
    rules.check_verification_phone(phone)
    now = deps.clock()
    code = rules.new_code(deps.randbelow)
    verification_id = ids.PHONE_VERIFICATION.new()
    async with deps.uow() as uow:
        owner = await user_store.user_with_phone(uow.conn, phone)
        if owner is not None and owner != user_id:
            return VerificationOutcome(False, rules.PHONE_TAKEN)
        await user_store.lock_user_row(uow.conn, user_id)
        by_user, by_phone = await phone_store.recent_request_counts(uow.conn, user_id, phone, now - rules.RATE_WINDOW)
        if by_user >= rules.MAX_REQUESTS_PER_USER or by_phone >= rules.MAX_REQUESTS_PER_PHONE:
            return VerificationOutcome(False, rules.TOO_MANY_REQUESTS)
        await phone_store.expire_pending(uow.conn, user_id)
        await phone_store.insert_verification(
            uow.conn, verification_id, user_id, phone, rules.hash_code(code, secrets.token_hex(8)), now
        )
        await contact_store.insert_contact_if_absent(
            uow.conn, contact_id=ids.CONTACT.new(), phone=phone, name=phone, is_allowed=True, now=now
        )
        contact = await contact_store.get_contact_by_phone(uow.conn, phone)
        assert contact is not None
        delivery = CodeDelivery(
            verification_id=ids.PHONE_VERIFICATION.format(verification_id),
            contact_id=ids.CONTACT.format(contact.id),
            phone=phone,
            content=rules.verification_text(code),
            account_id=deps.verification_account_id,
        )
        await add_event(uow.conn, outbox, DELIVER_VERIFICATION_CODE, delivery.verification_id, delivery.payload(), now)
        await uow.commit()
    deps.kick_outbox()
    return VerificationOutcome(True)


async def confirm_phone_verification(deps: Deps, principal: Principal, code: str) -> VerificationOutcome:
    user_id = principal.require_user().user_id
    rules.check_code(code)
    now = deps.clock()
    async with deps.uow() as uow:
        await user_store.lock_user_row(uow.conn, user_id)
        verification = await phone_store.open_verification(uow.conn, user_id, for_update=True)
        if verification is None:
            return VerificationOutcome(False, rules.NO_PENDING)
        if verification.status is VerificationStatus.LOCKED:
            return VerificationOutcome(False, rules.CODE_LOCKED)
        if rules.is_expired(verification, now):
            await phone_store.set_verification_status(uow.conn, verification.id, VerificationStatus.EXPIRED)
            await uow.commit()
            return VerificationOutcome(False, rules.CODE_EXPIRED)
        if not rules.code_matches(code, verification.code_hash):
            await phone_store.count_wrong_code(uow.conn, verification.id, rules.MAX_CODE_ATTEMPTS)
            await uow.commit()
            return VerificationOutcome(False, rules.CODE_INVALID)
        # Uniqueness is settled here, inside the transaction that takes the phone
        # (docs/hardening.md #5); the unique index decides a race (store.users.set_user_phone).
        owner = await user_store.user_with_phone(uow.conn, verification.phone)
        if owner is not None and owner != user_id:
            raise AlreadyExists(rules.PHONE_TAKEN)
        await phone_store.set_verification_status(
            uow.conn, verification.id, VerificationStatus.VERIFIED, verified_at=now
        )
        await user_store.set_user_phone(uow.conn, user_id, verification.phone, now)
        await contact_store.link_contact(uow.conn, verification.phone, user_id)
        await uow.commit()
    return VerificationOutcome(True, phone=verification.phone)


async def get_phone_verification_status(deps: Deps, principal: Principal) -> PendingVerification | None:
    user_id = principal.require_user().user_id
    async with deps.uow() as uow:
        verification = await phone_store.open_verification(uow.conn, user_id)
    if verification is None or not rules.is_live(verification, deps.clock()):
        return None
    return PendingVerification(verification.phone, verification.created_at)


async def unlink_phone(deps: Deps, principal: Principal) -> None:
    """Removes the caller's phone and its contact link; a no-op when there is none."""
    user_id = principal.require_user().user_id
    now = deps.clock()
    async with deps.uow() as uow:
        user = await user_store.get_user(uow.conn, user_id)
        if user is None or user.phone is None:
            return
        await user_store.set_user_phone(uow.conn, user_id, None, now)
        await contact_store.link_contact(uow.conn, user.phone, None)
        await uow.commit()


async def cleanup_expired_phone_verifications(deps: Deps, batch_size: int) -> Swept:
    """Deletes up to one batch of stale unverified requests; `more` when the batch was full."""
    limit = check_size(batch_size, rules.CLEANUP_BATCH, "batch_size")
    async with deps.uow() as uow:
        deleted = await phone_store.delete_stale_verifications(
            uow.conn, deps.clock() - rules.VERIFICATION_RETENTION, limit
        )
        await uow.commit()
    return Swept.of(deleted, limit)
