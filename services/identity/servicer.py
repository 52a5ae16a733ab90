"""IdentityService over gRPC: requests → use cases → responses. No rules, no SQL here."""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc

from services.identity import usecases
from services.identity.domain import (
    PRIVATE_DATA_MESSAGE,
    Contact,
    User,
    check_external_id,
)
from services.identity.usecases import Deps
from zenthor import ids
from zenthor.auth.principal import Role, UserStatus, current_principal
from zenthor.clerk import ClerkProfile
from zenthor.convert import timestamp
from zenthor.errors import InvalidArgument, NotFound
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc
from zenthor.pagination import page_request

Ctx: TypeAlias = grpc.aio.ServicerContext

_ROLE = {None: pb.ROLE_UNSPECIFIED, Role.ADMIN: pb.ROLE_ADMIN, Role.MEMBER: pb.ROLE_MEMBER}
_STATUS = {UserStatus.ACTIVE: pb.USER_STATUS_ACTIVE, UserStatus.INACTIVE: pb.USER_STATUS_INACTIVE}
MAX_BATCH = 500


def user_pb(user: User) -> pb.User:
    return pb.User(
        id=ids.USER.format(user.id),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
        external_id=user.external_id,
        name=user.name,
        email=user.email,
        role=_ROLE[user.role],
        email_verified=user.email_verified,
        image=user.image,
        phone=user.phone,
        status=_STATUS[user.status],
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


def _opt(message: Any, field: str) -> Any:
    return getattr(message, field) if message.HasField(field) else None


def _batch(values: Any, kind: ids.IdKind, field: str) -> list[Any]:
    if len(values) > MAX_BATCH:
        raise InvalidArgument(field, f"must hold at most {MAX_BATCH} ids")
    return [kind.parse(v, f"{field}[{i}]") for i, v in enumerate(values)]


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def ResolvePrincipal(self, request: pb.ResolvePrincipalRequest, context: Ctx) -> pb.ResolvePrincipalResponse:
        user = await usecases.resolve_principal(self._deps, check_external_id(request.external_id))
        if user is None:
            raise NotFound("User not found")
        return pb.ResolvePrincipalResponse(
            user_id=ids.USER.format(user.user_id),
            role=_ROLE[user.role],
            status=_STATUS[user.status],
            contact_id=ids.CONTACT.format(user.contact_id) if user.contact_id else None,
        )

    async def GetUserByExternalId(self, request: pb.GetUserByExternalIdRequest, context: Ctx) -> pb.GetUserByExternalIdResponse:
        user = await usecases.get_user_by_external_id(self._deps, current_principal(), request.external_id)
        return pb.GetUserByExternalIdResponse(user=user_pb(user) if user else None)

    async def GetOrCreateUserFromClerk(
        self, request: pb.GetOrCreateUserFromClerkRequest, context: Ctx
    ) -> pb.GetOrCreateUserFromClerkResponse:
        result = await usecases.get_or_create_from_clerk(
            self._deps,
            current_principal().require_identity(),
            request.name,
            _opt(request, "email"),
            _opt(request, "image"),
        )
        return pb.GetOrCreateUserFromClerkResponse(user_id=ids.USER.format(result.user_id), created=result.created)

    async def GetCurrentUser(self, request: pb.GetCurrentUserRequest, context: Ctx) -> pb.GetCurrentUserResponse:
        user = await usecases.get_current_user(self._deps, current_principal())
        return pb.GetCurrentUserResponse(user=user_pb(user))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Ctx) -> pb.ListUsersResponse:
        page = await usecases.list_users(self._deps, page_request(request.page_size, request.page_token))
        return pb.ListUsersResponse(users=[user_pb(u) for u in page.items], next_page_token=page.next_page_token)

    async def BatchGetUsers(self, request: pb.BatchGetUsersRequest, context: Ctx) -> pb.BatchGetUsersResponse:
        users = await usecases.batch_get_users(self._deps, _batch(request.ids, ids.USER, "ids"))
        return pb.BatchGetUsersResponse(users=[user_pb(u) for u in users])

    async def GetContactByPhone(self, request: pb.GetContactByPhoneRequest, context: Ctx) -> pb.GetContactByPhoneResponse:
        contact = await usecases.get_contact_by_phone(self._deps, request.phone)
        return pb.GetContactByPhoneResponse(contact=contact_pb(contact) if contact else None)

    async def CreateContact(self, request: pb.CreateContactRequest, context: Ctx) -> pb.CreateContactResponse:
        result = await usecases.create_contact(self._deps, request.phone, request.name, request.is_allowed)
        return pb.CreateContactResponse(contact=contact_pb(result.contact), created=result.created)

    async def UpdateContact(self, request: pb.UpdateContactRequest, context: Ctx) -> pb.UpdateContactResponse:
        contact = await usecases.update_contact(
            self._deps, ids.CONTACT.parse(request.id, "id"), _opt(request, "name"), _opt(request, "is_allowed")
        )
        return pb.UpdateContactResponse(contact=contact_pb(contact))

    async def ListContacts(self, request: pb.ListContactsRequest, context: Ctx) -> pb.ListContactsResponse:
        page = await usecases.list_contacts(self._deps, page_request(request.page_size, request.page_token))
        return pb.ListContactsResponse(contacts=[contact_pb(c) for c in page.items], next_page_token=page.next_page_token)

    async def BatchGetContacts(self, request: pb.BatchGetContactsRequest, context: Ctx) -> pb.BatchGetContactsResponse:
        contacts = await usecases.batch_get_contacts(self._deps, _batch(request.ids, ids.CONTACT, "ids"))
        return pb.BatchGetContactsResponse(contacts=[contact_pb(c) for c in contacts])

    async def UpsertClerkUser(self, request: pb.UpsertClerkUserRequest, context: Ctx) -> pb.UpsertClerkUserResponse:
        profile = ClerkProfile(
            external_id=request.external_id, name=request.name, email=request.email, image=_opt(request, "image")
        )
        result = await usecases.upsert_clerk_user(self._deps, profile)
        return pb.UpsertClerkUserResponse(user_id=ids.USER.format(result.user_id), created=result.created)

    async def DeactivateClerkUser(self, request: pb.DeactivateClerkUserRequest, context: Ctx) -> pb.DeactivateClerkUserResponse:
        found = await usecases.deactivate_clerk_user(self._deps, request.external_id)
        return pb.DeactivateClerkUserResponse(found=found)

    async def SyncClerkUsers(self, request: pb.SyncClerkUsersRequest, context: Ctx) -> pb.SyncClerkUsersResponse:
        counts = await usecases.sync_clerk_users(self._deps)
        return pb.SyncClerkUsersResponse(synced=counts.synced, created=counts.created, updated=counts.updated)

    async def BackfillUserRoles(self, request: pb.BackfillUserRolesRequest, context: Ctx) -> pb.BackfillUserRolesResponse:
        counts = await usecases.backfill_user_roles(self._deps)
        return pb.BackfillUserRolesResponse(updated=counts.updated, total=counts.total)

    async def GetPrivateData(self, request: pb.GetPrivateDataRequest, context: Ctx) -> pb.GetPrivateDataResponse:
        return pb.GetPrivateDataResponse(message=PRIVATE_DATA_MESSAGE)

    async def GetHealthCheck(self, request: pb.GetHealthCheckRequest, context: Ctx) -> pb.GetHealthCheckResponse:
        return pb.GetHealthCheckResponse(status="OK")

    async def RequestPhoneVerification(
        self, request: pb.RequestPhoneVerificationRequest, context: Ctx
    ) -> pb.RequestPhoneVerificationResponse:
        outcome = await usecases.request_phone_verification(self._deps, current_principal(), request.phone)
        return pb.RequestPhoneVerificationResponse(success=outcome.success, error=outcome.error)

    async def ConfirmPhoneVerification(
        self, request: pb.ConfirmPhoneVerificationRequest, context: Ctx
    ) -> pb.ConfirmPhoneVerificationResponse:
        outcome = await usecases.confirm_phone_verification(self._deps, current_principal(), request.code)
        return pb.ConfirmPhoneVerificationResponse(success=outcome.success, phone=outcome.phone, error=outcome.error)

    async def GetPhoneVerificationStatus(
        self, request: pb.GetPhoneVerificationStatusRequest, context: Ctx
    ) -> pb.GetPhoneVerificationStatusResponse:
        pending = await usecases.get_phone_verification_status(self._deps, current_principal())
        if pending is None:
            return pb.GetPhoneVerificationStatusResponse()
        return pb.GetPhoneVerificationStatusResponse(
            pending=pb.PendingPhoneVerification(phone=pending.phone, create_time=timestamp(pending.created_at))
        )

    async def UnlinkPhone(self, request: pb.UnlinkPhoneRequest, context: Ctx) -> pb.UnlinkPhoneResponse:
        await usecases.unlink_phone(self._deps, current_principal())
        return pb.UnlinkPhoneResponse()

    async def CleanupExpiredPhoneVerifications(
        self, request: pb.CleanupExpiredPhoneVerificationsRequest, context: Ctx
    ) -> pb.CleanupExpiredPhoneVerificationsResponse:
        counts = await usecases.cleanup_expired_phone_verifications(self._deps, request.batch_size)
        return pb.CleanupExpiredPhoneVerificationsResponse(deleted=counts.deleted, more=counts.more)
