"""Proto ⇄ domain conversions of the identity contract: ids, pages, optional fields in;
users, contacts, principals and verification states out. Ids and pages are checked with the
kit's parsers; every other field rule is the domain's, called by the use cases."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.identity.domain.contacts import Contact
from services.identity.domain.phone import PendingVerification
from services.identity.domain.users import User
from zenthor import ids
from zenthor.auth.principal import ResolvedUser, Role, UserStatus
from zenthor.clerk import ClerkProfile
from zenthor.convert import timestamp
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.pagination import PageLimits, PageRequest, check_size, page_request

USERS_PAGE = PageLimits(default=100, maximum=500)  # ListUsers
CONTACTS_PAGE = PageLimits(default=100, maximum=500)  # ListContacts
# BatchGetUsers / BatchGetContacts: at most 500 ids a call (an empty batch asks for nothing).
BATCH_GET = PageLimits(default=100, maximum=500)

ROLE_PB = {Role.ADMIN: pb.ROLE_ADMIN, Role.MEMBER: pb.ROLE_MEMBER}
STATUS_PB = {UserStatus.ACTIVE: pb.USER_STATUS_ACTIVE, UserStatus.INACTIVE: pb.USER_STATUS_INACTIVE}


# --- requests ---


def users_page(request: pb.ListUsersRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, USERS_PAGE)


def contacts_page(request: pb.ListContactsRequest) -> PageRequest:
    return page_request(request.page_size, request.page_token, CONTACTS_PAGE)


def batch_ids(values: Sequence[str], kind: ids.IdKind, field: str = "ids") -> list[uuid.UUID]:
    check_size(len(values), BATCH_GET, field)
    return [kind.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


def contact_id(request: pb.UpdateContactRequest) -> uuid.UUID:
    return ids.CONTACT.parse(request.id, "id")


def contact_changes(request: pb.UpdateContactRequest) -> tuple[str | None, bool | None]:
    """(name, is_allowed), each None when the request leaves it unchanged."""
    name = request.name if request.HasField("name") else None
    is_allowed = request.is_allowed if request.HasField("is_allowed") else None
    return name, is_allowed


def bootstrap_profile(request: pb.GetOrCreateUserFromClerkRequest) -> tuple[str, str | None, str | None]:
    """(name, email, image) as the client sent them; email and image may be absent."""
    email = request.email if request.HasField("email") else None
    image = request.image if request.HasField("image") else None
    return request.name, email, image


def clerk_profile(request: pb.UpsertClerkUserRequest) -> ClerkProfile:
    return ClerkProfile(
        external_id=request.external_id,
        name=request.name,
        email=request.email,
        image=request.image if request.HasField("image") else None,
        email_verified=request.email_verified,
    )


# --- responses ---


def user_pb(user: User) -> pb.User:
    return pb.User(
        id=ids.USER.format(user.id),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
        external_id=user.external_id,
        name=user.name,
        email=user.email,
        role=ROLE_PB[user.role] if user.role else pb.ROLE_UNSPECIFIED,
        email_verified=user.email_verified,
        image=user.image,
        phone=user.phone,
        status=STATUS_PB[user.status],
    )


def contact_pb(contact: Contact) -> pb.Contact:
    return pb.Contact(
        id=ids.CONTACT.format(contact.id),
        create_time=timestamp(contact.created_at),
        phone=contact.phone,
        name=contact.name,
        is_allowed=contact.is_allowed,
        user_id=ids.USER.format(contact.user_id) if contact.user_id else None,
    )


def principal_response(principal: ResolvedUser) -> pb.ResolvePrincipalResponse:
    return pb.ResolvePrincipalResponse(
        user_id=ids.USER.format(principal.user_id),
        role=ROLE_PB[principal.role],
        status=STATUS_PB[principal.status],
        contact_id=ids.CONTACT.format(principal.contact_id) if principal.contact_id else None,
    )


def verification_status_response(pending: PendingVerification | None) -> pb.GetPhoneVerificationStatusResponse:
    if pending is None:
        return pb.GetPhoneVerificationStatusResponse()
    return pb.GetPhoneVerificationStatusResponse(
        pending=pb.PendingPhoneVerification(phone=pending.phone, create_time=timestamp(pending.created_at))
    )
