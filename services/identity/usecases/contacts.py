"""Contacts: WhatsApp ingress lookups and creation (idempotent on phone), admin edits and lists."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from services.identity.domain import contacts as rules
from services.identity.domain.contacts import Contact
from services.identity.domain.users import check_profile
from services.identity.store import contacts as contact_store
from services.identity.usecases.deps import Deps
from zenthor import ids
from zenthor.errors import NotFound
from zenthor.pagination import Page, PageRequest, next_token


@dataclass(frozen=True)
class CreatedContact:
    contact: Contact
    created: bool


async def get_contact_by_phone(deps: Deps, phone: str) -> Contact | None:
    rules.check_phone_lookup(phone)
    async with deps.uow() as uow:
        return await contact_store.get_contact_by_phone(uow.conn, phone)


async def create_contact(deps: Deps, phone: str, name: str, is_allowed: bool) -> CreatedContact:
    """Idempotent on phone: two simultaneous first messages from one number make one contact."""
    rules.check_phone(phone)
    check_profile(name, None, None)
    async with deps.uow() as uow:
        contact = await contact_store.insert_contact_if_absent(
            uow.conn, contact_id=ids.CONTACT.new(), phone=phone, name=name, is_allowed=is_allowed, now=deps.clock()
        )
        if contact is not None:
            await uow.commit()
            return CreatedContact(contact, created=True)
        existing = await contact_store.get_contact_by_phone(uow.conn, phone)
    assert existing is not None
    return CreatedContact(existing, created=False)


async def update_contact(deps: Deps, contact_id: uuid.UUID, name: str | None, is_allowed: bool | None) -> Contact:
    """Changes only the fields given; NotFound for an unknown contact."""
    if name is not None:
        check_profile(name, None, None)
    async with deps.uow() as uow:
        contact = await contact_store.update_contact(uow.conn, contact_id, name=name, is_allowed=is_allowed)
        if contact is None:
            raise NotFound("Contact not found")
        await uow.commit()
    return contact


async def list_contacts(deps: Deps, page: PageRequest) -> Page[Contact]:
    async with deps.uow() as uow:
        contacts = await contact_store.list_contacts(uow.conn, page)
    return Page(contacts, next_token([c.id for c in contacts], page.size))


async def batch_get_contacts(deps: Deps, contact_ids: Sequence[uuid.UUID]) -> list[Contact]:
    """The contacts found, in the order asked; unknown ids are left out."""
    async with deps.uow() as uow:
        found = {c.id: c for c in await contact_store.get_contacts(uow.conn, contact_ids)}
    return [found[i] for i in contact_ids if i in found]
