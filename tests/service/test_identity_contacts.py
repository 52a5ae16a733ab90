"""Contacts over gRPC: service lookups and creation (idempotent on phone), admin edits."""

from __future__ import annotations

import asyncio

import grpc

from tests.service.conftest import Running
from tests.support.builders import add_contact, alice, boss
from tests.support.grpc_client import bearer, rpc_error, service
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb


async def test_lookup_of_an_unknown_phone_returns_no_contact(identity: Running) -> None:
    reply = await identity.stub.GetContactByPhone(pb.GetContactByPhoneRequest(phone="123"), metadata=service())
    assert not reply.HasField("contact")


async def test_whatsapp_ingress_creates_then_finds_a_contact(identity: Running) -> None:
    created = await identity.stub.CreateContact(
        pb.CreateContactRequest(phone="5511999990000", name="5511999990000", is_allowed=False), metadata=service()
    )
    assert created.created and created.contact.id.startswith("ctc_") and not created.contact.is_allowed
    found = await identity.stub.GetContactByPhone(pb.GetContactByPhoneRequest(phone="5511999990000"), metadata=service())
    assert found.contact == created.contact


async def test_simultaneous_first_messages_from_one_number_make_one_contact(identity: Running) -> None:
    # The unique phone makes creation idempotent under a real race (docs/hardening.md #24).
    request = pb.CreateContactRequest(phone="5511988887777", name="x", is_allowed=False)
    replies = await asyncio.gather(*(identity.stub.CreateContact(request, metadata=service()) for _ in range(20)))
    assert sum(r.created for r in replies) == 1
    assert len({r.contact.id for r in replies}) == 1
    assert identity.db.sql("SELECT count(*) FROM identity.contacts") == [(1,)]


async def test_admin_updates_only_the_given_fields(identity: Running) -> None:
    boss(identity.db)
    contact_id = add_contact(identity.db, "5511977776666", is_allowed=False)
    token = identity.issuer.token("user_boss")
    reply = await identity.stub.UpdateContact(
        pb.UpdateContactRequest(id=f"ctc_{contact_id.hex}", is_allowed=True), metadata=bearer(token)
    )
    assert reply.contact.is_allowed and reply.contact.name == "5511977776666"
    renamed = await identity.stub.UpdateContact(pb.UpdateContactRequest(id=f"ctc_{contact_id.hex}", name="Carla"), metadata=bearer(token))
    assert renamed.contact.name == "Carla" and renamed.contact.is_allowed


async def test_updating_an_unknown_contact_is_not_found(identity: Running) -> None:
    boss(identity.db)
    error = await rpc_error(
        identity.stub.UpdateContact(pb.UpdateContactRequest(id="ctc_" + "0" * 32, name="X"), metadata=bearer(identity.issuer.token("user_boss")))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_members_cannot_list_contacts(identity: Running) -> None:
    alice(identity.db)
    error = await rpc_error(identity.stub.ListContacts(pb.ListContactsRequest(), metadata=bearer(identity.issuer.token("user_alice"))))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_principal_carries_the_linked_contact(identity: Running) -> None:
    user_id = alice(identity.db)
    contact_id = add_contact(identity.db, "5511999990000", user_id=user_id)
    reply = await identity.stub.ResolvePrincipal(pb.ResolvePrincipalRequest(external_id="user_alice"), metadata=service())
    assert reply.user_id == f"usr_{user_id.hex}"
    assert reply.contact_id == f"ctc_{contact_id.hex}"
    assert reply.role == pb.ROLE_MEMBER and reply.status == pb.USER_STATUS_ACTIVE
    missing = await rpc_error(identity.stub.ResolvePrincipal(pb.ResolvePrincipalRequest(external_id="user_nobody"), metadata=service()))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_batch_get_returns_found_rows_in_request_order(identity: Running) -> None:
    first = add_contact(identity.db, "5511000000001")
    second = add_contact(identity.db, "5511000000002")
    reply = await identity.stub.BatchGetContacts(
        pb.BatchGetContactsRequest(ids=[f"ctc_{second.hex}", "ctc_" + "f" * 32, f"ctc_{first.hex}"]), metadata=service()
    )
    assert [c.phone for c in reply.contacts] == ["5511000000002", "5511000000001"]
