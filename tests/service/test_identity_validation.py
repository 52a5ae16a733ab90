"""Bad input on every implemented identity RPC: INVALID_ARGUMENT naming the field, nothing written."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.service.conftest import Running
from tests.support.builders import boss
from tests.support.grpc_client import bearer, rpc_error, service
from zenthor.clients import violated_fields
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb

LONG = "x" * 5_000

# (rpc, request, credentials, field named)
CASES: list[tuple[str, Any, str, str]] = [
    ("UpdateContact", pb.UpdateContactRequest(id="not-an-id", name="x"), "admin", "id"),
    ("UpdateContact", pb.UpdateContactRequest(id="usr_" + "0" * 32, name="x"), "admin", "id"),
    ("UpdateContact", pb.UpdateContactRequest(id="ctc_" + "0" * 32, name=""), "admin", "name"),
    ("UpdateContact", pb.UpdateContactRequest(id="ctc_" + "0" * 32, name=LONG), "admin", "name"),
    ("ListUsers", pb.ListUsersRequest(page_size=-1), "admin", "page_size"),
    ("ListUsers", pb.ListUsersRequest(page_size=100_000), "admin", "page_size"),
    ("ListUsers", pb.ListUsersRequest(page_token="garbage!"), "admin", "page_token"),
    ("ListContacts", pb.ListContactsRequest(page_size=-5), "admin", "page_size"),
    ("GetContactByPhone", pb.GetContactByPhoneRequest(phone=""), "service", "phone"),
    ("GetContactByPhone", pb.GetContactByPhoneRequest(phone=LONG), "service", "phone"),
    ("CreateContact", pb.CreateContactRequest(phone="", name="x"), "service", "phone"),
    ("CreateContact", pb.CreateContactRequest(phone="+55 11 9999", name="x"), "service", "phone"),
    ("CreateContact", pb.CreateContactRequest(phone="5511999990000", name=""), "service", "name"),
    ("CreateContact", pb.CreateContactRequest(phone="5511999990000", name=LONG), "service", "name"),
    ("BatchGetContacts", pb.BatchGetContactsRequest(ids=["ctc_" + "0" * 32, "msg_" + "0" * 32]), "service", "ids[1]"),
    ("BatchGetUsers", pb.BatchGetUsersRequest(ids=["bogus"]), "service", "ids[0]"),
    ("ResolvePrincipal", pb.ResolvePrincipalRequest(external_id=""), "service", "external_id"),
    ("UpsertClerkUser", pb.UpsertClerkUserRequest(external_id="", name="x", email=""), "service", "external_id"),
    ("UpsertClerkUser", pb.UpsertClerkUserRequest(external_id="user_x", name="", email=""), "service", "name"),
    ("UpsertClerkUser", pb.UpsertClerkUserRequest(external_id="user_x", name="x", email=LONG), "service", "email"),
    ("UpsertClerkUser", pb.UpsertClerkUserRequest(external_id="user_x", name="x", email="", image=LONG), "service", "image"),
    ("DeactivateClerkUser", pb.DeactivateClerkUserRequest(external_id=""), "service", "external_id"),
    ("GetOrCreateUserFromClerk", pb.GetOrCreateUserFromClerkRequest(name=""), "signed_in", "name"),
    ("GetOrCreateUserFromClerk", pb.GetOrCreateUserFromClerkRequest(name=LONG), "signed_in", "name"),
    ("GetOrCreateUserFromClerk", pb.GetOrCreateUserFromClerkRequest(name="x", email=LONG), "signed_in", "email"),
    ("GetOrCreateUserFromClerk", pb.GetOrCreateUserFromClerkRequest(name="x", image=LONG), "signed_in", "image"),
]


def _table_counts(identity: Running) -> list[tuple[Any, ...]]:
    return identity.db.sql(
        "SELECT (SELECT count(*) FROM identity.users), (SELECT count(*) FROM identity.contacts),"
        " (SELECT max(updated_at) FROM identity.users)"
    )


@pytest.mark.parametrize(("rpc", "request_", "who", "field"), CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
async def test_bad_input_is_invalid_argument_naming_the_field(identity: Running, rpc: str, request_: Any, who: str, field: str) -> None:
    boss(identity.db)
    before = _table_counts(identity)
    metadata = {
        "admin": bearer(identity.issuer.token("user_boss")),
        "service": service(),
        "signed_in": bearer(identity.issuer.token("user_new")),
    }[who]
    error = await rpc_error(getattr(identity.stub, rpc)(request_, metadata=metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert violated_fields(error) == [field]
    assert error.details().startswith(f"{field}:")
    assert _table_counts(identity) == before


async def test_errors_carry_the_request_id_never_a_traceback(identity: Running) -> None:
    boss(identity.db)
    metadata = (*bearer(identity.issuer.token("user_boss")), ("x-request-id", "req-123"))
    error = await rpc_error(identity.stub.UpdateContact(pb.UpdateContactRequest(id="nope"), metadata=metadata))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("x-request-id", "req-123") in tuple(error.trailing_metadata() or ())
    assert "Traceback" not in error.details()


async def test_an_unexpected_failure_is_internal_with_the_request_id_only(identity: Running) -> None:
    # The table vanishing under the service stands in for any bug or broken dependency.
    identity.db.sql("DROP TABLE identity.contacts")
    metadata = (*service(), ("x-request-id", "req-boom"))
    error = await rpc_error(identity.stub.GetContactByPhone(pb.GetContactByPhoneRequest(phone="123"), metadata=metadata))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error (request id req-boom)"
    assert ("x-request-id", "req-boom") in tuple(error.trailing_metadata() or ())
