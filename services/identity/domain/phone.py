"""Phone verification: a six-digit code sent over WhatsApp, stored hashed, valid five minutes,
capped in wrong guesses and in requests (docs/hardening.md #4, #5, #21)."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from services.identity.domain.contacts import PHONE_RE
from zenthor.errors import InvalidArgument
from zenthor.pagination import PageLimits
from zenthor.validate import required_text

# A code is valid while now - created <= 5 minutes (exactly five minutes still counts).
VERIFICATION_TTL = timedelta(minutes=5)
# Unverified requests are deleted after a day; verified ones stay as the audit trail
# (docs/hardening.md #21).
VERIFICATION_RETENTION = timedelta(hours=24)
MAX_CODE_ATTEMPTS = 10  # wrong codes before the request locks (docs/hardening.md #4)
RATE_WINDOW = timedelta(hours=1)
MAX_REQUESTS_PER_USER = 5  # each request sends a WhatsApp message (docs/hardening.md #4)
MAX_REQUESTS_PER_PHONE = 5
MAX_CODE = 16
# CleanupExpiredPhoneVerifications: rows deleted per call (0 asks for the default).
CLEANUP_BATCH = PageLimits(default=1_000, maximum=10_000)

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


@dataclass(frozen=True)
class PendingVerification:
    """What GetPhoneVerificationStatus shows of a live request."""

    phone: str
    created_at: datetime


@dataclass(frozen=True)
class VerificationOutcome:
    """A request's or confirmation's business answer: success, or why not (wrong code,
    expired, rate-limited…). Bad input is never an outcome: it is INVALID_ARGUMENT."""

    success: bool
    error: str | None = None
    phone: str | None = None


def new_code(randbelow: Callable[[int], int]) -> str:
    """A uniformly random code in 100000..999999, from a CSPRNG (`secrets.randbelow`)."""
    return str(100_000 + randbelow(900_000))


def hash_code(code: str, salt: str) -> str:
    """`salt$sha256(salt:code)`: the table never holds a usable code. Six digits are cheap to
    brute-force offline; what protects the code is the TTL and the attempt cap."""
    return f"{salt}${hashlib.sha256(f'{salt}:{code}'.encode()).hexdigest()}"


def code_matches(code: str, stored: str) -> bool:
    salt, _, _digest = stored.partition("$")
    return hmac.compare_digest(hash_code(code, salt), stored)


def is_expired(verification: PhoneVerification, now: datetime) -> bool:
    """Expired when now - created_at > TTL (exactly the TTL still counts)."""
    return now - verification.created_at > VERIFICATION_TTL


def is_live(verification: PhoneVerification, now: datetime) -> bool:
    """Still waiting for its code: pending and within the TTL."""
    return verification.status is VerificationStatus.PENDING and not is_expired(verification, now)


def verification_text(code: str) -> str:
    return f"Your verification code is: {code}\n\nThis code expires in 5 minutes."


def check_verification_phone(value: str) -> str:
    """The number to verify: 10 to 15 digits, else INVALID_ARGUMENT (the original answered
    success=false; bad input is INVALID_ARGUMENT everywhere in this backend)."""
    if not PHONE_RE.match(value or ""):
        raise InvalidArgument("phone", "Invalid phone number format")
    return value


def check_code(value: str) -> str:
    return required_text(value, "code", max_chars=MAX_CODE)
