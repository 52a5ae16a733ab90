"""Identity rules as plain functions: the role rule, the bootstrap email, Clerk profile fields, phones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.identity.domain.contacts import check_phone
from services.identity.domain.users import User, bootstrap_email, effective_role
from zenthor.auth.principal import Identity, Role, UserStatus
from zenthor.clerk import clerk_profile, display_name
from zenthor.errors import InvalidArgument

ALLOW = frozenset({"boss@example.com", "ops@example.com"})


def user(role: Role | None, email: str, verified: bool | None) -> User:
    now = datetime.now(UTC)
    return User(uuid.uuid4(), "user_x", "X", email, role, verified, None, None, UserStatus.ACTIVE, now, now)


def test_stored_role_wins_over_the_allowlist() -> None:
    assert effective_role(user(Role.MEMBER, "ops@example.com", True), ALLOW) is Role.MEMBER


def test_absent_role_is_derived_case_insensitively() -> None:
    assert effective_role(user(None, "BOSS@example.com", None), ALLOW) is Role.ADMIN
    assert effective_role(user(None, "z@example.com", True), ALLOW) is Role.MEMBER


def test_unverified_email_never_derives_admin() -> None:
    assert effective_role(user(None, "boss@example.com", False), ALLOW) is Role.MEMBER


def test_bootstrap_prefers_the_jwt_email_claim() -> None:
    verified = Identity("s", email="Ops@Example.com", email_verified=True)
    assert bootstrap_email(verified, "evil@x.com") == ("ops@example.com", True)
    # A claim without `email_verified: true` is kept, but vouches for nothing (docs/hardening.md #2).
    assert bootstrap_email(Identity("s", email="Ops@Example.com"), "evil@x.com") == ("ops@example.com", False)
    assert bootstrap_email(Identity("s"), "Me@X.com") == ("me@x.com", False)


@pytest.mark.parametrize(
    ("first", "last", "name"), [("Gina", None, "Gina"), (None, None, "User"), ("Big", "Boss", "Big Boss"), ("", "Solo", "Solo")]
)
def test_display_name_from_clerk_names(first: str | None, last: str | None, name: str) -> None:
    assert display_name(first, last) == name


def test_clerk_profile_takes_the_primary_email_and_treats_null_image_as_none() -> None:
    profile = clerk_profile({
        "id": "user_g", "first_name": "Gina", "last_name": None, "image_url": None,
        "primary_email_address_id": "idn_1",
        "email_addresses": [{"id": "idn_0", "email_address": "old@x.com"}, {"id": "idn_1", "email_address": "Gina@Example.COM"}],
    })
    assert (profile.external_id, profile.name, profile.email, profile.image) == ("user_g", "Gina", "Gina@Example.COM", None)
    assert clerk_profile({"id": "user_h", "primary_email_address_id": None}).email == ""


@pytest.mark.parametrize("phone", ["5511999990000", "1234567890", "123456789012345"])
def test_valid_phones(phone: str) -> None:
    assert check_phone(phone) == phone


@pytest.mark.parametrize("phone", ["", "123456789", "1234567890123456", "+5511999990000", "55 11 99999 0000", "５５１１９９９９９０００"])
def test_malformed_phones_are_refused(phone: str) -> None:
    with pytest.raises(InvalidArgument, match="phone"):
        check_phone(phone)
