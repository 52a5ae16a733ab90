"""POST /clerk/webhook over HTTP, svix-signed, against
the real identity service; rows asserted in Postgres."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
import structlog
from svix.webhooks import Webhook

from tests.e2e.conftest import WEBHOOK_SECRET, gateway_settings, serve_gateway
from tests.service.conftest import Running
from tests.support.builders import bob, boss
from tests.support.database import TestDatabase
from tests.support.grpc_client import bearer, rpc_error
from zenthor.gen.zenthor.identity.v1 import identity_pb2 as pb

OTHER_SECRET = "whsec_" + base64.b64encode(b"n0t-the-k3y-n0t-the-k3y-n0t-th").decode()
USER_COLUMNS = "external_id, name, email, role, image, status"


def signed_request(
    body: str, *, secret: str = WEBHOOK_SECRET, at: datetime | None = None, msg_id: str = "msg_1"
) -> dict[str, Any]:
    """httpx arguments for a svix delivery of `body` signed with `secret` at `at` (default now)."""
    when = at or datetime.now(UTC)
    headers = {
        "svix-id": msg_id,
        "svix-timestamp": str(int(when.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, when, body),
        "content-type": "application/json",
    }
    return {"content": body.encode(), "headers": headers}


async def deliver(gateway: httpx.AsyncClient, event: dict[str, Any], **signing: Any) -> httpx.Response:
    return await gateway.post("/clerk/webhook", **signed_request(json.dumps(event), **signing))


def user_event(
    event_type: str,
    user_id: str,
    *,
    first: str | None = None,
    last: str | None = None,
    emails: dict[str, str] | None = None,
    primary: str | None = None,
    image_url: str | None = None,
    verified: bool = True,
) -> dict[str, Any]:
    # Clerk marks each address `verified` or `unverified` (docs/hardening.md #2).
    verification = {"status": "verified" if verified else "unverified", "strategy": "email_code"}
    return {
        "type": event_type,
        "object": "event",
        "data": {
            "id": user_id,
            "first_name": first,
            "last_name": last,
            "primary_email_address_id": primary,
            "email_addresses": [
                {"id": k, "email_address": v, "verification": verification} for k, v in (emails or {}).items()
            ],
            "image_url": image_url,
        },
    }


# a user.created event as Clerk sends it
GINA_CREATED = {
    "type": "user.created",
    "data": {
        "id": "user_g",
        "first_name": "Gina",
        "last_name": None,
        "primary_email_address_id": "idn_1",
        "email_addresses": [
            {"id": "idn_0", "email_address": "old@x.com", "verification": {"status": "verified"}},
            {"id": "idn_1", "email_address": "Gina@Example.COM", "verification": {"status": "verified"}},
        ],
        "image_url": "https://img/g.png",
    },
}


def user_row(db: TestDatabase, external_id: str) -> tuple[Any, ...] | None:
    rows = db.sql(f"SELECT {USER_COLUMNS} FROM identity.users WHERE external_id = %s", (external_id,))
    return rows[0] if rows else None


def user_count(db: TestDatabase) -> int:
    return int(db.sql("SELECT count(*) FROM identity.users")[0][0])


def assert_text(response: httpx.Response, status: int, body: str) -> None:
    assert (response.status_code, response.text) == (status, body)
    assert response.headers["content-type"].startswith("text/plain")


# --- B.16 to B.19: rejection before any write ---


async def test_webhook_without_secret_configured_answers_503_and_the_gateway_says_so_at_start(
    identity: Running,
) -> None:
    # A deployment that is not set up yet is unavailable, not broken: 503 with the fix in the body.
    settings = gateway_settings(f"127.0.0.1:{identity.server.port}", clerk_webhook_secret=None)
    with structlog.testing.capture_logs() as logs:
        async with serve_gateway(settings) as gateway:
            started = [entry for entry in logs if "CLERK_WEBHOOK_SECRET" in str(entry.get("problem", ""))]
            unsigned = await gateway.post("/clerk/webhook", content=b"anything")
            signed = await deliver(gateway, GINA_CREATED)
    body = "Clerk webhook is not configured: set CLERK_WEBHOOK_SECRET"
    assert_text(unsigned, 503, body)
    assert_text(signed, 503, body)
    assert user_count(identity.db) == 0
    assert started and "503" in started[0]["problem"]


@pytest.mark.parametrize("header", ["svix-id", "svix-timestamp", "svix-signature"])
async def test_webhook_missing_a_svix_header_is_rejected(
    gateway: httpx.AsyncClient, identity: Running, header: str
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    del request["headers"][header]
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Missing svix headers")
    assert user_count(identity.db) == 0


async def test_webhook_with_an_empty_svix_header_is_rejected(gateway: httpx.AsyncClient) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    request["headers"]["svix-signature"] = ""
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Missing svix headers")


async def test_webhook_signed_with_another_secret_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = user_event("user.created", "user_f", first="Fay")
    assert_text(await deliver(gateway, event, secret=OTHER_SECRET), 400, "Invalid signature")
    assert user_row(identity.db, "user_f") is None


async def test_webhook_with_stale_timestamp_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    stale = datetime.now(UTC) - timedelta(seconds=400)
    assert_text(await deliver(gateway, GINA_CREATED, at=stale), 400, "Invalid signature")
    assert user_count(identity.db) == 0


async def test_webhook_with_future_timestamp_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    future = datetime.now(UTC) + timedelta(seconds=400)
    assert_text(await deliver(gateway, GINA_CREATED, at=future), 400, "Invalid signature")
    assert user_count(identity.db) == 0


async def test_webhook_with_a_tampered_body_is_rejected(gateway: httpx.AsyncClient, identity: Running) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    request["content"] = request["content"].replace(b"Gina", b"Evil")
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Invalid signature")
    assert user_count(identity.db) == 0


@pytest.mark.parametrize("signature", ["garbage", "v1,not-base64!", "v1"])
async def test_webhook_with_a_malformed_signature_header_is_rejected(
    gateway: httpx.AsyncClient, signature: str
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    request["headers"]["svix-signature"] = signature
    assert_text(await gateway.post("/clerk/webhook", **request), 400, "Invalid signature")


async def test_webhook_with_a_signed_body_that_is_not_json_is_rejected(gateway: httpx.AsyncClient) -> None:
    assert_text(await gateway.post("/clerk/webhook", **signed_request("not json")), 400, "Invalid signature")


async def test_webhook_accepts_a_signature_list_when_one_entry_matches(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    wrong = signed_request(json.dumps(GINA_CREATED), secret=OTHER_SECRET)["headers"]["svix-signature"]
    request["headers"]["svix-signature"] = f"{wrong} {request['headers']['svix-signature']}"
    assert_text(await gateway.post("/clerk/webhook", **request), 200, "OK")
    assert user_row(identity.db, "user_g") is not None


# --- B.20 to B.25: handled events ---


async def test_valid_user_created_inserts_the_user(gateway: httpx.AsyncClient, identity: Running) -> None:
    assert_text(await deliver(gateway, GINA_CREATED), 200, "OK")
    assert user_row(identity.db, "user_g") == (
        "user_g", "Gina", "gina@example.com", "member", "https://img/g.png", "active",
    )


async def test_user_created_replayed_within_the_window_is_idempotent(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    request = signed_request(json.dumps(GINA_CREATED))
    assert_text(await gateway.post("/clerk/webhook", **request), 200, "OK")
    assert_text(await gateway.post("/clerk/webhook", **request), 200, "OK")
    assert user_count(identity.db) == 1


async def test_user_created_with_null_image_url_stores_no_image(gateway: httpx.AsyncClient, identity: Running) -> None:
    # docs/hardening.md #33: the original answered 500 here; a null image is simply no image.
    event = user_event("user.created", "user_n", first="Nia", image_url=None)
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_n") == ("user_n", "Nia", "", "member", None, "active")


async def test_user_created_without_names_or_primary_email_gets_defaults(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    event = user_event("user.created", "user_h", emails={"idn_9": "h@example.com"}, primary=None)
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_h") == ("user_h", "User", "", "member", None, "active")


async def test_user_created_for_an_allowlisted_email_is_admin(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = user_event("user.created", "user_o", emails={"idn_1": "OPS@example.com"}, primary="idn_1")
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_o") == ("user_o", "User", "ops@example.com", "admin", None, "active")


async def test_user_updated_keeps_the_stored_role_and_removes_the_image(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    boss(identity.db)
    identity.db.sql("UPDATE identity.users SET image = 'https://img/boss.png' WHERE external_id = 'user_boss'")
    [(before,)] = identity.db.sql("SELECT updated_at FROM identity.users WHERE external_id = 'user_boss'")
    event = user_event(
        "user.updated", "user_boss", first="Big", last="Boss", emails={"idn_1": "chief@example.com"}, primary="idn_1"
    )
    del event["data"]["image_url"]
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_boss") == (
        "user_boss", "Big Boss", "chief@example.com", "admin", None, "active",
    )
    [(after,)] = identity.db.sql("SELECT updated_at FROM identity.users WHERE external_id = 'user_boss'")
    assert after > before


async def test_user_updated_for_an_unknown_user_inserts_it(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = user_event("user.updated", "user_i", first="Ivy", emails={"idn_1": "ivy@example.com"}, primary="idn_1")
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_i") == ("user_i", "Ivy", "ivy@example.com", "member", None, "active")


async def test_user_deleted_marks_the_user_inactive_and_keeps_the_row(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    bob(identity.db)
    event = {"type": "user.deleted", "data": {"id": "user_bob", "deleted": True}}
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_bob") == ("user_bob", "Bob", "bob@example.com", "member", None, "inactive")


async def test_user_deleted_for_an_unknown_user_changes_nothing(gateway: httpx.AsyncClient, identity: Running) -> None:
    bob(identity.db)
    event = {"type": "user.deleted", "data": {"id": "user_nobody", "deleted": True}}
    assert_text(await deliver(gateway, event), 200, "OK")
    assert identity.db.sql(f"SELECT {USER_COLUMNS} FROM identity.users") == [
        ("user_bob", "Bob", "bob@example.com", "member", None, "active"),
    ]


async def test_user_deleted_without_data_id_does_nothing(gateway: httpx.AsyncClient, identity: Running) -> None:
    bob(identity.db)
    assert_text(await deliver(gateway, {"type": "user.deleted", "data": {"deleted": True}}), 200, "OK")
    assert user_row(identity.db, "user_bob") == ("user_bob", "Bob", "bob@example.com", "member", None, "active")


async def test_unhandled_event_type_answers_ok_without_writing(gateway: httpx.AsyncClient, identity: Running) -> None:
    event = {"type": "session.created", "data": {"id": "sess_1", "user_id": "user_g"}}
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_count(identity.db) == 0


async def test_user_created_replayed_after_deletion_keeps_the_user_inactive(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    bob(identity.db)
    identity.db.sql("UPDATE identity.users SET status = 'inactive' WHERE external_id = 'user_bob'")
    event = user_event(
        "user.created", "user_bob", first="Robert", emails={"idn_1": "Robert@Example.com"},
        primary="idn_1", image_url="https://img/b.png",
    )
    assert_text(await deliver(gateway, event), 200, "OK")
    assert user_row(identity.db, "user_bob") == (
        "user_bob", "Robert", "robert@example.com", "member", "https://img/b.png", "inactive",
    )


# --- a failure while handling ---


async def test_user_event_without_data_id_is_rejected_as_invalid(gateway: httpx.AsyncClient, identity: Running) -> None:
    # The original answered 500 here, so svix redelivered it for days: the event itself is wrong.
    event = {"type": "user.created", "data": {"first_name": "Nobody"}}
    assert_text(await deliver(gateway, event), 400, "Invalid event: data.id is required")
    assert user_count(identity.db) == 0


async def test_webhook_when_identity_is_unreachable_answers_internal_error(
    gateway_without_identity: httpx.AsyncClient,
) -> None:
    # Non-2xx makes svix retry the delivery later.
    assert_text(await deliver(gateway_without_identity, GINA_CREATED), 500, "Internal error")


async def test_webhook_answers_carry_a_request_id(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post("/clerk/webhook", **signed_request("{}"))
    assert response.status_code == 200
    assert response.headers["x-request-id"]


# --- docs/hardening.md #2: only an address Clerk verified makes an admin ---


async def test_an_allowlisted_address_clerk_marks_unverified_is_not_admin_until_verified(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    created = user_event("user.created", "user_o", emails={"idn_1": "ops@example.com"}, primary="idn_1", verified=False)
    assert_text(await deliver(gateway, created, msg_id="msg_created"), 200, "OK")
    assert user_row(identity.db, "user_o") == ("user_o", "User", "ops@example.com", None, None, "active")
    assert identity.db.sql("SELECT email_verified FROM identity.users WHERE external_id = 'user_o'") == [(False,)]
    token = identity.issuer.token("user_o")
    denied = await rpc_error(identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(token)))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    # Once the owner proves the address, Clerk's user.updated makes the admin.
    verified = user_event("user.updated", "user_o", emails={"idn_1": "ops@example.com"}, primary="idn_1")
    assert_text(await deliver(gateway, verified, msg_id="msg_verified"), 200, "OK")
    assert user_row(identity.db, "user_o") == ("user_o", "User", "ops@example.com", "admin", None, "active")
    await identity.stub.ListUsers(pb.ListUsersRequest(), metadata=bearer(token))


# --- docs/hardening.md #38: a replayed delivery changes nothing ---


async def test_a_replayed_delivery_changes_nothing_even_after_a_later_event(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    created = user_event("user.created", "user_r", first="Rita", emails={"idn_1": "rita@example.com"}, primary="idn_1")
    renamed = user_event("user.updated", "user_r", first="Ria", emails={"idn_1": "ria@example.com"}, primary="idn_1")
    assert_text(await deliver(gateway, created, msg_id="msg_created"), 200, "OK")
    assert_text(await deliver(gateway, renamed, msg_id="msg_renamed"), 200, "OK")
    # svix redelivers msg_created (freshly signed, same svix-id): it must not undo the rename.
    assert_text(await deliver(gateway, created, msg_id="msg_created"), 200, "OK")
    assert user_row(identity.db, "user_r") == ("user_r", "Ria", "ria@example.com", "member", None, "active")
    assert identity.db.sql("SELECT svix_id FROM identity.webhook_deliveries ORDER BY svix_id") == [
        ("msg_created",), ("msg_renamed",),
    ]


async def test_a_replayed_deletion_after_the_user_came_back_changes_nothing(
    gateway: httpx.AsyncClient, identity: Running
) -> None:
    bob(identity.db)
    deleted = {"type": "user.deleted", "data": {"id": "user_bob", "deleted": True}}
    assert_text(await deliver(gateway, deleted, msg_id="msg_deleted"), 200, "OK")
    identity.db.sql("UPDATE identity.users SET status = 'active' WHERE external_id = 'user_bob'")  # an operator
    assert_text(await deliver(gateway, deleted, msg_id="msg_deleted"), 200, "OK")
    assert user_row(identity.db, "user_bob") == ("user_bob", "Bob", "bob@example.com", "member", None, "active")


# --- signed but malformed: 400 naming the field, nothing written, never 500 ---


def _with_data(**fields: Any) -> dict[str, Any]:
    event = user_event("user.created", "user_m", first="Mia", emails={"idn_1": "mia@example.com"}, primary="idn_1")
    event["data"].update(fields)
    return event


@pytest.mark.parametrize(
    ("event", "body"),
    [
        ({"type": "user.created", "data": "user_m"}, "Invalid event: data must be an object"),
        ({"type": "user.updated"}, "Invalid event: data must be an object"),
        (_with_data(id=42), "Invalid event: data.id must be a string"),
        (_with_data(first_name=5), "Invalid event: data.first_name must be a string or null"),
        (_with_data(last_name=["a"]), "Invalid event: data.last_name must be a string or null"),
        (_with_data(image_url={"u": 1}), "Invalid event: data.image_url must be a string or null"),
        (_with_data(primary_email_address_id=1), "Invalid event: data.primary_email_address_id must be a string or null"),
        (_with_data(email_addresses="mia@example.com"), "Invalid event: data.email_addresses must be a list or null"),
        (_with_data(email_addresses=[7]), "Invalid event: data.email_addresses[0] must be an object"),
        (
            _with_data(email_addresses=[{"id": "idn_1", "email_address": 7}]),
            "Invalid event: data.email_addresses[0].email_address must be a string or null",
        ),
        (
            _with_data(email_addresses=[{"id": "idn_1", "email_address": "m@x.com", "verification": "verified"}]),
            "Invalid event: data.email_addresses[0].verification must be an object or null",
        ),
        ({"type": "user.deleted", "data": {"id": 42}}, "Invalid event: data.id must be a string"),
        # Identity's own rules (a 201-character name) answer the same way.
        (_with_data(first_name="N" * 201), "Invalid event: name: must be at most 200 characters"),
    ],
)
async def test_a_signed_event_with_malformed_fields_is_400_naming_the_field(
    gateway: httpx.AsyncClient, identity: Running, event: dict[str, Any], body: str
) -> None:
    assert_text(await deliver(gateway, event), 400, body)
    assert user_count(identity.db) == 0
    assert identity.db.sql("SELECT count(*) FROM identity.webhook_deliveries") == [(0,)]
