"""Identity rules as plain functions and values: roles, Clerk field derivation, input checks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from zenthor.auth.principal import Identity, Role, UserStatus
from zenthor.errors import InvalidArgument
from zenthor.validate import optional_text, required_text

MAX_NAME = 200
MAX_EMAIL = 320
MAX_IMAGE_URL = 2_048
MAX_EXTERNAL_ID = 255
MAX_PHONE_LOOKUP = 32
# spec identity.md §4: 10 to 15 ASCII digits, nothing else.
PHONE_RE = re.compile(r"^[0-9]{10,15}$")
PRIVATE_DATA_MESSAGE = "This is private"


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    external_id: str
    name: str
    email: str
    role: Role | None
    email_verified: bool | None
    image: str | None
    phone: str | None
    status: UserStatus
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Contact:
    id: uuid.UUID
    phone: str
    name: str
    is_allowed: bool
    user_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class ClerkProfile:
    """The fields a Clerk user event or sync page gives us (spec identity.md §5.2)."""

    external_id: str
    name: str
    email: str
    image: str | None


def role_for_email(email: str | None, allowlist: frozenset[str]) -> Role:
    """spec §4.4: admin when the lower-cased email is allowlisted, member otherwise."""
    return Role.ADMIN if email and email.strip().lower() in allowlist else Role.MEMBER


def effective_role(user: User, allowlist: frozenset[str]) -> Role:
    """The stored role wins; otherwise the allowlist decides, but only from an email Clerk
    vouched for (finding 2): a client-sent email (`email_verified = False`) never makes an
    admin. Rows predating the flag (`None`) keep the original rule."""
    if user.role is not None:
        return user.role
    if user.email_verified is False:
        return Role.MEMBER
    return role_for_email(user.email, allowlist)


def bootstrap_email(identity: Identity, client_email: str | None) -> tuple[str, bool]:
    """The email to store for a bootstrapped user and whether Clerk vouched for it: the JWT's
    email claim when present, else the client's (unverified), lower-cased (finding 32)."""
    if identity.email:
        return identity.email.strip().lower(), True
    return (client_email or "").strip().lower(), False


def display_name(first: str | None, last: str | None) -> str:
    """spec §5.2: non-empty parts joined by one space, `User` when nothing is left."""
    parts = [p for p in (first, last) if p]
    return " ".join(parts) or "User"


def primary_email(data: Mapping[str, Any], *, primary_key: str, list_key: str, address_key: str) -> str:
    """The address whose id is the primary id, or "" (spec §5.2). Keys differ between the
    webhook payload (snake_case) and the Backend API's SDK shape."""
    primary_id = data.get(primary_key)
    for entry in data.get(list_key) or []:
        if isinstance(entry, Mapping) and primary_id and entry.get("id") == primary_id:
            address = entry.get(address_key)
            return address if isinstance(address, str) else ""
    return ""


def clerk_profile(data: Mapping[str, Any]) -> ClerkProfile:
    """A Clerk user object (webhook `data` or Backend API user) → the fields we store.
    A null `image_url` counts as no image (finding 33)."""
    external_id = data.get("id")
    if not isinstance(external_id, str) or not external_id:
        raise InvalidArgument("data.id", "is required")
    image = data.get("image_url")
    return ClerkProfile(
        external_id=external_id,
        name=display_name(data.get("first_name"), data.get("last_name")),
        email=primary_email(
            data,
            primary_key="primary_email_address_id",
            list_key="email_addresses",
            address_key="email_address",
        ),
        image=image if isinstance(image, str) and image else None,
    )


def check_external_id(value: str, field: str = "external_id") -> str:
    return required_text(value, field, max_chars=MAX_EXTERNAL_ID)


def check_profile(name: str, email: str | None, image: str | None) -> None:
    required_text(name, "name", max_chars=MAX_NAME)
    optional_text(email, "email", max_chars=MAX_EMAIL)
    optional_text(image, "image", max_chars=MAX_IMAGE_URL)


def check_phone(value: str, field: str = "phone") -> str:
    """A WhatsApp number as stored: 10 to 15 digits, no `+` or punctuation."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not PHONE_RE.match(value):
        raise InvalidArgument(field, "must be 10 to 15 digits (no +, spaces or punctuation)")
    return value


def check_phone_lookup(value: str, field: str = "phone") -> str:
    """Lookups are exact matches (spec §3): any non-empty short string, no format rule."""
    return required_text(value, field, max_chars=MAX_PHONE_LOOKUP)
