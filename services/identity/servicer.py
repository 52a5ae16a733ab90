"""IdentityService over gRPC: request → wire → one use case → wire → response. No rules, no SQL."""

from __future__ import annotations

from services.identity import wire
from services.identity.domain.users import PRIVATE_DATA_MESSAGE
from services.identity.usecases import clerk_sync, contacts, phone, users
from services.identity.usecases.deps import Deps
from zenthor import ids
from zenthor.auth.principal import current_principal
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc
from zenthor.server import Ctx


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    # --- users ---

    async def ResolvePrincipal(self, request: pb.ResolvePrincipalRequest, context: Ctx) -> pb.ResolvePrincipalResponse:
        principal = await users.resolve_principal(self._deps, request.external_id)
        return wire.principal_response(principal)

    async def GetUserByExternalId(self, request: pb.GetUserByExternalIdRequest, context: Ctx) -> pb.GetUserByExternalIdResponse:
        user = await users.get_user_by_external_id(self._deps, current_principal(), request.external_id)
        return pb.GetUserByExternalIdResponse(user=wire.user_pb(user) if user else None)

    async def GetOrCreateUserFromClerk(
        self, request: pb.GetOrCreateUserFromClerkRequest, context: Ctx
    ) -> pb.GetOrCreateUserFromClerkResponse:
        name, email, image = wire.bootstrap_profile(request)
        result = await users.get_or_create_from_clerk(
            self._deps, current_principal().require_identity(), name, email, image
        )
        return pb.GetOrCreateUserFromClerkResponse(user_id=ids.USER.format(result.user_id), created=result.created)

    async def GetCurrentUser(self, request: pb.GetCurrentUserRequest, context: Ctx) -> pb.GetCurrentUserResponse:
        user = await users.get_current_user(self._deps, current_principal())
        return pb.GetCurrentUserResponse(user=wire.user_pb(user))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Ctx) -> pb.ListUsersResponse:
        page = await users.list_users(self._deps, wire.users_page(request))
        return pb.ListUsersResponse(users=[wire.user_pb(u) for u in page.items], next_page_token=page.next_page_token)

    async def BatchGetUsers(self, request: pb.BatchGetUsersRequest, context: Ctx) -> pb.BatchGetUsersResponse:
        found = await users.batch_get_users(self._deps, wire.batch_ids(request.ids, ids.USER))
        return pb.BatchGetUsersResponse(users=[wire.user_pb(u) for u in found])

    async def BackfillUserRoles(self, request: pb.BackfillUserRolesRequest, context: Ctx) -> pb.BackfillUserRolesResponse:
        counts = await users.backfill_user_roles(self._deps)
        return pb.BackfillUserRolesResponse(updated=counts.updated, total=counts.total)

    async def GetPrivateData(self, request: pb.GetPrivateDataRequest, context: Ctx) -> pb.GetPrivateDataResponse:
        return pb.GetPrivateDataResponse(message=PRIVATE_DATA_MESSAGE)

    async def GetHealthCheck(self, request: pb.GetHealthCheckRequest, context: Ctx) -> pb.GetHealthCheckResponse:
        return pb.GetHealthCheckResponse(status="OK")

    # --- contacts ---

    async def GetContactByPhone(self, request: pb.GetContactByPhoneRequest, context: Ctx) -> pb.GetContactByPhoneResponse:
        contact = await contacts.get_contact_by_phone(self._deps, request.phone)
        return pb.GetContactByPhoneResponse(contact=wire.contact_pb(contact) if contact else None)

    async def CreateContact(self, request: pb.CreateContactRequest, context: Ctx) -> pb.CreateContactResponse:
        result = await contacts.create_contact(self._deps, request.phone, request.name, request.is_allowed)
        return pb.CreateContactResponse(contact=wire.contact_pb(result.contact), created=result.created)

    async def UpdateContact(self, request: pb.UpdateContactRequest, context: Ctx) -> pb.UpdateContactResponse:
        name, is_allowed = wire.contact_changes(request)
        contact = await contacts.update_contact(self._deps, wire.contact_id(request), name, is_allowed)
        return pb.UpdateContactResponse(contact=wire.contact_pb(contact))

    async def ListContacts(self, request: pb.ListContactsRequest, context: Ctx) -> pb.ListContactsResponse:
        page = await contacts.list_contacts(self._deps, wire.contacts_page(request))
        return pb.ListContactsResponse(
            contacts=[wire.contact_pb(c) for c in page.items], next_page_token=page.next_page_token
        )

    async def BatchGetContacts(self, request: pb.BatchGetContactsRequest, context: Ctx) -> pb.BatchGetContactsResponse:
        found = await contacts.batch_get_contacts(self._deps, wire.batch_ids(request.ids, ids.CONTACT))
        return pb.BatchGetContactsResponse(contacts=[wire.contact_pb(c) for c in found])

    # --- Clerk ---

    async def UpsertClerkUser(self, request: pb.UpsertClerkUserRequest, context: Ctx) -> pb.UpsertClerkUserResponse:
        result = await clerk_sync.upsert_clerk_user(self._deps, wire.clerk_profile(request), request.delivery_id)
        return pb.UpsertClerkUserResponse(
            user_id=ids.USER.format(result.user_id), created=result.created, duplicate=result.duplicate
        )

    async def DeactivateClerkUser(self, request: pb.DeactivateClerkUserRequest, context: Ctx) -> pb.DeactivateClerkUserResponse:
        result = await clerk_sync.deactivate_clerk_user(self._deps, request.external_id, request.delivery_id)
        return pb.DeactivateClerkUserResponse(found=result.found, duplicate=result.duplicate)

    async def CleanupWebhookDeliveries(
        self, request: pb.CleanupWebhookDeliveriesRequest, context: Ctx
    ) -> pb.CleanupWebhookDeliveriesResponse:
        counts = await clerk_sync.cleanup_webhook_deliveries(self._deps, request.batch_size)
        return pb.CleanupWebhookDeliveriesResponse(deleted=counts.deleted, more=counts.more)

    async def SyncClerkUsers(self, request: pb.SyncClerkUsersRequest, context: Ctx) -> pb.SyncClerkUsersResponse:
        counts = await clerk_sync.sync_clerk_users(self._deps)
        return pb.SyncClerkUsersResponse(synced=counts.synced, created=counts.created, updated=counts.updated)

    # --- phone verification ---

    async def RequestPhoneVerification(
        self, request: pb.RequestPhoneVerificationRequest, context: Ctx
    ) -> pb.RequestPhoneVerificationResponse:
        outcome = await phone.request_phone_verification(self._deps, current_principal(), request.phone)
        return pb.RequestPhoneVerificationResponse(success=outcome.success, error=outcome.error)

    async def ConfirmPhoneVerification(
        self, request: pb.ConfirmPhoneVerificationRequest, context: Ctx
    ) -> pb.ConfirmPhoneVerificationResponse:
        outcome = await phone.confirm_phone_verification(self._deps, current_principal(), request.code)
        return pb.ConfirmPhoneVerificationResponse(success=outcome.success, phone=outcome.phone, error=outcome.error)

    async def GetPhoneVerificationStatus(
        self, request: pb.GetPhoneVerificationStatusRequest, context: Ctx
    ) -> pb.GetPhoneVerificationStatusResponse:
        pending = await phone.get_phone_verification_status(self._deps, current_principal())
        return wire.verification_status_response(pending)

    async def UnlinkPhone(self, request: pb.UnlinkPhoneRequest, context: Ctx) -> pb.UnlinkPhoneResponse:
        await phone.unlink_phone(self._deps, current_principal())
        return pb.UnlinkPhoneResponse()

    async def CleanupExpiredPhoneVerifications(
        self, request: pb.CleanupExpiredPhoneVerificationsRequest, context: Ctx
    ) -> pb.CleanupExpiredPhoneVerificationsResponse:
        counts = await phone.cleanup_expired_phone_verifications(self._deps, request.batch_size)
        return pb.CleanupExpiredPhoneVerificationsResponse(deleted=counts.deleted, more=counts.more)
