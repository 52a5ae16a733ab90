"""REST for identity's user-mode RPCs: one route per RPC, the caller's bearer token forwarded,
the reply as JSON. Authorization is identity's (its auth modes), not the gateway's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict

from gateway.deps import CallMetadata, IdentityStub
from gateway.protojson import JsonObject, message_json, optional_message_json
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb

router = APIRouter(prefix="/v1", tags=["identity"])


class BootstrapUserBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    email: str | None = None
    image: str | None = None


class ContactPatchBody(BaseModel):
    """Fields present are patched; absent ones are left alone."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    is_allowed: bool | None = None


class PhoneBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone: str


class CodeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str


@router.get("/users/me", summary="The caller's user (GetCurrentUser)")
async def get_current_user(identity: IdentityStub, metadata: CallMetadata) -> JsonObject:
    reply = await identity.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=metadata)
    return message_json(reply)


@router.get(
    "/users:by-external-id/{external_id}",
    summary="The caller's user when the id is the caller's, else null (GetUserByExternalId)",
)
async def get_user_by_external_id(
    external_id: str, identity: IdentityStub, metadata: CallMetadata
) -> JsonObject:
    request = pb.GetUserByExternalIdRequest(external_id=external_id)
    reply = await identity.GetUserByExternalId(request, metadata=metadata)
    return {"user": optional_message_json(reply, "user")}


@router.post("/users:bootstrap", summary="Create the caller's user if missing (GetOrCreateUserFromClerk)")
async def bootstrap_user(
    body: BootstrapUserBody, identity: IdentityStub, metadata: CallMetadata
) -> JsonObject:
    request = pb.GetOrCreateUserFromClerkRequest(name=body.name, email=body.email, image=body.image)
    reply = await identity.GetOrCreateUserFromClerk(request, metadata=metadata)
    return message_json(reply)


@router.get("/users", summary="All users, oldest first; admin (ListUsers)")
async def list_users(
    identity: IdentityStub, metadata: CallMetadata, page_size: int = 0, page_token: str = ""
) -> JsonObject:
    request = pb.ListUsersRequest(page_size=page_size, page_token=page_token)
    return message_json(await identity.ListUsers(request, metadata=metadata))


@router.get("/contacts", summary="All contacts; admin (ListContacts)")
async def list_contacts(
    identity: IdentityStub, metadata: CallMetadata, page_size: int = 0, page_token: str = ""
) -> JsonObject:
    request = pb.ListContactsRequest(page_size=page_size, page_token=page_token)
    return message_json(await identity.ListContacts(request, metadata=metadata))


@router.patch("/contacts/{id}", summary="Patch a contact's name or is_allowed; admin (UpdateContact)")
async def update_contact(
    # `id` in the path, as in the RPC, so an INVALID_ARGUMENT naming `id` points at it.
    contact_id: Annotated[str, Path(alias="id")],
    body: ContactPatchBody,
    identity: IdentityStub,
    metadata: CallMetadata,
) -> JsonObject:
    request = pb.UpdateContactRequest(id=contact_id, name=body.name, is_allowed=body.is_allowed)
    return message_json(await identity.UpdateContact(request, metadata=metadata))


@router.get("/private-data", summary="Auth smoke test (GetPrivateData)")
async def get_private_data(identity: IdentityStub, metadata: CallMetadata) -> JsonObject:
    return message_json(await identity.GetPrivateData(pb.GetPrivateDataRequest(), metadata=metadata))


@router.get("/health-check", summary="Public: answers OK (GetHealthCheck)")
async def get_health_check(identity: IdentityStub, metadata: CallMetadata) -> JsonObject:
    return message_json(await identity.GetHealthCheck(pb.GetHealthCheckRequest(), metadata=metadata))


# --- phone verification ---


@router.post("/phone-verification:request", summary="Send a code to a WhatsApp number (RequestPhoneVerification)")
async def request_phone_verification(body: PhoneBody, identity: IdentityStub, metadata: CallMetadata) -> JsonObject:
    request = pb.RequestPhoneVerificationRequest(phone=body.phone)
    return message_json(await identity.RequestPhoneVerification(request, metadata=metadata))


@router.post("/phone-verification:confirm", summary="Confirm the code and link the phone (ConfirmPhoneVerification)")
async def confirm_phone_verification(body: CodeBody, identity: IdentityStub, metadata: CallMetadata) -> JsonObject:
    request = pb.ConfirmPhoneVerificationRequest(code=body.code)
    return message_json(await identity.ConfirmPhoneVerification(request, metadata=metadata))


@router.get("/phone-verification", summary="The pending request, or null (GetPhoneVerificationStatus)")
async def get_phone_verification_status(identity: IdentityStub, metadata: CallMetadata) -> JsonObject:
    reply = await identity.GetPhoneVerificationStatus(pb.GetPhoneVerificationStatusRequest(), metadata=metadata)
    return {"pending": optional_message_json(reply, "pending")}


@router.delete("/users/me/phone", summary="Unlink the caller's phone (UnlinkPhone)")
async def unlink_phone(identity: IdentityStub, metadata: CallMetadata) -> JsonObject:
    return message_json(await identity.UnlinkPhone(pb.UnlinkPhoneRequest(), metadata=metadata))
