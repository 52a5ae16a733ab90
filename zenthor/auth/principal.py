"""Who a call acts for, handed to servicers through a context variable."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum

from zenthor.errors import Unauthenticated


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class UserStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


@dataclass(frozen=True)
class Identity:
    """A verified end-user JWT: the subject and the claims we trust."""

    subject: str
    email: str | None = None
    email_verified: bool = False


@dataclass(frozen=True)
class ResolvedUser:
    """What identity's ResolvePrincipal says about a subject."""

    user_id: uuid.UUID
    role: Role
    status: UserStatus
    contact_id: uuid.UUID | None

    def owns(self, *, user_id: uuid.UUID | None, contact_id: uuid.UUID | None) -> bool:
        """The one ownership rule: a record (a conversation, or anything carrying its owner)
        is the caller's when it names the caller's user id, or the contact linked to the
        caller (their WhatsApp side). A missing id never matches."""
        if user_id is not None and user_id == self.user_id:
            return True
        return contact_id is not None and contact_id == self.contact_id


@dataclass(frozen=True)
class Principal:
    """The caller of the current RPC. `user` is set for USER/ADMIN methods, `identity` for any
    JWT-authenticated call, `service` for service-key calls."""

    identity: Identity | None = None
    user: ResolvedUser | None = None
    service: bool = False

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.role is Role.ADMIN

    def require_user(self) -> ResolvedUser:
        if self.user is None:
            raise Unauthenticated("Not authenticated")
        return self.user

    def require_identity(self) -> Identity:
        if self.identity is None:
            raise Unauthenticated("Not authenticated")
        return self.identity


ANONYMOUS = Principal()
_current: ContextVar[Principal] = ContextVar("zenthor_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    return _current.get()


def set_principal(principal: Principal) -> None:
    _current.set(principal)
