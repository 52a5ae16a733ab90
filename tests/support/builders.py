"""Small builders that arrange rows the scenarios start from (written as the superuser)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from tests.support.database import TestDatabase
from zenthor import ids


def add_user(
    db: TestDatabase,
    external_id: str,
    *,
    email: str = "",
    name: str = "Someone",
    role: str | None = "member",
    status: str = "active",
    email_verified: bool | None = True,
    phone: str | None = None,
) -> uuid.UUID:
    user_id = ids.USER.new()
    now = datetime.now(UTC)
    db.sql(
        "INSERT INTO identity.users (id, external_id, name, email, role, email_verified, phone, status, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (user_id, external_id, name, email, role, email_verified, phone, status, now, now),
    )
    return user_id


def add_contact(db: TestDatabase, phone: str, *, user_id: uuid.UUID | None = None, is_allowed: bool = True) -> uuid.UUID:
    contact_id = ids.CONTACT.new()
    db.sql(
        "INSERT INTO identity.contacts (id, phone, name, is_allowed, user_id, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (contact_id, phone, phone, is_allowed, user_id, datetime.now(UTC)),
    )
    return contact_id


def alice(db: TestDatabase) -> uuid.UUID:
    return add_user(db, "user_alice", email="alice@example.com", name="Alice A", role="member")


def boss(db: TestDatabase) -> uuid.UUID:
    return add_user(db, "user_boss", email="boss@example.com", name="Boss", role="admin")


def bob(db: TestDatabase) -> uuid.UUID:
    return add_user(db, "user_bob", email="bob@example.com", name="Bob", role="member")
