"""Identity rules as plain functions and values: roles, input checks. The Clerk field rule
lives in zenthor.clerk, shared with the gateway's webhook."""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

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


# --- phone verification (spec identity.md §4, findings 4, 5, 21) ---

VERIFICATION_TTL = timedelta(minutes=5)  # spec: code valid while now - created <= 300 000 ms
VERIFICATION_RETENTION = timedelta(hours=24)  # spec cleanup age; verified rows are kept (21)
MAX_CODE_ATTEMPTS = 10  # finding 4: wrong codes before the request locks
RATE_WINDOW = timedelta(hours=1)
MAX_REQUESTS_PER_USER = 5  # finding 4: each request sends a WhatsApp message
MAX_REQUESTS_PER_PHONE = 5

NO_PENDING = "No pending verification found"
CODE_EXPIRED = "Verification code expired"
CODE_INVALID = "Invalid verification code"
CODE_LOCKED = "Too many wrong codes; request a new code"
PHONE_TAKEN = "Phone number already linked to another account"
TOO_MANY_REQUESTS = "Too many verification requests; try again later"


class VerificationStatus(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    EXPIRED = "expired"
    LOCKED = "locked"


@dataclass(frozen=True)
class PhoneVerification:
    id: uuid.UUID
    user_id: uuid.UUID
    phone: str
    code_hash: str
    status: VerificationStatus
    attempts: int
    created_at: datetime


def new_code(randbelow: Callable[[int], int]) -> str:
    """A uniformly random code in 100000..999999 (spec), from a CSPRNG (`secrets.randbelow`)."""
    return str(100_000 + randbelow(900_000))


def hash_code(code: str, salt: str) -> str:
    """`salt$sha256(salt:code)`: the table never holds a usable code. Six digits are cheap to
    brute-force offline; what protects the code is the TTL and the attempt cap."""
    return f"{salt}${hashlib.sha256(f'{salt}:{code}'.encode()).hexdigest()}"


def code_matches(code: str, stored: str) -> bool:
    salt, _, _digest = stored.partition("$")
    return hmac.compare_digest(hash_code(code, salt), stored)


def is_expired(verification: PhoneVerification, now: datetime) -> bool:
    """spec: expired when now - createdAt > TTL (exactly the TTL still counts)."""
    return now - verification.created_at > VERIFICATION_TTL


def verification_text(code: str) -> str:
    return f"Your verification code is: {code}\n\nThis code expires in 5 minutes."


def check_verification_phone(value: str) -> str:
    """The number to verify: 10 to 15 digits, else INVALID_ARGUMENT (spec scenario 28 answered
    success=false; bad input is INVALID_ARGUMENT everywhere in this backend)."""
    if not PHONE_RE.match(value or ""):
        raise InvalidArgument("phone", "Invalid phone number format")
    return value


def check_code(value: str) -> str:
    return required_text(value, "code", max_chars=16)
