"""Users and roles: the profile fields' limits, the role rule, the bootstrap email rule. How a
Clerk user object becomes profile fields lives in zenthor.clerk, shared with the gateway's
webhook."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from zenthor.auth.principal import Identity, Role, UserStatus
from zenthor.validate import optional_text, required_text

MAX_NAME = 200
MAX_EMAIL = 320
MAX_IMAGE_URL = 2_048
MAX_EXTERNAL_ID = 255
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


def role_for_email(email: str | None, allowlist: frozenset[str]) -> Role:
    """Admin when the trimmed, lower-cased email is on the allowlist, member otherwise."""
    return Role.ADMIN if email and email.strip().lower() in allowlist else Role.MEMBER


def clerk_role(email: str, email_verified: bool, allowlist: frozenset[str]) -> Role | None:
    """The role a Clerk upsert stores for a user without one. An allow-listed address makes an
    admin only once Clerk verified it (docs/hardening.md #2); until then no role is stored (the
    effective role is member) so the verified update that follows decides."""
    role = role_for_email(email, allowlist)
    if role is Role.ADMIN and not email_verified:
        return None
    return role


def effective_role(user: User, allowlist: frozenset[str]) -> Role:
    """The stored role wins; otherwise the allowlist decides, but only from an email Clerk
    vouched for (docs/hardening.md #2): a client-sent email (`email_verified = False`) never
    makes an admin. Rows predating the flag (`None`) keep the original rule."""
    if user.role is not None:
        return user.role
    if user.email_verified is False:
        return Role.MEMBER
    return role_for_email(user.email, allowlist)


def bootstrap_email(identity: Identity, client_email: str | None) -> tuple[str, bool]:
    """The email to store for a bootstrapped user and whether Clerk vouched for it: the JWT's
    email claim when present (verified only with `email_verified: true`), else the client's
    (unverified), lower-cased (docs/hardening.md #2, #32)."""
    if identity.email:
        return identity.email.strip().lower(), identity.email_verified
    return (client_email or "").strip().lower(), False


def check_external_id(value: str, field: str = "external_id") -> str:
    return required_text(value, field, max_chars=MAX_EXTERNAL_ID)


def check_profile(name: str, email: str | None, image: str | None) -> None:
    required_text(name, "name", max_chars=MAX_NAME)
    optional_text(email, "email", max_chars=MAX_EMAIL)
    optional_text(image, "image", max_chars=MAX_IMAGE_URL)
