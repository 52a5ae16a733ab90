"""Clerk user objects → the profile fields we store, shared by the
gateway's webhook and identity's bulk sync so both derive fields by one rule.

Clerk's shapes are read strictly: a field of the wrong type is `InvalidArgument` naming it
(`data.first_name`), so a malformed signed event is answered 400, never a crash."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zenthor.errors import InvalidArgument

# Clerk's `email_addresses[].verification.status` for an address its owner proved.
VERIFIED = "verified"


@dataclass(frozen=True)
class ClerkProfile:
    """The fields a Clerk user event or sync page gives us."""

    external_id: str
    name: str
    email: str
    image: str | None
    # Whether Clerk says the owner proved `email`; only then may it make an admin
    # (docs/hardening.md #2).
    email_verified: bool


def display_name(first: str | None, last: str | None) -> str:
    """The non-empty name parts joined by one space, `User` when nothing is left."""
    parts = [p for p in (first, last) if p]
    return " ".join(parts) or "User"


def _optional_str(data: Mapping[str, Any], key: str, field: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidArgument(field, "must be a string or null")
    return value


def _optional_object(data: Mapping[str, Any], key: str, field: str) -> Mapping[str, Any] | None:
    value = data.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise InvalidArgument(field, "must be an object or null")
    return value


def primary_email(data: Mapping[str, Any], prefix: str = "data") -> tuple[str, bool]:
    """The address whose id is `primary_email_address_id` and whether Clerk verified it, or
    ("", False). Webhook payloads and Backend API users spell these keys alike."""
    primary_id = _optional_str(data, "primary_email_address_id", f"{prefix}.primary_email_address_id")
    entries = data.get("email_addresses")
    if entries is None:
        return "", False
    if not isinstance(entries, list):
        raise InvalidArgument(f"{prefix}.email_addresses", "must be a list or null")
    for i, entry in enumerate(entries):
        field = f"{prefix}.email_addresses[{i}]"
        if not isinstance(entry, Mapping):
            raise InvalidArgument(field, "must be an object")
        if not primary_id or entry.get("id") != primary_id:
            continue
        address = _optional_str(entry, "email_address", f"{field}.email_address") or ""
        verification = _optional_object(entry, "verification", f"{field}.verification") or {}
        return address, verification.get("status") == VERIFIED
    return "", False


def clerk_profile(data: Mapping[str, Any], prefix: str = "data") -> ClerkProfile:
    """A Clerk user object (webhook `data` or Backend API user) → the fields we store.
    A null `image_url` counts as no image (docs/hardening.md #33)."""
    external_id = data.get("id")
    if external_id is None or external_id == "":
        raise InvalidArgument(f"{prefix}.id", "is required")
    if not isinstance(external_id, str):
        raise InvalidArgument(f"{prefix}.id", "must be a string")
    first = _optional_str(data, "first_name", f"{prefix}.first_name")
    last = _optional_str(data, "last_name", f"{prefix}.last_name")
    image = _optional_str(data, "image_url", f"{prefix}.image_url")
    email, verified = primary_email(data, prefix)
    return ClerkProfile(
        external_id=external_id,
        name=display_name(first, last),
        email=email,
        image=image or None,
        email_verified=verified,
    )
