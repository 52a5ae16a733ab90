"""Users over gRPC: bootstrap, Clerk upserts and deletions, bulk sync, role backfill, lists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
import pytest

from services.identity.app import build_server
from tests.service.conftest import Running, start, stop
from tests.support.builders import add_user, boss
from tests.support.grpc_client import bearer, rpc_error, service
from tests.support.http_fake import JsonHandler, LocalHttpServer
from zenthor.config import ServiceName
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb
from zenthor.gen.zenthor.identity.v1 import identity_pb2_grpc


def user_row(identity: Running, external_id: str) -> dict[str, Any]:
    rows = identity.db.sql(
        "SELECT name, email, role, image, status, email_verified, created_at, updated_at"
        " FROM identity.users WHERE external_id = %s",
        (external_id,),
    )
    assert len(rows) == 1, rows
    keys = ["name", "email", "role", "image", "status", "email_verified", "created_at", "updated_at"]
    return dict(zip(keys, rows[0], strict=True))


async def test_bootstrap_creates_the_user_without_trusting_the_client_email(identity: Running) -> None:
    # No verified email claim → no admin role from the body (docs/hardening.md #2).
    token = identity.issuer.token("user_d")
    reply = await identity.stub.GetOrCreateUserFromClerk(
        pb.GetOrCreateUserFromClerkRequest(name="Dee", email="Ops@Example.com"), metadata=bearer(token)
    )
    assert reply.created and reply.user_id.startswith("usr_")
    row = user_row(identity, "user_d")
    assert row["name"] == "Dee"
    assert row["email"] == "ops@example.com"  # lower-cased (docs/hardening.md #32)
    assert row["role"] is None and row["email_verified"] is False
    assert row["status"] == "active"
    assert row["created_at"] == row["updated_at"]
    # Effective role is member until Clerk vouches for the email.
    error = await rpc_error(identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bootstrap_uses_the_jwt_email_claim_for_the_role(identity: Running) -> None:
    token = identity.issuer.token("user_d", email="Ops@Example.com", email_verified=True)
    await identity.stub.GetOrCreateUserFromClerk(
        pb.GetOrCreateUserFromClerkRequest(name="Dee", email="whatever@evil.com"), metadata=bearer(token)
    )
    row = user_row(identity, "user_d")
    assert (row["role"], row["email"], row["email_verified"]) == ("admin", "ops@example.com", True)


async def test_bootstrap_for_an_existing_user_patches_only_a_missing_role(identity: Running) -> None:
    # The name stays, the same id comes back, a second call changes nothing.
    user_id = add_user(identity.db, "user_e", name="Old", email="x@example.com", role=None, email_verified=True)
    token = identity.issuer.token("user_e", email="x@example.com", email_verified=True)
    request = pb.GetOrCreateUserFromClerkRequest(name="New", email="x@example.com")
    first = await identity.stub.GetOrCreateUserFromClerk(request, metadata=bearer(token))
    row = user_row(identity, "user_e")
    assert first.user_id == f"usr_{user_id.hex}" and not first.created
    assert (row["name"], row["role"]) == ("Old", "member")
    await identity.stub.GetOrCreateUserFromClerk(request, metadata=bearer(token))
    assert user_row(identity, "user_e") == row


@pytest.mark.parametrize("claims", [{}, {"email_verified": False}, {"email_verified": "true"}])
async def test_bootstrap_with_an_unverified_email_claim_grants_no_admin(identity: Running, claims: dict[str, Any]) -> None:
    # Only `email_verified: true` vouches for the claim (docs/hardening.md #2).
    token = identity.issuer.token("user_d", email="Ops@Example.com", **claims)
    await identity.stub.GetOrCreateUserFromClerk(pb.GetOrCreateUserFromClerkRequest(name="Dee"), metadata=bearer(token))
    row = user_row(identity, "user_d")
    assert (row["role"], row["email"], row["email_verified"]) == (None, "ops@example.com", False)
    error = await rpc_error(identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(token)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_bootstrap_needs_a_token(identity: Running) -> None:
    error = await rpc_error(identity.stub.GetOrCreateUserFromClerk(pb.GetOrCreateUserFromClerkRequest(name="X")))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_clerk_user_created_inserts_an_active_member(identity: Running) -> None:
    # The fields as the gateway derives them from a Clerk `user.created`.
    reply = await identity.stub.UpsertClerkUser(
        pb.UpsertClerkUserRequest(external_id="user_g", name="Gina", email="Gina@Example.COM", image="https://img/g.png"),
        metadata=service(),
    )
    assert reply.created
    row = user_row(identity, "user_g")
    assert (row["name"], row["email"], row["role"], row["image"], row["status"]) == (
        "Gina", "gina@example.com", "member", "https://img/g.png", "active"
    )


async def test_clerk_user_updated_keeps_the_stored_role_and_removes_a_missing_image(identity: Running) -> None:
    boss(identity.db)
    identity.db.sql("UPDATE identity.users SET image = 'https://img/old.png' WHERE external_id = 'user_boss'")
    before = user_row(identity, "user_boss")
    reply = await identity.stub.UpsertClerkUser(
        pb.UpsertClerkUserRequest(external_id="user_boss", name="Big Boss", email="chief@example.com"), metadata=service()
    )
    assert not reply.created
    row = user_row(identity, "user_boss")
    assert (row["name"], row["email"], row["role"], row["image"], row["status"]) == (
        "Big Boss", "chief@example.com", "admin", None, "active"
    )
    assert row["updated_at"] > before["updated_at"]
    unknown = await identity.stub.UpsertClerkUser(
        pb.UpsertClerkUserRequest(external_id="user_i", name="Ivy", email="ivy@example.com"), metadata=service()
    )
    assert unknown.created and user_row(identity, "user_i")["status"] == "active"


async def test_clerk_user_deleted_marks_inactive_and_replayed_creation_keeps_it_inactive(identity: Running) -> None:
    # A user deleted in Clerk stays inactive even when its creation is replayed (docs/hardening.md #22).
    add_user(identity.db, "user_bob", email="bob@example.com")
    gone = await identity.stub.DeactivateClerkUser(pb.DeactivateClerkUserRequest(external_id="user_bob"), metadata=service())
    assert gone.found and user_row(identity, "user_bob")["status"] == "inactive"
    unknown = await identity.stub.DeactivateClerkUser(pb.DeactivateClerkUserRequest(external_id="user_zzz"), metadata=service())
    assert not unknown.found
    await identity.stub.UpsertClerkUser(
        pb.UpsertClerkUserRequest(external_id="user_bob", name="Robert", email="rob@example.com", image="https://i/b"),
        metadata=service(),
    )
    row = user_row(identity, "user_bob")
    assert (row["name"], row["email"], row["image"], row["status"]) == ("Robert", "rob@example.com", "https://i/b", "inactive")


async def test_role_backfill_derives_missing_roles_once(identity: Running) -> None:
    add_user(identity.db, "u1", email="boss@example.com", role="admin")
    add_user(identity.db, "u2", email="ops@example.com", role=None)
    add_user(identity.db, "u3", email="z@example.com", role=None)
    first = await identity.stub.BackfillUserRoles(pb.BackfillUserRolesRequest(), metadata=service())
    assert (first.updated, first.total) == (2, 3)
    roles = identity.db.sql("SELECT external_id, role FROM identity.users ORDER BY external_id")
    assert roles == [("u1", "admin"), ("u2", "admin"), ("u3", "member")]
    again = await identity.stub.BackfillUserRoles(pb.BackfillUserRolesRequest(), metadata=service())
    assert (again.updated, again.total) == (0, 3)


async def test_list_users_pages_in_creation_order(identity: Running) -> None:
    boss(identity.db)
    for i in range(5):
        add_user(identity.db, f"user_{i}", email=f"u{i}@example.com")
    token = identity.issuer.token("user_boss")
    seen: list[str] = []
    page_token = ""
    while True:
        reply = await identity.stub.ListUsers(pb.ListUsersRequest(page_size=2, page_token=page_token), metadata=bearer(token))
        seen += [u.external_id for u in reply.users]
        page_token = reply.next_page_token
        if not page_token:
            break
    assert seen == ["user_boss", *(f"user_{i}" for i in range(5))]


# --- Clerk bulk sync against a local server speaking the Clerk Backend API ---


class FakeClerkApi:
    """The two Clerk Backend API endpoints the sync uses: GET /v1/users/count, /v1/users."""

    def __init__(self, users: list[dict[str, Any]], secret: str) -> None:
        self.offsets: list[int] = []
        outer = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {secret}":
                    self.send_json(401, {"errors": [{"code": "authentication_invalid"}]})
                    return
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/v1/users/count":
                    self.send_json(200, {"object": "total_count", "total_count": len(users)})
                elif url.path == "/v1/users":
                    offset, limit = int(query["offset"][0]), int(query["limit"][0])
                    outer.offsets.append(offset)
                    self.send_json(200, users[offset : offset + limit])
                else:
                    self.send_json(404, {})

        self._http = LocalHttpServer(Handler)
        self.url = f"{self._http.base_url}/v1"

    def close(self) -> None:
        self._http.close()


def clerk_user(i: int) -> dict[str, Any]:
    return {
        "id": f"user_{i:03d}",
        "first_name": f"N{i}",
        "last_name": None,
        "image_url": None,
        "primary_email_address_id": f"idn_{i}",
        "email_addresses": [{"id": f"idn_{i}", "email_address": f"U{i}@Example.com"}],
    }


@pytest.fixture
def clerk_api() -> Iterator[FakeClerkApi]:
    api = FakeClerkApi([clerk_user(i) for i in range(230)], secret="sk_test_123")
    yield api
    api.close()


async def test_bulk_sync_pages_through_clerk(settings_for: Any, db: Any, clerk_issuer: Any, clerk_api: FakeClerkApi) -> None:
    # 230 users in pages of 100, 30 already local.
    for i in range(30):
        add_user(db, f"user_{i:03d}", email="old@example.com")
    settings = settings_for(ServiceName.IDENTITY, clerk_secret_key="sk_test_123", clerk_api_url=clerk_api.url)
    running = await start(await build_server(settings), identity_pb2_grpc.IdentityServiceStub, settings, db, clerk_issuer)
    try:
        reply = await running.stub.SyncClerkUsers(pb.SyncClerkUsersRequest(), metadata=service(), timeout=60)
    finally:
        await stop(running)
    assert (reply.synced, reply.created, reply.updated) == (230, 200, 30)
    assert clerk_api.offsets == [0, 100, 200]
    assert db.sql("SELECT email FROM identity.users WHERE external_id = 'user_007'") == [("u7@example.com",)]


async def test_bulk_sync_makes_an_admin_only_of_an_address_clerk_verified(
    settings_for: Any, db: Any, clerk_issuer: Any
) -> None:
    # docs/hardening.md #2: the bulk sync reads Clerk's verification status like the webhook.
    verified, unverified = clerk_user(1), clerk_user(2)
    verified["email_addresses"][0].update(email_address="Boss@Example.com", verification={"status": "verified"})
    unverified["email_addresses"][0].update(email_address="ops@example.com", verification={"status": "unverified"})
    api = FakeClerkApi([verified, unverified], secret="sk_test_123")
    settings = settings_for(ServiceName.IDENTITY, clerk_secret_key="sk_test_123", clerk_api_url=api.url)
    running = await start(await build_server(settings), identity_pb2_grpc.IdentityServiceStub, settings, db, clerk_issuer)
    try:
        await running.stub.SyncClerkUsers(pb.SyncClerkUsersRequest(), metadata=service(), timeout=60)
    finally:
        await stop(running)
        api.close()
    assert db.sql("SELECT external_id, role, email_verified FROM identity.users ORDER BY external_id") == [
        ("user_001", "admin", True),
        ("user_002", None, False),
    ]


async def test_bulk_sync_without_secret_key_fails_clearly(identity: Running) -> None:
    error = await rpc_error(identity.stub.SyncClerkUsers(pb.SyncClerkUsersRequest(), metadata=service()))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == "CLERK_SECRET_KEY is not set"
