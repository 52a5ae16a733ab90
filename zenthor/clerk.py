"""Clerk user objects → the profile fields we store, shared by the
gateway's webhook and identity's bulk sync so both derive fields by one rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zenthor.errors import InvalidArgument


@dataclass(frozen=True)
class ClerkProfile:
    """The fields a Clerk user event or sync page gives us."""

    external_id: str
    name: str
    email: str
    image: str | None


def display_name(first: str | None, last: str | None) -> str:
    """The non-empty name parts joined by one space, `User` when nothing is left."""
    parts = [p for p in (first, last) if p]
    return " ".join(parts) or "User"


def primary_email(data: Mapping[str, Any]) -> str:
    """The address whose id is `primary_email_address_id`, or "" . Webhook
    payloads and Backend API users spell these keys alike."""
    primary_id = data.get("primary_email_address_id")
    for entry in data.get("email_addresses") or []:
        if isinstance(entry, Mapping) and primary_id and entry.get("id") == primary_id:
            address = entry.get("email_address")
            return address if isinstance(address, str) else ""
    return ""


def clerk_profile(data: Mapping[str, Any]) -> ClerkProfile:
    """A Clerk user object (webhook `data` or Backend API user) → the fields we store.
    A null `image_url` counts as no image (docs/hardening.md #33)."""
    external_id = data.get("id")
    if not isinstance(external_id, str) or not external_id:
        raise InvalidArgument("data.id", "is required")
    image = data.get("image_url")
    return ClerkProfile(
        external_id=external_id,
        name=display_name(data.get("first_name"), data.get("last_name")),
        email=primary_email(data),
        image=image if isinstance(image, str) and image else None,
    )
