"""Who may call what, over gRPC against the real identity server (docs/architecture.md §4)."""

from __future__ import annotations

import grpc

from tests.service.conftest import Running
from tests.support.builders import add_user, alice, boss
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.jwks import new_rsa_key
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb


async def test_missing_jwt_on_a_user_function_is_unauthenticated(identity: Running) -> None:
    error = await rpc_error(identity.stub.GetCurrentUser(pb.GetCurrentUserRequest()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "Not authenticated"


async def test_valid_jwt_without_user_row_is_user_not_found(identity: Running) -> None:
    token = identity.issuer.token("user_new")
    error = await rpc_error(identity.stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "User not found"


async def test_member_calling_an_admin_function_is_forbidden(identity: Running) -> None:
    alice(identity.db)
    token = identity.issuer.token("user_alice")
    error = await rpc_error(identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "Forbidden"


async def test_role_derived_from_allowlist_when_stored_role_absent(identity: Running) -> None:
    add_user(identity.db, "user_c", email="BOSS@example.com", role=None, email_verified=None)
    token = identity.issuer.token("user_c")
    reply = await identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(token))
    assert [u.external_id for u in reply.users] == ["user_c"]
    # The derived role is not written back.
    assert identity.db.sql("SELECT role FROM identity.users WHERE external_id = 'user_c'") == [(None,)]


async def test_client_sent_email_never_grants_admin(identity: Running) -> None:
    # An unverified email on the row does not consult the allowlist (docs/hardening.md #2).
    add_user(identity.db, "user_sneaky", email="boss@example.com", role=None, email_verified=False)
    token = identity.issuer.token("user_sneaky")
    error = await rpc_error(identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_stored_role_wins_over_allowlist(identity: Running) -> None:
    add_user(identity.db, "user_ops", email="ops@example.com", role="member")
    token = identity.issuer.token("user_ops")
    error = await rpc_error(identity.stub.ListContacts(pb.ListContactsRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_admin_may_call_admin_functions(identity: Running) -> None:
    boss(identity.db)
    reply = await identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(identity.issuer.token("user_boss")))
    assert [u.external_id for u in reply.users] == ["user_boss"]


async def test_get_by_external_id_only_reveals_the_caller(identity: Running) -> None:
    alice(identity.db)
    token = identity.issuer.token("user_alice")
    other = await identity.stub.GetUserByExternalId(pb.GetUserByExternalIdRequest(external_id="user_bob"), metadata=bearer(token))
    assert not other.HasField("user")
    own = await identity.stub.GetUserByExternalId(pb.GetUserByExternalIdRequest(external_id="user_alice"), metadata=bearer(token))
    assert own.user.external_id == "user_alice"
    assert own.user.name == "Alice A"


async def test_public_health_check_needs_no_credentials(identity: Running) -> None:
    reply = await identity.stub.GetHealthCheck(pb.GetHealthCheckRequest())
    assert reply.status == "OK"


async def test_inactive_users_are_refused(identity: Running) -> None:
    # A user deleted in Clerk loses access at once (docs/hardening.md #22).
    add_user(identity.db, "user_alice", email="alice@example.com", status="inactive")
    token = identity.issuer.token("user_alice")
    error = await rpc_error(identity.stub.GetPrivateData(pb.GetPrivateDataRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "User is inactive"


async def test_private_data_for_an_active_user(identity: Running) -> None:
    alice(identity.db)
    reply = await identity.stub.GetPrivateData(pb.GetPrivateDataRequest(), metadata=bearer(identity.issuer.token("user_alice")))
    assert reply.message == "This is private"


async def test_me_and_current_user_return_the_callers_row(identity: Running) -> None:
    user_id = alice(identity.db)
    reply = await identity.stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=bearer(identity.issuer.token("user_alice")))
    assert reply.user.id == f"usr_{user_id.hex}"
    assert reply.user.role == pb.ROLE_MEMBER
    assert reply.user.status == pb.USER_STATUS_ACTIVE


# --- JWT verification: every bad token is UNAUTHENTICATED ---


async def _user_call_with(identity: Running, token: str) -> grpc.aio.AioRpcError:
    alice(identity.db)
    return await rpc_error(identity.stub.GetPrivateData(pb.GetPrivateDataRequest(), metadata=bearer(token)))


async def test_expired_token_is_unauthenticated(identity: Running) -> None:
    error = await _user_call_with(identity, identity.issuer.token("user_alice", expires_in=-120))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in error.details()


async def test_wrong_issuer_is_unauthenticated(identity: Running) -> None:
    error = await _user_call_with(identity, identity.issuer.token("user_alice", issuer="https://evil.example.com"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "issuer" in error.details()


async def test_wrong_audience_is_unauthenticated(identity: Running) -> None:
    error = await _user_call_with(identity, identity.issuer.token("user_alice", audience="not-convex"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "audience" in error.details()


async def test_token_signed_by_another_key_is_unauthenticated(identity: Running) -> None:
    error = await _user_call_with(identity, identity.issuer.token("user_alice", key=new_rsa_key()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_alg_none_token_is_unauthenticated(identity: Running) -> None:
    import jwt

    forged = jwt.encode(
        {"sub": "user_alice", "iss": identity.issuer.issuer, "aud": "convex", "exp": 4_000_000_000},
        key=None,
        algorithm="none",
        headers={"kid": identity.issuer.kid},
    )
    error = await _user_call_with(identity, forged)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unknown_kid_is_unauthenticated(identity: Running) -> None:
    error = await _user_call_with(identity, identity.issuer.token("user_alice", kid="rotated-away"))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "signing key" in error.details()


async def test_service_key_does_not_open_user_functions(identity: Running) -> None:
    error = await rpc_error(identity.stub.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=service()))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
